import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type DistroInfo, detectDistroInRoot } from "../distro/detect.ts";
import {
  applyMirrors,
  fileAccessFromRoot,
  formatDeb822Sources,
  readAptSources,
} from "../distro/dpkg/sources.ts";
import { SutureError } from "../errors/errors.ts";
import { listDirInRoot, readFileInRoot, resolveInRoot } from "../fs/in-root.ts";
import { type Image, imagePlatform } from "../image/image.ts";
import { buildPatchLayer } from "../layer/patch-layer.ts";
import { editImage, removeTopLayers } from "../mutate/mutate.ts";
import type { Platform } from "../oci/manifest.ts";
import {
  Annotation,
  BaseImageLabel,
  type Compression,
  layerMediaTypeFor,
  MediaType,
  SutureLabel,
} from "../oci/media-types.ts";
import { formatPlatform, hostPlatform } from "../oci/platform.ts";
import { type ProgressSink, withStep } from "../progress/events.ts";
import { checkReportMatchesImage, type ImageDigests } from "../report/image-match.ts";
import { filterPlanByInstalled, type UpdatePlan } from "../report/plan.ts";
import { withSandbox } from "../sandbox/sandbox.ts";
import { type ListsTrust, listsTrustFor } from "./engines/dpkg/apt-lists.ts";
import { applyNative, planNative } from "./engines/dpkg/native/native.ts";
import { dpkgArchitecture, refuseSourcesMarkedTrusted } from "./engines/dpkg/native/repositories.ts";
import { type AptCacheDirs, type AptResult, applyWithApt } from "./engines/dpkg/sandbox.ts";
import { loadCachedPatch, patchResultKey, storeCachedPatch } from "./result-cache.ts";

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
  engine?: "native" | "sandbox";
  /** Time spent in maintainer scripts and triggers (native engine). */
  scriptsMs?: number;
  /** Dry run without a report: what updating every package would install, from the verified repositories. */
  planned?: { name: string; from?: string; to: string; reason: string }[];
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
  /** Which engine applies the updates (default auto, see chooseEngine). */
  engine?: EngineChoice;
  /** Keyring trusted for images without apt configuration (native engine). */
  keyringFile?: string;
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
  progress: ProgressSink;
  signal?: AbortSignal;
}

/**
 * Patch one platform's image: strip a previous suture patch layer, run the update in a sandbox
 * over the image's layers, build the one patch layer from what changed, and return the edited
 * image value (nothing is written here). `plan` undefined means update-all.
 */
