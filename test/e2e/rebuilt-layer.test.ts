/**
 * The second patch of the same base with its patch layer rebuilt (issue 15, "warm, layer
 * rebuilt"): everything but the result cache is kept, so the native engine unpacks the same
 * packages from their decoded data archives (`distro/dpkg/deb-data-cache.ts`) instead of running
 * xz again. The layer must be the cold patch's to the digest; a damaged decoded entry must be
 * noticed, decoded again and rewritten, never unpacked.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { patchIntoOciDir } from "../lab/cli.ts";
import { LIBRARY_REPORT_PACKAGES, labImage, trivyReportFor } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "tool:mmdebstrap");

before(useArchiveMirror);

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-rebuilt-"));
});
after(() => rm(work, { recursive: true, force: true }));

/** The digest of the top layer of the image tagged `tag` in the OCI layout `out`. */
async function lastLayerDigest(out: string, tag: string): Promise<string> {
  const index = JSON.parse(await readFile(join(out, "index.json"), "utf8"));
  const top = index.manifests.find(
    (m: { annotations?: Record<string, string> }) =>
      m.annotations?.["org.opencontainers.image.ref.name"] === tag,
  );
  const manifest = JSON.parse(await readFile(join(out, "blobs/sha256", top.digest.slice(7)), "utf8"));
  return manifest.layers.at(-1).digest;
}

test("a rebuilt patch layer from decoded packages is the cold one's; a damaged decoded package is decoded again", async () => {
  const lab = await labImage("bookwormNginx");
  const { path: report } = await trivyReportFor("bookwormNginx", {
    only: LIBRARY_REPORT_PACKAGES,
    outFile: join(work, "lib.json"),
  });
  const cache = join(work, "cache");
  const decoded = join(cache, "apt-native", "decoded");
  const patch = async (tag: string) => {
    // The result cache would hand back the layer without unpacking anything: drop it.
    await rm(join(cache, "results"), { recursive: true, force: true });
    const out = join(work, tag);
    const { stderr } = await patchIntoOciDir({
      reference: lab.reference,
      engine: "native",
      out,
      cacheDir: cache,
      report,
      extraArgs: ["--progress", "plain", "--timeout", "40m"],
    });
    return { stderr, digest: await lastLayerDigest(out, "native") };
  };

  const cold = await patch("cold");
  // One decoded entry per downloaded package, named by the .deb's SHA-256.
  const debs = (await readdir(join(cache, "apt-native", "debs"))).filter((n) => n.endsWith(".deb"));
  assert.ok(debs.length >= 5, `a multi-package patch (${debs.length} packages)`);
  assert.deepEqual((await readdir(decoded)).sort(), debs.map((n) => n.replace(/\.deb$/, ".tar")).sort());
  const inodes = async () =>
    new Map(
      await Promise.all(
        debs.map(async (n) => [n, (await stat(join(decoded, n.replace(/\.deb$/, ".tar")))).ino] as const),
      ),
    );
  const coldInodes = await inodes();

  const rebuilt = await patch("rebuilt");
  assert.equal(rebuilt.digest, cold.digest, "the rebuilt layer is the cold one, to the digest");
  assert.doesNotMatch(rebuilt.stderr, /was damaged/);
  assert.deepEqual(await inodes(), coldInodes, "every decoded entry was read, none written again");

  // Damage the largest entry inside a member's content, where the tar still reads: used, it would
  // put different library bytes into the layer.
  const sizes = await Promise.all(
    debs.map(async (n) => ({ n, size: (await stat(join(decoded, n.replace(/\.deb$/, ".tar")))).size })),
  );
  const largest = sizes.sort((a, b) => b.size - a.size)[0]!.n.replace(/\.deb$/, ".tar");
  const entry = join(decoded, largest);
  const bytes = await readFile(entry);
  const at = Math.floor(bytes.length / 2);
  bytes[at] ^= 0xff;
  await writeFile(entry, bytes);
  const damagedSha = createHash("sha256").update(bytes).digest("hex");

  const repaired = await patch("repaired");
  assert.match(repaired.stderr, new RegExp(`${largest} was damaged .*decoding the package again`));
  assert.equal(repaired.digest, cold.digest, "the damaged entry was not unpacked");
  const rewritten = await readFile(entry);
  assert.notEqual(
    createHash("sha256").update(rewritten).digest("hex"),
    damagedSha,
    "the entry was rewritten",
  );
  assert.equal(rewritten[at], bytes[at]! ^ 0xff, "with the decoded bytes");
});
