import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { detectDistroInRoot } from "../distro/detect.ts";
import { listDirInRoot, readFileInRoot } from "../distro/root-files.ts";
import { SutureError } from "../errors/errors.ts";
import { writeImage } from "../image/copy.ts";
import { type Image, imagePlatform, openImage } from "../image/image.ts";
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
import { hostPlatform } from "../oci/platform.ts";
import { type ProgressSink, withStep } from "../progress/events.ts";
import { formatReference } from "../ref/reference.ts";
import { formatTransportReference, parseTransportReference } from "../ref/transport.ts";
import { filterPlanByInstalled, type UpdatePlan } from "../report/plan.ts";
import { readReport } from "../report/read.ts";
import { withFileLock } from "../sandbox/file-lock.ts";
import { withSandbox } from "../sandbox/sandbox.ts";
import { openSink, openSource, type TransportOptions } from "../transports/index.ts";
import { buildOpenVex, writeOpenVex } from "../vex/openvex.ts";
import { type AptCacheDirs, applyWithApt } from "./engines/apt.ts";
import { resolveTarget, sourceImageReference, type TargetOptions } from "./target.ts";

export interface PatchOptions extends TargetOptions {
  image: string;
  report?: string;
  scanner?: string;
  vexFile?: string;
  ignoreErrors?: boolean;
  timeoutMs?: number;
  dryRun?: boolean;
  platform?: Platform;
  cacheDir?: string;
  compression?: Compression;
  transport?: TransportOptions;
  progress?: ProgressSink;
  signal?: AbortSignal;
}

export interface PatchResult {
  status: "patched" | "up-to-date" | "dry-run";
  target: string;
  digest?: string;
  plan?: UpdatePlan;
  changed: { name: string; from?: string; to: string }[];
  failed: { name: string; reason: string }[];
  layer?: { size: number; uncompressedSize: number; diffID: string; droppedUnchanged: number };
  vexFile?: string;
}

/**
 * apt's lists and downloaded .debs for one image flavour, kept across runs. Keyed by the apt
 * sources and architecture: `apt-get update` deletes list files its sources do not name, so two
 * differently configured images must not share a lists dir.
 */
async function aptCacheFor(
  cacheDir: string,
  root: string,
  arch: string,
): Promise<AptCacheDirs & { lock: string }> {
  const hash = createHash("sha256").update(`arch=${arch}\n`);
  const files = ["/etc/apt/sources.list"];
  for (const name of (await listDirInRoot(root, "/etc/apt/sources.list.d/")).sort()) {
    files.push(`/etc/apt/sources.list.d/${name}`);
  }
  for (const f of files) {
    const content = await readFileInRoot(root, f);
    if (content) hash.update(`${f}\n${content.length}\n`).update(content);
  }
  const dir = join(cacheDir, "apt", hash.digest("hex").slice(0, 16));
  const lists = join(dir, "lists");
  const archives = join(dir, "archives");
  await mkdir(join(lists, "partial"), { recursive: true });
  await mkdir(join(archives, "partial"), { recursive: true });
  return { lists, archives, lock: join(dir, "lock") };
}

export function defaultCacheDir(): string {
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "suture");
}

/**
 * Patch one image with its own apt in a runc sandbox and write it under the target name.
 * The source is only read; nothing is written to the destination before the final commit.
 */
