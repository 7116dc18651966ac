import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { access, mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { AttachResult } from "../attest/attach.ts";
import { loadSigningKey, type SigningKey } from "../attest/dsse.ts";
import { detectDistro } from "../distro/detect.ts";
import { type EolTable, loadEolTable } from "../eol/table.ts";
import { SutureError } from "../errors/errors.ts";
import { type CopyOptions, copyManifestTree, writeBlobs, writeImage } from "../image/copy.ts";
import { type Image, imagePlatform, loadImage, openImage, parseIndex } from "../image/image.ts";
import type { ImageSink, ImageSource } from "../image/source.ts";
import { hasSuturePatchLayer } from "../mutate/suture-patch.ts";
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
import { checkReportMatchesImage } from "../report/image-match.ts";
import { filterPlanByInstalled, type UpdatePlan } from "../report/plan.ts";
import { readReport, readReportDirectory } from "../report/read.ts";
import { enterNoNamespacesModeIfSelected } from "../sandbox/no-namespaces.ts";
import { describePatchMode } from "../sandbox/userns.ts";
import { type SbomFormat, sourceDateEpoch } from "../sbom/sbom.ts";
import { daemonAvailable } from "../transports/daemon/daemon.ts";
import { describeEngine, resolveEngineEndpoint } from "../transports/daemon/engine.ts";
import { openSink, openSource, type TransportOptions } from "../transports/index.ts";
import { committedLayoutManifest, openLayoutSink } from "../transports/layout/layout.ts";
import { buildOpenVex, type OpenVexDocument, type VexSubject, writeOpenVex } from "../vex/openvex.ts";
import { attachDestination, attachPatch, type PatchedForAttach } from "./attach.ts";
import type { EngineChoice, PackageFix } from "./engines/engine.ts";
import {
  checkEndOfLife,
  imageDigests,
  type PatchPlatformContext,
  type PlatformResult,
  patchPlatformImage,
} from "./platform.ts";
import { writePatchedSbom } from "./sbom.ts";
import { resolveTarget, sourceImageReference, type TargetOptions } from "./target.ts";

export type { PlatformResult } from "./platform.ts";

export interface PatchOptions extends TargetOptions {
  image: string;
  /** A report file, or a directory of per-platform reports (multi-platform images). */
  report?: string;
  scanner?: string;
  /** The largest report (or plugin output) read; default DEFAULT_MAX_REPORT_BYTES (report/limits.ts). */
  maxReportBytes?: number;
  vexFile?: string;
  /** Write the patched image's SBOM here (only when something was patched and written). */
  sbomFile?: string;
  /** `cyclonedx` (default) or `spdx`. */
  sbomFormat?: SbomFormat;
  /**
   * Attach the VEX, the SBOM (built even without sbomFile) and an in-toto statement of the patch to
   * the written image as OCI 1.1 referrers (registry and OCI-layout destinations only).
   */
  attach?: boolean;
  /** Sign what `attach` attaches with this ECDSA P-256 PEM key (DSSE, as cosign verifies). */
  signKeyFile?: string;
  /** suture's version, named in the SBOM as its creator (the CLI passes package.json's). */
  toolVersion?: string;
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
  /** `auto` (default), `native` or `sandbox`: see selectEngine in engines/engine.ts. */
  engine?: EngineChoice;
  /**
   * Extra trusted key files: OpenPGP keyrings (e.g. for distroless Debian images' default sources;
   * default: the host's archive keyring) and apk RSA public keys (`NAME.rsa.pub`).
   */
  keyringFiles?: readonly string[];
  /** Accept unsigned repositories an image's apt.conf allows (Acquire::AllowInsecureRepositories). */
  allowInsecureRepositories?: boolean;
  /** Use a report that names another image than the one patched (`--ignore-report-image`). */
  ignoreReportImage?: boolean;
  /**
   * copa's `--exit-on-eol`: an image whose release is past every phase of its support (by the EOL
   * table, src/eol/) fails with END_OF_LIFE before any layer is unpacked. Without it, a warning.
   */
  exitOnEol?: boolean;
  /** The EOL table (default: the bundled one, updated by `suture eol --update` in the cache dir). */
  eolTable?: EolTable;
  /** The day EOL states are for (default today). */
  now?: Date;
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
  /**
   * Platforms whose previous suture patch layer was dropped: their new layer is built on the
   * original layers, so `changed` says what moved relative to the original image.
   */
  replacedPatchLayers: string[];
  vexFile?: string;
  sbomFile?: string;
  /** What `attach` attached (referrers, the fallback tag, cosign's tag). */
  attached?: AttachResult;
  // The single-platform view (the first platform), kept for callers patching one image.
  plan?: UpdatePlan;
  changed: { name: string; from?: string; to: string }[];
  failed: { name: string; reason: string }[];
  /** Update-all: what the updated packages say they fix (see PlatformResult.fixes). */
  fixes?: PackageFix[];
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
  // With no output named, the patched image goes back where a local source came from: a
  // `podman:` source into Podman, anything else into the Docker daemon (or Podman's socket where
  // there is no Docker: see resolveEngineEndpoint).
  const daemonEngine = srcRef.transport === "docker-daemon" ? srcRef.engine : undefined;
  const sinkRef: TransportReference =
    target.sink === "daemon"
      ? { transport: "docker-daemon", ref: target.ref!, ...(daemonEngine && { engine: daemonEngine }) }
      : target.sink;
  const targetName = formatTransportReference(sinkRef);
  if (targetName === formatTransportReference(srcRef)) {
    throw new SutureError(
      "USAGE",
      `the patched image would replace the source ${targetName}: choose another -t`,
    );
  }
  // Mode 3 (no namespaces, SUTURE_PATCH_MODE) patches as any user; the other modes need root here.
  if (!enterNoNamespacesModeIfSelected()) assertRoot();
  // Outputs are checked before any work: patching for minutes and then failing to write helps nobody.
  await assertWritableOutput(sinkRef, targetName, transport);
  if (options.vexFile) await assertWritableFile(options.vexFile, "-o");
  if (options.sbomFile) await assertWritableFile(options.sbomFile, "--sbom");
  const attachTo = options.attach ? attachDestination(sinkRef, transport) : undefined;
  if (options.signKeyFile && !options.attach) {
    throw new SutureError("USAGE", "--sign-key signs what --attach attaches: add --attach");
  }
  // A bad key fails here, before any work: nothing is patched or written.
  const signingKey: SigningKey | undefined = options.signKeyFile
    ? await loadSigningKey(options.signKeyFile)
    : undefined;
  if (
    target.sink === "daemon" &&
    !options.dryRun &&
    !(await daemonAvailable({ ...transport, daemonEngine }))
  ) {
    // Checked before any work: patching for minutes and then having nowhere to put it helps nobody.
    throw new SutureError(
      "DAEMON",
      `no output given and ${describeEngine(resolveEngineEndpoint({ ...transport, daemonEngine }))} is not reachable: pass --push, --oci-dir DIR or --archive FILE, or start ${daemonEngine === "podman" ? "Podman's API service (CONTAINER_HOST)" : "dockerd (DOCKER_HOST)"}`,
    );
  }
  const reports = await readReports(options);
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  await mkdir(cacheDir, { recursive: true });
  const eolTable = options.eolTable ?? (await loadEolTable(cacheDir));
  // Said once every input was checked, so a refusal stays the one line it is.
  options.progress?.({ type: "info", message: describePatchMode() });

  const source = await openSource(srcRef, transport);
  // A registry sink is opened first: each patch layer goes up into it while it is built.
  const registrySink =
    sinkRef.transport === "registry" && !options.dryRun ? await openSink(sinkRef, transport) : undefined;
  const workRoot = await mkdtemp(join(options.cacheDir ?? tmpdir(), "patch-"));
  try {
    const srcImageRef = sourceImageReference(srcRef);
    const defaultBase = srcImageRef ? formatReference(srcImageRef) : formatTransportReference(srcRef);
    // Filled in once the root manifest is read: a report may name the index as the image.
    const imageAliases: string[] = [...(source.imageIds ?? [])];
    const ctx = (image: Image) => ({
      cacheDir,
      workRoot,
      baseName: image.config.config?.Labels?.[BaseImageLabel] ?? defaultBase,
      imageName: source.name,
      ignoreErrors: options.ignoreErrors,
      dryRun: options.dryRun,
      timeoutMs: options.timeoutMs,
      compression: options.compression,
      mirrors: options.mirrors,
      engine: options.engine,
      keyringFiles: options.keyringFiles,
      allowInsecureRepositories: options.allowInsecureRepositories,
      ignoreReportImage: options.ignoreReportImage,
      eolTable,
      exitOnEol: options.exitOnEol,
      now: options.now,
      repository: srcImageRef?.repository,
      imageAliases,
      layerUpload: registrySink?.beginBlobUpload,
      progress,
      signal: options.signal,
    });
    const repository = target.ref ? `${target.ref.registry}/${target.ref.repository}` : target.tag;
    const root = await source.rootManifest();
    imageAliases.push(root.digest);
    const holdsIndex = sinkRef.transport === "registry" || sinkRef.transport === "oci";
    // Registry to registry: a base layer the destination repository lacks is mounted from the
    // source repository (same registry), not downloaded again to be uploaded.
    const mountFrom =
      srcRef.transport === "registry"
        ? { registry: srcRef.ref.registry, repository: srcRef.ref.repository }
        : undefined;

    if (!isIndexMediaType(root.mediaType) || !holdsIndex) {
      const wanted = options.platforms?.[0] ?? hostPlatform();
      if (isIndexMediaType(root.mediaType) && (options.platforms?.length ?? 0) > 1) {
        throw new SutureError(
          "USAGE",
          `${targetName} holds one platform: pass a single --platform, or write an index with --push or --oci-dir`,
        );
      }
      const image = await openImage(source, wanted);
      if (!isIndexMediaType(root.mediaType)) assertSinglePlatform(source.name, image, options.platforms);
      const plan = reports.planFor(imagePlatform(image));
      const { result: one, image: patched, replaced } = await patchOne(image, plan, ctx(image), progress);
      const result = summarise(targetName, [one]);
      if (replaced) result.replacedPatchLayers.push(one.platform);
      if (!patched) return result;
      const sink = registrySink ?? (await openSink(sinkRef, transport));
      await withStep(progress, "write", `writing ${targetName}`, () =>
        writeImage(patched, sink, { progress, signal: options.signal, mountFrom }),
      );
      // An OCI layout stores Docker schema 2 manifests in OCI form: say the digest really written.
      result.digest = committedLayoutManifest(sink)?.digest ?? patched.manifest.digest;
      const vex = await writeVex(options.vexFile, [
        vexSubject(one, [
          { digest: result.digest, repository, architecture: imagePlatform(patched).architecture },
        ]),
      ]);
      result.vexFile = vex?.file;
      const sbom = await writePatchedSbom(options, {
        name: targetName,
        repository: target.ref ? repository : undefined,
        images: [{ image: patched, digest: result.digest, changed: one.changed }],
      });
      result.sbomFile = sbom?.file;
      if (attachTo && sbom) {
        result.attached = await withStep(progress, "attach", "attaching VEX, SBOM and provenance", () =>
          attachPatch({
            destination: attachTo,
            written: committedLayoutManifest(sink) ?? patched.manifest,
            subjectName: repository,
            source: { name: formatTransportReference(srcRef), digest: image.manifest.digest },
            target: targetName,
            patched: [{ result: one, image: patched, sourceDigest: image.manifest.digest }],
            droppedAttestations: [],
            vex: vex?.document,
            sbom,
            toolVersion: options.toolVersion ?? "unknown",
            key: signingKey,
            progress,
          }),
        );
      }
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
    const replacedPatchLayers = [...outcomes.values()]
      .filter((o) => o.replaced)
      .map((o) => o.result.platform);
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
    result.replacedPatchLayers = replacedPatchLayers;
    const patchedByDigest = new Map(
      [...outcomes].flatMap(([digest, o]) => (o.image ? [[digest, o.image] as const] : [])),
    );
    if (patchedByDigest.size === 0) return result;

    const { raw, dropped } = patchedIndex(root, patchedByDigest);
    result.droppedAttestations = dropped;
    const sink = registrySink ?? (await openSink(sinkRef, transport));
    await withStep(
      progress,
      "write",
      `writing ${targetName} (${patchedByDigest.size} patched platforms)`,
      () => writeIndex(source, sink, raw, patchedByDigest, { progress, signal: options.signal, mountFrom }),
    );
    result.digest = committedLayoutManifest(sink)?.digest ?? raw.digest;
    const vex = await writeVex(
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
            { digest: result.digest ?? raw.digest, repository },
          ]),
        ];
      }),
    );
    result.vexFile = vex?.file;
    const sbom = await writePatchedSbom(options, {
      name: targetName,
      repository: target.ref ? repository : undefined,
      index: result.digest ?? raw.digest,
      images: await Promise.all(
        candidates
          .filter((d) => d.platform!.os === "linux")
          .map(async (d) => {
            const image = patchedByDigest.get(d.digest);
            const r = results.find((x) => x.digest === (image?.manifest.digest ?? d.digest));
            return image
              ? { image, digest: image.manifest.digest, changed: r?.changed ?? [] }
              : {
                  image: await loadImage(
                    source,
                    await source.manifest(d),
                    `${source.name} (${formatPlatform(d.platform!)})`,
                  ),
                  changed: [],
                };
          }),
      ),
    });
    result.sbomFile = sbom?.file;
    if (attachTo && sbom) {
      const patched: PatchedForAttach[] = [...patchedByDigest].flatMap(([sourceDigest, image]) => {
        const r = results.find((x) => x.status === "patched" && x.digest === image.manifest.digest);
        return r ? [{ result: r, image, sourceDigest }] : [];
      });
      result.attached = await withStep(progress, "attach", "attaching VEX, SBOM and provenance", () =>
        attachPatch({
          destination: attachTo,
          written: committedLayoutManifest(sink) ?? raw,
          subjectName: repository,
          source: { name: formatTransportReference(srcRef), digest: root.digest },
          target: targetName,
          patched,
          droppedAttestations: dropped,
          vex: vex?.document,
          sbom,
          toolVersion: options.toolVersion ?? "unknown",
          key: signingKey,
          progress,
        }),
      );
    }
    return result;
  } finally {
    await source.close();
    await rm(workRoot, { recursive: true, force: true });
  }
}

