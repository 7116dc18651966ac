import type { FixSource } from "../../distro/changelog-ids.ts";
import type { DistroInfo } from "../../distro/detect.ts";
import { SutureError } from "../../errors/errors.ts";
import type { ImageFileAccess } from "../../fs/in-root.ts";
import type { Platform } from "../../oci/manifest.ts";
import type { ProgressSink } from "../../progress/events.ts";
import type { SandboxMount } from "../../sandbox/runtime.ts";
import type { StartedEarly } from "./early-work.ts";

/**
 * The contract every package manager's engines share. A package manager (dpkg today; apk and rpm
 * next) has up to two engines: a native one, suture's own code working from verified repositories,
 * and a sandbox one, the image's own package manager run in runc. The patch pipeline
 * (`src/patch/platform.ts`) knows only this file and the list of package managers
 * (`./package-managers.ts`); engines import this file and their own package manager's folder,
 * never another engine.
 */

/** One package the report asks to raise: after the patch it must be installed at `fixedVersion` or later. */
export interface PackageTarget {
  name: string;
  fixedVersion: string;
  installedVersion?: string;
}

/** The report's packages, or every package with an update (`update-all`, no report). */
export type Targets = readonly PackageTarget[] | "all";

/** A package that was not patched, and why in words a user can act on. */
export interface PackageFailure {
  name: string;
  reason: string;
}

/** Installed package name → version, as the image's package database says. */
export type InstalledVersions = ReadonlyMap<string, string>;

/** What an engine needs of the sandbox: the merged root to read and write, and a way to run the image's programs. */
export interface EngineSandbox {
  readonly mergedDir: string;
  /** A private host dir of this sandbox, removed with it (per-run copies of shared caches live here). */
  readonly scratchDir?: string;
  run(
    args: string[],
    options?: { env?: string[]; timeoutMs?: number; mounts?: SandboxMount[] },
  ): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  /**
   * A sandbox whose lowers left files out (sandbox/sparse-layers.ts) brings in whatever it left
   * out at these image paths; an engine calls it for paths it reads, replaces or removes that a
   * package does not ship where it writes (the replaced versions' files). Absent: nothing is left out.
   */
  ensurePaths?(paths: Iterable<string>): Promise<void>;
}

/**
 * The `--keyring` files of one kind. apk matches keys by file name and its public keys are named
 * `NAME.rsa.pub` by convention (abuild writes them so); every other file is an OpenPGP keyring.
 */
export function keyringFilesOf(kind: "openpgp" | "apk-rsa", files: readonly string[] = []): string[] {
  return files.filter((f) => f.endsWith(".rsa.pub") === (kind === "apk-rsa"));
}

/** What an engine is told about the run; everything but the sandbox and the targets. */
export interface EngineContext {
  platform: Platform;
  distro: DistroInfo;
  /** suture's cache root (`--cache-dir`). */
  cacheDir: string;
  /** Scratch space of this platform's patch, removed after it. */
  workDir: string;
  /** Repository URI → mirror URI (`--mirror`); signatures are still checked against the image's keys. */
  mirrors?: Readonly<Record<string, string>>;
  /**
   * Extra trusted key files (`--keyring`, repeatable): OpenPGP keyrings (dpkg, rpm) and apk's RSA
   * public keys (`NAME.rsa.pub`, PEM; the file name is the key name apk matches). Each package
   * manager takes the kind it verifies with.
   */
  keyringFiles?: readonly string[];
  /** `--allow-insecure-repositories`: accept unsigned repositories the image's own configuration allows. */
  allowInsecureRepositories?: boolean;
  /** `--ignore-errors`: patch what can be patched and report the rest as failures. */
  ignoreErrors?: boolean;
  timeoutMs?: number;
  progress: ProgressSink;
  signal?: AbortSignal;
  /** Work engines started while the layers were extracted (`startEarly`); each takes its own. */
  early?: readonly StartedEarly[];
}

/** What an engine's early work is told: the run's settings known before the image is unpacked. */
export type EarlyContext = Pick<
  EngineContext,
  "platform" | "cacheDir" | "mirrors" | "keyringFiles" | "allowInsecureRepositories" | "signal"
> & {
  /** The report's packages and fixed versions, before they are matched against what is installed. */
  targets?: readonly Pick<PackageTarget, "name" | "fixedVersion">[];
};

