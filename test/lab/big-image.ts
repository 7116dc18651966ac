/**
 * The "big" lab image (issue 15): the nginx lab image plus ten layers of an application stack
 * shaped like a Python/ML install — per layer a site-packages tree of ~2,400 small text files, one
 * large extension module, one model file and a shared library in /usr/local/lib (what ldconfig
 * sees) — about 1.6 GB uncompressed in all. The content is generated from fixed seeds (AES-CTR
 * keystream for the binary parts, templates for the text), so every build gives the same blobs; it
 * is never downloaded. Cached in the lab cache by the nginx recipe's hash and BUILDER, under the
 * lab's lock discipline (cache.ts).
 */
import { createCipheriv, createHash } from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { type TarWriteEntry, writeTar } from "../../src/archive/tar/write.ts";
import { acquireLock, labCacheDir, releaseLock } from "./cache.ts";
import { labImage } from "./images.ts";
import { layoutWriter } from "./oci-layout.ts";

/** Bump when the generated content changes: the cache entry's name follows it. */
const BUILDER = "big-nginx-1";
export const BIG_EXTRA_LAYERS = 10;
const MTIME = 1767225600;
const SMALL_DIRS = 40;
const SMALL_FILES_PER_DIR = 60;
const EXTENSION_BYTES = 60 * 1024 * 1024;
const MODEL_BYTES = 80 * 1024 * 1024;
const LIBRARY_BYTES = 4 * 1024 * 1024;

export interface BigLabImage {
  layoutDir: string;
  reference: string;
  /** Uncompressed bytes of the ten added layers. */
  addedBytes: number;
  /** Compressed bytes of the ten added layers. */
  addedCompressedBytes: number;
}

export async function bigLabImage(): Promise<BigLabImage> {
  const base = await labImage("bookwormNginx");
  const key = createHash("sha256").update(`${BUILDER}\n${base.recipeHash}`).digest("hex").slice(0, 16);
  const entry = join(labCacheDir(), `bookwormNginxBig-${key}`);
  const facts = join(entry, "big-image.json");
  if (!existsSync(facts)) {
    const lock = `${entry}.lock`;
    if (await acquireLock(lock, async () => existsSync(facts))) {
      try {
        if (!existsSync(facts)) await build(base.layoutDir, entry);
      } finally {
        await releaseLock(lock);
      }
    }
  }
  const info = JSON.parse(await readFile(facts, "utf8")) as {
    addedBytes: number;
    addedCompressedBytes: number;
  };
  const layoutDir = join(entry, "oci");
  return { layoutDir, reference: `oci:${layoutDir}:latest`, ...info };
}

