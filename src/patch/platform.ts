import { mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import { type DistroInfo, detectDistro, detectDistroInRoot } from "../distro/detect.ts";
import type { OsRelease } from "../distro/os-release.ts";
import { type EolState, type EolTable, eolState } from "../eol/table.ts";
import { SutureError } from "../errors/errors.ts";
import { readFileInRoot } from "../fs/in-root.ts";
import { type Image, imagePlatform } from "../image/image.ts";
import type { ImageSink } from "../image/source.ts";
import { buildPatchLayer, type LayerTimes } from "../layer/patch-layer.ts";
import { appendPatchLayer, recordedOriginalConfig, withoutSuturePatchLayer } from "../mutate/suture-patch.ts";
import { type Compression, layerMediaTypeFor } from "../oci/media-types.ts";
import { formatPlatform } from "../oci/platform.ts";
import { type ProgressSink, withStep } from "../progress/events.ts";
import { checkReportMatchesImage, type ImageDigests } from "../report/image-match.ts";
import { filterPlanByInstalled, type UpdatePlan } from "../report/plan.ts";
import { EarlyLayerView } from "../sandbox/early-view.ts";
import { distinctLayers, LAYERS_AT_ONCE } from "../sandbox/layer-cache.ts";
import { inNoNamespacesMode } from "../sandbox/no-namespaces.ts";
import { withPlainTree } from "../sandbox/plain-tree.ts";
import { type Sandbox, withSandbox } from "../sandbox/sandbox.ts";
import { osIdentity, RELEASE_FILES } from "../sbom/os-identity.ts";
import { sourceDateEpoch } from "../sbom/sbom.ts";
import {
  type EarlyContext,
  type EngineChoice,
  type EngineContext,
  type EngineKind,
  type EngineResult,
  installedChanges,
  type PackageFix,
  type PackageManager,
  type PatchEngine,
  type PatchLayerFile,
  selectEngine,
  type Targets,
  validateTargets,
} from "./engines/engine.ts";
import { PACKAGE_MANAGERS } from "./engines/package-managers.ts";
import { withResultCache } from "./result-cache.ts";

export { hasSuturePatchLayer } from "../mutate/suture-patch.ts";
export type { EngineChoice } from "./engines/engine.ts";

/** What happened to one platform of the image. */
export interface PlatformResult {
  platform: string;
  status: "patched" | "up-to-date" | "dry-run" | "skipped" | "failed";
  /** Why a platform was skipped or failed. */
  reason?: string;
  /** The report's plan restricted to what is installed (undefined in update-all mode). */
  plan?: UpdatePlan;
  changed: { name: string; from?: string; to: string }[];
  failed: { name: string; reason: string }[];
  /** Digest of the patched manifest (patched) or of the untouched one (otherwise). */
  digest?: string;
  layer?: { size: number; uncompressedSize: number; diffID: string; droppedUnchanged: number };
  warnings: string[];
  /** The engine that applied the updates. */
  engine?: EngineKind;
  /** Time spent in maintainer scripts and triggers (native engine). */
  scriptsMs?: number;
  /** Whether the image's release is still supported (src/eol/). */
  eol?: EolState;
  /** Dry run without a report: what updating every package would install, from the verified repositories. */
  planned?: { name: string; from?: string; to: string; reason: string }[];
  /**
   * Update-all only (with a report, the report says what is fixed): per updated package, the
   * vulnerability IDs its own package file says it fixes (Debian changelog, RPM %changelog) and
   * where it says so. Packages the package manager cannot tell about are not listed.
   */
  fixes?: PackageFix[];
  /** The image's OS as scanners name it (family, release), for the VEX's package purls. */
  os?: { family: string; version: string };
}

export interface PatchPlatformContext {
  cacheDir: string;
  /** Scratch space of this patch run (the layer file lives here until the image is written). */
  workRoot: string;
  /** Name recorded as the original image (BaseImage label, base.name annotation). */
  baseName: string;
  /** How to name the image being patched in messages (default baseName). */
  imageName?: string;
  ignoreErrors?: boolean;
  dryRun?: boolean;
  timeoutMs?: number;
  compression?: Compression;
  /** Which engine applies the updates (default auto, see selectEngine in engines/engine.ts). */
  engine?: EngineChoice;
  /** Extra trusted key files (`--keyring`): see EngineContext.keyringFiles. */
  keyringFiles?: readonly string[];
  /** Accept unsigned repositories an image's apt.conf allows (native engine). */
  allowInsecureRepositories?: boolean;
  /** `--ignore-report-image`: use a report that names another image (see checkReportMatchesImage). */
  ignoreReportImage?: boolean;
  /** The registry repository the image was read from, when it was (compared with a report's image name). */
  repository?: string;
  /** Other digests naming the image where it was read (ImageDigests.aliases). */
  imageAliases?: readonly string[];
  /** Repository URI → mirror URI (`--mirror`); signatures are still checked against the image's keys. */
  mirrors?: Readonly<Record<string, string>>;
  /** The EOL table releases are judged by (a release past support is a warning). */
  eolTable: EolTable;
  /** `--exit-on-eol`: a release past every phase of its support is END_OF_LIFE, before any work. */
  exitOnEol?: boolean;
  /** The day EOL states are for (default today). */
  now?: Date;
  /** Where the patch layer is uploaded as it is built (the registry sink's), if anywhere. */
  layerUpload?: ImageSink["beginBlobUpload"];
  progress: ProgressSink;
  signal?: AbortSignal;
}

/**
 * Patch one platform's image, as a pipeline: strip a previous suture patch layer → materialise the
 * layers under an overlay → the engine the package manager and `--engine` select → validate the
 * targets → build the one patch layer from what changed → annotate. Returns the edited image value
 * (nothing is written here). `plan` undefined means update-all.
 */
export async function patchPlatformImage(
  original: Image,
  plan: UpdatePlan | undefined,
  ctx: PatchPlatformContext,
): Promise<{ result: PlatformResult; image?: Image }> {
  const platform = imagePlatform(original);
  const name = formatPlatform(platform);
  const progress: ProgressSink = (e) => ctx.progress({ ...e, platform: name });
  const result: PlatformResult = {
    platform: name,
    status: "up-to-date",
    changed: [],
    failed: [],
    digest: original.manifest.digest,
    warnings: [],
  };
  const warn = (message: string) => {
    result.warnings.push(message);
    progress({ type: "warning", message });
  };
  const base = withoutSuturePatchLayer(original);
  const compression = ctx.compression ?? "gzip";
  const times: LayerTimes = {
    // A second early: file times come from the kernel's coarse clock, which may lag Date.now().
    writtenSince: Math.floor(Date.now() / 1000) - 1,
    epoch: patchEpoch(base),
  };
  const workDir = await mkdtemp(join(ctx.workRoot, "platform-"));
  /** Which engine, and the report's plan restricted to what the image has installed. */
  const prepare = (distro: DistroInfo) => {
    result.eol = checkEndOfLife(distro.osRelease, ctx, progress, warn);
    const { manager, engine } = selectEngine(ctx.engine ?? "auto", distro, PACKAGE_MANAGERS);
    if (inNoNamespacesMode()) assertNoNamespacesCanPatch(manager, engine);
    result.engine = engine.kind;
    if (plan) {
      const identity = {
        name: ctx.imageName ?? ctx.baseName,
        osRelease: distro.osRelease,
        packageDb: distro.packageDb,
        installed: distro.installed,
        architecture: platform.architecture,
        variant: platform.variant,
        digests: { ...imageDigests(original), aliases: ctx.imageAliases },
        repository: ctx.repository,
      };
      for (const message of checkReportMatchesImage(plan, identity, {
        ignoreReportImage: ctx.ignoreReportImage,
      }))
        warn(message);
    }
    const filtered = plan ? filterPlanByInstalled(plan, distro.installed ?? new Map()) : undefined;
    result.plan = filtered;
    return { manager, engine, filtered };
  };
  if (ctx.dryRun && plan) {
    // A dry run with a report needs only os-release and the package database: they are read from
    // the layers as they stream, and nothing is extracted or written.
    const distro = await withStep(progress, "detect", "reading the package database from the layers", () =>
      detectDistro(base, { signal: ctx.signal }),
    );
    prepare(distro);
    result.status = "dry-run";
    return { result };
  }
  const sparse = sparseLowersPay(ctx);
  // With sparse lowers, engines can start what needs only a few early files of the image (the
  // native deb engine opens its repositories) while the rest of the layers is extracted. Its reads
  // wait for the first wave of layers only (early-view.ts).
  const earlyView = sparse
    ? new EarlyLayerView(distinctLayers(base).length, { waitFor: LAYERS_AT_ONCE })
    : undefined;
  const early = earlyView ? startEarlyWork(earlyView, ctx, platform, plan) : [];
  const layer = await (inNoNamespacesMode() ? withPlainTree : withSandbox)(
    base,
    { cacheDir: ctx.cacheDir, workRoot: workDir, progress, signal: ctx.signal, sparse, early: earlyView },
    async (sb): Promise<PatchLayerFile | undefined> => {
      const distro = await detectDistroInRoot(sb.mergedDir);
      const { manager, engine, filtered } = prepare(distro);
      // Sparse lowers serve suture's own deb engine, which reads packages' paths only; apk and
      // rpm engines and the image's own tools read more, so they get the whole tree.
      if (sb.complete && !(manager.name === "dpkg" && engine.kind === "native")) await sb.complete();
      if (filtered && filtered.updates.length === 0) return undefined;
      const targets: Targets = filtered
        ? filtered.updates.map((u) => ({
            name: u.name,
            fixedVersion: u.fixedVersion,
            installedVersion: u.installedVersion,
          }))
        : "all";
      const engineCtx: EngineContext = {
        platform,
        distro,
        cacheDir: ctx.cacheDir,
        workDir,
        mirrors: ctx.mirrors,
        keyringFiles: ctx.keyringFiles,
        allowInsecureRepositories: ctx.allowInsecureRepositories,
        ignoreErrors: ctx.ignoreErrors,
        timeoutMs: ctx.timeoutMs,
        progress,
        signal: ctx.signal,
        early,
      };
      if (ctx.dryRun) {
        await dryRun(manager, engine, sb, engineCtx, result);
        return undefined;
      }
      const readsFixes = targets === "all" && manager.readFixes !== undefined;
      if (readsFixes) result.os = await scannerOs(sb.mergedDir, distro);
      const cached = withResultCache(engine, {
        cacheDir: ctx.cacheDir,
        // The config names the layers by diff_id (the layer cache checks each against it) and
        // the platform: the lower tree the engine sees. The manifest digest would also change
        // with annotations or layer compression, which shape nothing in the patch layer.
        imageConfigDigest: base.parsed.config.digest,
        compression,
        layerEpoch: times.epoch,
        keepsFixes: readsFixes,
      });
      const applied = await withStep(progress, "apply", engine.description, () =>
        cached.apply(sb, targets, engineCtx),
      );
      return validateAndLayer(applied, targets, manager, sb, {
        ctx,
        workDir,
        compression,
        times,
        result,
        warn,
        distro,
      });
    },
  ).finally(async () => {
    // What no engine took (another engine patched, nothing to update, a failure) stops here.
    earlyView?.close();
    await Promise.all(early.map((w) => w.cancel()));
  });
  if (!layer) return { result };

  const patched = appendPatchLayer(
    base,
    {
      descriptor: {
        mediaType: layerMediaTypeFor(base.manifest.mediaType, compression),
        digest: layer.digest,
        size: layer.size,
      },
      diffID: layer.diffID,
      path: layer.file,
    },
    {
      created: (sourceDateEpoch() ?? new Date()).toISOString().replace(/\.\d+Z$/, "Z"),
      baseName: ctx.baseName,
      packageCount: result.changed.length,
      originalConfig: originalConfigOf(original),
    },
  );
  result.status = "patched";
  result.digest = patched.manifest.digest;
  result.layer = {
    size: layer.size,
    uncompressedSize: layer.uncompressedSize,
    diffID: layer.diffID,
    droppedUnchanged: layer.droppedUnchanged,
  };
  return { result, image: patched };
}

/**
 * Each engine's early work that `--engine` allows; each decides from the files whether the image is
 * its kind. `SUTURE_EARLY=0` turns it off (the bench's and tests' comparison).
 */
function startEarlyWork(
  files: EarlyLayerView,
  ctx: PatchPlatformContext,
  platform: EarlyContext["platform"],
  plan: UpdatePlan | undefined,
) {
  if (ctx.dryRun || process.env.SUTURE_EARLY === "0") return [];
  const engines = PACKAGE_MANAGERS.map((m) => (ctx.engine === "sandbox" ? m.sandbox : m.native));
  const earlyCtx: EarlyContext = {
    platform,
    cacheDir: ctx.cacheDir,
    mirrors: ctx.mirrors,
    keyringFiles: ctx.keyringFiles,
    allowInsecureRepositories: ctx.allowInsecureRepositories,
    signal: ctx.signal,
    targets: plan?.updates.map((u) => ({ name: u.name, fixedVersion: u.fixedVersion })),
  };
  return engines.flatMap((e) => e?.startEarly?.(files, earlyCtx) ?? []);
}

/**
 * Whether the sandbox starts with sparse lowers (sandbox/sparse-layers.ts): where the patch may
 * need no program of the image and the lowers are an overlay's — not in the no-namespaces mode
 * (a plain copy of the tree), not for a dry run (nothing is layered), not with `--engine
 * sandbox` (apt reads everything). `SUTURE_SPARSE=0` turns it off (the differential test, the bench).
 */
function sparseLowersPay(ctx: PatchPlatformContext, env: NodeJS.ProcessEnv = process.env): boolean {
  return env.SUTURE_SPARSE !== "0" && !ctx.dryRun && ctx.engine !== "sandbox" && !inNoNamespacesMode();
}

/**
 * The no-namespaces mode runs no code of the image and has only the dpkg engine's owner records
 * so far: refuse the rest in one line, before anything is extracted, naming the mode that patches it.
 */
function assertNoNamespacesCanPatch(manager: PackageManager, engine: PatchEngine): void {
  if (engine.kind !== "native")
    throw new SutureError(
      "NEEDS_RUNTIME",
      `--engine ${engine.kind} runs the image's own package manager, which the no-namespaces mode cannot run: use --engine native, or patch as root or where user namespaces work (suture doctor)`,
    );
  if (manager.name !== "dpkg")
    throw new SutureError(
      "NEEDS_RUNTIME",
      `the no-namespaces mode patches Debian and Ubuntu (dpkg) images only so far, and this is a ${manager.serves.replace(/ images$/, "")} image: patch it as root, or where user namespaces work (suture doctor)`,
    );
}

/**
 * The time a patch layer gives what the patch wrote without a package-given time (LayerTimes):
 * SOURCE_DATE_EPOCH when set (the reproducible-builds convention: whoever verifies passes the
 * same); else the source image's own creation time, as the last entry of its history records it
 * (then its config's `created`; history first because a re-patched image's `created` is the
 * previous patch's, while its history, the old patch entry dropped, is the original's); else
 * 1970. It is read from the input, so anyone redoing the patch gets it, and it names the state
 * the layer builds on. Not the newest package's build time: that would need every package's
 * metadata at layer time, and moves whenever one more package is updated.
 */
export function patchEpoch(base: Image, env: NodeJS.ProcessEnv = process.env): number {
  const fromEnv = sourceDateEpoch(env);
  if (fromEnv) return fromEnv.getTime() / 1000;
  const recorded = [...(base.config.history ?? [])].reverse().find((h) => h.created)?.created;
  for (const created of [recorded, base.config.created]) {
    const ms = created ? Date.parse(created) : Number.NaN;
    if (Number.isFinite(ms) && ms >= 0) return Math.floor(ms / 1000);
  }
  return 0;
}

/**
 * The release's EOL state, said as a warning when it is past its regular support (a patch may find
 * few fixes, or none, and an archived release's repositories are gone from the usual mirror);
 * with `--exit-on-eol`, a release past every phase is END_OF_LIFE.
 */
export function checkEndOfLife(
  os: OsRelease | undefined,
  ctx: Pick<PatchPlatformContext, "eolTable" | "exitOnEol" | "now" | "imageName" | "baseName">,
  progress: ProgressSink,
  warn: (message: string) => void,
): EolState {
  const state = eolState(os, ctx.eolTable, ctx.now);
  if (state.status === "eol" && ctx.exitOnEol)
    throw new SutureError(
      "END_OF_LIFE",
      `${ctx.imageName ?? ctx.baseName}: ${state.message} (stopped by --exit-on-eol; drop it to patch anyway)`,
    );
  if (state.status === "eol" || state.status === "extended") warn(state.message);
  else progress({ type: "info", message: state.message });
  return state;
}

/**
 * The pipeline's validate and layer steps: every target must have reached its fixed version (the
 * same check for every engine), then the one patch layer is built from the overlay's upper dir,
 * or the engine's reused layer is taken. Undefined when nothing changed.
 */
async function validateAndLayer(
  applied: EngineResult,
  targets: Targets,
  manager: PackageManager,
  sb: Sandbox,
  run: {
    ctx: PatchPlatformContext;
    workDir: string;
    compression: Compression;
    times: LayerTimes;
    result: PlatformResult;
    warn: (message: string) => void;
    /** The image as detected before the engine ran. */
    distro: DistroInfo;
  },
): Promise<PatchLayerFile | undefined> {
  const { ctx, result } = run;
  if (applied.scriptsMs !== undefined) result.scriptsMs = Math.round(applied.scriptsMs);
  result.warnings.push(...applied.warnings);
  const validated = validateTargets(targets, applied, manager.compareVersions, ctx.ignoreErrors);
  for (const message of validated.warnings) run.warn(message);
  result.failed = validated.failed;
  result.changed = [...installedChanges(applied.before, applied.after)].map(([n, v]) => ({ name: n, ...v }));
  if (result.changed.length === 0) return undefined;
  if (targets === "all" && manager.readFixes) {
    result.fixes = applied.fixes
      ? [...applied.fixes]
      : await withStep(
          (e) => ctx.progress({ ...e, platform: result.platform }),
          "fixes",
          "reading what the updated packages fix from their changelogs",
          () => readFixes(manager, applied, result, run),
        );
  }
  if (applied.reusedLayer) return applied.reusedLayer;
  const file = join(run.workDir, "layer.tar");
  // "Unchanged from the lowers" must compare with the real lower files, not with a left-out one.
  await sb.ensureUpperPaths?.();
  // buildPatchLayer reports its own step events.
  const built = await buildPatchLayer({
    upperDir: sb.upperDir,
    lowerDirs: sb.lowerDirs,
    outFile: file,
    compression: run.compression,
    keepTouchedFiles: manager.verifiesFileTimes ?? false,
    times: run.times,
    plainTree: sb.plainTree,
    upload:
      ctx.layerUpload &&
      (() => ctx.layerUpload!({ progress: (e) => ctx.progress({ ...e, platform: result.platform }) })),
    progress: (e) => ctx.progress({ ...e, platform: result.platform }),
    signal: ctx.signal,
  });
  const layer: PatchLayerFile = {
    file,
    digest: built.descriptorFields.digest,
    size: built.descriptorFields.size,
    diffID: built.diffID,
    uncompressedSize: built.uncompressedSize,
    droppedUnchanged: built.stats.droppedUnchanged,
  };
  await applied.keepLayer?.(layer, { failed: result.failed, warnings: result.warnings, fixes: result.fixes });
  return layer;
}

/**
 * The pipeline's fixes step (update-all): each changed package's verified file, as the engine
 * installed it, read by the package manager. A package the engine left no file for (the sandbox
 * engine's tool fetched it itself) is named in one warning: the VEX claims nothing for it.
 */
async function readFixes(
  manager: PackageManager,
  applied: EngineResult,
  result: PlatformResult,
  run: { warn: (message: string) => void; distro: DistroInfo; ctx: { signal?: AbortSignal } },
): Promise<PackageFix[]> {
  const files = new Map((applied.packageFiles ?? []).map((f) => [`${f.name} ${f.version}`, f.file]));
  const updated = result.changed.flatMap((c) => {
    const file = files.get(`${c.name} ${c.to}`);
    return file ? [{ ...c, file }] : [];
  });
  const missing = result.changed.filter((c) => c.from !== undefined && !files.has(`${c.name} ${c.to}`));
  if (missing.length)
    run.warn(
      `no verified package file of ${missing.map((c) => c.name).join(", ")} to read what it fixes: the VEX claims nothing for ${missing.length === 1 ? "it" : "them"}`,
    );
  return updated.length ? manager.readFixes!(updated, { distro: run.distro, signal: run.ctx.signal }) : [];
}

/** The unpatched image's OS as a scanner names it (Debian's release from /etc/debian_version). */
async function scannerOs(
  root: string,
  distro: DistroInfo,
): Promise<{ family: string; version: string } | undefined> {
  const files = new Map<string, Buffer>();
  for (const path of RELEASE_FILES) {
    const bytes = await readFileInRoot(root, path, { limit: 64 * 1024 }).catch(() => undefined);
    if (bytes) files.set(path, bytes);
  }
  const os = osIdentity(distro, files);
  return os ? { family: os.family, version: os.release } : undefined;
}

/**
 * `--dry-run` without a report: update-all has no list to show until it is resolved, so it is
 * resolved as the chosen engine would, or as the package manager's native engine would when the
 * chosen one resolves inside the image's own tool, downloading and unpacking nothing.
 */
async function dryRun(
  manager: PackageManager,
  engine: PatchEngine,
  sb: Sandbox,
  ctx: EngineContext,
  result: PlatformResult,
): Promise<void> {
  result.status = "dry-run";
  const planner = engine.plan ? engine : manager.native;
  if (!planner?.plan) return;
  const planned = await withStep(
    ctx.progress,
    "plan",
    "resolving updates against the verified repositories",
    () => planner.plan!(sb, "all", ctx),
  );
  for (const message of planned.warnings) {
    result.warnings.push(message);
    ctx.progress({ type: "warning", message });
  }
  result.failed = planned.failed;
  result.planned = planned.install.map(({ name, from, to, reason }) => ({
    name,
    ...(from ? { from } : {}),
    to,
    reason,
  }));
}

/**
 * The digests a report naming its image is compared with: the config and manifest as read and, for
 * an image suture patched, the config it had before (recorded at the first patch; null when an
 * older suture patched it without recording it).
 */
export function imageDigests(image: Image): ImageDigests {
  const digests = { config: image.parsed.config.digest, manifest: image.manifest.digest };
  const original = recordedOriginalConfig(image);
  return original === undefined ? digests : { ...digests, original };
}

/** What a report of the unpatched image names: kept across re-patches (null: an older suture did not record it). */
function originalConfigOf(image: Image): string | null {
  const recorded = recordedOriginalConfig(image);
  return recorded === undefined ? image.parsed.config.digest : recorded;
}