interface PlatformOutcome {
  result: PlatformResult;
  image?: Image;
  /** The image's previous suture patch layer was dropped (re-patch from the original layers). */
  replaced?: boolean;
}

/**
 * Patch one platform. An image suture patched before is re-patched from its original layers; but
 * a report that the existing patch layer already satisfies (typically the report of the original
 * image, scanned before the first patch) leaves it as it is: nothing to patch, nothing written.
 */
async function patchOne(
  image: Image,
  plan: UpdatePlan | undefined,
  ctx: PatchPlatformContext,
  sink: ProgressSink = () => {},
): Promise<PlatformOutcome> {
  const platform = formatPlatform(imagePlatform(image));
  const progress: ProgressSink = (e) => sink({ ...e, platform });
  if (ctx.exitOnEol) {
    // Before any work: the release is read from the layers' os-release, nothing is unpacked.
    const distro = await withStep(progress, "detect", "reading the image's release", () =>
      detectDistro(image, { signal: ctx.signal }),
    );
    checkEndOfLife(
      distro.osRelease,
      ctx,
      () => {},
      () => {},
    );
  }
  if (!hasSuturePatchLayer(image)) return patchPlatformImage(image, plan, ctx);
  if (plan) {
    const distro = await withStep(progress, "detect", "reading the patched image's package versions", () =>
      detectDistro(image, { signal: ctx.signal }),
    );
    // Its warnings are said below only when the patch stops here: otherwise patchPlatformImage
    // checks again and says them.
    const warnings = checkReportMatchesImage(
      plan,
      {
        name: ctx.imageName ?? ctx.baseName,
        osRelease: distro.osRelease,
        packageDb: distro.packageDb,
        architecture: imagePlatform(image).architecture,
        variant: imagePlatform(image).variant,
        digests: { ...imageDigests(image), aliases: ctx.imageAliases },
        repository: ctx.repository,
      },
      { ignoreReportImage: ctx.ignoreReportImage },
    );
    const remaining = filterPlanByInstalled(plan, distro.installed ?? new Map());
    if (remaining.updates.length === 0) {
      for (const message of warnings) progress({ type: "warning", message });
      progress({
        type: "info",
        message: "the image's suture patch layer already has every fix the report asks for",
      });
      return {
        result: {
          platform,
          status: "up-to-date",
          plan: remaining,
          changed: [],
          failed: [],
          digest: image.manifest.digest,
          warnings,
        },
      };
    }
  }
  progress({
    type: "info",
    message: `the image has a suture patch layer already: it is dropped and a new one is built on the original image's layers (${ctx.baseName}), so versions below are relative to the original`,
  });
  return { ...(await patchPlatformImage(image, plan, ctx)), replaced: true };
}

