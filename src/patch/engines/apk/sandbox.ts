import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { type ApkConfig, readApkConfig } from "../../../distro/apk/config.ts";
import {
  INSTALLED_DB_PATH,
  installedVersionsOf,
  readInstalledDbInRoot,
} from "../../../distro/apk/installed-db.ts";
import type { ApkKeyring } from "../../../distro/apk/signature.ts";
import { compareApkVersions } from "../../../distro/apk/version.ts";
import { SutureError } from "../../../errors/errors.ts";
import { childPath } from "../../../fs/in-root.ts";
import type { ProgressSink } from "../../../progress/events.ts";
import { assertCanRun } from "../../../sandbox/emulation.ts";
import { withSharedCacheLock } from "../../../sandbox/file-lock.ts";
import type { SandboxMount } from "../../../sandbox/runtime.ts";
import { nativeArch } from "../../../vex/purl.ts";
import {
  cannotPatch,
  type EngineContext,
  type EngineResult,
  type EngineSandbox,
  type PackageFailure,
  type PackageTarget,
  type PatchEngine,
  type Targets,
} from "../engine.ts";
import { withRunDirs } from "../shared/run-dirs.ts";
import { assertTargetNames } from "../shared/target-names.ts";
import { trustedKeys } from "./keys.ts";
import {
  allFresh,
  type CachedIndexName,
  cachedIndexNames,
  INDEX_MAX_AGE_MINUTES,
  saveIndexes,
  seedIndexes,
  type VerifiedIndex,
  verifiedIndexes,
} from "./sandbox-cache.ts";

/**
 * The image's own apk in runc over the overlay, as copa patches Alpine images, with what suture
 * adds around it:
 *
 * - the repositories and keys are read from the image before any of its code runs and handed to
 *   apk as files of suture's own, mounted under /run (which the layer leaves out): the image's
 *   /etc/apk stays untouched, `--mirror` needs no edit of it, and `--keyring NAME.rsa.pub` adds
 *   trust without writing a key into the image. apk is never told to allow untrusted indexes;
 * - apk's index cache is a private copy per run, seeded from the shared cache under
 *   `--cache-dir` with indexes suture verified itself, and saved back only when they verify:
 *   nothing the image's apk writes reaches another run unchecked, and no index reaches the layer;
 * - a report's packages are upgraded with `apk upgrade NAME…` only. copa first runs `apk add`
 *   of them, which records each one in /etc/apk/world as if the user had asked for it (a library
 *   pulled in by a dependency would stay installed after its user is removed); `apk upgrade` with
 *   names raises exactly those packages, and the dependencies their new versions need, without
 *   installing anything new at top level (as the apt engine's --only-upgrade). Targets no verified
 *   index offers at their fixed version are found before anything changes.
 */

/** Where suture's files for the image's apk appear in the container: under /run, out of the layer. */
const RUN_DIR = "/run/suture-apk";
const IN_CONTAINER = {
  keys: `${RUN_DIR}/keys`,
  etc: `${RUN_DIR}/etc`,
  repositories: `${RUN_DIR}/etc/repositories`,
  cache: `${RUN_DIR}/cache`,
} as const;

/** apk's global options for every command of a run. */
export function apkGlobalOptions(): string[] {
  return [
    "--repositories-file",
    IN_CONTAINER.repositories,
    "--keys-dir",
    IN_CONTAINER.keys,
    "--cache-dir",
    IN_CONTAINER.cache,
    "--cache-max-age",
    String(INDEX_MAX_AGE_MINUTES),
    "--no-progress",
    "--no-interactive",
  ];
}

/** The environment of the image's apk: the host's proxy, as suture's own downloads use it. */
export function apkEnv(): string[] {
  return ["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"].flatMap((k) =>
    process.env[k] ? [`${k}=${process.env[k]}`] : [],
  );
}

/** What apk prints when a signature or archive does not check out (apk-tools' apk_error_str). */
const APK_TRUST_FAILURE = /UNTRUSTED signature|BAD signature|BAD archive|BAD checksum|checksum mismatch/i;

/**
 * One line from a failed apk command: apk's own first `ERROR:` line with the lines that detail
 * it (or its `WARNING:` lines when it printed no error, as `apk update` does for a repository it
 * could not use), else its last lines. The command's exit status says that it failed; apk's words
 * are the only account of why: a signature or archive it refused (its warning about the
 * repository, even when the error it stopped with is "stale/unavailable repositories") is
 * UNTRUSTED.
 */