/** One package an engine resolved to install, before anything is downloaded. */
export interface PlannedPackage {
  name: string;
  /** Installed version, when it is installed. */
  from?: string;
  to: string;
  /** Why it is installed: `target`, or the dependency/upgrade that pulls it. */
  reason: string;
  /** The exact package file, by its content digest in the verified repository (e.g. `sha256:…`). */
  digest: string;
}

/** What an engine would do, resolved against the verified repositories; nothing changed yet. */
export interface EnginePlan {
  install: PlannedPackage[];
  failed: PackageFailure[];
  warnings: string[];
  /**
   * Everything besides the image and the packages' digests that shapes the result (for the result
   * cache: e.g. whether maintainer scripts run). Undefined: the result cannot be reused.
   */
  reuseKey?: readonly string[];
}

/** What an engine did. The pipeline derives the changes and validates targets from `before`/`after`. */
export interface EngineResult {
  before: InstalledVersions;
  after: InstalledVersions;
  /** Targets left out before anything was changed (only with ignoreErrors; otherwise thrown). */
  failed: PackageFailure[];
  warnings: string[];
  /** Wall time in maintainer scripts and triggers, when the engine ran them separately. */
  scriptsMs?: number;
  /** A patch layer built earlier for exactly this plan (see result-cache.ts); the upper dir is untouched. */
  reusedLayer?: PatchLayerFile;
  /**
   * The verified package files the engine installed (or handed to the image's tool), by the name
   * and version their own metadata gives: the pipeline reads what an update fixes from them (a
   * file counts only for a package now installed at exactly that version).
   */
  packageFiles?: readonly InstalledPackageFile[];
  /** What the updated packages fix, as read with the result the cache reused (see result-cache.ts). */
  fixes?: readonly PackageFix[];
  /**
   * Called by the pipeline with the layer it built from this result and what validation made of
   * the result (the result cache keeps both).
   */
  keepLayer?: (
    layer: PatchLayerFile,
    outcome: { failed: PackageFailure[]; warnings: string[]; fixes?: readonly PackageFix[] },
  ) => Promise<void>;
}

/** A verified package file an engine installed. */
export interface InstalledPackageFile {
  name: string;
  version: string;
  file: string;
}

/** One updated package and its verified package file, as the pipeline hands it to `readFixes`. */
export interface UpdatedPackageFile {
  name: string;
  /** The version installed before the patch (undefined: newly installed). */
  from?: string;
  to: string;
  file: string;
}

/** The vulnerability IDs one updated package says it fixes, and where it says so. */
export interface PackageFix {
  name: string;
  from?: string;
  to: string;
  vulnerabilities: string[];
  source: FixSource;
}

/** A patch layer's file and what describes it. */
export interface PatchLayerFile {
  file: string;
  digest: string;
  size: number;
  diffID: string;
  uncompressedSize: number;
  droppedUnchanged: number;
}

export type EngineKind = "native" | "sandbox";

export interface PatchEngine {
  readonly kind: EngineKind;
  /** The `apply` step's progress text, e.g. "updating packages with the image's apt (runc)". */
  readonly description: string;
  /**
   * Resolve the targets against the verified repositories without changing anything (`--dry-run`,
   * the result cache). Engines whose resolution happens inside the image's own tool have none.
   */
  plan?(sandbox: EngineSandbox, targets: Targets, ctx: EngineContext): Promise<EnginePlan>;
  /** Apply the targets to the sandbox's root; `plan`, when given, is this engine's own plan for them. */
  apply(
    sandbox: EngineSandbox,
    targets: Targets,
    ctx: EngineContext,
    plan?: EnginePlan,
  ): Promise<EngineResult>;
  /**
   * Start, from the image's files as the layers are being extracted, work this engine will need
   * (patch/early-work.ts): it must decide from those files alone whether the image is its kind
   * (answering undefined when not) and read them only through `files`.
   */
  startEarly?(files: ImageFileAccess, ctx: EarlyContext): StartedEarly;
}

/**
 * An engine whose implementation module is imported when the pipeline first calls it. Every
 * package manager is listed to match an image against, but a patch runs one engine: imported up
 * front, the rpm and apk engines and apt's sandbox engine were ~55 modules (XML parsers, rpm
 * database writers) of every native Debian patch's start, read from disk on a cold cache. `shape`
 * is what the pipeline reads before calling the engine (its kind, the apply step's text, whether
 * it plans); `load` resolves to the engine itself, of that shape (package-managers.test.ts
 * compares them, and the first call refuses an engine that differs).
 */
