import { createHash, randomBytes } from "node:crypto";
import { copyFile, link, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { placeDirectory } from "../fs/atomic.ts";
import { fileChecksum } from "../trust/checksum.ts";

/**
 * Patch layers kept for a second patch of the same base: the native engine's result is a function
 * of the image (manifest digest: layers and config), the exact packages installed (by SHA-256),
 * whether scripts ran, and the layer compression, so the same inputs may reuse the layer built
 * before instead of unpacking and configuring again. The file is re-hashed before reuse.
 */
export interface CachedPatch {
  layer: { digest: string; size: number; diffID: string; uncompressedSize: number; droppedUnchanged: number };
  changed: { name: string; from?: string; to: string }[];
  failed: { name: string; reason: string }[];
  warnings: string[];
}

/** Bump when anything that shapes the layer changes (unpacker, excludes, tar writer). */
const FORMAT = "suture-native-result-1";

export async function patchResultKey(parts: readonly string[]): Promise<string> {
  return createHash("sha256")
    .update([FORMAT, await codeFingerprint(), ...parts].join("\n"))
    .digest("hex");
}

let fingerprint: Promise<string> | undefined;

/**
 * A hash of the code that shapes a native patch layer (unpacker, dpkg database, tar, layer builder),
 * so a changed suture never reuses a layer an older one built. suture runs from its sources; when
 * they cannot be read the FORMAT constant alone stands in.
 */
function codeFingerprint(): Promise<string> {
  fingerprint ??= (async () => {
    const hash = createHash("sha256");
    for (const dir of ["engines/dpkg/native", "../layer", "../distro/dpkg", "../archive"]) {
      const abs = fileURLToPath(new URL(`./${dir}/`, import.meta.url));
      const names = (await readdir(abs).catch(() => [] as string[])).filter((n) => n.endsWith(".ts")).sort();
      for (const n of names) hash.update(n).update(await readFile(join(abs, n)));
    }
    return hash.digest("hex");
  })();
  return fingerprint;
}

function entryDir(cacheDir: string, key: string): string {
  return join(cacheDir, "results", key);
}

/** The cached result and its layer file, when present and intact. */
export async function loadCachedPatch(
  cacheDir: string,
  key: string,
): Promise<{ meta: CachedPatch; file: string } | undefined> {
  const dir = entryDir(cacheDir, key);
  let meta: CachedPatch;
  try {
    meta = JSON.parse(await readFile(join(dir, "meta.json"), "utf8")) as CachedPatch;
  } catch {
    return undefined;
  }
  const file = join(dir, "layer");
  const actual = await fileChecksum(file).catch(() => undefined);
  if (!actual) return undefined;
  if (`sha256:${actual.sha256}` !== meta.layer.digest) {
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
  return { meta, file };
}

/** Keep a freshly built layer for next time (written aside, then renamed into place). */
export async function storeCachedPatch(
  cacheDir: string,
  key: string,
  layerFile: string,
  meta: CachedPatch,
): Promise<void> {
  const final = entryDir(cacheDir, key);
  const tmp = `${final}.tmp-${randomBytes(4).toString("hex")}`;
  await mkdir(tmp, { recursive: true });
  try {
    await link(layerFile, join(tmp, "layer")).catch(() => copyFile(layerFile, join(tmp, "layer")));
    await writeFile(join(tmp, "meta.json"), JSON.stringify(meta));
    await placeDirectory(tmp, final);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