export function apkFailure(what: string, exitCode: number, output: string, hint?: string): SutureError {
  const lines = output
    .replaceAll("\r", "")
    .split("\n")
    .filter((l) => l.trim() !== "");
  const first = lines.findIndex((l) => l.startsWith("ERROR:"));
  const warnings = lines.filter((l) => l.startsWith("WARNING:"));
  const refused = warnings.filter((l) => APK_TRUST_FAILURE.test(l));
  let picked: string[];
  if (first >= 0) {
    // `ERROR: unable to select packages:` is followed by indented lines saying which and why.
    const detail: string[] = [];
    for (const l of lines.slice(first + 1)) {
      if (!/^\s/.test(l) || detail.length >= 4) break;
      detail.push(l.trim());
    }
    picked = [...refused.slice(0, 3), lines[first]!, ...detail];
  } else {
    picked = warnings.length ? warnings.slice(0, 3) : lines.slice(-3);
  }
  const summary = picked.join(" | ").slice(0, 500);
  if (APK_TRUST_FAILURE.test(picked.join("\n"))) {
    return new SutureError(
      "UNTRUSTED",
      `${what}: apk refused what the repository served (a signature or checksum that does not verify with the keys the image trusts): ${summary}; the mirror or a proxy is serving altered files, or the signer's key is missing (trust it with --keyring NAME.rsa.pub)`,
    );
  }
  return new SutureError(
    "PATCH_FAILED",
    `${what} failed in the image (exit ${exitCode}): ${summary}${hint ? `; ${hint}` : ""}`,
  );
}

/** Installed package name → version, from the image's apk database (resolved inside its root). */
export async function readApkInstalled(root: string): Promise<Map<string, string>> {
  const packages = await readInstalledDbInRoot(
    root,
    () =>
      new SutureError(
        "PATCH_FAILED",
        `the image has no ${INSTALLED_DB_PATH} after apk ran: its package database is gone`,
      ),
  );
  return installedVersionsOf(packages);
}

/** The repositories file handed to apk: the image's repositories, mirrored, in its order and tags. */
export function formatRepositoriesFile(config: Pick<ApkConfig, "repositories">): string {
  return config.repositories.map((r) => `${r.tag ? `@${r.tag} ` : ""}${r.fetchUrl}\n`).join("");
}

/**
 * The best version each target can reach from the verified indexes, as apk chooses: from
 * untagged repositories, and from a tagged one only for a package the image's world pins to that
 * tag (`name@tag`). Targets without a version at or above their fix are failures.
 */
export function unreachableTargets(
  targets: readonly PackageTarget[],
  indexes: Iterable<VerifiedIndex>,
  world: readonly string[],
): PackageFailure[] {
  const pinnedTag = new Map<string, string>();
  for (const word of world) {
    // `name@tag`, optionally with a version constraint after it.
    const m = /^([^!@<>=~]+)@([^<>=~]+)/.exec(word);
    if (m) pinnedTag.set(m[1]!, m[2]!);
  }
  const best = new Map<string, string>();
  const wanted = new Set(targets.map((t) => t.name));
  for (const { name, index } of indexes) {
    const tag = name.repository.tag;
    for (const p of index.packages) {
      if (!wanted.has(p.name) || (tag !== undefined && pinnedTag.get(p.name) !== tag)) continue;
      const seen = best.get(p.name);
      if (seen === undefined || compareApkVersions(p.version, seen) > 0) best.set(p.name, p.version);
    }
  }
  const failed: PackageFailure[] = [];
  for (const t of targets) {
    const b = best.get(t.name);
    if (b !== undefined && compareApkVersions(b, t.fixedVersion) >= 0) continue;
    failed.push({
      name: t.name,
      reason: `no version ≥ ${t.fixedVersion} in the image's apk repositories (best: ${b ?? "none"}); check them or --mirror`,
    });
  }
  return failed;
}

/** What the engine keeps between runs, for one image flavour (repositories, arch, trusted keys). */
interface IndexCache {
  dir: string;
  lock: string;
}

