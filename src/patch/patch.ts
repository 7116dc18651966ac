import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { SutureError } from "../errors/errors.ts";
import { copyManifestTree, writeBlobs, writeImage } from "../image/copy.ts";
import { type Image, imagePlatform, loadImage, openImage, parseIndex } from "../image/image.ts";
import type { ImageSink, ImageSource } from "../image/source.ts";
import type { Descriptor, Platform, RawManifest } from "../oci/manifest.ts";
import {
  Annotation,
  BaseImageLabel,
  type Compression,
  isImageManifestMediaType,
  isIndexMediaType,
  MediaType,
} from "../oci/media-types.ts";
import { formatPlatform, hostPlatform, normalizePlatform, platformMatches } from "../oci/platform.ts";
import { type ProgressSink, withStep } from "../progress/events.ts";
import { formatReference } from "../ref/reference.ts";
import {
  formatTransportReference,
  parseTransportReference,
  type TransportReference,
} from "../ref/transport.ts";
import type { UpdatePlan } from "../report/plan.ts";
import { readReport, readReportDirectory } from "../report/read.ts";
import { daemonAvailable } from "../transports/daemon/daemon.ts";
import { openSink, openSource, type TransportOptions } from "../transports/index.ts";
import { buildOpenVex, type VexSubject, writeOpenVex } from "../vex/openvex.ts";
import {
  type EngineChoice,
  type PatchPlatformContext,
  type PlatformResult,
  patchPlatformImage,
} from "./platform.ts";
import { resolveTarget, sourceImageReference, type TargetOptions } from "./target.ts";

export type { PlatformResult } from "./platform.ts";

export interface PatchOptions extends TargetOptions {
  image: string;
  /** A report file, or a directory of per-platform reports (multi-platform images). */
  report?: string;
  scanner?: string;
  vexFile?: string;
  ignoreErrors?: boolean;
  timeoutMs?: number;
  dryRun?: boolean;
  /**
   * Platforms to patch. For an index written to a sink that holds indexes: default every linux
   * platform, the rest carried over. For a single-image sink (daemon, docker-archive): the first
   * one, default the host's.
   */
  platforms?: Platform[];
  cacheDir?: string;
  compression?: Compression;
  /** Repository URI → mirror URI, for the image's apt sources (air-gapped or corporate mirrors). */
  mirrors?: Readonly<Record<string, string>>;
  /** `auto` (default), `native` or `sandbox`: see chooseEngine in platform.ts. */
  engine?: EngineChoice;
  /** Keyring trusted for distroless images' default sources (default: the host's archive keyring). */
  keyringFile?: string;
  /** Accept unsigned repositories an image's apt.conf allows (Acquire::AllowInsecureRepositories). */
  allowInsecureRepositories?: boolean;
  transport?: TransportOptions;
  progress?: ProgressSink;
  signal?: AbortSignal;
  /** Platforms patched at once (default 2: the machine budget these runs were measured on). */
  concurrency?: number;
}

export interface PatchResult {
  status: "patched" | "up-to-date" | "dry-run";
  target: string;
  /** Digest of what was written: the index for a multi-platform image. */
  digest?: string;
  /** Every platform considered, in index order (one entry for a single image). */
  platforms: PlatformResult[];
  /** Attestation manifests left out because they describe an image that was patched. */
  droppedAttestations: string[];
  vexFile?: string;
  // The single-platform view (the first platform), kept for callers patching one image.
  plan?: UpdatePlan;
  changed: { name: string; from?: string; to: string }[];
  failed: { name: string; reason: string }[];
  layer?: PlatformResult["layer"];
}

export function defaultCacheDir(): string {
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "suture");
}

/**
 * Patch an image (one platform, or every selected platform of an index) with its own apt in a runc
 * sandbox and write it under the target name. The source is only read; nothing is visible at the
 * destination before the final commit, and nothing is written when nothing was patched.
 */
