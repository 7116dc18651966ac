import { constants } from "node:fs";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import { downloadPackages } from "../../../distro/dpkg/fetch-debs.ts";
import type { PackageEntry } from "../../../distro/dpkg/packages-index.ts";
import { parseDpkgStatus } from "../../../distro/dpkg/status.ts";
import { compareDebVersions } from "../../../distro/dpkg/version.ts";
import {
  isValidPackageArchitecture,
  isValidPackageName,
  isValidPackageVersion,
} from "../../../distro/package-syntax.ts";
import { childPath, readFileInRoot } from "../../../distro/root-files.ts";
import { SutureError } from "../../../errors/errors.ts";
import type { ProgressSink } from "../../../progress/events.ts";
import { withFileLock } from "../../../sandbox/file-lock.ts";
import type { SandboxMount } from "../../../sandbox/runtime.ts";
import {
  type ListsTrust,
  packageFileChecksum,
  saveLists,
  seedLists,
  type VerifiedList,
  verifiedLists,
} from "./apt-lists.ts";

/** What the apt engine needs from a sandbox: a merged root to read and a way to run commands in it. */
export interface SandboxRunner {
  readonly mergedDir: string;
  /**
   * A private host dir of this sandbox, removed with it; the apt engine keeps the run's own copies
   * of apt's lists and archives there (needed when a cache is given).
   */
  readonly scratchDir?: string;
  run(
    args: string[],
    options?: { env?: string[]; timeoutMs?: number; mounts?: SandboxMount[] },
  ): Promise<{ exitCode: number; stdout: string; stderr: string }>;
}

/**
 * What the apt engine keeps between runs. The image's apt, its hooks and the maintainer scripts are
 * the image's code, so none of this is ever mounted into the container: each run gets private
 * copies of the lists and .debs, and suture itself writes back only what it verified.
 */
export interface AptCacheDirs {
  /**
   * Shared apt lists of images with the same sources and trusted keys: only files suture verified
   * against those keys are written here (see apt-lists.ts), and they are verified again on reuse.
   */
  lists: string;
  /** Guards `lists` against two suture processes writing it at once (sandbox/file-lock.ts). */
  lock: string;
  /** Which list files may be cached, with their keys (from the image, before it ran). */
  trust: ListsTrust;
  /**
   * Cache root of verified .debs by SHA-256 (distro/dpkg/fetch-debs.ts layout), shared with the
   * native engine: packages apt will need are fetched there in parallel before apt runs, and the
   * run's archives dir gets copies of them.
   */
  debStore?: string;
}

/**
 * Where the run's private lists and archives appear in the container. The archives go under a name
 * of our own because official Debian images' docker-clean hook deletes /var/cache/apt/archives/*.deb
 * after every dpkg run; both paths are under the layer builder's excludes.
 */
const CACHE_MOUNT = { lists: "/var/lib/apt/lists", archives: "/var/cache/apt/suture-archives" } as const;

export interface PackageTarget {
  name: string;
  /** The version the report says fixes it; the installed version must reach at least this. */
  fixedVersion: string;
  installedVersion?: string;
}

export interface AptResult {
  /** name → version after patching, for every package that changed. */
  changed: Map<string, { from?: string; to: string }>;
  /** Targets that did not reach their fixed version (only with ignoreErrors; else an error is thrown). */
  failed: { name: string; reason: string }[];
  warnings: string[];
  /** Wall time inside apt-get install / upgrade (the dpkg part), for the benchmark. */
  installMs: number;
}

const APT_OPTIONS = [
  "-o",
  "Dpkg::Options::=--force-confold",
  "-o",
  "Dpkg::Options::=--force-confdef",
  // Patching happens on a throwaway overlay: a crash just discards it, so fsync buys nothing.
  "-o",
  "Dpkg::Options::=--force-unsafe-io",
  "-o",
  "APT::Get::Assume-Yes=true",
  "-o",
  "Dpkg::Use-Pty=0",
  "-o",
  "Acquire::Retries=3",
];

/** What keeps the image's apt from using repositories it cannot verify, whatever its apt.conf says. */
const SECURE_APT_OPTIONS = [
  "-o",
  "Acquire::AllowInsecureRepositories=false",
  "-o",
  "Acquire::AllowDowngradeToInsecureRepositories=false",
  "-o",
  "APT::Get::AllowUnauthenticated=false",
];

/** The environment of the image's apt and dpkg, read when they run (the proxy may be set after load). */
export function aptEnv(): string[] {
  return [
    "DEBIAN_FRONTEND=noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN=true",
    "LC_ALL=C",
    // apt in the container uses the host's proxy, as suture's own downloads do.
    ...["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"].flatMap((k) =>
      process.env[k] ? [`${k}=${process.env[k]}`] : [],
    ),
  ];
}

