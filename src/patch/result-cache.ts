import { createHash, randomBytes } from "node:crypto";
import { copyFile, link, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundled } from "../build/bundled.ts";
import { placeDirectory } from "../fs/atomic.ts";
import { fileChecksum } from "../stream/checksum.ts";
import { installedChanges, type PackageFix, type PatchEngine } from "./engines/engine.ts";

/**
 * Patch layers kept for a second patch of the same base: a native engine's result is a function
 * of the image (its config digest: the layers by diff_id, each checked by the layer cache when it
 * is extracted, and the platform; not the manifest digest, which annotations and the layers'
 * compression change without changing the tree), the exact packages installed (by digest), what
 * else its plan says shapes it (whether scripts ran), and the layer compression, so the same
 * inputs may reuse the layer built before instead of unpacking and configuring again. A fleet's
 * copies of one image (re-tagged, annotated, re-compressed by a registry) share one entry. The
 * file is re-hashed before reuse.
 */
interface CachedPatch {
  layer: { digest: string; size: number; diffID: string; uncompressedSize: number; droppedUnchanged: number };
  changed: { name: string; from?: string; to: string }[];
  failed: { name: string; reason: string }[];
  warnings: string[];
  /** What the packages fix (update-all; see PlatformResult.fixes), kept when `keepsFixes`. */
  fixes?: PackageFix[];
}

/** Bump when anything that shapes the layer changes (unpacker, excludes, tar writer). */
const FORMAT = "suture-native-result-1";

async function patchResultKey(parts: readonly string[]): Promise<string> {
  return createHash("sha256")
    .update([FORMAT, await codeFingerprint(), ...parts].join("\n"))
    .digest("hex");
}

let fingerprint: Promise<string> | undefined;

/**
 * A hash of the code that shapes a patch layer (the engines, package databases, tar, the layer
 * builder), so a changed suture never reuses a layer an older one built. From the sources beside
 * this file, or in a bundle (the CLI's, the Action's) the same hash, taken of the same sources
 * when it was built.
 */
function codeFingerprint(): Promise<string> {
  fingerprint ??= bundled
    ? Promise.resolve(bundled.codeFingerprint)
    : codeFingerprintOf(fileURLToPath(new URL(".", import.meta.url)));
  return fingerprint;
}

/** codeFingerprint of the sources whose src/patch directory is `patchDir`. */
export async function codeFingerprintOf(patchDir: string): Promise<string> {
  const hash = createHash("sha256");
  for (const dir of ["engines", "../layer", "../distro", "../archive"]) {
    const abs = join(patchDir, dir);
    const names = (await readdir(abs, { recursive: true }).catch(() => [] as string[]))
      .filter((n) => n.endsWith(".ts") && !n.endsWith(".test.ts"))
      .sort();
    for (const n of names) hash.update(n).update(await readFile(join(abs, n)));
  }
  return hash.digest("hex");
}

function entryDir(cacheDir: string, key: string): string {
  return join(cacheDir, "results", key);
}

/** The cached result and its layer file, when present and intact. */
async function loadCachedPatch(
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
async function storeCachedPatch(
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

/**
 * An engine whose results are kept and reused: when the engine's plan for this image is one it
 * carried out before (same packages by digest, same reuse key, same compression and code), apply
 * returns the layer built then instead of installing anything; otherwise it applies and keeps the
 * layer the pipeline builds from the result. Engines without a plan or a reuse key pass through.
 */
export function withResultCache(
  engine: PatchEngine,
  options: {
    cacheDir: string;
    /** The source's config digest (after the old patch layer is stripped). */
    imageConfigDigest: string;
    compression: string;
    /** The layer's clamped time (LayerTimes.epoch): SOURCE_DATE_EPOCH may change it for the same image. */
    layerEpoch: number;
    /**
     * The run reads what the packages fix (update-all): the entry keeps those fixes, and is one of
     * its own, so a layer kept by a run that did not read them is never reused without them.
     */
    keepsFixes?: boolean;
  },
): PatchEngine {
  const plan = engine.plan?.bind(engine);
  if (!plan) return engine;
  return {
    kind: engine.kind,
    description: engine.description,
    plan,
    async apply(sandbox, targets, ctx, given) {
      const planned = given ?? (await plan(sandbox, targets, ctx));
      if (!planned.reuseKey || planned.install.length === 0)
        return engine.apply(sandbox, targets, ctx, planned);
      const key = await patchResultKey([
        `config ${options.imageConfigDigest}`,
        options.compression,
        `epoch ${options.layerEpoch}`,
        ...planned.reuseKey,
        ...planned.install.map((p) => `${p.name} ${p.to} ${p.digest}`),
        ...(options.keepsFixes ? ["fixes"] : []),
      ]);
      const cached = await loadCachedPatch(options.cacheDir, key);
      if (cached) {
        const { meta, file } = cached;
        for (const message of planned.warnings) ctx.progress({ type: "warning", message });
        ctx.progress({
          type: "info",
          message: "reusing the patch layer built earlier for this image and these packages",
        });
        return {
          before: new Map(meta.changed.flatMap((c) => (c.from ? [[c.name, c.from] as const] : []))),
          after: new Map(meta.changed.map((c) => [c.name, c.to] as const)),
          failed: meta.failed,
          warnings: meta.warnings,
          reusedLayer: { file, ...meta.layer },
          ...(options.keepsFixes ? { fixes: meta.fixes ?? [] } : {}),
        };
      }
      const result = await engine.apply(sandbox, targets, ctx, planned);
      return {
        ...result,
        keepLayer: (layer, outcome) =>
          storeCachedPatch(options.cacheDir, key, layer.file, {
            layer: {
              digest: layer.digest,
              size: layer.size,
              diffID: layer.diffID,
              uncompressedSize: layer.uncompressedSize,
              droppedUnchanged: layer.droppedUnchanged,
            },
            changed: [...installedChanges(result.before, result.after)].map(([name, v]) => ({ name, ...v })),
            failed: outcome.failed,
            warnings: outcome.warnings,
            ...(outcome.fixes ? { fixes: [...outcome.fixes] } : {}),
          }),
      };
    },
  };
}
