/**
 * Issue 11: a "slim" image (Docker's debian:*-slim shape: /etc/dpkg/dpkg.cfg.d/docker excludes docs,
 * man pages, info pages, translations and lintian overrides, and the image lacks them) patched by
 * the native engine and by the image's own apt. dpkg honours the exclusions, so the native unpacker
 * must too: both patch layers hold the same paths, and neither brings an excluded file back.
 * Needs root, runc, umoci and the Debian archive. About 2-3 minutes.
 */
import assert from "node:assert/strict";
import { createReadStream } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decompressAuto } from "../../src/archive/compression.ts";
import { readTar } from "../../src/archive/tar/read.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { patchIntoOciDir } from "../lab/cli.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "runc", "tool:mmdebstrap", "tool:umoci");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-slim-"));
});
after(() => rm(work, { recursive: true, force: true }));

/** Packages with pending fixes that ship docs, man pages, translations and lintian overrides. */
const PACKAGES = [
  "apt",
  "libapt-pkg6.0",
  "libpam0g",
  "libpam-modules",
  "libpam-modules-bin",
  "libpam-runtime",
];

/**
 * Paths in a patch layer that depend on how the packages got there, not on what they install:
 * the bookkeeping of dpkg's and apt's own runs (as in the engine differential test), and
 * /var/lib/apt, which is in the layer only because apt's extended_states changed in it.
 */
const RUN_BOOKKEEPING =
  /^var\/(lib\/dpkg\/(status-old|available|available-old|diversions-old|statoverride-old|lock.*|triggers\/(Lock|Unincorp))|cache\/debconf(\/.*)?|lib\/apt(\/extended_states)?|cache\/ldconfig\/aux-cache)$/;

/** `path type` of every entry of the image's top layer (the patch layer). */
async function patchLayerEntries(layout: string, tag: string): Promise<string[]> {
  const blob = (digest: string) => join(layout, "blobs", ...digest.split(":"));
  const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as {
    manifests: { digest: string; annotations?: Record<string, string> }[];
  };
  const entry = index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag);
  assert.ok(entry, `${layout} has ${tag}`);
  const manifest = JSON.parse(await readFile(blob(entry.digest), "utf8")) as { layers: { digest: string }[] };
  const out: string[] = [];
  for await (const e of readTar(decompressAuto(createReadStream(blob(manifest.layers.at(-1)!.digest)))))
    out.push(`${e.header.path.replace(/^\.\//, "").replace(/\/$/, "")} ${e.header.type}`);
  return out.sort();
}

async function patchWith(engine: "native" | "sandbox", reference: string, report: string): Promise<string[]> {
  const out = join(work, engine);
  await patchIntoOciDir({ reference, engine, out, cacheDir: join(work, "cache"), report });
  return patchLayerEntries(out, engine);
}

/** Trees the slim configuration excludes; inside them only copyrights and locale.alias are files. */
const EXCLUDED_TREE = /^usr\/share\/(doc|man|info|locale|lintian\/overrides|groff|linda)\//;
const KEPT_FILE = /^usr\/share\/(doc\/[^/]+\/copyright|locale\/locale\.alias)$/;

test("patching a slim image brings back none of the docs, man pages and translations it excludes, like apt", async () => {
  const lab = await labImage("bookwormSlim");
  const { path: report, fixes } = await trivyReportFor("bookwormSlim", {
    only: PACKAGES,
    outFile: join(work, "report.json"),
  });
  assert.ok(
    fixes.some((f) => f.name === "apt"),
    "the slim image has pending fixes for apt",
  );

  const native = await patchWith("native", lab.reference, report);
  const sandbox = await patchWith("sandbox", lab.reference, report);

  const unexpected = native.filter((e) => {
    const [path, type] = e.split(" ");
    return EXCLUDED_TREE.test(path!) && type === "file" && !KEPT_FILE.test(path!);
  });
  assert.deepEqual(unexpected, [], "no excluded file is in the native patch layer");
  assert.ok(
    native.some((e) => e.startsWith("usr/bin/apt ")),
    "the patch layer has the new apt",
  );

  const relevant = (entries: string[]) =>
    new Set(entries.filter((e) => !RUN_BOOKKEEPING.test(e.split(" ")[0]!)));
  const [n, sb] = [relevant(native), relevant(sandbox)];
  assert.deepEqual(
    { onlyNative: [...n].filter((e) => !sb.has(e)), onlySandbox: [...sb].filter((e) => !n.has(e)) },
    { onlyNative: [], onlySandbox: [] },
    "both engines' patch layers hold the same paths",
  );
});