/**
 * Update packages with the image's own apt, as copa does, but refusing what copa lets through:
 * never a new top-level package (--only-upgrade), never a major-version jump the report did not ask
 * for (copa#1441: when the candidate's upstream major differs from both the installed and the fixed
 * version, pin the highest available version on the fixed version's major instead).
 */
export async function applyWithApt(
  sandbox: SandboxRunner,
  targets: PackageTarget[] | "all",
  options: {
    ignoreErrors?: boolean;
    progress?: ProgressSink;
    timeoutMs?: number;
    cache?: AptCacheDirs;
    /** Host dir holding `*.sources` files apt uses instead of the image's own (e.g. with --mirror). */
    sourcesDir?: string;
    signal?: AbortSignal;
    /** The user accepts what the image's apt.conf allows of unsigned repositories (--allow-insecure-repositories). */
    allowInsecureRepositories?: boolean;
  },
): Promise<AptResult> {
  const progress = options.progress ?? (() => {});
  const warnings: string[] = [];
  const before = await readInstalled(sandbox.mergedDir);
  const mounts: SandboxMount[] = [];
  // apt applies -o after its configuration files: an image's apt.conf cannot turn verification off
  // behind the user's back, as the native engine refuses it too.
  const aptOptions = [...APT_OPTIONS, ...(options.allowInsecureRepositories ? [] : SECURE_APT_OPTIONS)];
  const cache = options.cache;
  let own: { lists: string; archives: string } | undefined;
  if (cache) {
    if (!sandbox.scratchDir) {
      throw new SutureError("INTERNAL", "the apt engine's cache needs a sandbox with a scratch dir");
    }
    // The run's own lists and archives: whatever the image's code does to them stays in this run.
    own = {
      lists: join(sandbox.scratchDir, "apt-lists"),
      archives: join(sandbox.scratchDir, "apt-archives"),
    };
    await mkdir(join(own.archives, "partial"), { recursive: true });
    await mkdir(join(own.lists, "partial"), { recursive: true });
    const lists = own.lists;
    await withCacheLock(cache, progress, options.signal, () => seedLists(cache.lists, lists, cache.trust));
    mounts.push(
      { destination: CACHE_MOUNT.lists, source: own.lists },
      { destination: CACHE_MOUNT.archives, source: own.archives },
    );
    aptOptions.push("-o", `Dir::Cache::Archives=${CACHE_MOUNT.archives}/`);
  }
  try {
    return await aptRun(sandbox, targets, options, { progress, warnings, before, mounts, aptOptions, own });
  } finally {
    if (own)
      await Promise.all([
        rm(own.lists, { recursive: true, force: true }),
        rm(own.archives, { recursive: true, force: true }),
      ]);
  }
}