export function engineOnDemand(
  shape: { kind: EngineKind; description: string; plans: boolean },
  load: () => Promise<PatchEngine>,
): PatchEngine {
  let loaded: Promise<PatchEngine> | undefined;
  const engine = () => {
    loaded ??= load().then((e) => sameShape(standIn, e));
    return loaded;
  };
  // Every member of PatchEngine is named here: one added to the interface does not compile until
  // this says how a stand-in forwards it, so none is dropped without a word.
  const members: { [K in keyof Required<PatchEngine>]: PatchEngine[K] | undefined } = {
    kind: shape.kind,
    description: shape.description,
    plan: shape.plans
      ? async (sandbox: EngineSandbox, targets: Targets, ctx: EngineContext) =>
          (await engine()).plan!(sandbox, targets, ctx)
      : undefined,
    apply: async (sandbox, targets, ctx, plan) => (await engine()).apply(sandbox, targets, ctx, plan),
    // Early work is asked of every engine on every patch, before one is chosen, and synchronously:
    // forwarding it would import the module on every patch. An engine with early work is imported
    // up front (as dpkg's native engine is); sameShape refuses one loaded on demand.
    startEarly: undefined,
  };
  const standIn = Object.fromEntries(
    Object.entries(members).filter(([, value]) => value !== undefined),
  ) as unknown as PatchEngine;
  return standIn;
}

/** The names of the members an engine has (those that are not undefined), sorted. */
export function engineMembers(engine: PatchEngine): string[] {
  return Object.entries(engine)
    .filter(([, value]) => value !== undefined)
    .map(([name]) => name)
    .sort();
}

/** `loaded` when it has the stand-in's kind, description and members; INTERNAL otherwise. */
function sameShape(standIn: PatchEngine, loaded: PatchEngine): PatchEngine {
  const listed = engineMembers(standIn).join(", ");
  const has = engineMembers(loaded).join(", ");
  if (standIn.kind !== loaded.kind || standIn.description !== loaded.description || listed !== has)
    throw new SutureError(
      "INTERNAL",
      `the ${loaded.kind} engine loaded on demand (${has}; "${loaded.description}") is not the one listed (${listed}; "${standIn.description}")`,
    );
  return loaded;
}

/** A package manager suture can patch with, and its engines. */
export interface PackageManager {
  /** `dpkg`, `apk`, `rpm`: the package database family. */
  readonly name: string;
  /** What users call the distributions it serves, for messages ("Debian and Ubuntu images"). */
  readonly serves: string;
  /** Whether an image (its detected package database) is this package manager's. */
  handles(distro: DistroInfo): boolean;
  /** This package format's version order. */
  compareVersions(a: string, b: string): number;
  /** suture's own engine; the default where it exists. */
  readonly native?: PatchEngine;
  readonly sandbox?: PatchEngine;
  /**
   * Why the sandbox engine cannot run in this image, completing "--engine sandbox …" (e.g. "needs
   * apt in the image, and Debian 12 has none"); undefined when it can. `os` names the image's OS.
   */
  sandboxUnavailable?(distro: DistroInfo, os: string): string | undefined;
  /**
   * Whether the format's own verification checks file mtimes against its database (`rpm -V`
   * does; dpkg and apk do not): then the patch layer keeps files an upgrade rewrote with the same
   * bytes but a new mtime (see BuildPatchLayerOptions.keepTouchedFiles).
   */
  readonly verifiesFileTimes?: boolean;
  /**
   * What each updated package fixes, read from its verified package file (Debian's changelog,
   * RPM's %changelog): the IDs named between the installed and the new version. `distro` is the
   * image as detected before the patch (rpm's installed headers). Packages it cannot tell about
   * are left out of the result.
   */
  readFixes?(
    updated: readonly UpdatedPackageFile[],
    context: { distro: DistroInfo; signal?: AbortSignal },
  ): Promise<PackageFix[]>;
}

export type EngineChoice = "auto" | EngineKind;

/**
 * Which engine patches an image: `auto` is the package manager's native engine where it has one
 * (it needs nothing in the image) and its sandbox engine otherwise; `native` and `sandbox` force
 * one and fail with the reason when it cannot serve the image.
 */
