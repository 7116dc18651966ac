import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { parseImageManifest, parseIndex } from "../image/image.ts";
import {
  ArtifactType,
  cosignAttestationImage,
  cosignAttestationTag,
  DSSE_ENVELOPE_MEDIA_TYPE,
  referrerArtifact,
  referrersIndex,
  referrersTag,
} from "./artifacts.ts";

const sha = (s: string | Uint8Array) => `sha256:${createHash("sha256").update(s).digest("hex")}`;
const subject = {
  mediaType: "application/vnd.oci.image.manifest.v1+json",
  digest: sha("image"),
  size: 1234,
  annotations: { "not.copied": "x" },
};

test("a referrer artifact is an OCI 1.1 manifest: artifactType, the empty config, the document as its layer, subject", () => {
  const doc = new TextEncoder().encode('{"@context":"https://openvex.dev/ns/v0.2.0"}');
  const a = referrerArtifact(
    subject,
    ArtifactType.openvex,
    [{ mediaType: ArtifactType.openvex, bytes: doc }],
    new Date("2026-01-02T03:04:05.678Z"),
  );
  const m = parseImageManifest(a.manifest);
  assert.equal(m.mediaType, "application/vnd.oci.image.manifest.v1+json");
  assert.equal(m.artifactType, "application/openvex+json");
  // The spec's empty descriptor: `{}`, whose digest every registry knows.
  assert.deepEqual(m.config, {
    mediaType: "application/vnd.oci.empty.v1+json",
    digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    size: 2,
  });
  assert.deepEqual(m.layers, [{ mediaType: ArtifactType.openvex, digest: sha(doc), size: doc.length }]);
  assert.deepEqual(m.subject, { mediaType: subject.mediaType, digest: subject.digest, size: 1234 });
  assert.equal(m.annotations?.["org.opencontainers.image.created"], "2026-01-02T03:04:05Z");
  assert.equal(a.manifest.digest, sha(a.manifest.bytes));
  // Every blob the manifest names is there, with the bytes its descriptor names.
  for (const b of a.blobs) assert.equal(b.descriptor.digest, sha(b.bytes));
  assert.deepEqual(
    a.blobs.map((b) => b.descriptor.digest),
    [m.config.digest, ...m.layers.map((l) => l.digest)],
  );
  // The referrers index lists it with artifactType and annotations copied up.
  assert.equal(a.descriptor.artifactType, "application/openvex+json");
  assert.deepEqual(a.descriptor.annotations, m.annotations);
  // Same inputs, same digest: re-attaching is idempotent.
  const again = referrerArtifact(
    subject,
    ArtifactType.openvex,
    [{ mediaType: ArtifactType.openvex, bytes: doc }],
    new Date("2026-01-02T03:04:05.678Z"),
  );
  assert.equal(again.manifest.digest, a.manifest.digest);
});

test("cosign's attestation image: DSSE envelope layers annotated with their predicate type, config diff IDs = layers", () => {
  const envelopes = [
    { bytes: new TextEncoder().encode('{"payloadType":"a"}'), predicateType: "https://suture.dev/patch/v1" },
    { bytes: new TextEncoder().encode('{"payloadType":"b"}'), predicateType: "https://openvex.dev/ns" },
  ];
  const image = cosignAttestationImage(envelopes);
  const m = parseImageManifest(image.manifest);
  assert.deepEqual(
    m.layers.map((l) => [l.mediaType, l.annotations?.predicateType]),
    [
      [DSSE_ENVELOPE_MEDIA_TYPE, "https://suture.dev/patch/v1"],
      [DSSE_ENVELOPE_MEDIA_TYPE, "https://openvex.dev/ns"],
    ],
  );
  const config = JSON.parse(Buffer.from(image.blobs[0]!.bytes).toString()) as {
    rootfs: { diff_ids: string[] };
  };
  assert.deepEqual(
    config.rootfs.diff_ids,
    m.layers.map((l) => l.digest),
  );
  assert.equal(m.subject, undefined, "the .att image is found by its tag, not by subject");
});

test("tags and the referrers index: sha256-<hex>, .att, descriptors merged by digest", () => {
  assert.equal(referrersTag(subject.digest), `sha256-${subject.digest.slice(7)}`);
  assert.equal(cosignAttestationTag(subject.digest), `sha256-${subject.digest.slice(7)}.att`);
  const d = (n: string, artifactType: string) => ({
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    digest: sha(n),
    size: 10,
    artifactType,
  });
  const index = parseIndex(
    referrersIndex(
      [d("old", "application/spdx+json"), d("same", "x")],
      [d("same", "x"), d("new", "application/openvex+json")],
    ),
  );
  assert.equal(index.mediaType, "application/vnd.oci.image.index.v1+json");
  assert.deepEqual(
    index.manifests.map((m) => m.digest),
    [sha("old"), sha("same"), sha("new")],
  );
});