export async function patchImage(options: PatchOptions): Promise<PatchResult> {
  const progress = options.progress ?? (() => {});
  const transport = { ...options.transport, progress, signal: options.signal };
  const srcRef = parseTransportReference(options.image);
  const target = resolveTarget(srcRef, options);
  const sinkRef: TransportReference =
    target.sink === "daemon" ? { transport: "docker-daemon", ref: target.ref! } : target.sink;
  const targetName = formatTransportReference(sinkRef);
  if (targetName === formatTransportReference(srcRef)) {
    throw new SutureError(
      "USAGE",
      `the patched image would replace the source ${targetName}: choose another -t`,
    );
  }
  if (target.sink === "daemon" && !options.dryRun && !(await daemonAvailable(transport))) {
    // Checked before any work: patching for minutes and then having nowhere to put it helps nobody.
    throw new SutureError(
      "DAEMON",
      `no output given and no Docker daemon is reachable${options.transport?.dockerHost ? ` at ${options.transport.dockerHost}` : ""}: pass --push, --oci-dir DIR or --archive FILE, or start dockerd (DOCKER_HOST)`,
    );
  }
  const reports = await readReports(options);
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  await mkdir(cacheDir, { recursive: true });

  const source = await openSource(srcRef, transport);
  const workRoot = await mkdtemp(join(options.cacheDir ?? tmpdir(), "patch-"));
  try {
    const srcImageRef = sourceImageReference(srcRef);
    const defaultBase = srcImageRef ? formatReference(srcImageRef) : formatTransportReference(srcRef);
    const ctx = (image: Image) => ({
      cacheDir,
      workRoot,
      baseName: image.config.config?.Labels?.[BaseImageLabel] ?? defaultBase,
      ignoreErrors: options.ignoreErrors,
      dryRun: options.dryRun,
      timeoutMs: options.timeoutMs,
      compression: options.compression,
      mirrors: options.mirrors,
      engine: options.engine,
      keyringFile: options.keyringFile,
      allowInsecureRepositories: options.allowInsecureRepositories,
      progress,
      signal: options.signal,
    });
    const repository = target.ref ? `${target.ref.registry}/${target.ref.repository}` : target.tag;
    const root = await source.rootManifest();
    const holdsIndex = sinkRef.transport === "registry" || sinkRef.transport === "oci";

    if (!isIndexMediaType(root.mediaType) || !holdsIndex) {
      const wanted = options.platforms?.[0] ?? hostPlatform();
      if (isIndexMediaType(root.mediaType) && (options.platforms?.length ?? 0) > 1) {
        throw new SutureError(
          "USAGE",
          `${targetName} holds one platform: pass a single --platform, or write an index with --push or --oci-dir`,
        );
      }
      const image = await openImage(source, wanted);
      const plan = reports.planFor(imagePlatform(image));
      const { result: one, image: patched } = await patchPlatformImage(image, plan, ctx(image));
      const result = summarise(targetName, [one]);
      if (!patched) return result;
      const sink = await openSink(sinkRef, transport);
      await withStep(progress, "write", `writing ${targetName}`, () =>
        writeImage(patched, sink, { progress }),
      );
      result.digest = patched.manifest.digest;
      result.vexFile = await writeVex(options.vexFile, [
        vexSubject(one, [
          { digest: patched.manifest.digest, repository, architecture: imagePlatform(patched).architecture },
        ]),
      ]);
      return result;
    }

    // An index: patch the selected platforms, carry the others over unchanged.
    const index = parseIndex(root, `${source.name} index`);
    const candidates = index.manifests.filter(
      (d) => isImageManifestMediaType(d.mediaType) && d.platform && !isAttestation(d),
    );
    const selected = candidates.filter((d) => selectedPlatform(d.platform!, options.platforms, reports));
    if (options.platforms?.length) {
      for (const p of options.platforms) {
        if (!candidates.some((d) => platformMatches(p, d.platform!))) {
          const have = candidates.map((d) => formatPlatform(d.platform!)).join(", ");
          throw new SutureError(
            "UNSUPPORTED_PLATFORM",
            `${source.name} has no ${formatPlatform(p)} image (it has: ${have}): pass --platform with one of those`,
          );
        }
      }
    }
    const outcomes = await patchPlatforms(source, selected, reports, ctx, options);
    const results: PlatformResult[] = candidates.map(
      (d) =>
        outcomes.get(d.digest)?.result ?? {
          platform: formatPlatform(d.platform!),
          status: "skipped",
          reason: d.platform!.os !== "linux" ? "not a linux image" : "not selected",
          changed: [],
          failed: [],
          digest: d.digest,
          warnings: [],
        },
    );
    const result = summarise(targetName, results);
    const patchedByDigest = new Map(
      [...outcomes].flatMap(([digest, o]) => (o.image ? [[digest, o.image] as const] : [])),
    );
    if (patchedByDigest.size === 0) return result;

    const { raw, dropped } = patchedIndex(root, patchedByDigest);
    result.droppedAttestations = dropped;
    const sink = await openSink(sinkRef, transport);
    await withStep(
      progress,
      "write",
      `writing ${targetName} (${patchedByDigest.size} patched platforms)`,
      () => writeIndex(source, sink, raw, patchedByDigest, progress),
    );
    result.digest = raw.digest;
    result.vexFile = await writeVex(
      options.vexFile,
      results.flatMap((r) => {
        const img =
          r.status === "patched"
            ? [...patchedByDigest.values()].find((i) => i.manifest.digest === r.digest)
            : undefined;
        if (!img) return [];
        return [
          vexSubject(r, [
            { digest: img.manifest.digest, repository, architecture: imagePlatform(img).architecture },
            { digest: raw.digest, repository },
          ]),
        ];
      }),
    );
    return result;
  } finally {
    await source.close();
    await rm(workRoot, { recursive: true, force: true });
  }
}