export function selectEngine(
  choice: EngineChoice,
  distro: DistroInfo,
  managers: readonly PackageManager[],
): { manager: PackageManager; engine: PatchEngine } {
  const os = distro.osRelease?.prettyName ?? distro.osRelease?.id ?? "an unknown OS";
  const manager = managers.find((m) => m.handles(distro));
  if (!manager) {
    throw new SutureError(
      "UNSUPPORTED_OS",
      `${os} with package db "${distro.packageDb}" is not supported yet: suture patches ${managers.map((m) => m.serves).join(", ")}`,
    );
  }
  if (choice === "sandbox" || (choice === "auto" && !manager.native)) {
    const why = manager.sandbox
      ? manager.sandboxUnavailable?.(distro, os)
      : `has no ${manager.name} implementation in suture yet`;
    if (why || !manager.sandbox) {
      throw new SutureError(
        "USAGE",
        `--engine sandbox ${why}${manager.native ? ": use --engine native (or leave --engine out)" : ""}`,
      );
    }
    return { manager, engine: manager.sandbox };
  }
  if (!manager.native) {
    throw new SutureError(
      "USAGE",
      `suture has no native engine for ${manager.name} images: use --engine sandbox`,
    );
  }
  return { manager, engine: manager.native };
}

/** Packages that cannot be patched, found before anything was changed; the user may patch the rest. */
export function cannotPatch(failed: readonly PackageFailure[]): SutureError {
  return new SutureError(
    "PATCH_FAILED",
    `cannot patch ${failed.map((f) => `${f.name}: ${f.reason}`).join("; ")}; or pass --ignore-errors to patch the rest`,
  );
}

/**
 * How an engine's `apply` starts from its plan, the same for every engine: the plan's warnings
 * are reported (and kept for the result), its failures thrown as `cannotPatch` unless
 * `--ignore-errors` leaves them out. Returns the result's warnings, `warn` to add more as they
 * happen, and the failures left out.
 */
export function beginApply(
  plan: Pick<EnginePlan, "warnings" | "failed">,
  ctx: Pick<EngineContext, "progress" | "ignoreErrors">,
): { warnings: string[]; warn: (message: string) => void; failed: PackageFailure[] } {
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    ctx.progress({ type: "warning", message });
  };
  for (const w of plan.warnings) warn(w);
  const failed = [...plan.failed];
  if (failed.length && !ctx.ignoreErrors) throw cannotPatch(failed);
  return { warnings, warn, failed };
}

/** Packages that were updated but did not reach the version the report asked for. */
export function notReached(failed: readonly PackageFailure[]): SutureError {
  return new SutureError(
    "PATCH_FAILED",
    `packages did not reach their fixed versions: ${failed.map((f) => `${f.name}: ${f.reason}`).join("; ")}`,
  );
}

/** Name → {from, to} for every package whose installed version differs after the patch. */
export function installedChanges(
  before: InstalledVersions,
  after: InstalledVersions,
): Map<string, { from?: string; to: string }> {
  const out = new Map<string, { from?: string; to: string }>();
  for (const [name, v] of after) if (before.get(name) !== v) out.set(name, { from: before.get(name), to: v });
  return out;
}

/**
 * Check an engine's result against the targets, the same way for every engine: each target not
 * already left out must be installed at its fixed version or later. A target that is no longer
 * installed is a warning (the package manager removed it as part of the update). Throws
 * `notReached` unless `ignoreErrors`; returns every failure and the warnings it added.
 */
export function validateTargets(
  targets: Targets,
  result: Pick<EngineResult, "after" | "failed">,
  compareVersions: (a: string, b: string) => number,
  ignoreErrors: boolean | undefined,
): { failed: PackageFailure[]; warnings: string[] } {
  const failed = [...result.failed];
  const warnings: string[] = [];
  if (targets === "all") return { failed, warnings };
  for (const t of targets) {
    if (failed.some((f) => f.name === t.name)) continue;
    const v = result.after.get(t.name);
    if (!v) {
      warnings.push(`${t.name} is no longer installed after the update`);
      continue;
    }
    if (compareVersions(v, t.fixedVersion) < 0) {
      failed.push({ name: t.name, reason: `installed ${v} is lower than required ${t.fixedVersion}` });
    }
  }
  if (failed.length > result.failed.length && !ignoreErrors) throw notReached(failed);
  return { failed, warnings };
}