async function aptRun(
  sandbox: SandboxRunner,
  targets: PackageTarget[] | "all",
  options: Parameters<typeof applyWithApt>[2],
  state: {
    progress: ProgressSink;
    warnings: string[];
    before: Map<string, string>;
    mounts: SandboxMount[];
    aptOptions: string[];
    own: { lists: string; archives: string } | undefined;
  },
): Promise<AptResult> {
  const { progress, warnings, before, mounts, aptOptions, own } = state;
  const cache = options.cache;
  if (options.sourcesDir) {
    // Under /run, which the layer builder excludes; the image's own sources files stay untouched.
    mounts.push({ destination: "/run/suture-apt-sources", source: options.sourcesDir, options: ["ro"] });
    aptOptions.push(
      "-o",
      "Dir::Etc::SourceList=/run/suture-apt-sources/none.list",
      "-o",
      "Dir::Etc::SourceParts=/run/suture-apt-sources/",
    );
  }
  const run = async (what: string, args: string[]) => {
    const r = await sandbox.run(args, { env: aptEnv(), timeoutMs: options.timeoutMs, mounts });
    if (r.exitCode !== 0) {
      throw aptFailure(what, r.exitCode, r.stderr || r.stdout);
    }
    return r;
  };

  /** The Packages indexes that verified after `apt-get update`, held for prefetch look-ups. */
  let verified: Map<string, VerifiedList> | undefined;
  /**
   * apt downloads one file after another; ask it what it will fetch (--print-uris: URI, file name,
   * size), fetch those in parallel into the verified store, each checked against the SHA-256 that
   * suture's verified indexes list for it, and put copies in the run's archives dir, where apt
   * verifies them again before use. Copies, not links: the image's code may write to that dir.
   */
  const prefetch = async (args: string[]) => {
    if (!cache?.debStore || !own || !verified?.size) return;
    // Right after the subcommand: an install's package list follows a `--` that ends apt's options.
    const r = await run("apt-get --print-uris", [
      ...args.slice(0, 2),
      "--print-uris",
      "-qq",
      ...args.slice(2),
    ]);
    const lists = verified;
    const wanted = parsePrintUris(r.stdout).flatMap((w) => {
      const entry = verifiedDebEntry(w, lists);
      return entry ? [{ filename: w.filename, entry }] : [];
    });
    if (!wanted.length) return;
    const paths = await downloadPackages(
      wanted.map((m) => m.entry),
      { cacheDir: cache.debStore, progress, signal: options.signal },
    );
    await Promise.all(
      wanted.map(async (m, i) => {
        const dest = childPath(own.archives, m.filename, "apt's archive file name");
        await rm(dest, { force: true });
        await copyFile(paths[i]!, dest, constants.COPYFILE_EXCL);
      }),
    );
  };

  await run("apt-get update", ["apt-get", "update", ...aptOptions]);
  if (cache && own) {
    // Verified right after the update, before any package's scripts ran, and kept in memory: what
    // the image's code does to the files from here on changes neither the cache nor the look-ups.
    const lists = await verifiedLists(own.lists, cache.trust);
    await withCacheLock(cache, progress, options.signal, () => saveLists(lists, cache.lists));
    for (const [name, v] of lists) if (!v.packages) lists.delete(name);
    verified = lists;
  }
  const held = (await sandbox.run(["apt-mark", "showhold"], { env: aptEnv() })).stdout
    .split("\n")
    .map((s) => s.trim())
    .filter(Boolean);
  const heldTargets = new Set(
    targets === "all" ? held : targets.filter((t) => held.includes(t.name)).map((t) => t.name),
  );
  for (const h of heldTargets) {
    const w = `package ${h} is held (apt-mark hold) in the image: it is left at its installed version`;
    warnings.push(w);
    progress({ type: "warning", message: w });
  }

  const started = performance.now();
  let installMs = 0;
  if (targets === "all") {
    await prefetch(["apt-get", "upgrade", ...aptOptions]);
    await run("apt-get upgrade", ["apt-get", "upgrade", ...aptOptions]);
    installMs = performance.now() - started;
  } else {
    const policy = parseAptPolicy(
      // `--`: apt's command line ends options there, so no package name can ever be read as one.
      (
        await run("apt-cache policy", [
          "apt-cache",
          "policy",
          ...aptOptions,
          "--",
          ...targets.map((t) => t.name),
        ])
      ).stdout,
    );
    const pins: string[] = [];
    const failed: { name: string; reason: string }[] = [];
    for (const t of targets) {
      if (heldTargets.has(t.name)) {
        failed.push({
          name: t.name,
          reason: `held with apt-mark hold in the image (run \`apt-mark unhold ${t.name}\` in the image to allow it)`,
        });
        continue;
      }
      const p = policy.get(t.name);
      const choice = p && chooseVersion(t, { ...p, versions: eligibleVersions(p) });
      if (!choice) {
        const best = p?.candidate && p.candidate !== "(none)" ? p.candidate : "none";
        failed.push({
          name: t.name,
          reason: `no version ≥ ${t.fixedVersion} in the image's apt sources (best: ${best}); check them`,
        });
        continue;
      }
      if (choice.note) {
        warnings.push(choice.note);
        progress({ type: "warning", message: choice.note });
      }
      if (p.installed && compareDebVersions(choice.version, p.installed) <= 0) continue;
      pins.push(`${t.name}=${choice.version}`);
    }
    if (failed.length && !options.ignoreErrors) {
      throw cannotPatch(failed);
    }
    if (pins.length) {
      const installArgs = [
        "apt-get",
        "install",
        "--no-install-recommends",
        "--only-upgrade",
        ...aptOptions,
        "--", // as for apt-cache: a `-o…` package name would otherwise be an apt option
        ...pins,
      ];
      await prefetch(installArgs);
      await run("apt-get install", installArgs);
      installMs = performance.now() - started;
    }
    const after = await readInstalled(sandbox.mergedDir);
    for (const t of targets) {
      if (failed.some((f) => f.name === t.name)) continue;
      const v = after.get(t.name);
      if (!v) {
        warnings.push(`${t.name} is no longer installed after the update`);
        continue;
      }
      if (compareDebVersions(v, t.fixedVersion) < 0) {
        failed.push({ name: t.name, reason: `installed ${v} is lower than required ${t.fixedVersion}` });
      }
    }
    if (failed.length && !options.ignoreErrors) {
      throw notReached(failed);
    }
    return { changed: diffInstalled(before, after), failed, warnings, installMs };
  }
  const after = await readInstalled(sandbox.mergedDir);
  return { changed: diffInstalled(before, after), failed: [], warnings, installMs };
}