interface Reports {
  /** The plan for a platform; undefined = update-all. */
  planFor(platform: Platform): UpdatePlan | undefined;
  /** With a report directory, only platforms that have a report are patched. */
  restricts(platform: Platform): boolean;
}

async function readReports(options: PatchOptions): Promise<Reports> {
  const readOpts = { scanner: options.scanner, signal: options.signal };
  if (!options.report) return { planFor: () => undefined, restricts: () => true };
  const isDir = await stat(options.report).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (isDir) {
    const plans = await readReportDirectory(options.report, readOpts);
    const find = (p: Platform) =>
      plans.find((plan) =>
        platformMatches(
          normalizePlatform({ os: "linux", architecture: plan.arch!, variant: plan.variant }),
          p,
        ),
      );
    return {
      planFor: (p) => {
        const plan = find(p);
        if (!plan) {
          throw new SutureError(
            "USAGE",
            `no report in ${options.report} is for ${formatPlatform(p)} (the reports are for ${plans.map((x) => x.arch).join(", ")})`,
          );
        }
        return plan;
      },
      restricts: (p) => find(p) !== undefined,
    };
  }
  const plan = await readReport(options.report, readOpts);
  // A single report is about the platform it scanned; one that does not say applies to every platform.
  const forPlatform = (p: Platform) =>
    !plan.arch ||
    platformMatches(normalizePlatform({ os: "linux", architecture: plan.arch, variant: plan.variant }), p);
  return {
    planFor: () => plan,
    restricts: (p) => forPlatform(p),
  };
}

function selectedPlatform(p: Platform, wanted: Platform[] | undefined, reports: Reports): boolean {
  if (p.os !== "linux") return false;
  // A report directory decides which platforms have something to patch; --platform narrows further.
  return reports.restricts(p) && (!wanted?.length || wanted.some((w) => platformMatches(w, p)));
}

function isAttestation(d: Descriptor): boolean {
  return d.annotations?.["vnd.docker.reference.type"] === "attestation-manifest";
}

/** Patch platforms a few at a time; without --ignore-errors the first failure stops the rest. */
async function patchPlatforms(
  source: ImageSource,
  selected: Descriptor[],
  reports: Reports,
  ctx: (image: Image) => PatchPlatformContext,
  options: PatchOptions,
): Promise<Map<string, { result: PlatformResult; image?: Image }>> {
  const out = new Map<string, { result: PlatformResult; image?: Image }>();
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  let next = 0;
  let firstError: unknown;
  const worker = async () => {
    while (next < selected.length && !signal.aborted) {
      const d = selected[next++]!;
      const name = formatPlatform(d.platform!);
      try {
        const image = await loadImage(source, await source.manifest(d), `${source.name} (${name})`);
        const plan = reports.planFor(imagePlatform(image));
        out.set(d.digest, await patchPlatformImage(image, plan, { ...ctx(image), signal }));
      } catch (e) {
        if (!options.ignoreErrors) {
          firstError ??= e;
          stop.abort(e);
          return;
        }
        const reason = e instanceof Error ? e.message : String(e);
        options.progress?.({ type: "warning", platform: name, message: `not patched: ${reason}` });
        out.set(d.digest, {
          result: {
            platform: name,
            status: "failed",
            reason,
            changed: [],
            failed: [],
            digest: d.digest,
            warnings: [],
          },
        });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 2, selected.length) }, worker));
  if (firstError) throw firstError;
  options.signal?.throwIfAborted();
  return out;
}

