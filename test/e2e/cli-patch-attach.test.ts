/**
 * `suture patch --attach [--sign-key]` (issue 18, part 3) against Debian's docker-registry 2.8 on
 * loopback, which has no referrers API: the VEX, the SBOM and the patch's in-toto provenance
 * become OCI 1.1 referrers of the patched digest listed by the referrers tag (`sha256-<hex>`), and
 * with a key each is signed as a DSSE envelope in cosign's `sha256-<hex>.att` image. Everything is
 * read back with plain HTTP requests and checked with node:crypto over a hand-built PAE, not with
 * suture's own reader; the documents against their official schemas.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createPublicKey, generateKeyPairSync, type KeyObject, verify } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import packageJson from "../../package.json" with { type: "json" };
import { parseReference } from "../../src/ref/reference.ts";
import { openRegistryReferrers } from "../../src/transports/registry/registry.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { oneLineError, SUTURE } from "../lab/cli.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { layoutWriter } from "../lab/oci-layout.ts";
import { validateOpenVex } from "../lab/openvex-schema.ts";
import { type LabRegistry, startRegistry } from "../lab/registry.ts";
import { requiring } from "../lab/requirements.ts";
import { validateCycloneDx } from "../lab/sbom-schema.ts";

const { after, before, test } = await requiring(
  "root",
  "loopback",
  "tool:docker-registry",
  "tool:mmdebstrap",
  "tool:umoci",
);

before(useArchiveMirror);

const run = promisify(execFile);
const vexSchema = join(import.meta.dirname, "../../../shared/fixtures/openvex/openvex_json_schema.json");
let registry: LabRegistry;
let work: string;
let source: string;
let report: string;
let fix: { name: string; installed: string; fixed: string; cves: string[] };
let keyFile: string;
let publicKey: KeyObject;

before(async () => {
  registry = await startRegistry({ auth: "none" });
  work = await mkdtemp(join(tmpdir(), "suture-attach-"));
  const lab = await labImage("bookwormMinbase");
  report = join(work, "report.json");
  const { fixes, report: trivy } = await trivyReportFor("bookwormMinbase", {
    only: ["liblzma5"],
    outFile: report,
  });
  assert.equal(fixes.length, 1, "liblzma5 has a pending fix in the lab image");
  const cves = [
    ...new Set(
      trivy.Results.flatMap((r) => r.Vulnerabilities)
        .filter((v) => v.PkgName === "liblzma5")
        .map((v) => v.VulnerabilityID),
    ),
  ].sort();
  fix = { name: "liblzma5", installed: fixes[0]!.installed, fixed: fixes[0]!.fixed, cves };
  source = `${registry.host}/lab/attach:1`;
  await cli(["copy", lab.reference, `docker://${source}`]);
  const pair = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  keyFile = join(work, "cosign.key");
  await writeFile(keyFile, pair.privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
  // The verifier gets only the public key, as `cosign verify-attestation --key cosign.pub` would.
  publicKey = createPublicKey(pair.publicKey.export({ type: "spki", format: "pem" }));
});
after(async () => {
  await Promise.all([registry?.stop(), work && rm(work, { recursive: true, force: true })]);
});

function cli(args: string[]) {
  return run(SUTURE, args, { env: { ...process.env, CI: "true" }, maxBuffer: 64 * 1024 * 1024 });
}

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const ACCEPT = [OCI_MANIFEST, OCI_INDEX, "application/vnd.docker.distribution.manifest.v2+json"].join(", ");

interface Descriptor {
  mediaType: string;
  platform?: { os: string; architecture: string };
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}
interface Manifest {
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  manifests?: Descriptor[];
  annotations?: Record<string, string>;
}

/** Plain HTTP to the registry: an independent reader of what suture pushed. */
async function registryGet(path: string, accept = ACCEPT): Promise<Response> {
  return fetch(`http://${registry.host}/v2/lab/attach/${path}`, { headers: { accept } });
}
async function manifest(reference: string): Promise<Manifest> {
  const res = await registryGet(`manifests/${reference}`);
  assert.equal(res.status, 200, `manifest ${reference}`);
  return (await res.json()) as Manifest;
}
async function blob(digest: string): Promise<Buffer> {
  const res = await registryGet(`blobs/${digest}`, "*/*");
  assert.equal(res.status, 200, `blob ${digest}`);
  return Buffer.from(await res.arrayBuffer());
}