export async function patchPlatformImage(
  original: Image,
  plan: UpdatePlan | undefined,
  ctx: PatchPlatformContext,
): Promise<{ result: PlatformResult; image?: Image }> {
  const platform = imagePlatform(original);
  const name = formatPlatform(platform);
  const progress: ProgressSink = (e) => ctx.progress({ ...e, platform: name });
  let image = original;
  // Re-patching starts again from the original layers, so the result still has one patch layer.
  if (hasSuturePatchLayer(image)) image = removeTopLayers(image, 1);
  const result: PlatformResult = {
    platform: name,
    status: "up-to-date",
    changed: [],
    failed: [],
    digest: original.manifest.digest,
    warnings: [],
  };
  const workDir = await mkdtemp(join(ctx.workRoot, "platform-"));
  const outcome = await withSandbox(
    image,
    { cacheDir: ctx.cacheDir, workRoot: workDir, progress, signal: ctx.signal },
    async (sb) => {
      const distro = await detectDistroInRoot(sb.mergedDir);
      const engine = chooseEngine(ctx.engine ?? "auto", distro);
      result.engine = engine;
      if (plan) {
        const identity = {
          name: ctx.imageName ?? ctx.baseName,
          osRelease: distro.osRelease,
          installed: distro.installed,
          architecture: platform.architecture,
          variant: platform.variant,
          digests: { ...imageDigests(original), aliases: ctx.imageAliases },
          repository: ctx.repository,
        };
        const checkOptions = { ignoreReportImage: ctx.ignoreReportImage };
        for (const message of checkReportMatchesImage(plan, identity, checkOptions)) {
          result.warnings.push(message);
          progress({ type: "warning", message });
        }
      }
      const filtered = plan ? filterPlanByInstalled(plan, distro.installed ?? new Map()) : undefined;
      result.plan = filtered;
      if (ctx.dryRun && filtered) return "dry-run" as const;
      if (filtered && filtered.updates.length === 0) return "up-to-date" as const;
      const targets = filtered
        ? filtered.updates.map((u) => ({
            name: u.name,
            fixedVersion: u.fixedVersion,
            installedVersion: u.installedVersion,
          }))
        : "all";
      if (ctx.dryRun) {
        // Update-all has no list to show until it is resolved: resolve it as the native engine
        // would (whichever engine was chosen), downloading and unpacking nothing.
        const planned = await withStep(
          progress,
          "plan",
          "resolving updates against the verified repositories",
          () =>
            planNative(sb.mergedDir, targets, {
              arch: dpkgArchitecture(platform.architecture, platform.variant),
              os: distro.osRelease,
              cacheDir: ctx.cacheDir,
              mirrors: ctx.mirrors,
              keyringFile: ctx.keyringFile,
              runScripts: false,
              progress,
              signal: ctx.signal,
            }),
        );
        for (const message of planned.warnings) {
          result.warnings.push(message);
          progress({ type: "warning", message });
        }
        result.failed = planned.failed;
        result.planned = planned.install.map((i) => ({
          name: i.entry.package,
          ...(i.from ? { from: i.from } : {}),
          to: i.entry.version,
          reason: i.reason,
        }));
        return "dry-run" as const;
      }
      let apt: AptResult;
      const compression = ctx.compression ?? "gzip";
      let reuseKey: string | undefined;
      let reused: Awaited<ReturnType<typeof loadCachedPatch>>;
      if (engine === "native") {
        // Scripts run in the image when it has what they need; a foreign architecture then needs QEMU.
        const runScripts =
          (await resolveInRoot(sb.mergedDir, "/bin/sh")) !== undefined &&
          (await resolveInRoot(sb.mergedDir, "/usr/bin/dpkg")) !== undefined;
        if (runScripts) await assertCanRun(platform);
        const native = await withStep(progress, "apply", "updating packages with suture's deb engine", () =>
          applyNative(sb, targets, {
            reuse: async (install) => {
              reuseKey = await patchResultKey([
                image.manifest.digest,
                compression,
                String(runScripts),
                ...install.map((i) => `${i.entry.package} ${i.entry.version} ${i.entry.sha256}`),
              ]);
              reused = await loadCachedPatch(ctx.cacheDir, reuseKey);
              return reused !== undefined;
            },
            arch: dpkgArchitecture(platform.architecture, platform.variant),
            os: distro.osRelease,
            cacheDir: ctx.cacheDir,
            mirrors: ctx.mirrors,
            keyringFile: ctx.keyringFile,
            allowInsecureRepositories: ctx.allowInsecureRepositories,
            runScripts,
            ignoreErrors: ctx.ignoreErrors,
            timeoutMs: ctx.timeoutMs,
            progress,
            signal: ctx.signal,
          }),
        );
        result.scriptsMs = Math.round(native.scriptsMs);
        apt = native;
        if (reused) {
          const { meta, file } = reused;
          progress({
            type: "info",
            message: "reusing the patch layer built earlier for this image and these packages",
          });
          result.changed = meta.changed;
          result.failed = meta.failed;
          result.warnings.push(...native.warnings, ...meta.warnings);
          const layer = {
            descriptorFields: { digest: meta.layer.digest, size: meta.layer.size },
            diffID: meta.layer.diffID,
            uncompressedSize: meta.layer.uncompressedSize,
            stats: { droppedUnchanged: meta.layer.droppedUnchanged },
          };
          return { layer, outFile: file, compression };
        }
      } else {
        await assertCanRun(platform);
        // The image's apt would honour trusted=yes; suture asks the user first, as the native engine does.
        if (!ctx.allowInsecureRepositories)
          refuseSourcesMarkedTrusted(await readAptSources(fileAccessFromRoot(sb.mergedDir)).catch(() => []));
        const sourcesDir =
          ctx.mirrors && (await mirroredSources(sb.mergedDir, ctx.mirrors, workDir, progress));
        // Keys and sources are read before the image's apt runs: its hooks may change both.
        const aptCache = await aptCacheFor(
          ctx.cacheDir,
          sourcesDir ?? sb.mergedDir,
          platform.architecture,
          await listsTrustFor(
            sb.mergedDir,
            dpkgArchitecture(platform.architecture, platform.variant),
            ctx.mirrors,
          ),
        );
        apt = await withStep(progress, "apply", "updating packages with the image's apt (runc)", () =>
          applyWithApt(sb, targets, {
            ignoreErrors: ctx.ignoreErrors,
            progress,
            timeoutMs: ctx.timeoutMs,
            cache: aptCache,
            sourcesDir,
            signal: ctx.signal,
            allowInsecureRepositories: ctx.allowInsecureRepositories,
          }),
        );
      }
      result.changed = [...apt.changed].map(([n, v]) => ({ name: n, ...v }));
      result.failed = apt.failed;
      result.warnings.push(...apt.warnings);
      if (apt.changed.size === 0) return "up-to-date" as const;
      const outFile = join(workDir, "layer.tar");
      // buildPatchLayer reports its own step events.
      const layer = await buildPatchLayer({
        upperDir: sb.upperDir,
        lowerDirs: sb.lowerDirs,
        outFile,
        compression,
        progress,
        signal: ctx.signal,
      });
      if (reuseKey) {
        await storeCachedPatch(ctx.cacheDir, reuseKey, outFile, {
          layer: {
            digest: layer.descriptorFields.digest,
            size: layer.descriptorFields.size,
            diffID: layer.diffID,
            uncompressedSize: layer.uncompressedSize,
            droppedUnchanged: layer.stats.droppedUnchanged,
          },
          changed: result.changed,
          failed: result.failed,
          warnings: result.warnings,
        });
      }
      return { layer, outFile, compression };
    },
  );
  if (typeof outcome === "string") {
    result.status = outcome;
    return { result };
  }

  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const { layer, outFile, compression } = outcome;
  const patched: Image = editImage(image, {
    addLayers: [
      {
        descriptor: {
          mediaType: layerMediaTypeFor(image.manifest.mediaType, compression),
          digest: layer.descriptorFields.digest,
          size: layer.descriptorFields.size,
        },
        diffID: layer.diffID,
        path: outFile,
      },
    ],
    config: (c) => {
      c.created = now;
      c.history = [
        ...(c.history ?? []),
        { created: now, created_by: `suture patch (${result.changed.length} packages)`, comment: "suture" },
      ];
      c.config ??= {};
      c.config.Labels = {
        ...(c.config.Labels ?? {}),
        [BaseImageLabel]: ctx.baseName,
        [SutureLabel.patchedLayerDiffId]: layer.diffID,
      };
      // What a report of the unpatched image names: kept across re-patches; left out when an older
      // suture made the first patch without recording it (this image's config is not that one).
      const { original: before } = imageDigests(original);
      if (before !== null) c.config.Labels[SutureLabel.baseConfig] = before ?? original.parsed.config.digest;
    },
    manifest: (m) => {
      if ((m.mediaType ?? image.manifest.mediaType) !== MediaType.ociManifest) return; // schema 2 has no annotations
      m.annotations = {
        ...(m.annotations ?? {}),
        [Annotation.created]: now,
        [Annotation.copaPatched]: now,
        [Annotation.baseName]: ctx.baseName,
        [Annotation.baseDigest]: image.manifest.digest,
      };
    },
  });
  result.status = "patched";
  result.digest = patched.manifest.digest;
  result.layer = {
    size: layer.descriptorFields.size,
    uncompressedSize: layer.uncompressedSize,
    diffID: layer.diffID,
    droppedUnchanged: layer.stats.droppedUnchanged,
  };
  return { result, image: patched };
}