/**
 * The index to write: patched platforms point at their new manifests (with fresh created/patched
 * annotations), untouched ones keep their descriptors byte for byte, and build attestations of
 * patched platforms are dropped because they describe the image that was replaced.
 */
export function patchedIndex(
  root: RawManifest,
  patched: ReadonlyMap<string, Image>,
): { raw: RawManifest; dropped: string[] } {
  const doc = JSON.parse(Buffer.from(root.bytes).toString("utf8")) as {
    mediaType?: string;
    manifests: Descriptor[];
    annotations?: Record<string, string>;
  };
  const oci = (doc.mediaType ?? root.mediaType) === MediaType.ociIndex;
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const dropped: string[] = [];
  const manifests: Descriptor[] = [];
  for (const d of doc.manifests) {
    if (isAttestation(d) && patched.has(d.annotations?.["vnd.docker.reference.digest"] ?? "")) {
      dropped.push(d.digest);
      continue;
    }
    const image = patched.get(d.digest);
    if (!image) {
      manifests.push(d);
      continue;
    }
    const next: Descriptor = {
      ...d,
      mediaType: image.manifest.mediaType,
      digest: image.manifest.digest,
      size: image.manifest.bytes.length,
    };
    if (oci)
      next.annotations = {
        ...(d.annotations ?? {}),
        [Annotation.created]: now,
        [Annotation.copaPatched]: now,
      };
    manifests.push(next);
  }
  const out = { ...doc, manifests };
  if (oci)
    out.annotations = {
      ...(doc.annotations ?? {}),
      [Annotation.created]: now,
      [Annotation.copaIndexPatched]: now,
    };
  const bytes = new TextEncoder().encode(JSON.stringify(out));
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  return { raw: { bytes, mediaType: root.mediaType, digest }, dropped };
}

/** Write the new index: patched images from their edited values, the rest copied from the source. */
async function writeIndex(
  source: ImageSource,
  sink: ImageSink,
  raw: RawManifest,
  patched: ReadonlyMap<string, Image>,
  progress: ProgressSink,
): Promise<void> {
  try {
    const written = new Set<string>();
    const doc = parseIndex(raw, "patched index");
    const patchedDigests = new Map([...patched.values()].map((i) => [i.manifest.digest, i]));
    for (const d of doc.manifests) {
      const image = patchedDigests.get(d.digest);
      if (image) {
        await writeBlobs(
          image.blobs,
          sink,
          [image.parsed.config, ...image.parsed.layers],
          { progress },
          written,
        );
        await sink.writeManifest(image.manifest);
      } else {
        const child = await source.manifest(d);
        await copyManifestTree(source, sink, child, { progress }, written);
        await sink.writeManifest(child);
      }
    }
    await sink.commit(raw);
  } catch (e) {
    await sink.abort().catch(() => {});
    throw e;
  }
}

function summarise(target: string, platforms: PlatformResult[]): PatchResult {
  const first = platforms.find((p) => p.status !== "skipped") ?? platforms[0]!;
  const status = platforms.some((p) => p.status === "patched")
    ? "patched"
    : platforms.some((p) => p.status === "dry-run")
      ? "dry-run"
      : "up-to-date";
  return {
    status,
    target,
    platforms,
    droppedAttestations: [],
    plan: first.plan,
    changed: first.changed,
    failed: first.failed,
    layer: first.layer,
  };
}

function vexSubject(r: PlatformResult, products: VexSubject["products"]): VexSubject | undefined {
  if (!r.plan) return undefined;
  const fixed = new Set(r.changed.map((c) => c.name));
  return {
    plan: r.plan,
    patched: new Set(
      r.plan.updates.map((u) => u.name).filter((n) => fixed.has(n) && !r.failed.some((f) => f.name === n)),
    ),
    products,
  };
}

/** OpenVEX is only written when a report said what to fix and something was fixed. */
async function writeVex(
  file: string | undefined,
  subjects: (VexSubject | undefined)[],
): Promise<string | undefined> {
  const real = subjects.filter((s): s is VexSubject => s !== undefined);
  if (!file || real.length === 0) return undefined;
  const doc = buildOpenVex(real);
  if (!doc) return undefined;
  await writeOpenVex(file, doc);
  return file;
}