/**
 * A single-platform image is that platform only: a --platform naming another one must not be
 * ignored (patching and pushing an amd64 image the user asked an arm64 one of).
 */
function assertSinglePlatform(name: string, image: Image, wanted: Platform[] | undefined): void {
  if (!wanted?.length) return;
  const has = imagePlatform(image);
  const missing = wanted.filter((p) => !platformMatches(p, has));
  if (missing.length === 0) return;
  throw new SutureError(
    "UNSUPPORTED_PLATFORM",
    `${name} has no ${missing.map(formatPlatform).join(", ")} image (it is a single-platform ${formatPlatform(has)} image): pass --platform ${formatPlatform(has)} or leave --platform out`,
  );
}

/**
 * Patching extracts layers with their owners, mounts overlayfs and runs runc: all root-only. Say
 * so before any work rather than failing later on the first chown.
 */
function assertRoot(): void {
  const uid = process.getuid?.();
  if (uid === undefined || uid === 0) return;
  throw new SutureError(
    "SANDBOX",
    `suture patch needs root (it extracts layers with their owners, mounts overlayfs and runs runc), and runs as uid ${uid}: run it as root (sudo), or through the suture CLI, which re-runs itself in a user namespace, or set SUTURE_PATCH_MODE=no-namespaces (native engines only, no scripts); suture doctor says what this host allows`,
  );
}