async function build(baseLayout: string, entry: string): Promise<void> {
  const work = await mkdtemp(`${entry}.build-`);
  try {
    const layout = join(work, "oci");
    const writer = await layoutWriter(layout);
    const blob = (digest: string) => readFile(join(baseLayout, "blobs", "sha256", digest.slice(7)));
    const index = JSON.parse(await readFile(join(baseLayout, "index.json"), "utf8"));
    const baseManifestDescriptor = index.manifests[0];
    const manifest = JSON.parse((await blob(baseManifestDescriptor.digest)).toString("utf8"));
    const config = JSON.parse((await blob(manifest.config.digest)).toString("utf8"));
    for (const l of manifest.layers) await writer.reuse(baseLayout, l.digest);
    const added: { digest: string; size: number; diffID: string; raw: number }[] = [];
    // Two layers at a time: gzip is the slow part and the machine has two cores.
    let next = 0;
    const worker = async () => {
      while (next < BIG_EXTRA_LAYERS) {
        const i = next++;
        added[i] = await writeLayer(layout, i);
      }
    };
    await Promise.all([worker(), worker()]);
    const created = new Date(MTIME * 1000).toISOString().replace(".000Z", "Z");
    config.rootfs.diff_ids.push(...added.map((a) => a.diffID));
    config.history = [
      ...(config.history ?? []),
      ...added.map((_, i) => ({ created, created_by: `pip install mlpkg${i} # suture lab big image` })),
    ];
    const configDesc = await writer.put(Buffer.from(JSON.stringify(config)));
    manifest.config = { ...manifest.config, ...configDesc };
    manifest.layers = [
      ...manifest.layers,
      ...added.map((a) => ({
        mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
        digest: a.digest,
        size: a.size,
      })),
    ];
    const manifestDesc = await writer.put(Buffer.from(JSON.stringify(manifest)));
    await writer.tag(baseManifestDescriptor.mediaType, manifestDesc);
    await writeFile(
      join(work, "big-image.json"),
      JSON.stringify({
        addedBytes: added.reduce((n, a) => n + a.raw, 0),
        addedCompressedBytes: added.reduce((n, a) => n + a.size, 0),
      }),
    );
    await rename(work, entry);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Generate layer `i`, gzip it into the layout; its digest, size, diff_id and uncompressed size. */
async function writeLayer(layout: string, i: number) {
  const tmp = join(layout, `layer-${i}.tmp`);
  const rawHash = createHash("sha256");
  const gzHash = createHash("sha256");
  let raw = 0;
  let size = 0;
  await pipeline(
    Readable.from(writeTar(layerEntries(i))),
    new Transform({
      transform(chunk: Buffer, _e, cb) {
        rawHash.update(chunk);
        raw += chunk.length;
        cb(null, chunk);
      },
    }),
    createGzip(),
    new Transform({
      transform(chunk: Buffer, _e, cb) {
        gzHash.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    }),
    createWriteStream(tmp),
  );
  const hex = gzHash.digest("hex");
  await mkdir(join(layout, "blobs", "sha256"), { recursive: true });
  await rename(tmp, join(layout, "blobs", "sha256", hex));
  return { digest: `sha256:${hex}`, size, diffID: `sha256:${rawHash.digest("hex")}`, raw };
}

function* layerEntries(i: number): Generator<TarWriteEntry> {
  const dir = (path: string): TarWriteEntry => ({
    path,
    type: "directory",
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtime: MTIME,
  });
  const file = (
    path: string,
    size: number,
    body: () => Iterable<Uint8Array>,
    mode = 0o644,
  ): TarWriteEntry => ({
    path,
    type: "file",
    mode,
    uid: 0,
    gid: 0,
    mtime: MTIME,
    size,
    body,
  });
  const site = "usr/local/lib/python3.11/site-packages";
  for (const p of [
    "opt",
    "opt/models",
    "usr",
    "usr/local",
    "usr/local/lib",
    "usr/local/lib/python3.11",
    site,
  ])
    yield dir(p);
  yield dir(`opt/models/mlpkg${i}`);
  yield file(`opt/models/mlpkg${i}/weights.bin`, MODEL_BYTES, () => binary(`model-${i}`, MODEL_BYTES));
  yield file(`usr/local/lib/libmlrt${i}.so.1`, LIBRARY_BYTES, () => binary(`lib-${i}`, LIBRARY_BYTES), 0o755);
  const pkg = `${site}/mlpkg${i}`;
  yield dir(pkg);
  yield file(
    `${pkg}/_core.cpython-311-x86_64-linux-gnu.so`,
    EXTENSION_BYTES,
    () => binary(`ext-${i}`, EXTENSION_BYTES),
    0o755,
  );
  for (let d = 0; d < SMALL_DIRS; d++) {
    yield dir(`${pkg}/sub${d}`);
    for (let f = 0; f < SMALL_FILES_PER_DIR; f++) {
      const text = pythonSource(i, d, f);
      yield file(`${pkg}/sub${d}/module_${f}.py`, text.length, () => [text]);
    }
  }
}

/** Python-looking text of 1-12 KiB, different per file (compresses like source code does). */
function pythonSource(i: number, d: number, f: number): Buffer {
  const lines: string[] = [`"""mlpkg${i}.sub${d}.module_${f}: generated for the suture lab."""`, ""];
  const functions = 8 + ((i * 7919 + d * 104729 + f * 1299709) % 90);
  for (let k = 0; k < functions; k++) {
    const c = (i + 1) * (d + 3) * (f + 5) * (k + 7);
    lines.push(`def transform_${d}_${f}_${k}(tensor, scale=${c % 97}):`);
    lines.push(`    """Scale by ${c} and shift by ${c % 13}."""`);
    lines.push(`    return [value * scale + ${c % 13} for value in tensor]`, "");
  }
  return Buffer.from(lines.join("\n"));
}

/**
 * `size` bytes, half keystream (does not compress, like machine code and weights) and half a
 * repeating low-entropy pattern (compresses, like tables and padding), in 64 KiB pieces.
 */
function* binary(seed: string, size: number): Generator<Buffer> {
  const key = createHash("sha256").update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv("aes-128-ctr", key, Buffer.alloc(16));
  const piece = 64 * 1024;
  const zeros = Buffer.alloc(piece);
  const pattern = Buffer.alloc(piece);
  for (let b = 0; b < piece; b++) pattern[b] = (b * 31) & 0x3f;
  for (let off = 0, n = 0; off < size; off += piece, n++) {
    const len = Math.min(piece, size - off);
    yield n % 2 === 0 ? cipher.update(zeros.subarray(0, len)) : Buffer.from(pattern.subarray(0, len));
  }
}
