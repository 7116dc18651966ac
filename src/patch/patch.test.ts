import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import type { Image } from "../image/image.ts";
import type { RawManifest } from "../oci/manifest.ts";
import { patchedIndex } from "./patch.ts";

const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const digestOf = (s: string) => `sha256:${createHash("sha256").update(s).digest("hex")}`;
const raw = (doc: unknown, mediaType: string): RawManifest => {
  const bytes = new TextEncoder().encode(JSON.stringify(doc));
  return { bytes, mediaType, digest: `sha256:${createHash("sha256").update(bytes).digest("hex")}` };
};

const amd = digestOf("amd64");
const arm = digestOf("arm64");
const attAmd = digestOf("att-amd64");
const attArm = digestOf("att-arm64");
const index = raw(
  {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      { mediaType: OCI_MANIFEST, digest: amd, size: 10, platform: { os: "linux", architecture: "amd64" } },
      { mediaType: OCI_MANIFEST, digest: arm, size: 11, platform: { os: "linux", architecture: "arm64" } },
      {
        mediaType: OCI_MANIFEST,
        digest: attAmd,
        size: 12,
        platform: { os: "unknown", architecture: "unknown" },
        annotations: {
          "vnd.docker.reference.type": "attestation-manifest",
          "vnd.docker.reference.digest": amd,
        },
      },
      {
        mediaType: OCI_MANIFEST,
        digest: attArm,
        size: 13,
        platform: { os: "unknown", architecture: "unknown" },
        annotations: {
          "vnd.docker.reference.type": "attestation-manifest",
          "vnd.docker.reference.digest": arm,
        },
      },
    ],
    annotations: { "org.example.keep": "yes" },
  },
  OCI_INDEX,
);

test("the new index points at patched manifests, keeps the rest and drops stale attestations", () => {
  const patchedManifest = raw({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] }, OCI_MANIFEST);
  const image = { manifest: patchedManifest } as unknown as Image;
  const { raw: out, dropped } = patchedIndex(index, new Map([[amd, image]]));
  const doc = JSON.parse(Buffer.from(out.bytes).toString("utf8"));
  assert.equal(out.digest, `sha256:${createHash("sha256").update(out.bytes).digest("hex")}`);
  assert.deepEqual(dropped, [attAmd], "the amd64 attestation describes the replaced image");
  assert.deepEqual(
    doc.manifests.map((d: { digest: string }) => d.digest),
    [patchedManifest.digest, arm, attArm],
  );
  assert.equal(doc.manifests[0].size, patchedManifest.bytes.length);
  assert.deepEqual(doc.manifests[0].platform, { os: "linux", architecture: "amd64" });
  assert.ok(doc.manifests[0].annotations["sh.copa.image.patched"]);
  assert.equal(doc.manifests[1].annotations, undefined, "untouched platforms carry no patched annotation");
  assert.equal(doc.annotations["org.example.keep"], "yes");
  assert.ok(doc.annotations["sh.copa.patched"]);
  // The index says which of the source's attestations it left out: they do not apply to it.
  assert.equal(doc.annotations["dev.suture.dropped-attestations"], attAmd);
});

test("an index whose patched platforms had no attestations carries no dropped-attestations annotation", () => {
  const plain = raw(
    {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: amd, size: 10, platform: { os: "linux", architecture: "amd64" } },
      ],
    },
    OCI_INDEX,
  );
  const patchedManifest = raw({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] }, OCI_MANIFEST);
  const { raw: out, dropped } = patchedIndex(
    plain,
    new Map([[amd, { manifest: patchedManifest } as unknown as Image]]),
  );
  assert.deepEqual(dropped, []);
  const doc = JSON.parse(Buffer.from(out.bytes).toString("utf8"));
  assert.equal(doc.annotations["dev.suture.dropped-attestations"], undefined);
});