/** Refuse an output that cannot be written, before reading any layer. */
async function assertWritableOutput(
  sinkRef: TransportReference,
  targetName: string,
  transport: TransportOptions,
): Promise<void> {
  if (sinkRef.transport === "oci") {
    // The layout sink checks what is there (a file, a non-layout directory) and creates nothing yet.
    await openLayoutSink(sinkRef.dir, sinkRef.tag, transport);
    await assertCreatable(sinkRef.dir, "--oci-dir", targetName);
  } else if (sinkRef.transport === "docker-archive") {
    await assertWritableFile(sinkRef.file, "--archive");
  }
}

/** A file can be written at `file`: its directory exists and is writable, and it is not a directory. */
async function assertWritableFile(file: string, flag: string): Promise<void> {
  const existing = await stat(file).catch(() => undefined);
  if (existing?.isDirectory()) {
    throw new SutureError("IO", `${flag} ${file} is a directory: give a file name`);
  }
  const dir = dirname(resolve(file));
  const parent = await stat(dir).catch(() => undefined);
  if (!parent?.isDirectory()) {
    throw new SutureError(
      "IO",
      `cannot write ${flag} ${file}: ${dir} ${parent ? "is not a directory" : "does not exist"}; create it or choose another path`,
    );
  }
  await access(dir, constants.W_OK).catch((e) => {
    throw new SutureError(
      "IO",
      `cannot write ${flag} ${file}: ${dir} is not writable (${(e as Error).message})`,
    );
  });
}