interface Statement {
  _type: string;
  subject: { name: string; digest: { sha256: string } }[];
  predicateType: string;
  predicate: Record<string, unknown>;
}

/** Verify a DSSE envelope the way cosign does, with only the public key: ECDSA over the PAE. */
function verifiedStatement(envelopeBytes: Buffer): Statement {
  const env = JSON.parse(envelopeBytes.toString("utf8")) as {
    payloadType: string;
    payload: string;
    signatures: { keyid?: string; sig: string }[];
  };
  assert.equal(env.payloadType, "application/vnd.in-toto+json");
  const body = Buffer.from(env.payload, "base64");
  const type = Buffer.from(env.payloadType);
  const pae = Buffer.concat([
    Buffer.from(`DSSEv1 ${type.length} `),
    type,
    Buffer.from(` ${body.length} `),
    body,
  ]);
  assert.ok(
    env.signatures.some((s) => verify("sha256", pae, publicKey, Buffer.from(s.sig, "base64"))),
    "a signature verifies with the public key",
  );
  // An altered payload must not verify: the check above is not vacuous.
  const tampered = Buffer.from(pae);
  tampered[tampered.length - 2] ^= 1;
  assert.ok(!env.signatures.some((s) => verify("sha256", tampered, publicKey, Buffer.from(s.sig, "base64"))));
  return JSON.parse(body.toString("utf8")) as Statement;
}

/** What cosign checks besides the signature: the statement names the image's digest. */
function assertNamesDigest(statement: Statement, digest: string): void {
  assert.equal(statement._type, "https://in-toto.io/Statement/v1");
  assert.ok(
    statement.subject.some((s) => `sha256:${s.digest.sha256}` === digest),
    `statement subjects ${JSON.stringify(statement.subject)} name ${digest}`,
  );
}

interface PatchPredicate {
  tool: { name: string; version: string };
  source: { name: string; digest: string };
  result: { name: string; digest: string };
  platforms: {
    platform: string;
    sourceDigest: string;
    digest: string;
    patchLayer: { mediaType: string; digest: string; size: number; diffID?: string };
    packages: {
      name: string;
      from?: string;
      to: string;
      source?: { name: string; version: string };
      purl?: string;
    }[];
    vulnerabilities: string[];
  }[];
}

/** The provenance's fields against what the patch did and what the registry holds. */
function checkPatchPredicate(
  p: PatchPredicate,
  patched: Manifest,
  patchedDigest: string,
  sourceDigest: string,
) {
  assert.deepEqual(p.tool, { name: "suture", version: packageJson.version });
  assert.equal(p.source.digest, sourceDigest);
  assert.equal(p.result.digest, patchedDigest);
  assert.equal(p.platforms.length, 1);
  const [platform] = p.platforms;
  assert.equal(platform!.platform, "linux/amd64");
  assert.equal(platform!.sourceDigest, sourceDigest);
  assert.equal(platform!.digest, patchedDigest);
  const layer = patched.layers.at(-1)!;
  assert.deepEqual(
    {
      mediaType: platform!.patchLayer.mediaType,
      digest: platform!.patchLayer.digest,
      size: platform!.patchLayer.size,
    },
    { mediaType: layer.mediaType, digest: layer.digest, size: layer.size },
  );
  const pkg = platform!.packages.find((x) => x.name === fix.name);
  assert.ok(pkg, `${fix.name} is listed`);
  assert.equal(pkg.from, fix.installed);
  assert.equal(pkg.to, fix.fixed);
  assert.equal(pkg.source?.name, "xz-utils");
  assert.match(pkg.purl ?? "", /^pkg:deb\/debian\/liblzma5@/);
  assert.deepEqual(platform!.vulnerabilities, fix.cves);
}

