import assert from "node:assert/strict";
import { createHash, generateKeyPairSync } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { attachDocuments } from "./attach.ts";
import { parseEnvelope, signingKeyFromPem, verifyEnvelope } from "./dsse.ts";
import { manifestSubject, statement } from "./statement.ts";

// Attaching to an OCI layout (no root, no network): the referrers tag is merged across attaches,
// and cosign's .att image is appended to, as cosign appends; every blob named is in the layout.

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-attach-"));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

const sha = (s: string | Uint8Array) => `sha256:${createHash("sha256").update(s).digest("hex")}`;
const subject = {
  mediaType: "application/vnd.oci.image.manifest.v1+json",
  digest: sha("patched"),
  size: 500,
};
const key = signingKeyFromPem(
  generateKeyPairSync("ec", { namedCurve: "prime256v1" })
    .privateKey.export({ type: "pkcs8", format: "pem" })
    .toString(),
  "test",
);

interface Doc {
  manifests?: { digest: string; artifactType?: string; annotations?: Record<string, string> }[];
  layers?: { digest: string; mediaType: string; annotations?: Record<string, string> }[];
  config?: { digest: string };
  subject?: { digest: string };
}

async function layoutTags(dir: string): Promise<Map<string, string>> {
  const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as Doc;
  return new Map(
    (index.manifests ?? []).map((d) => [
      d.annotations?.["org.opencontainers.image.ref.name"] ?? "",
      d.digest,
    ]),
  );
}
const readBlob = async (dir: string, digest: string) =>
  readFile(join(dir, "blobs", "sha256", digest.slice(7)));
const readDoc = async (dir: string, digest: string) =>
  JSON.parse((await readBlob(dir, digest)).toString()) as Doc;

test("two attaches to one layout: the referrers tag lists both runs' artifacts, the .att image keeps the first run's envelopes", async () => {
  const dir = join(work, "layout");
  const stmt = (version: string) =>
    statement([manifestSubject("lab/x", subject.digest)], "https://suture.dev/patch/v1", { version });
  const sbom = { format: "cyclonedx" as const, document: { bomFormat: "CycloneDX", specVersion: "1.6" } };
  const created = new Date(0);

  const first = await attachDocuments(
    { transport: "oci", dir, options: {} },
    subject,
    { sbom, statement: stmt("1") },
    { key, created },
  );
  const second = await attachDocuments(
    { transport: "oci", dir, options: {} },
    subject,
    { vex: { "@context": "https://openvex.dev/ns/v0.2.0" }, sbom, statement: stmt("2") },
    { key, created },
  );
  const tags = await layoutTags(dir);
  const hex = subject.digest.slice(7);
  assert.deepEqual([...tags.keys()].sort(), [`sha256-${hex}`, `sha256-${hex}.att`]);
  assert.equal(second.referrersTag, `sha256-${hex}`);

  // The referrers tag: every artifact of both runs, once (the unsigned SBOM is the same bytes twice).
  const referrers = await readDoc(dir, tags.get(`sha256-${hex}`)!);
  const listed = new Set(referrers.manifests!.map((d) => d.digest));
  for (const a of [...first.artifacts, ...second.artifacts]) assert.ok(listed.has(a.digest), a.artifactType);
  assert.equal(
    referrers.manifests!.length,
    new Set([...first.artifacts, ...second.artifacts].map((a) => a.digest)).size,
  );
  for (const d of referrers.manifests!) {
    const m = await readDoc(dir, d.digest);
    assert.equal(m.subject?.digest, subject.digest);
    for (const b of [m.config!, ...m.layers!]) await readBlob(dir, b.digest);
  }

  // cosign's .att: 2 envelopes from the first run (patch, SBOM), 3 from the second (patch, VEX, SBOM).
  const att = await readDoc(dir, tags.get(`sha256-${hex}.att`)!);
  assert.equal(att.layers!.length, 5);
  const versions: string[] = [];
  for (const layer of att.layers!) {
    const payload = verifyEnvelope(parseEnvelope(await readBlob(dir, layer.digest), "layer"), key.publicKey);
    const s = JSON.parse(payload.toString()) as { predicateType: string; predicate: { version?: string } };
    assert.equal(layer.annotations?.predicateType, s.predicateType);
    if (s.predicateType === "https://suture.dev/patch/v1") versions.push(s.predicate.version!);
  }
  assert.deepEqual(versions, ["1", "2"]);
});