/** A directory can be created at `dir` (or is there): its nearest existing ancestor is a writable directory. */
async function assertCreatable(dir: string, flag: string, targetName: string): Promise<void> {
  let current = resolve(dir);
  for (;;) {
    const s = await stat(current).catch(() => undefined);
    if (s) {
      if (!s.isDirectory()) {
        throw new SutureError(
          "IO",
          `cannot create ${flag} ${dir} for ${targetName}: ${current} is not a directory`,
        );
      }
      await access(current, constants.W_OK).catch(() => {
        throw new SutureError("IO", `cannot write ${flag} ${dir}: ${current} is not writable`);
      });
      return;
    }
    const up = dirname(current);
    if (up === current) return;
    current = up;
  }
}

interface Reports {
  /** The plan for a platform; undefined = update-all. */
  planFor(platform: Platform): UpdatePlan | undefined;
  /** With a report directory, only platforms that have a report are patched. */
  restricts(platform: Platform): boolean;
}

async function readReports(options: PatchOptions): Promise<Reports> {
  const readOpts = {
    scanner: options.scanner,
    signal: options.signal,
    maxReportBytes: options.maxReportBytes,
  };
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
): Promise<Map<string, PlatformOutcome>> {
  const out = new Map<string, PlatformOutcome>();
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
        out.set(d.digest, await patchOne(image, plan, { ...ctx(image), signal }, options.progress));
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

/** The patched index's annotation listing the source's attestation manifests left out (comma-separated digests). */
export const DROPPED_ATTESTATIONS_ANNOTATION = "dev.suture.dropped-attestations";

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
  const now = (sourceDateEpoch() ?? new Date()).toISOString().replace(/\.\d+Z$/, "Z");
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
      // Said on the index, so a reader of it knows the source had attestations that no longer apply.
      ...(dropped.length ? { [DROPPED_ATTESTATIONS_ANNOTATION]: dropped.join(",") } : {}),
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
  copyOptions: Pick<CopyOptions, "progress" | "signal" | "mountFrom">,
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
          copyOptions,
          written,
        );
        await sink.writeManifest(image.manifest);
      } else {
        const child = await source.manifest(d);
        await copyManifestTree(source, sink, child, copyOptions, written);
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
    replacedPatchLayers: [],
    plan: first.plan,
    changed: first.changed,
    failed: first.failed,
    ...(first.fixes ? { fixes: first.fixes } : {}),
    layer: first.layer,
  };
}