test("--push --attach --sign-key: VEX, SBOM and signed provenance are referrers of the patched digest, via the referrers tag, and cosign's .att verifies", async () => {
  const sourceDigest = (await registryGet("manifests/1", ACCEPT)).headers.get("docker-content-digest")!;
  const { stdout } = await cli([
    "patch",
    "-i",
    source,
    "-r",
    report,
    "--push",
    "--attach",
    "--sign-key",
    keyFile,
    "--cache-dir",
    join(work, "cache"),
  ]);
  assert.ok(stdout.includes(`updated ${fix.name} ${fix.installed} → ${fix.fixed}\n`), stdout);
  const digest = /^patched \S+ (sha256:[0-9a-f]{64})$/m.exec(stdout)?.[1];
  assert.ok(digest, stdout);
  const hex = digest.slice(7);
  assert.match(stdout, new RegExp(`referrers listed under tag sha256-${hex}$`, "m"));
  assert.match(stdout, new RegExp(`cosign attestations under tag sha256-${hex}\\.att$`, "m"));
  const patched = await manifest("1-patched");

  // Reading referrers back: the API first (distribution 2.8 has none: 404), the fallback tag second.
  assert.equal((await registryGet(`referrers/${digest}`, OCI_INDEX)).status, 404);
  const listed = await manifest(`sha256-${hex}`);
  assert.equal(listed.mediaType, OCI_INDEX);
  const types = listed.manifests!.map((d) => d.artifactType).sort();
  assert.deepEqual(types, [
    "application/openvex+json",
    "application/vnd.cyclonedx+json",
    "application/vnd.in-toto+json",
    "application/vnd.in-toto+json",
    "application/vnd.in-toto+json",
  ]);

  // suture's own reader finds the same list the same way.
  const own = await openRegistryReferrers(parseReference(`${registry.host}/lab/attach`)).list(digest);
  assert.equal(own.via, "tag");
  assert.deepEqual(own.manifests.map((d) => d.digest).sort(), listed.manifests!.map((d) => d.digest).sort());

  const predicateTypes: string[] = [];
  for (const d of listed.manifests!) {
    const m = await manifest(d.digest);
    assert.equal(m.artifactType, d.artifactType);
    assert.equal(m.subject?.digest, digest, "each artifact's subject is the patched manifest");
    assert.equal(m.config.mediaType, "application/vnd.oci.empty.v1+json");
    const body = await blob(m.layers[0]!.digest);
    if (d.artifactType === "application/openvex+json") {
      const vex = JSON.parse(body.toString()) as { statements: { vulnerability: { name: string } }[] };
      const check = validateOpenVex(vex, vexSchema);
      assert.ok(check.valid, check.errors.join("\n"));
      assert.deepEqual([...new Set(vex.statements.map((s) => s.vulnerability.name))].sort(), fix.cves);
    } else if (d.artifactType === "application/vnd.cyclonedx+json") {
      const sbom = JSON.parse(body.toString()) as { components: { name: string; version: string }[] };
      const check = validateCycloneDx(sbom);
      assert.ok(check.valid, check.errors.join("\n"));
      assert.ok(sbom.components.some((c) => c.name === fix.name && c.version === fix.fixed));
    } else {
      assert.equal(m.layers[0]!.mediaType, "application/vnd.dsse.envelope.v1+json");
      const statement = verifiedStatement(body);
      assertNamesDigest(statement, digest);
      assert.equal(m.layers[0]!.annotations?.predicateType, statement.predicateType);
      predicateTypes.push(statement.predicateType);
      if (statement.predicateType === "https://suture.dev/patch/v1")
        checkPatchPredicate(statement.predicate as unknown as PatchPredicate, patched, digest, sourceDigest);
    }
  }
  assert.deepEqual(predicateTypes.sort(), [
    "https://cyclonedx.org/bom",
    "https://openvex.dev/ns",
    "https://suture.dev/patch/v1",
  ]);

  // cosign's storage: the .att image, one DSSE layer per statement, each verifying and naming the digest.
  const att = await manifest(`sha256-${hex}.att`);
  assert.equal(att.layers.length, 3);
  for (const layer of att.layers) {
    assert.equal(layer.mediaType, "application/vnd.dsse.envelope.v1+json");
    const statement = verifiedStatement(await blob(layer.digest));
    assertNamesDigest(statement, digest);
    assert.equal(layer.annotations?.predicateType, statement.predicateType);
  }

  // The source is untouched, and nothing was attached to it.
  assert.equal((await registryGet("manifests/1", ACCEPT)).headers.get("docker-content-digest"), sourceDigest);
  assert.equal((await registryGet(`manifests/sha256-${sourceDigest.slice(7)}`)).status, 404);
});