/**
 * The digests a report naming its image is compared with: the config and manifest as read and, for
 * an image suture patched, the config it had before (recorded at the first patch; null when an
 * older suture patched it without recording it). A recorded value that is not a digest counts as
 * not recorded.
 */
export function imageDigests(image: Image): ImageDigests {
  const digests = { config: image.parsed.config.digest, manifest: image.manifest.digest };
  if (!hasSuturePatchLayer(image)) return digests;
  const recorded = image.config.config?.Labels?.[SutureLabel.baseConfig];
  return { ...digests, original: recorded && /^sha256:[0-9a-f]{64}$/.test(recorded) ? recorded : null };
}

/** Whether the image's top layer is a patch layer suture added (re-patching replaces it). */
export function hasSuturePatchLayer(image: Image): boolean {
  const previous = image.config.config?.Labels?.[SutureLabel.patchedLayerDiffId];
  return previous !== undefined && image.config.rootfs.diff_ids.at(-1) === previous;
}

export type EngineChoice = "auto" | "native" | "sandbox";

/**
 * Which engine patches an image. `auto` is suture's deb engine for every dpkg image: it produced
 * the same trees and package databases as the image's own apt on the lab images (see
 * test/e2e/engine-differential.test.ts) and needs no apt in the image. `sandbox` runs the image's
 * own apt in runc, as copa does.
 */