function indexCacheFor(
  cacheDir: string,
  arch: string,
  repositoriesFile: string,
  pems: ReadonlyMap<string, Buffer>,
): IndexCache {
  const hash = createHash("sha256").update(`arch=${arch}\n${repositoriesFile}\n`);
  for (const [name, pem] of [...pems].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    hash.update(`key ${name} ${createHash("sha256").update(pem).digest("hex")}\n`);
  const dir = join(cacheDir, "apk-indexes", hash.digest("hex").slice(0, 16));
  return { dir: join(dir, "indexes"), lock: join(dir, "lock") };
}

function withCacheLock<T>(
  cache: IndexCache,
  progress: ProgressSink,
  signal: AbortSignal | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  return withSharedCacheLock(cache.lock, "apk index cache", progress, signal, fn);
}

/** Run state shared by the steps of one apply. */
interface ApkRun {
  sandbox: EngineSandbox;
  ctx: EngineContext;
  mounts: SandboxMount[];
}

async function runApk(run: ApkRun, what: string, args: string[], hint?: string) {
  const r = await run.sandbox.run(["apk", ...apkGlobalOptions(), ...args], {
    env: apkEnv(),
    timeoutMs: run.ctx.timeoutMs,
    mounts: run.mounts,
  });
  if (r.exitCode !== 0) throw apkFailure(what, r.exitCode, `${r.stderr}\n${r.stdout}`, hint);
  return r;
}

/** The image's apk in runc, as copa patches Alpine images (see the top of this file). */
export const apkSandboxEngine: PatchEngine = {
  kind: "sandbox",
  description: "updating packages with the image's apk (runc)",
  async apply(sandbox: EngineSandbox, targets: Targets, ctx: EngineContext): Promise<EngineResult> {
    await assertCanRun(ctx.platform);
    const { progress } = ctx;
    if (!sandbox.scratchDir)
      throw new SutureError("INTERNAL", "the apk sandbox engine needs a sandbox with a scratch dir");
    assertTargetNames("apk", targets);
    const root = sandbox.mergedDir;
    // Read before any of the image's code runs: its scripts may rewrite /etc/apk.
    const config = await readApkConfig(root, ctx.mirrors);
    for (const message of config.warnings) progress({ type: "warning", message });
    const mirrors = Object.keys(ctx.mirrors ?? {});
    if (mirrors.length && !config.repositories.some((r) => r.fetchUrl !== r.url)) {
      progress({
        type: "warning",
        message: `no apk repository of the image uses ${mirrors.join(", ")}: --mirror changes nothing (its repositories: ${config.repositories.map((r) => r.url).join(", ") || "none"})`,
      });
    }
    const arch =
      config.arch ?? nativeArch("apk", ctx.platform.architecture, ctx.platform.variant) ?? "x86_64";
    const { keyring, pems } = await trustedKeys(config, ctx.keyringFiles ?? [], progress);
    const repositoriesFile = formatRepositoriesFile(config);
    const names = cachedIndexNames(config.repositories, arch);
    const cache = indexCacheFor(ctx.cacheDir, arch, repositoriesFile, pems);
    await mkdir(dirname(cache.lock), { recursive: true });

    // The run's own files: keys and repositories read-only, the index cache private to this run.
    const runDirs = {
      keys: { destination: IN_CONTAINER.keys },
      etc: { destination: IN_CONTAINER.etc },
      cache: { destination: IN_CONTAINER.cache, writable: true },
    };
    return withRunDirs(sandbox.scratchDir, "apk", runDirs, async (dirs, mounts) => {
      for (const [name, pem] of pems)
        await writeFile(childPath(dirs.keys, name, "apk key"), pem, { flag: "wx" });
      await writeFile(join(dirs.etc, "repositories"), repositoriesFile);
      const run: ApkRun = { sandbox, ctx, mounts };
      return applyInRun(run, targets, { config, keyring, names, cache, privateCache: dirs.cache });
    });
  },
};

async function applyInRun(
  run: ApkRun,
  targets: Targets,
  state: {
    config: ApkConfig;
    keyring: ApkKeyring;
    names: CachedIndexName[];
    cache: IndexCache;
    privateCache: string;
  },
): Promise<EngineResult> {
  const { ctx } = run;
  const { progress, signal } = ctx;
  const { config, keyring, names, cache, privateCache } = state;
  const warnings: string[] = [];
  const before = await readApkInstalled(run.sandbox.mergedDir);

  const seeded = await withCacheLock(cache, progress, signal, () =>
    seedIndexes(cache.dir, privateCache, names, keyring),
  );
  let updateFailure: unknown;
  const updateStarted = new Date();
  // copa runs `apk update` first. It refetches every index, so it runs only when the cache lacks
  // one or holds one older than apk's max age; otherwise the next command reads the cached ones.
  if (names.length && allFresh(names, seeded)) {
    progress({
      type: "info",
      message: `apk: using the ${seeded.size} cached repository index${seeded.size === 1 ? "" : "es"} (verified, younger than ${INDEX_MAX_AGE_MINUTES / 60} h)`,
    });
  } else {
    updateFailure = await runApk(
      run,
      "apk update",
      ["update"],
      "check that the image's apk repositories (or their --mirror) are reachable and serve their indexes",
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
  }
  // Verified right after the update, before any package's scripts ran; what verified is kept
  // even when another repository failed.
  // Their age is what suture saw, never the file's mtime: the image's apk wrote the files, and an
  // old index stamped as new would keep every later run from updating.
  const indexes = new Map(
    [...(await verifiedIndexes(privateCache, names, keyring))].map(([file, v]) => {
      const before = seeded.get(file);
      const mtime = before?.bytes.equals(v.bytes) ? before.mtime : updateStarted;
      return [file, { ...v, mtime }];
    }),
  );
  await withCacheLock(cache, progress, signal, () => saveIndexes(indexes, cache.dir));
  if (updateFailure) throw updateFailure;

  if (targets === "all") {
    await runApk(run, "apk upgrade", ["upgrade"]);
    return { before, after: await readApkInstalled(run.sandbox.mergedDir), failed: [], warnings };
  }

  // Only when every repository's index verified can the indexes say what apk cannot reach.
  const failed =
    indexes.size === names.length && names.length === config.repositories.length
      ? unreachableTargets(targets, indexes.values(), config.world)
      : [];
  if (failed.length && !ctx.ignoreErrors) throw cannotPatch(failed);
  const upgrade = targets.filter((t) => !failed.some((f) => f.name === t.name)).map((t) => t.name);
  if (upgrade.length) {
    // `--`: no package name is ever read as an option.
    await runApk(run, "apk upgrade", ["upgrade", "--", ...upgrade]);
  }
  // Whether every target reached its fixed version is checked by the pipeline (validateTargets).
  return { before, after: await readApkInstalled(run.sandbox.mergedDir), failed, warnings };
}