function vexSubject(r: PlatformResult, products: VexSubject["products"]): VexSubject | undefined {
  if (!r.plan) return r.fixes ? fixesSubject(r, r.fixes, products) : undefined;
  const fixed = new Set(r.changed.map((c) => c.name));
  return {
    plan: r.plan,
    patched: new Set(
      r.plan.updates.map((u) => u.name).filter((n) => fixed.has(n) && !r.failed.some((f) => f.name === n)),
    ),
    products,
  };
}

/**
 * Update-all's VEX subject: what the updated packages say they fix, as a plan of their own
 * (installed → new version, the package's IDs), so the statements take the same form as a
 * report's; each notes where its IDs were read.
 */
function fixesSubject(
  r: PlatformResult,
  fixes: readonly PackageFix[],
  products: VexSubject["products"],
): VexSubject | undefined {
  const failed = new Set(r.failed.map((f) => f.name));
  const claimed = fixes.filter(
    (f) => f.from !== undefined && f.vulnerabilities.length > 0 && !failed.has(f.name),
  );
  if (claimed.length === 0) return undefined;
  const [os, arch, variant] = [r.os, ...r.platform.split("/").slice(1)];
  const packageType = PACKAGE_TYPE_OF_SOURCE[claimed[0]!.source];
  return {
    plan: {
      source: { format: "trivy", file: "" },
      ...(os ? { os } : {}),
      ...(arch ? { arch } : {}),
      ...(variant ? { variant } : {}),
      updates: claimed
        .map((f) => ({
          name: f.name,
          installedVersion: f.from!,
          fixedVersion: f.to,
          vulnerabilities: f.vulnerabilities,
          type: os?.family ?? "",
          class: "os-pkgs" as const,
          packageType,
        }))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
      skipped: [],
      findings: 0,
    },
    patched: new Set(claimed.map((f) => f.name)),
    products,
    sources: new Map(claimed.map((f) => [f.name, f.source])),
  };
}

const PACKAGE_TYPE_OF_SOURCE = {
  "debian-changelog": "deb",
  "rpm-changelog": "rpm",
  "alpine-secfixes": "apk",
} as const;

/**
 * OpenVEX is only made when something was fixed: a report's findings, or update-all's package
 * fixes; it is written when `-o` names a file (and returned either way, for `--attach`).
 */
async function writeVex(
  file: string | undefined,
  subjects: (VexSubject | undefined)[],
): Promise<{ file?: string; document: OpenVexDocument } | undefined> {
  const real = subjects.filter((s): s is VexSubject => s !== undefined);
  if (real.length === 0) return undefined;
  const doc = buildOpenVex(real);
  if (!doc) return undefined;
  if (file) await writeOpenVex(file, doc);
  return { file, document: doc };
}