export function chooseEngine(choice: EngineChoice, distro: DistroInfo): "native" | "sandbox" {
  const os = distro.osRelease?.prettyName ?? distro.osRelease?.id ?? "an unknown OS";
  const dpkgDb = distro.packageDb === "dpkg" || distro.packageDb === "dpkg-status.d";
  if (!dpkgDb) {
    throw new SutureError(
      "UNSUPPORTED_OS",
      `${os} with package db "${distro.packageDb}" is not supported yet: suture patches Debian and Ubuntu images (dpkg)`,
    );
  }
  if (choice === "sandbox" && distro.packageManager !== "apt") {
    throw new SutureError(
      "USAGE",
      `--engine sandbox needs apt in the image, and ${os} has none: use --engine native (or leave --engine out)`,
    );
  }
  return choice === "sandbox" ? "sandbox" : "native";
}

/** QEMU's name for an OCI architecture, as binfmt_misc handlers are named. */
const QEMU_ARCH: Record<string, string> = {
  amd64: "x86_64",
  arm64: "aarch64",
  arm: "arm",
  "386": "i386",
  ppc64le: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
};

/**
 * A foreign-architecture image's programs (apt, maintainer scripts) run under QEMU user emulation.
 * The handler needs the F (fix-binary) flag: the interpreter is opened at registration, so it works
 * inside the container's root, where no qemu binary exists.
 */
async function assertCanRun(platform: Platform): Promise<void> {
  if (platform.architecture === hostPlatform().architecture) return;
  const qemu = QEMU_ARCH[platform.architecture] ?? platform.architecture;
  const how = `install qemu-user-static and binfmt-support, then run update-binfmts --enable qemu-${qemu}`;
  const handler = await readFile(`/proc/sys/fs/binfmt_misc/qemu-${qemu}`, "utf8").catch(() => undefined);
  if (!handler || !/^enabled$/m.test(handler)) {
    throw new SutureError(
      "UNSUPPORTED_PLATFORM",
      `patching ${formatPlatform(platform)} needs QEMU user emulation, which is not enabled here: ${how}`,
    );
  }
  if (!/^flags:.*F/m.test(handler)) {
    throw new SutureError(
      "UNSUPPORTED_PLATFORM",
      `the qemu-${qemu} binfmt handler lacks the F (fix-binary) flag, so it cannot run inside a container: re-register it with qemu-user-static's binfmt-support files (${how})`,
    );
  }
}

/**
 * The image's apt sources with mirrors applied, as a deb822 file in a host dir apt will read instead
 * of the image's sources. Undefined when no mirror was asked for.
 */
async function mirroredSources(
  root: string,
  mirrors: Readonly<Record<string, string>>,
  workDir: string,
  progress: ProgressSink,
): Promise<string | undefined> {
  if (Object.keys(mirrors).length === 0) return undefined;
  const original = await readAptSources(fileAccessFromRoot(root));
  const mirrored = applyMirrors(original, mirrors);
  if (!mirrored.some((s, i) => s.uri !== original[i]!.uri)) {
    progress({
      type: "warning",
      message: `no apt source of the image uses ${Object.keys(mirrors).join(", ")}: --mirror changes nothing (its sources: ${[...new Set(original.map((s) => s.uri))].join(", ")})`,
    });
  }
  const dir = join(workDir, "apt-sources");
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "suture.sources"), formatDeb822Sources(mirrored));
  return dir;
}

/**
 * Where apt's verified lists for one image flavour are kept across runs. Keyed by the apt sources,
 * the architecture and the keys the image trusts for them (`trust.fingerprint`): lists verified
 * with one image's keys are never handed to an image trusting other keys. The .debs are shared
 * with the native engine by SHA-256.
 */
async function aptCacheFor(
  cacheDir: string,
  root: string,
  arch: string,
  trust: ListsTrust,
): Promise<AptCacheDirs> {
  const hash = createHash("sha256").update(`arch=${arch}\nkeys=${trust.fingerprint}\n`);
  // `root` is the image's root, or a mirrored-sources dir laid out the same way (see mirroredSources).
  const files = ["/etc/apt/sources.list", "/suture.sources"];
  for (const name of (await listDirInRoot(root, "/etc/apt/sources.list.d/")).sort()) {
    files.push(`/etc/apt/sources.list.d/${name}`);
  }
  for (const f of files) {
    const content = await readFileInRoot(root, f);
    if (content) hash.update(`${f}\n${content.length}\n`).update(content);
  }
  // "apt-lists", not the former "apt": entries written before lists were verified are never read.
  const dir = join(cacheDir, "apt-lists", hash.digest("hex").slice(0, 16));
  await mkdir(dir, { recursive: true });
  return {
    lists: join(dir, "lists"),
    lock: join(dir, "lock"),
    trust,
    debStore: join(cacheDir, "apt-native"),
  };
}