test("--oci-dir --attach (unsigned): the layout's sha256-<hex> tag lists the VEX, the SBOM and the plain provenance statement", async () => {
  const out = join(work, "layout");
  const { stdout } = await cli([
    "patch",
    "-i",
    source,
    "-r",
    report,
    "--oci-dir",
    out,
    "-t",
    "patched",
    "--attach",
    "--sbom-format",
    "spdx",
    "--cache-dir",
    join(work, "cache"),
  ]);
  const digest = /^patched \S+ (sha256:[0-9a-f]{64})$/m.exec(stdout)?.[1];
  assert.ok(digest, stdout);
  const index = JSON.parse(await readFile(join(out, "index.json"), "utf8")) as { manifests: Descriptor[] };
  const tags = index.manifests.map((d) => d.annotations?.["org.opencontainers.image.ref.name"]).sort();
  assert.deepEqual(tags, ["patched", `sha256-${digest.slice(7)}`]);
  const read = async (d: string) => readFile(join(out, "blobs", "sha256", d.slice(7)));
  const referrersDescriptor = index.manifests.find((d) =>
    d.annotations?.["org.opencontainers.image.ref.name"]?.startsWith("sha256-"),
  )!;
  const referrers = JSON.parse((await read(referrersDescriptor.digest)).toString()) as Manifest;
  assert.deepEqual(referrers.manifests!.map((d) => d.artifactType).sort(), [
    "application/openvex+json",
    "application/spdx+json",
    "application/vnd.in-toto+json",
  ]);
  const patched = JSON.parse((await read(digest)).toString()) as Manifest;
  for (const d of referrers.manifests!) {
    const m = JSON.parse((await read(d.digest)).toString()) as Manifest;
    assert.equal(m.subject?.digest, digest);
    if (d.artifactType !== "application/vnd.in-toto+json") continue;
    assert.equal(m.layers[0]!.mediaType, "application/vnd.in-toto+json");
    const statement = JSON.parse((await read(m.layers[0]!.digest)).toString()) as Statement;
    assertNamesDigest(statement, digest);
    assert.equal(statement.predicateType, "https://suture.dev/patch/v1");
    const p = statement.predicate as unknown as PatchPredicate;
    assert.equal(p.platforms[0]!.patchLayer.digest, patched.layers.at(-1)!.digest);
    assert.deepEqual(p.platforms[0]!.vulnerabilities, fix.cves);
  }
  // umoci, an independent OCI reader, still reads the patched image from the layout.
  await run("umoci", ["stat", "--image", `${out}:patched`]);
});

/**
 * A one-platform OCI index as BuildKit pushes it: the lab image plus its attestation manifest
 * (`vnd.docker.reference.type: attestation-manifest`, an in-toto layer about the platform image).
 */
async function indexWithAttestation(dir: string): Promise<{ platformDigest: string; attestation: string }> {
  const lab = await labImage("bookwormMinbase");
  const layout = await layoutWriter(dir);
  const labIndex = JSON.parse(await readFile(join(lab.layoutDir, "index.json"), "utf8")) as {
    manifests: Descriptor[];
  };
  const entry = labIndex.manifests.find(
    (m) => m.annotations?.["org.opencontainers.image.ref.name"] === "latest",
  )!;
  const labManifest = JSON.parse(
    await readFile(join(lab.layoutDir, "blobs", "sha256", entry.digest.slice(7)), "utf8"),
  ) as Manifest;
  for (const d of [entry.digest, labManifest.config.digest, ...labManifest.layers.map((l) => l.digest)])
    await layout.reuse(lab.layoutDir, d);
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const empty = await layout.put(new TextEncoder().encode("{}"));
  const provenance = await layout.put(
    enc({ _type: "https://in-toto.io/Statement/v0.1", predicateType: "https://slsa.dev/provenance/v0.2" }),
  );
  const att = await layout.put(
    enc({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...empty },
      layers: [
        {
          mediaType: "application/vnd.in-toto+json",
          ...provenance,
          annotations: { "in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2" },
        },
      ],
    }),
  );
  const index = await layout.put(
    enc({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        {
          mediaType: entry.mediaType,
          digest: entry.digest,
          size: entry.size,
          platform: { os: "linux", architecture: "amd64" },
        },
        {
          mediaType: OCI_MANIFEST,
          ...att,
          platform: { os: "unknown", architecture: "unknown" },
          annotations: {
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": entry.digest,
          },
        },
      ],
    }),
  );
  await layout.tag(OCI_INDEX, index);
  return { platformDigest: entry.digest, attestation: att.digest };
}