export async function patchImage(options: PatchOptions): Promise<PatchResult> {
  const progress = options.progress ?? (() => {});
  const transport = { ...options.transport, progress, signal: options.signal };
  const srcRef = parseTransportReference(options.image);
  const target = resolveTarget(srcRef, options);
  const sinkRef =
    target.sink === "daemon" ? { transport: "docker-daemon" as const, ref: target.ref! } : target.sink;
  const targetName = formatTransportReference(sinkRef);
  if (targetName === formatTransportReference(srcRef)) {
    throw new SutureError(
      "USAGE",
      `the patched image would replace the source ${targetName}: choose another -t`,
    );
  }
  const plan = options.report
    ? await readReport(options.report, { scanner: options.scanner, signal: options.signal })
    : undefined;
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  await mkdir(cacheDir, { recursive: true });

  const source = await openSource(srcRef, transport);
  const workRoot = await mkdtemp(join(options.cacheDir ?? tmpdir(), "patch-"));
  try {
    let image = await openImage(source, options.platform ?? hostPlatform());
    const labels = image.config.config?.Labels ?? {};
    const previous = labels[SutureLabel.patchedLayerDiffId];
    // Re-patching starts again from the original layers, so the result still has one patch layer.
    if (previous && image.config.rootfs.diff_ids.at(-1) === previous) image = removeTopLayers(image, 1);
    const srcImageRef = sourceImageReference(srcRef);
    const baseName =
      labels[BaseImageLabel] ??
      (srcImageRef ? formatReference(srcImageRef) : formatTransportReference(srcRef));

    const outcome = await withSandbox(
      image,
      { cacheDir, workRoot, progress, signal: options.signal },
      async (sb) => {
        const distro = await detectDistroInRoot(sb.mergedDir);
        if (distro.packageManager !== "apt") {
          const os = distro.osRelease?.prettyName ?? distro.osRelease?.id ?? "an unknown OS";
          throw new SutureError(
            "UNSUPPORTED_OS",
            `${os} with package db "${distro.packageDb}" is not supported yet: suture patches apt-based images (Debian, Ubuntu)`,
          );
        }
        const filtered = plan ? filterPlanByInstalled(plan, distro.installed ?? new Map()) : undefined;
        if (options.dryRun) return { kind: "dry-run" as const, plan: filtered };
        if (filtered && filtered.updates.length === 0) return { kind: "up-to-date" as const, plan: filtered };
        const targets = filtered
          ? filtered.updates.map((u) => ({
              name: u.name,
              fixedVersion: u.fixedVersion,
              installedVersion: u.installedVersion,
            }))
          : "all";
        const aptCache = await aptCacheFor(cacheDir, sb.mergedDir, imagePlatform(image).architecture);
        const apt = await withStep(progress, "apply", "updating packages with the image's apt (runc)", () =>
          withFileLock(
            aptCache.lock,
            () =>
              applyWithApt(sb, targets, {
                ignoreErrors: options.ignoreErrors,
                progress,
                timeoutMs: options.timeoutMs,
                cache: aptCache,
              }),
            {
              signal: options.signal,
              onWait: (owner) =>
                progress({
                  type: "warning",
                  message: `waiting for another suture (pid ${owner?.pid ?? "?"}) using the same apt cache`,
                }),
            },
          ),
        );
        if (apt.changed.size === 0) return { kind: "up-to-date" as const, plan: filtered, apt };
        const compression = options.compression ?? "gzip";
        const outFile = join(workRoot, "layer.tar");
        // buildPatchLayer reports its own step events.
        const layer = await buildPatchLayer({
          upperDir: sb.upperDir,
          lowerDirs: sb.lowerDirs,
          outFile,
          compression,
          progress,
          signal: options.signal,
        });
        return { kind: "patched" as const, plan: filtered, apt, layer, outFile, compression };
      },
    );

    const result: PatchResult = {
      status: outcome.kind,
      target: targetName,
      plan: outcome.plan,
      changed: [],
      failed: [],
    };
    if ("apt" in outcome && outcome.apt) {
      result.changed = [...outcome.apt.changed].map(([name, v]) => ({ name, ...v }));
      result.failed = outcome.apt.failed;
    }
    if (outcome.kind !== "patched") return result;

    const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    const mediaType = layerMediaTypeFor(image.manifest.mediaType, outcome.compression);
    const patched: Image = editImage(image, {
      addLayers: [
        {
          descriptor: {
            mediaType,
            digest: outcome.layer.descriptorFields.digest,
            size: outcome.layer.descriptorFields.size,
          },
          diffID: outcome.layer.diffID,
          path: outcome.outFile,
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
          [BaseImageLabel]: baseName,
          [SutureLabel.patchedLayerDiffId]: outcome.layer.diffID,
        };
      },
      manifest: (m) => {
        if ((m.mediaType ?? image.manifest.mediaType) !== MediaType.ociManifest) return; // schema 2 has no annotations
        m.annotations = {
          ...(m.annotations ?? {}),
          [Annotation.created]: now,
          [Annotation.copaPatched]: now,
          [Annotation.baseName]: baseName,
          [Annotation.baseDigest]: image.manifest.digest,
        };
      },
    });
    const sink = await openSink(sinkRef, transport);
    await withStep(progress, "write", `writing ${targetName}`, () => writeImage(patched, sink, { progress }));
    result.digest = patched.manifest.digest;
    result.layer = {
      size: outcome.layer.descriptorFields.size,
      uncompressedSize: outcome.layer.uncompressedSize,
      diffID: outcome.layer.diffID,
      droppedUnchanged: outcome.layer.stats.droppedUnchanged,
    };
    if (options.vexFile && outcome.plan) {
      const fixed = new Set(result.changed.map((c) => c.name));
      const doc = buildOpenVex([
        {
          plan: outcome.plan,
          patched: new Set(
            outcome.plan.updates
              .map((u) => u.name)
              .filter((n) => fixed.has(n) && !result.failed.some((f) => f.name === n)),
          ),
          products: [
            {
              digest: patched.manifest.digest,
              repository: target.ref ? `${target.ref.registry}/${target.ref.repository}` : target.tag,
              architecture: imagePlatform(patched).architecture,
            },
          ],
        },
      ]);
      if (doc) {
        await writeOpenVex(options.vexFile, doc);
        result.vexFile = options.vexFile;
      }
    }
    return result;
  } finally {
    await source.close();
    await rm(workRoot, { recursive: true, force: true });
  }
}