/** Run `fn` holding the shared cache's lock, saying why when another suture holds it. */
function withCacheLock<T>(
  cache: AptCacheDirs,
  progress: ProgressSink,
  signal: AbortSignal | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  return withFileLock(cache.lock, fn, {
    signal,
    onWait: (owner) =>
      progress({
        type: "warning",
        message: `waiting for another suture (pid ${owner?.pid ?? "?"}) using the same apt cache`,
      }),
  });
}

/** Packages that cannot be patched before anything was changed; the user may patch the rest. */
export function cannotPatch(failed: readonly { name: string; reason: string }[]): SutureError {
  return new SutureError(
    "PATCH_FAILED",
    `cannot patch ${failed.map((f) => `${f.name}: ${f.reason}`).join("; ")}; or pass --ignore-errors to patch the rest`,
  );
}

/** Packages that were updated but did not reach the version the report asked for. */
export function notReached(failed: readonly { name: string; reason: string }[]): SutureError {
  return new SutureError(
    "PATCH_FAILED",
    `packages did not reach their fixed versions: ${failed.map((f) => `${f.name}: ${f.reason}`).join("; ")}`,
  );
}

export async function readInstalled(root: string): Promise<Map<string, string>> {
  // Resolved inside the image: after the image's apt and scripts ran, /var/lib/dpkg may be a
  // symlink they planted to a host path.
  const bytes = await readFileInRoot(root, "/var/lib/dpkg/status");
  if (!bytes)
    throw new SutureError(
      "PATCH_FAILED",
      "the image has no /var/lib/dpkg/status after apt ran: its package database is gone",
    );
  return new Map(parseDpkgStatus(bytes.toString("utf8")).map((p) => [p.name, p.version]));
}

function diffInstalled(
  before: Map<string, string>,
  after: Map<string, string>,
): Map<string, { from?: string; to: string }> {
  const out = new Map<string, { from?: string; to: string }>();
  for (const [name, v] of after) if (before.get(name) !== v) out.set(name, { from: before.get(name), to: v });
  return out;
}

export interface AptPolicy {
  installed?: string;
  candidate?: string;
  versions: string[];
  /** Each version's priority, as the version table shows it. */
  priorities?: Map<string, number>;
}

/**
 * The versions `apt-get install --only-upgrade` may take for a target: those apt ranks as high as
 * its candidate (a backport or a version pinned lower is not installed behind the image's back).
 */
export function eligibleVersions(p: AptPolicy): string[] {
  const floor = p.candidate ? p.priorities?.get(p.candidate) : undefined;
  if (floor === undefined) return p.versions;
  return p.versions.filter((v) => (p.priorities?.get(v) ?? floor) >= floor);
}

/** Parse `apt-cache policy a b c` (LC_ALL=C). */
export function parseAptPolicy(text: string): Map<string, AptPolicy> {
  const out = new Map<string, AptPolicy>();
  let current: AptPolicy | undefined;
  let inTable = false;
  for (const line of text.split("\n")) {
    const head = /^(\S+?):(?:[a-z0-9]+)?:?\s*$/.exec(line);
    if (head && !line.startsWith(" ")) {
      current = { versions: [] };
      out.set(head[1]!, current);
      inTable = false;
      continue;
    }
    if (!current) continue;
    const inst = /^\s+Installed:\s*(\S+)/.exec(line);
    if (inst) current.installed = inst[1] === "(none)" ? undefined : inst[1];
    const cand = /^\s+Candidate:\s*(\S+)/.exec(line);
    if (cand) current.candidate = cand[1];
    if (/^\s+Version table:/.test(line)) {
      inTable = true;
      continue;
    }
    // Version lines are indented 5 (or "*** "), origin lines deeper and start with a priority.
    const ver = /^ {5}(\S+) (-?\d+)$|^ \*\*\* (\S+) (-?\d+)$/.exec(line);
    if (inTable && ver) {
      const version = (ver[1] ?? ver[3])!;
      current.versions.push(version);
      current.priorities ??= new Map();
      current.priorities.set(version, Number(ver[2] ?? ver[4]));
    }
  }
  return out;
}