test("an index: the provenance names the written index and the patched platform manifest, and the source's BuildKit attestation is dropped and named", async () => {
  const { platformDigest, attestation } = await indexWithAttestation(join(work, "with-att"));
  await cli(["copy", `oci:${join(work, "with-att")}:latest`, `docker://${registry.host}/lab/attach:idx`]);
  const { stdout } = await cli([
    "patch",
    "-i",
    `${registry.host}/lab/attach:idx`,
    "-r",
    report,
    "--push",
    "--attach",
    "--cache-dir",
    join(work, "cache"),
  ]);
  assert.match(stdout, new RegExp(`dropped attestation ${attestation}`));
  const digest = /^patched \S+ (sha256:[0-9a-f]{64})$/m.exec(stdout)?.[1];
  assert.ok(digest, stdout);
  const index = await manifest("idx-patched");
  assert.equal(index.annotations?.["dev.suture.dropped-attestations"], attestation);
  assert.ok(
    !index.manifests!.some((d) => d.digest === attestation),
    "the stale attestation is not in the new index",
  );
  const platform = index.manifests!.find((d) => d.platform?.architecture === "amd64")!;
  const listed = await manifest(`sha256-${digest.slice(7)}`);
  const inToto = listed.manifests!.find((d) => d.artifactType === "application/vnd.in-toto+json")!;
  const m = await manifest(inToto.digest);
  assert.equal(m.subject?.digest, digest, "attached to the written index");
  const statement = JSON.parse((await blob(m.layers[0]!.digest)).toString()) as Statement;
  assert.deepEqual(
    statement.subject.map((s) => `sha256:${s.digest.sha256}`),
    [digest, platform.digest],
  );
  assert.equal(statement.subject[0]!.name, `${registry.host}/lab/attach`);
  const p = statement.predicate as unknown as PatchPredicate & { droppedAttestations: string[] };
  assert.deepEqual(p.droppedAttestations, [attestation]);
  assert.equal(p.platforms[0]!.sourceDigest, platformDigest);
  assert.equal(p.platforms[0]!.digest, platform.digest);
  assert.deepEqual(p.platforms[0]!.vulnerabilities, fix.cves);
});

test("a bad --sign-key, or --attach to a docker-archive, is one error line before any work, and nothing is written", async () => {
  const badKey = join(work, "bad.key");
  await writeFile(
    badKey,
    "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
  );
  await assert.rejects(
    cli([
      "patch",
      "-i",
      source,
      "-r",
      report,
      "-t",
      "2",
      "--push",
      "--attach",
      "--sign-key",
      badKey,
      "--cache-dir",
      join(work, "cache"),
    ]),
    oneLineError(/--sign-key .*bad\.key is an encrypted key/),
  );
  assert.equal((await registryGet("manifests/2")).status, 404, "nothing was pushed");
  const out = join(work, "not-written");
  await assert.rejects(
    cli([
      "patch",
      "-i",
      source,
      "-r",
      report,
      "--oci-dir",
      out,
      "--attach",
      "--sign-key",
      join(work, "missing.key"),
    ]),
    oneLineError(/cannot read --sign-key .*missing\.key/),
  );
  assert.ok(!existsSync(out), "no layout was created");
  const archive = join(work, "x.tar");
  await assert.rejects(
    cli(["patch", "-i", source, "-r", report, "--archive", archive, "--attach"]),
    oneLineError(/--attach needs a destination that holds referrers/),
  );
  assert.ok(!existsSync(archive));
  await assert.rejects(
    cli(["patch", "-i", source, "-r", report, "-t", "3", "--push", "--sign-key", keyFile]),
    oneLineError(/--sign-key signs what --attach attaches/),
  );
});
