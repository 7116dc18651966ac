import { lstat, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { formatRpmNevra } from "../../../distro/rpm/header.ts";
import {
  type InstalledRpm,
  installedRpmVersions,
  isRpmPublicKey,
  readInstalledRpmsInRoot,
} from "../../../distro/rpm/installed.ts";
import {
  type IniSection,
  parseIni,
  type RpmRepo,
  type RpmRepoConfig,
  type RpmRepoTool,
  readRpmRepoConfig,
  refuseUncheckedRepos,
} from "../../../distro/rpm/repo-config.ts";
import { quoteUntrusted, SutureError } from "../../../errors/errors.ts";
import { readFileInRoot, resolveInRoot } from "../../../fs/in-root.ts";
import { assertCanRun } from "../../../sandbox/emulation.ts";
import { withSharedCacheLock } from "../../../sandbox/file-lock.ts";
import type { SandboxMount } from "../../../sandbox/runtime.ts";
import { type Keyring, parseKeyring } from "../../../trust/keyring.ts";
import { nativeArch } from "../../../vex/purl.ts";
import {
  type EngineContext,
  type EngineResult,
  type EngineSandbox,
  keyringFilesOf,
  type PatchEngine,
  type Targets,
} from "../engine.ts";
import { withRunDirs } from "../shared/run-dirs.ts";
import { assertTargetNames } from "../shared/target-names.ts";
import {
  copyVerifiedRepodata,
  type RpmMetadataCache,
  rpmMetadataCache,
  saveRepodata,
  sharesMetadataCache,
} from "./sandbox-cache.ts";
import { type RpmSandboxTool, rpmSandboxTool, rpmSandboxUnavailable } from "./sandbox-tool.ts";

/**
 * The image's own dnf, yum, microdnf, tdnf or zypper in runc over the overlay, as copa patches
 * rpm images (copa: `dnf`/`tdnf upgrade --refresh NAMES -y`, `yum upgrade NAMES -y`,
 * `microdnf update NAMES -y`, zypper `up --no-recommends NAMES`; names only, the tool picks the
 * newest version, and the pipeline checks that it reaches the fix), with what suture adds:
 *
 * - signatures are always checked: the tool runs with gpgcheck on (dnf's `--setopt=gpgcheck`,
 *   and `gpgcheck=1` in every repository file handed to it; zypper also `pkg_gpgcheck=1`) and is
 *   never given `--nogpgcheck` or `--gpg-auto-import-keys` (copa passes the former on one path).
 *   A repository the image sets `gpgcheck=0` is refused before anything runs
 *   (`refuseUncheckedRepos`, the native engine's rule too) unless `--keyring` keys make it
 *   checkable or `--allow-insecure-repositories` accepts it as the image's tool would;
 * - the repositories are read from the image before any of its code runs and handed to the tool
 *   as files of suture's own under /run (which the layer leaves out), `--mirror` applied to their
 *   baseurls: nothing under /etc is edited and nothing of suture's lands in the layer;
 * - `--keyring` keys are imported into rpm's keyring (what every one of these tools checks
 *   package signatures against, zypper included) for the run, and erased again after it, so the
 *   layer carries no gpg-pubkey the image did not have; dnf also gets them as `gpgkey=` for
 *   repositories that sign their metadata;
 * - the tool's metadata cache is a private dir per run, seeded from `--cache-dir` with metadata
 *   suture verified and saved back only when it verifies (sandbox-cache.ts; yum 3 shares none,
 *   since it keeps a cached repomd.xml dated later than the one it fetches); its logs go to a
 *   scratch dir. What the tool records in the image itself (dnf's history database in
 *   /var/lib/dnf, yum's yumdb, zypper's /var/lib/zypp/AutoInstalled: which packages were pulled
 *   in as dependencies, what `autoremove` and `history undo` need) stays: it is the image's
 *   record of what was installed, as the rpm database is. What a tool writes about its run
 *   alone (zypp's anonymous id and refresh cookies, RUN_STATE_FILES) is removed when the run
 *   created it.
 */

export { type RpmSandboxTool, rpmSandboxTool, rpmSandboxUnavailable } from "./sandbox-tool.ts";

/** Which configuration layout a tool reads (dnf5 and microdnf read dnf's). */
export function repoConfigTool(tool: RpmSandboxTool): RpmRepoTool {
  return tool === "dnf5" || tool === "microdnf" ? "dnf" : tool;
}

/** Where suture's files for the image's tool appear in the container: under /run, out of the layer. */
const RUN_DIR = "/run/suture-rpm";
export const IN_CONTAINER = {
  repos: `${RUN_DIR}/repos.d`,
  keys: `${RUN_DIR}/keys`,
  etc: `${RUN_DIR}/etc`,
  cache: `${RUN_DIR}/cache`,
  log: `${RUN_DIR}/log`,
} as const;

export interface RpmCommandOptions {
  /** `--allow-insecure-repositories`: gpgcheck is left as the image sets it. */
  allowInsecure?: boolean;
  /** `--ignore-errors`: dnf and yum skip packages whose update cannot be installed. */
  ignoreErrors?: boolean;
}

/** One command of a run, with the words for messages. */
export interface RpmCommand {
  what: string;
  args: string[];
}

/**
 * The commands that upgrade `targets` (package names, or every package) with `tool`, in order.
 * Package names are checked rpm names (never starting with `-`) and follow `--` where the tool's
 * parser ends options there.
 */
export function rpmUpgradeCommands(
  tool: RpmSandboxTool,
  targets: readonly string[] | "all",
  options: RpmCommandOptions = {},
): RpmCommand[] {
  const names = targets === "all" ? [] : [...targets];
  const gpgcheck = options.allowInsecure ? [] : ["--setopt=gpgcheck=True"];
  const common = [
    `--setopt=reposdir=${IN_CONTAINER.repos}`,
    `--setopt=cachedir=${IN_CONTAINER.cache}`,
    "--setopt=keepcache=False",
  ];
  // libdnf (dnf 4, dnf5, microdnf) running as root uses system_cachedir.
  const systemCache = `--setopt=system_cachedir=${IN_CONTAINER.cache}`;
  switch (tool) {
    case "dnf":
      return [
        {
          what: "dnf upgrade",
          args: [
            "dnf",
            "-y",
            "--setopt=install_weak_deps=False",
            ...common,
            systemCache,
            `--setopt=logdir=${IN_CONTAINER.log}`,
            ...gpgcheck,
            "--refresh",
            ...(options.ignoreErrors ? ["--skip-broken"] : []),
            "upgrade",
            ...(names.length ? ["--", ...names] : []),
          ],
        },
      ];
    case "dnf5":
      return [
        {
          what: "dnf5 upgrade",
          args: [
            "dnf5",
            "-y",
            "--setopt=install_weak_deps=False",
            ...common,
            systemCache,
            `--setopt=logdir=${IN_CONTAINER.log}`,
            ...gpgcheck,
            "--refresh",
            ...(options.ignoreErrors ? ["--skip-broken"] : []),
            "upgrade",
            ...names,
          ],
        },
      ];
    case "yum":
      // yum 3 (CentOS 7, Amazon Linux 2): no --refresh and no weak dependencies; metadata_expire=0
      // makes it check every repository's repomd.xml again, as --refresh does.
      return [
        {
          what: "yum upgrade",
          args: [
            "yum",
            "-y",
            ...common,
            `--setopt=logfile=${IN_CONTAINER.log}/yum.log`,
            "--setopt=metadata_expire=0",
            ...(options.allowInsecure ? [] : ["--setopt=gpgcheck=1"]),
            ...(options.ignoreErrors ? ["--skip-broken"] : []),
            "upgrade",
            ...(names.length ? ["--", ...names] : []),
          ],
        },
      ];
    case "microdnf":
      return [
        {
          what: "microdnf update",
          args: [
            "microdnf",
            "-y",
            "--setopt=install_weak_deps=0",
            `--setopt=reposdir=${IN_CONTAINER.repos}`,
            `--setopt=cachedir=${IN_CONTAINER.cache}`,
            systemCache,
            ...(options.allowInsecure ? [] : ["--setopt=gpgcheck=1"]),
            "--refresh",
            "update",
            ...(names.length ? ["--", ...names] : []),
          ],
        },
      ];
    case "tdnf":
      // tdnf takes its repository dir, cache dir and gpgcheck from the tdnf.conf suture writes
      // (see tdnfConf): its --setopt knows only some keys.
      return [
        {
          what: "tdnf update",
          args: [
            "tdnf",
            "-y",
            "-c",
            `${IN_CONTAINER.etc}/tdnf.conf`,
            "--refresh",
            "update",
            ...(names.length ? ["--", ...names] : []),
          ],
        },
      ];
    case "zypper": {
      const global = [
        "zypper",
        "--non-interactive",
        "--reposd-dir",
        IN_CONTAINER.repos,
        "--cache-dir",
        IN_CONTAINER.cache,
      ];
      return [
        // copa refreshes first: a repository that fails its signature check fails here, alone.
        { what: "zypper refresh", args: [...global, "refresh"] },
        {
          what: "zypper update",
          args: [...global, "update", "--no-recommends", ...(names.length ? ["--", ...names] : [])],
        },
      ];
    }
  }
}

/** The environment of the image's tool: C messages (they are parsed), the host's proxy, zypper's files. */
export function rpmToolEnv(tool: RpmSandboxTool): string[] {
  const proxy = ["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"].flatMap(
    (k) => (process.env[k] ? [`${k}=${process.env[k]}`] : []),
  );
  const zypp =
    tool === "zypper"
      ? [`ZYPP_CONF=${IN_CONTAINER.etc}/zypp.conf`, `ZYPP_LOGFILE=${IN_CONTAINER.log}/zypper.log`]
      : [];
  return ["LC_ALL=C", ...proxy, ...zypp];
}

/**
 * zypper's exit codes that report success with a note (ZYPPER_EXIT_INF_*): 102 a reboot is
 * needed, 103 zypper itself was updated and must restart. 106 (repositories skipped) and 107
 * (a scriptlet failed) are not: the first means a repository was not used, the second is reported.
 */
const ZYPPER_OK = new Set([0, 102, 103]);
const ZYPPER_SCRIPTLET_FAILED = 107;

/** What the tools print when a signature or checksum does not check out. */
const RPM_TRUST_FAILURE =
  /GPG check FAILED|signature verification (?:error|failed)|Signature verification failed|is not signed|is unsigned|Public key for \S+ is not installed|BAD signature|checksum doesn't match|Digest verification failed|GPG keys listed for the .* are not correct|Bad GPG signature|GPG check failed/i;

/**
 * One line from a failed tool: the lines about signatures or checksums it refused, else its
 * `Error` lines (dnf `Error: …`, tdnf `Error(1525) : …`, zypper's `Problem:`), else its last lines.
 * A refused signature or checksum is UNTRUSTED, anything else PATCH_FAILED.
 */
export function rpmToolFailure(
  tool: RpmSandboxTool,
  what: string,
  exitCode: number,
  output: string,
): SutureError {
  const lines = output
    .replaceAll("\r", "")
    .split("\n")
    // Terminal control characters never reach a message.
    .map((l) => l.replace(/[\p{Cc}]/gu, "").trim())
    .filter((l) => l !== "");
  const refused = lines.filter((l) => RPM_TRUST_FAILURE.test(l));
  const errors = lines.filter((l) => /^(Error\b|Problem:|ERROR\b)/.test(l));
  const picked = refused.length ? refused.slice(0, 3) : errors.length ? errors.slice(0, 3) : lines.slice(-3);
  const summary = picked.join(" | ").slice(0, 500);
  if (refused.length) {
    return new SutureError(
      "UNTRUSTED",
      `${what}: ${tool} refused what the repository served (a signature or checksum that does not verify with the keys the image trusts): ${summary}; the mirror or a proxy is serving altered files, or the signer's key is missing (trust it with --keyring KEYFILE)`,
    );
  }
  return new SutureError(
    "PATCH_FAILED",
    `${what} failed in the image (exit ${exitCode}): ${summary || "no output"}; check the image's repositories (or their --mirror)`,
  );
}

/** An INI value written back: continuation lines indented, as the tools read them. */
function iniLine(key: string, value: string): string {
  return `${key}=${value.split("\n").join("\n  ")}\n`;
}

/** A file name of suture's for a repository file of the image (`3-ubi.repo`). */
function repoFileName(index: number, origin: string): string {
  const name = basename(origin.replace(/:\d+$/, "")).replace(/[^A-Za-z0-9._-]/g, "_");
  return `${index}-${name.endsWith(".repo") ? name : `${name}.repo`}`;
}

export interface RepoFileOptions {
  tool: RpmSandboxTool;
  /** Leave gpgcheck as the image sets it (`--allow-insecure-repositories`). */
  allowInsecure?: boolean;
  /** `gpgkey` URLs added to every repository (the `--keyring` keys as the tool sees them). */
  extraKeyUrls?: readonly string[];
  /** Told each repository whose remote `gpgkey` URLs were left out. */
  warn?: (message: string) => void;
}

/** The settings that turn package signature checks on or off (dnf5: `gpgcheck` is an alias of `pkg_gpgcheck`). */
const PACKAGE_GPGCHECK_KEYS = ["gpgcheck", "pkg_gpgcheck"] as const;

/**
 * The repository files handed to the tool: each of the image's files with every key as the image
 * wrote it (priorities, excludes, module and ssl settings keep their effect), except that
 * - `baseurl` is the mirrored URL where `--mirror` applies (and then the repository's
 *   mirrorlist/metalink, which the tools would prefer, is left out);
 * - `gpgcheck=1` and `pkg_gpgcheck=1` as the last keys of each section (whichever the image set,
 *   and in whatever order: dnf5 reads the two as one setting, the last assignment winning),
 *   unless the user accepts the image's setting;
 * - `gpgkey` keeps only the image's `file://` keys (files of the image: the tool runs with the
 *   image as its root) and lists the `--keyring` keys too; an http(s) or other remote key is left
 *   out with a warning, since `-y` would make the tool import whatever that URL serves (trust on
 *   first use, which the native engine refuses as well).
 * Sections the tool ignores (a second definition of an id) are left out, as it would.
 */
export async function rpmRepoFiles(
  root: string,
  config: Pick<RpmRepoConfig, "repos">,
  options: RepoFileOptions,
): Promise<Map<string, string>> {
  const byFile = new Map<string, RpmRepo[]>();
  for (const repo of config.repos) {
    const file = repo.origin.replace(/:\d+$/, "");
    const list = byFile.get(file) ?? [];
    list.push(repo);
    byFile.set(file, list);
  }
  const out = new Map<string, string>();
  let index = 0;
  for (const [file, repos] of byFile) {
    index++;
    const text = (await readFileInRoot(root, file))?.toString("utf8");
    if (text === undefined) continue;
    const sections = new Map<string, IniSection>(parseIni(text, file).map((s) => [s.origin, s]));
    let body = `# ${file} of the image, as suture hands it to ${options.tool}\n`;
    for (const repo of repos) {
      const section = sections.get(repo.origin);
      if (!section) continue;
      body += `\n[${repo.id}]\n`;
      const values = new Map(section.values);
      const mirrored = repo.fetchUrls.some((u, i) => u !== repo.baseurls[i]!.replace(/\/+$/, ""));
      if (mirrored) {
        values.set("baseurl", repo.fetchUrls.join("\n"));
        values.delete("mirrorlist");
        values.delete("metalink");
      }
      const imageKeys = (values.get("gpgkey") ?? "").split(/[\s,]+/).filter((k) => k);
      const remote = imageKeys.filter((k) => !/^file:\/\//i.test(k));
      if (remote.length)
        options.warn?.(
          `repository ${repo.id} (${quoteUntrusted(repo.origin)}) names gpgkey ${remote.map((k) => quoteUntrusted(k)).join(", ")}, which ${options.tool} would fetch and trust on first use: left out, so only keys in the image or given with --keyring are trusted (pass that key with --keyring KEYFILE if the repository needs it)`,
        );
      const keys = [
        ...imageKeys.filter((k) => /^file:\/\//i.test(k)),
        ...(options.tool !== "zypper" ? (options.extraKeyUrls ?? []) : []),
      ];
      values.delete("gpgkey");
      if (keys.length) values.set("gpgkey", keys.join("\n"));
      if (!options.allowInsecure) for (const key of PACKAGE_GPGCHECK_KEYS) values.delete(key);
      for (const [key, value] of values) body += iniLine(key, value);
      if (!options.allowInsecure) for (const key of PACKAGE_GPGCHECK_KEYS) body += iniLine(key, "1");
    }
    out.set(repoFileName(index, file), body);
  }
  return out;
}

/** tdnf's configuration for the run: the image's `[main]` with suture's dirs and gpgcheck. */
export async function tdnfConf(root: string, allowInsecure: boolean): Promise<string> {
  const path = "/etc/tdnf/tdnf.conf";
  const text = (await readFileInRoot(root, path))?.toString("utf8");
  const main = text === undefined ? undefined : parseIni(text, path).find((s) => s.name === "main");
  const values = new Map(main?.values);
  values.set("repodir", IN_CONTAINER.repos);
  values.set("cachedir", IN_CONTAINER.cache);
  values.set("keepcache", "0");
  if (!allowInsecure) values.set("gpgcheck", "1");
  let body = "[main]\n";
  for (const [key, value] of values) body += iniLine(key, value);
  return body;
}

/**
 * zypp's configuration for the run: the image's zypp.conf as it is, with its history log moved
 * to the run's log dir (a later assignment in `[main]` wins in zypp's parser).
 */
export async function zyppConf(root: string): Promise<string> {
  const text = (await readFileInRoot(root, "/etc/zypp/zypp.conf"))?.toString("utf8") ?? "";
  return `${text}${text && !text.endsWith("\n") ? "\n" : ""}\n[main]\nhistory.logfile = ${IN_CONTAINER.log}/zypp-history\n`;
}

/**
 * Files a tool writes about its own run rather than about what is installed: left out of the
 * layer when the run created them (the image did not have them), so that patching the same image
 * twice gives the same layer. zypp's anonymous id (sent to mirrors, a new random value each time)
 * and its record of when each repository's metadata was last refreshed (which the run's private
 * cache makes meaningless in the image).
 */
export const RUN_STATE_FILES: Readonly<Partial<Record<RpmSandboxTool, readonly string[]>>> = {
  zypper: ["/var/lib/zypp/AnonymousUniqueId", "/var/lib/YaST2/cookies"],
};

/** The run-state files of `tool` the image has, before its tool runs. */
async function existingRunState(root: string, tool: RpmSandboxTool): Promise<Set<string>> {
  const had = new Set<string>();
  for (const path of RUN_STATE_FILES[tool] ?? [])
    if (await resolveInRoot(root, path, { followFinal: false, mustExist: true })) had.add(path);
  return had;
}

/** Remove the run-state files the run created (a regular file only; resolved inside the root). */
async function dropNewRunState(root: string, tool: RpmSandboxTool, had: ReadonlySet<string>): Promise<void> {
  for (const path of RUN_STATE_FILES[tool] ?? []) {
    if (had.has(path)) continue;
    const host = await resolveInRoot(root, path, { followFinal: false, mustExist: true });
    if (host && (await lstat(host)).isFile()) await rm(host);
  }
}

/** The image's installed packages, read after the tool ran (resolved inside its root). */
async function readRpmInstalled(root: string, tool: RpmSandboxTool): Promise<InstalledRpm[]> {
  const db = await readInstalledRpmsInRoot(root);
  if (!db)
    throw new SutureError(
      "PATCH_FAILED",
      `the image has no rpm database after ${tool} ran: its package database is gone`,
    );
  return db.packages;
}

/** The `--keyring` OpenPGP files, each key as an armored file of its own (what `rpm --import` reads). */
async function keyringKeys(files: readonly string[]): Promise<{ armored: string[]; fingerprints: string[] }> {
  const rings: Keyring[] = [];
  for (const file of files) {
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (e) {
      throw new SutureError("USAGE", `cannot read --keyring ${file}: ${(e as Error).message}`, { cause: e });
    }
    rings.push(await parseKeyring(bytes, file));
  }
  const keys = rings.flatMap((r) => r.keys);
  return {
    armored: keys.map((k) => k.armor()),
    fingerprints: keys.map((k) => k.getFingerprint()),
  };
}

/** The image's own rpm-family package manager in runc (see the top of this file). */
export const rpmSandboxEngine: PatchEngine = {
  kind: "sandbox",
  description: "updating packages with the image's dnf/yum/microdnf/tdnf/zypper (runc)",
  async apply(sandbox: EngineSandbox, targets: Targets, ctx: EngineContext): Promise<EngineResult> {
    await assertCanRun(ctx.platform);
    const { progress } = ctx;
    if (!sandbox.scratchDir)
      throw new SutureError("INTERNAL", "the rpm sandbox engine needs a sandbox with a scratch dir");
    const tool = rpmSandboxTool(ctx.distro);
    if (!tool)
      throw new SutureError(
        "USAGE",
        `--engine sandbox ${rpmSandboxUnavailable(ctx.distro, ctx.distro.osRelease?.prettyName ?? "the image")}`,
      );
    assertTargetNames("rpm", targets);
    const root = sandbox.mergedDir;
    const arch = nativeArch("rpm", ctx.platform.architecture, ctx.platform.variant) ?? "x86_64";
    const allowInsecure = ctx.allowInsecureRepositories ?? false;
    // Read before any of the image's code runs: its scripts may rewrite the repository files.
    // $releasever is the tool's to work out (from the release package): variables left unknown
    // here stay as written in suture's files, and the tool expands them.
    const config = await readRpmRepoConfig(root, repoConfigTool(tool), { arch, mirrors: ctx.mirrors });
    for (const message of config.notes) progress({ type: "info", message });
    const keys = await keyringKeys(keyringFilesOf("openpgp", ctx.keyringFiles ?? []));
    refuseUncheckedRepos(config, { extraKeys: keys.armored.length > 0, allowInsecure });
    const enabled = config.repos.filter((r) => r.enabled);
    if (!enabled.length)
      throw new SutureError(
        "PATCH_FAILED",
        `the image enables no ${tool} repository (${repoConfigTool(tool)}'s configuration), so there is nothing to update from: enable one in the image`,
      );
    const warnings: string[] = [];
    const warn = (message: string) => {
      warnings.push(message);
      progress({ type: "warning", message });
    };
    const mirrors = Object.keys(ctx.mirrors ?? {});
    if (
      mirrors.length &&
      !enabled.some((r) => r.fetchUrls.some((u, i) => u !== r.baseurls[i]!.replace(/\/+$/, "")))
    ) {
      warn(
        `no ${tool} repository of the image uses ${mirrors.join(", ")}: --mirror changes nothing (its repositories: ${enabled.flatMap((r) => r.baseurls).join(", ") || "none with a baseurl"})`,
      );
    }
    const keyFiles = keys.armored.map((_, i) => `keyring-${i + 1}.asc`);
    const repoFiles = await rpmRepoFiles(root, config, {
      tool,
      allowInsecure,
      extraKeyUrls: keyFiles.map((f) => `file://${IN_CONTAINER.keys}/${f}`),
      warn,
    });
    const cache = rpmMetadataCache(ctx.cacheDir, tool, arch, repoFiles, keys.fingerprints);

    // The run's own files: repositories, keys and configuration read-only; cache and logs private.
    const runDirs = {
      repos: { destination: IN_CONTAINER.repos },
      keys: { destination: IN_CONTAINER.keys },
      etc: { destination: IN_CONTAINER.etc },
      cache: { destination: IN_CONTAINER.cache, writable: true },
      log: { destination: IN_CONTAINER.log, writable: true },
    };
    return withRunDirs(sandbox.scratchDir, "rpm", runDirs, async (dirs, mounts) => {
      for (const [name, text] of repoFiles) await writeFile(join(dirs.repos, name), text, { flag: "wx" });
      for (const [i, armored] of keys.armored.entries())
        await writeFile(join(dirs.keys, keyFiles[i]!), armored, { flag: "wx" });
      if (tool === "tdnf") await writeFile(join(dirs.etc, "tdnf.conf"), await tdnfConf(root, allowInsecure));
      if (tool === "zypper") await writeFile(join(dirs.etc, "zypp.conf"), await zyppConf(root));
      return applyInRun({ sandbox, ctx, tool, mounts, warn, warnings }, targets, {
        cache,
        privateCache: dirs.cache,
        keyFiles,
      });
    });
  },
};

interface RpmRun {
  sandbox: EngineSandbox;
  ctx: EngineContext;
  tool: RpmSandboxTool;
  mounts: SandboxMount[];
  warn: (message: string) => void;
  warnings: string[];
}

function withCacheLock<T>(run: RpmRun, cache: RpmMetadataCache, fn: () => Promise<T>): Promise<T> {
  return withSharedCacheLock(cache.lock, `${run.tool} metadata cache`, run.ctx.progress, run.ctx.signal, fn);
}

async function runInImage(run: RpmRun, command: RpmCommand) {
  return run.sandbox.run(command.args, {
    env: rpmToolEnv(run.tool),
    timeoutMs: run.ctx.timeoutMs,
    mounts: run.mounts,
  });
}

async function applyInRun(
  run: RpmRun,
  targets: Targets,
  state: { cache: RpmMetadataCache; privateCache: string; keyFiles: string[] },
): Promise<EngineResult> {
  const { sandbox, tool, ctx } = run;
  const root = sandbox.mergedDir;
  const { cache, privateCache, keyFiles } = state;
  const before = await readRpmInstalled(root, tool);

  // yum 3 gets none (sandbox-cache.ts: it would keep a planted repomd.xml dated in the future).
  const shared = sharesMetadataCache(tool);
  if (shared) await mkdir(join(cache.dir, ".."), { recursive: true });
  const seeded = shared
    ? await withCacheLock(run, cache, () => copyVerifiedRepodata(cache.dir, privateCache))
    : [];
  if (seeded.length)
    ctx.progress({
      type: "info",
      message: `${tool}: ${seeded.length} repositor${seeded.length === 1 ? "y's" : "ies'"} cached metadata verified; ${tool} checks each against its repository's current repomd.xml`,
    });

  // `--keyring` keys join rpm's keyring for the run only: the ones imported here are erased after.
  let importedKeys: InstalledRpm[] = [];
  if (keyFiles.length) {
    const importKeys: RpmCommand = {
      what: "rpm --import",
      args: ["rpm", "--import", ...keyFiles.map((f) => `${IN_CONTAINER.keys}/${f}`)],
    };
    const r = await runInImage(run, importKeys);
    if (r.exitCode !== 0)
      throw rpmToolFailure(
        tool,
        "importing the --keyring keys (rpm --import)",
        r.exitCode,
        `${r.stderr}\n${r.stdout}`,
      );
    const had = new Set(before.filter(isRpmPublicKey).map((k) => formatRpmNevra(k.nevra)));
    importedKeys = (await readRpmInstalled(root, tool)).filter(
      (k) => isRpmPublicKey(k) && !had.has(formatRpmNevra(k.nevra)),
    );
  }

  let failure: unknown;
  const hadRunState = await existingRunState(root, tool);
  const names = targets === "all" ? "all" : targets.map((t) => t.name);
  if (names === "all" || names.length) {
    for (const command of rpmUpgradeCommands(tool, names, {
      allowInsecure: ctx.allowInsecureRepositories,
      ignoreErrors: ctx.ignoreErrors,
    })) {
      const r = await runInImage(run, command);
      if (tool === "zypper" && r.exitCode === ZYPPER_SCRIPTLET_FAILED) {
        run.warn(
          `${command.what}: a package's scriptlet failed in the image (zypper exit 107); the packages are installed`,
        );
        continue;
      }
      const ok = tool === "zypper" ? ZYPPER_OK.has(r.exitCode) : r.exitCode === 0;
      if (!ok) {
        failure = rpmToolFailure(tool, command.what, r.exitCode, `${r.stderr}\n${r.stdout}`);
        break;
      }
    }
  }
  await dropNewRunState(root, tool, hadRunState);
  // Whatever the outcome, the metadata that verifies is kept for the next run.
  if (shared) await withCacheLock(run, cache, () => saveRepodata(privateCache, cache.dir));

  if (importedKeys.length) {
    const erase: RpmCommand = {
      what: "rpm --erase",
      args: [
        "rpm",
        "--erase",
        "--allmatches",
        ...importedKeys.map((k) => `${k.nevra.name}-${k.nevra.version}-${k.nevra.release}`),
      ],
    };
    const r = await runInImage(run, erase);
    if (r.exitCode !== 0 && !failure)
      failure = rpmToolFailure(
        tool,
        "removing the --keyring keys again (rpm --erase)",
        r.exitCode,
        `${r.stderr}\n${r.stdout}`,
      );
  }
  if (failure) throw failure;
  const after = await readRpmInstalled(root, tool);
  // Whether every target reached its fixed version is checked by the pipeline (validateTargets).
  return {
    before: installedRpmVersions(before),
    after: installedRpmVersions(after),
    failed: [],
    warnings: run.warnings,
  };
}