/** Pick the version to install for a target from what apt offers; undefined when nothing fixes it. */
export function chooseVersion(
  t: PackageTarget,
  p: AptPolicy,
): { version: string; note?: string } | undefined {
  const usable = p.versions
    .filter((v) => compareDebVersions(v, t.fixedVersion) >= 0)
    .sort((a, b) => compareDebVersions(b, a));
  if (!usable.length) return undefined;
  const best = usable[0]!;
  const installedMajor = p.installed ? upstreamMajor(p.installed) : undefined;
  const fixedMajor = upstreamMajor(t.fixedVersion);
  if (
    installedMajor !== undefined &&
    upstreamMajor(best) !== installedMajor &&
    upstreamMajor(best) !== fixedMajor
  ) {
    const sameMajor = usable.find((v) => upstreamMajor(v) === fixedMajor);
    if (sameMajor) {
      return {
        version: sameMajor,
        note: `${t.name}: ${best} is a new major version; installing ${sameMajor}, the report's fix line`,
      };
    }
    return undefined;
  }
  return { version: best };
}

function upstreamMajor(v: string): string {
  const noEpoch = v.includes(":") ? v.slice(v.indexOf(":") + 1) : v;
  return noEpoch.split(/[.+~-]/)[0]!;
}

/**
 * One line from apt's output: its `E:` lines (else the last lines), with verification failures
 * turned into UNTRUSTED errors that say what they mean.
 */
export function aptFailure(what: string, exitCode: number, output: string): SutureError {
  const lines = output.trim().split("\n");
  const errors = lines.filter((l) => l.startsWith("E: "));
  const summary = (errors.length ? errors : lines.slice(-3)).join(" | ").slice(0, 500);
  if (
    /Hash Sum mismatch|File has unexpected size|NO_PUBKEY|is not signed|invalid signature|EXPKEYSIG|is no longer valid|not valid yet/i.test(
      output,
    )
  ) {
    return new SutureError(
      "UNTRUSTED",
      `${what}: apt refused what the repository served (it does not match the signed metadata): ${summary}; the mirror or a proxy is serving altered or stale files, use another mirror`,
    );
  }
  return new SutureError("PATCH_FAILED", `${what} failed in the image (exit ${exitCode}): ${summary}`);
}

/**
 * `apt-get … --print-uris -qq` lines: `'URI' FILE SIZE [HASH]`. apt 2.6 prints no hash there, and
 * whatever it prints comes from lists the image's code could have rewritten, so only the URI, file
 * name and size are taken: the SHA-256 comes from suture's own verified indexes.
 */
export function parsePrintUris(text: string): { uri: string; filename: string; size: number }[] {
  const out: { uri: string; filename: string; size: number }[] = [];
  for (const line of text.split("\n")) {
    const m = /^'([^']+)'\s+(\S+)\s+(\d+)(?:\s+\S+)?\s*$/.exec(line.trim());
    if (!m) continue;
    const [, uri, filename, size] = m;
    if (filename!.includes("/") || filename!.startsWith(".") || !filename!.endsWith(".deb")) continue;
    out.push({ uri: uri!, filename: filename!, size: Number(size) });
  }
  return out;
}

/**
 * A download entry for a .deb apt will fetch, with the size and SHA-256 that suture's verified
 * Packages indexes list for its URI; undefined when none does (apt then fetches it itself, into
 * the run's own archives only).
 */
export function verifiedDebEntry(
  wanted: { uri: string; filename: string; size: number },
  lists: ReadonlyMap<string, VerifiedList>,
): PackageEntry | undefined {
  const sum = packageFileChecksum(lists, wanted.uri);
  if (!sum || sum.size !== wanted.size) return undefined;
  const cut = wanted.uri.lastIndexOf("/");
  let name: string;
  let version: string;
  try {
    name = decodeURIComponent(wanted.uri.slice(cut + 1));
    version = decodeURIComponent(basename(wanted.filename, ".deb").split("_")[1] ?? "");
  } catch {
    return undefined;
  }
  const [pkg = name, , arch = ""] = basename(wanted.filename, ".deb").split("_");
  // apt's file name is the image's word: a name that is no package identity is not prefetched.
  if (
    !isValidPackageName("deb", pkg) ||
    !isValidPackageVersion("deb", version) ||
    !isValidPackageArchitecture("deb", arch)
  )
    return undefined;
  return {
    package: pkg,
    version,
    architecture: arch,
    filename: name,
    size: sum.size,
    sha256: sum.sha256,
    essential: false,
    paragraph: "",
    repoUri: wanted.uri.slice(0, cut),
  };
}
