import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { copyFile, mkdir, rm, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { dpkgArchitecture } from "../../../distro/dpkg/architecture.ts";
import { installedVersions, readInstalledPackages } from "../../../distro/dpkg/database.ts";
import { downloadPackages } from "../../../distro/dpkg/fetch-debs.ts";
import type { PackageEntry } from "../../../distro/dpkg/packages-index.ts";
import {
  applyMirrors,
  fileAccessFromRoot,
  formatDeb822Sources,
  readAptSources,
  refuseSourcesMarkedTrusted,
} from "../../../distro/dpkg/sources.ts";
import { compareDebVersions } from "../../../distro/dpkg/version.ts";
import {
  isValidPackageArchitecture,
  isValidPackageName,
  isValidPackageVersion,
} from "../../../distro/package-syntax.ts";
import { SutureError } from "../../../errors/errors.ts";
import { childPath, listDirInRoot, readFileInRoot } from "../../../fs/in-root.ts";
import type { ProgressSink } from "../../../progress/events.ts";
import { assertCanRun } from "../../../sandbox/emulation.ts";
import { withSharedCacheLock } from "../../../sandbox/file-lock.ts";
import type { SandboxMount } from "../../../sandbox/runtime.ts";
import {
  cannotPatch,
  type EngineContext,
  type EngineResult,
  type EngineSandbox,
  type InstalledPackageFile,
  type PatchEngine,
  type Targets,
} from "../engine.ts";
import {
  type ListsTrust,
  listsTrustFor,
  packageFileChecksum,
  saveLists,
  seedLists,
  type VerifiedList,
  verifiedLists,
} from "./apt-lists.ts";
import { chooseVersion } from "./fix-version.ts";
import { aptEnv, aptFailure } from "./run-apt.ts";

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

/**
 * Update packages with the image's own apt, as copa does, but refusing what copa lets through:
 * never a new top-level package (--only-upgrade), never a major-version jump the report did not ask
 * for (copa#1441: when the candidate's upstream major differs from both the installed and the fixed
 * version, pin the highest available version on the fixed version's major instead).
 */
export async function applyWithApt(
  sandbox: EngineSandbox,
  targets: Targets,
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
): Promise<EngineResult> {
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
  sandbox: EngineSandbox,
  targets: Targets,
  options: Parameters<typeof applyWithApt>[2],
  state: {
    progress: ProgressSink;
    warnings: string[];
    before: Map<string, string>;
    mounts: SandboxMount[];
    aptOptions: string[];
    own: { lists: string; archives: string } | undefined;
  },
): Promise<EngineResult> {
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
  const packageFiles: InstalledPackageFile[] = [];
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
    for (const [i, m] of wanted.entries())
      packageFiles.push({ name: m.entry.package, version: m.entry.version, file: paths[i]! });
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

  if (targets === "all") {
    await prefetch(["apt-get", "upgrade", ...aptOptions]);
    await run("apt-get upgrade", ["apt-get", "upgrade", ...aptOptions]);
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
    }
    // Whether every target reached its fixed version is checked by the pipeline (validateTargets).
    return { before, after: await readInstalled(sandbox.mergedDir), failed, warnings, packageFiles };
  }
  return { before, after: await readInstalled(sandbox.mergedDir), failed: [], warnings, packageFiles };
}

/** Run `fn` holding the shared cache's lock, saying why when another suture holds it. */
function withCacheLock<T>(
  cache: AptCacheDirs,
  progress: ProgressSink,
  signal: AbortSignal | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  return withSharedCacheLock(cache.lock, "apt cache", progress, signal, fn);
}

export async function readInstalled(root: string): Promise<Map<string, string>> {
  // Resolved inside the image: after the image's apt and scripts ran, /var/lib/dpkg may be a
  // symlink they planted to a host path.
  const installed = await readInstalledPackages(root);
  if (!installed)
    throw new SutureError(
      "PATCH_FAILED",
      "the image has no /var/lib/dpkg/status after apt ran: its package database is gone",
    );
  return installedVersions(installed);
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

/**
 * The image's own apt in runc, as copa patches: keys and sources are read before it runs (its
 * hooks may change both), `trusted=yes` sources are refused unless the user accepts them, and
 * `--mirror` hands it rewritten sources.
 */
export const aptSandboxEngine: PatchEngine = {
  kind: "sandbox",
  description: "updating packages with the image's apt (runc)",
  async apply(sandbox: EngineSandbox, targets: Targets, ctx: EngineContext): Promise<EngineResult> {
    const { platform } = ctx;
    await assertCanRun(platform);
    const root = sandbox.mergedDir;
    // The image's apt would honour trusted=yes; suture asks the user first, as the native engine does.
    if (!ctx.allowInsecureRepositories)
      refuseSourcesMarkedTrusted(await readAptSources(fileAccessFromRoot(root)).catch(() => []));
    const sourcesDir = ctx.mirrors && (await mirroredSources(root, ctx.mirrors, ctx.workDir, ctx.progress));
    const arch = dpkgArchitecture(platform.architecture, platform.variant);
    const cache = await aptCacheFor(
      ctx.cacheDir,
      sourcesDir ?? root,
      platform.architecture,
      await listsTrustFor(root, arch, ctx.mirrors),
    );
    return applyWithApt(sandbox, targets, {
      ignoreErrors: ctx.ignoreErrors,
      progress: ctx.progress,
      timeoutMs: ctx.timeoutMs,
      cache,
      sourcesDir,
      signal: ctx.signal,
      allowInsecureRepositories: ctx.allowInsecureRepositories,
    });
  },
};

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
