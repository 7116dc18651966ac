import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { dpkgArchitecture } from "../../../../distro/dpkg/architecture.ts";
import {
  type DpkgDatabase,
  installedPackages,
  installedVersions,
  readDpkgDatabase,
} from "../../../../distro/dpkg/database.ts";
import { type DebPackage, openDeb } from "../../../../distro/dpkg/deb.ts";
import { readDpkgConfig } from "../../../../distro/dpkg/dpkg-config.ts";
import { downloadPackages } from "../../../../distro/dpkg/fetch-debs.ts";
import type { Repository } from "../../../../distro/dpkg/repository.ts";
import { compareDebVersions } from "../../../../distro/dpkg/version.ts";
import { type OsRelease, parseOsRelease } from "../../../../distro/os-release.ts";
import { SutureError } from "../../../../errors/errors.ts";
import {
  fileAccessFromRoot,
  type ImageFileAccess,
  readFileInRoot,
  resolveInRoot,
} from "../../../../fs/in-root.ts";
import { type ProgressSink, withStep } from "../../../../progress/events.ts";
import { assertCanRun } from "../../../../sandbox/emulation.ts";
import { inNoNamespacesMode } from "../../../../sandbox/no-namespaces.ts";
import { EarlyWork } from "../../early-work.ts";
import {
  beginApply,
  type EarlyContext,
  type EngineContext,
  type EnginePlan,
  type EngineResult,
  type EngineSandbox,
  type PatchEngine,
  type Targets,
} from "../../engine.ts";
import { aptEnv, aptFailure } from "../run-apt.ts";
import { configureNatively, decideConfigure, readConfigureFacts } from "./configure.ts";
import { placeStandIns } from "./hooks/stand-ins.ts";
import { updateCaCertificates } from "./hooks/update-ca-certificates.ts";
import { type InstallItem, resolveInstallSet } from "./install-set.ts";
import { pathsReplacedBy } from "./replaced-paths.ts";
import { openImageRepositories } from "./repositories.ts";
import { regenerateCaBundle } from "./script-effects.ts";
import { type UnpackSummary, unpackDeb } from "./unpack.ts";

/** How much of a coming package's decompressed data is held while the current one unpacks. */
const DEB_READ_AHEAD_BYTES = 16 * 1024 * 1024;
/** Packages whose data is decompressed ahead of the one being unpacked. */
const DEBS_DECOMPRESSED_AHEAD = 2;

/** The native engine's plan: the resolved packages with their verified index entries. */
interface DebPlan extends EnginePlan {
  items: InstallItem[];
  /** The image's dpkg database as the plan read it; apply updates it (a plan is applied once). */
  database: DpkgDatabase;
  /**
   * Whether maintainer scripts and triggers run in the image (it has a shell and dpkg); otherwise
   * packages are recorded configured and the scripts listed.
   */
  runScripts: boolean;
}

/**
 * suture's own deb engine: resolve the targets against the image's verified repositories,
 * download the .debs in parallel (each checked against the signed index), unpack them into the
 * sandbox's overlay and update the dpkg database as dpkg would; then, when the image can run them,
 * let its own dpkg run the maintainer scripts and triggers (`dpkg --configure --pending`), which is
 * the only part that needs the image's programs.
 */
export const nativeDebEngine: PatchEngine = {
  kind: "native",
  description: "updating packages with suture's deb engine",
  plan: planNative,
  apply: (sandbox, targets, ctx, plan) => applyNative(sandbox, targets, ctx, plan),
  startEarly: (files, ctx) =>
    new EarlyWork(
      nativeDebEngine,
      files,
      ctx.signal,
      (f, progress, signal) => openEarly(f, ctx, progress, signal),
      (early) => releaseIndexes(early.opened.repositories),
    ),
};

/** The repositories, opened early: what resolveFromRepositories would open, with the os-release it read. */
interface EarlyRepositories {
  os: OsRelease | undefined;
  opened: Awaited<ReturnType<typeof openImageRepositories>>;
}

/**
 * Open the image's repositories from the early view of its layers (patch/early-work.ts), while
 * the rest is extracted: fetching and verifying the indexes costs as much as extracting a base
 * layer, and needs only the apt configuration, the keyrings and os-release, which come early in
 * tar order. Only for Debian-family images; which engine patches is known later.
 */
async function openEarly(
  files: ImageFileAccess,
  ctx: EarlyContext,
  progress: ProgressSink,
  signal: AbortSignal,
): Promise<EarlyRepositories | undefined> {
  // The same files, in the same order, as detection reads for the distro's os-release.
  const text = (await files.readFile("/etc/os-release")) ?? (await files.readFile("/usr/lib/os-release"));
  const os = text ? parseOsRelease(Buffer.from(text).toString("utf8")) : undefined;
  if (!os || ![os.id, ...os.idLike].some((id) => id === "debian" || id === "ubuntu")) return undefined;
  const opened = await withStep(
    progress,
    "repositories",
    "verifying the image's apt repositories (while the layers are extracted)",
    () => openImageRepositories(files, os, repositoryOptions(ctx, progress, signal)),
  );
  // The report's packages at apt's candidate, when it reaches the fixed version: what the
  // resolution will almost surely pick, fetched while the layers are still being extracted. The
  // download cache is by SHA-256 from the signed index, so a wrong guess costs a download, never a
  // result; the download step then finds them (and fetches what the guess missed).
  const guesses = (ctx.targets ?? []).flatMap((t) => {
    const candidate = opened.policy.candidate(t.name);
    const entry = candidate?.entries[0];
    return entry && compareDebVersions(candidate.version, t.fixedVersion) >= 0 ? [entry] : [];
  });
  if (guesses.length)
    await downloadPackages(guesses, { cacheDir: join(ctx.cacheDir, "apt-native"), progress, signal }).catch(
      () => undefined,
    );
  return { os, opened };
}

/**
 * What the engine would install, resolved against the image's verified repositories, without
 * downloading or unpacking anything (`--dry-run`, and the result cache's key).
 */
async function planNative(sandbox: EngineSandbox, targets: Targets, ctx: EngineContext): Promise<DebPlan> {
  const root = sandbox.mergedDir;
  // Scripts run in the image when it has what they need; a foreign architecture then needs QEMU.
  const runScripts =
    (await resolveInRoot(root, "/bin/sh")) !== undefined &&
    (await resolveInRoot(root, "/usr/bin/dpkg")) !== undefined;
  const db = await readDpkgDatabase(root);
  const resolution = await resolveFromRepositories(root, db, targets, ctx);
  return {
    items: resolution.install,
    install: resolution.install.map((i) => ({
      name: i.entry.package,
      ...(i.from ? { from: i.from } : {}),
      to: i.entry.version,
      reason: i.reason,
      digest: `sha256:${i.entry.sha256}`,
    })),
    failed: resolution.failed,
    warnings: resolution.warnings,
    database: db,
    runScripts,
    reuseKey: [
      `scripts=${runScripts && !inNoNamespacesMode()}`,
      // The oracle's layer is never reused for the native configure's, nor the reverse.
      ...(process.env[FORCE_RUNC_CONFIGURE] === "1" ? ["configure=runc"] : []),
    ],
  };
}

function isDebPlan(plan: EnginePlan | undefined): plan is DebPlan {
  return plan !== undefined && "items" in plan && "database" in plan && "runScripts" in plan;
}

async function applyNative(
  sandbox: EngineSandbox,
  targets: Targets,
  ctx: EngineContext,
  given: EnginePlan | undefined,
): Promise<EngineResult> {
  const plan = isDebPlan(given) ? given : await planNative(sandbox, targets, ctx);
  const { progress } = ctx;
  const root = sandbox.mergedDir;
  const { warnings, warn, failed } = beginApply(plan, ctx);
  const db = plan.database;
  const before = versions(db);
  const install = plan.items;
  if (install.length === 0) return { before, after: before, failed, warnings, scriptsMs: 0 };
  // The no-namespaces mode runs no code of the image: what the scripts would do is done natively
  // where suture can, and a package needing more is refused after the unpack (into a private tree).
  // Root and the user-namespace mode do the same when native equivalents cover everything, and
  // start runc for `dpkg --configure` otherwise.
  const noNamespaces = inNoNamespacesMode();

  // The image's dpkg honours its path-exclude/path-include rules on every unpack (slim images
  // drop docs, man pages and locales this way); read them once, before anything is downloaded.
  const dpkgConfig = await readDpkgConfig(root);
  if (dpkgConfig.unhonoured.length)
    warn(
      `the image's dpkg configuration sets ${dpkgConfig.unhonoured.join(", ")}, which the native engine does not apply (it unpacks as --force-confold --force-confdef into /); use --engine sandbox for the image's dpkg to apply them`,
    );

  const paths = await withStep(progress, "download", `downloading ${install.length} packages`, () =>
    downloadPackages(
      install.map((i) => i.entry),
      { cacheDir: join(ctx.cacheDir, "apt-native"), progress, signal: ctx.signal },
    ),
  );
  // A sparse sandbox brings in what it left out where the replaced versions had files.
  if (sandbox.ensurePaths) await sandbox.ensurePaths(await pathsReplacedBy(db, install));
  const unpacked: UnpackSummary[] = [];
  await withStep(progress, "install", `unpacking ${paths.length} packages into the image`, async () => {
    // While one package is unpacked, the data archives of the next ones are decompressed (xz, each
    // in its own process): unpacking mostly waits for xz, and two of them use both cores.
    const opened: Promise<DebPackage>[] = [];
    const openUpTo = (end: number) => {
      for (let j = opened.length; j < Math.min(end, paths.length); j++) {
        const deb = openDeb(paths[j]!, {
          readAhead: DEB_READ_AHEAD_BYTES,
          // A second patch of the same packages reads their data archives decoded (no xz).
          dataCache: {
            dir: join(ctx.cacheDir, "apt-native", "decoded"),
            debSha256: install[j]!.entry.sha256,
            onDamaged: (path, why) =>
              progress({ type: "info", message: `${path} was damaged (${why}); decoding the package again` }),
          },
        });
        deb.catch(() => {}); // reported when its turn comes, not as an unhandled rejection now
        opened.push(deb);
      }
    };
    let i = 0;
    try {
      for (; i < paths.length; i++) {
        ctx.signal?.throwIfAborted();
        openUpTo(i + 1 + DEBS_DECOMPRESSED_AHEAD);
        const deb = await opened[i]!;
        const item = install[i]!;
        const summary = await unpackDeb(root, deb, db, {
          // Configured afterwards, natively or by the image's dpkg; an image that cannot run
          // scripts at all gets its packages recorded configured at once.
          state: plan.runScripts ? "unpacked" : "installed",
          progress,
          // The .deb matched the entry's SHA-256; its own control must name the same package,
          // or the signed index vouched for something other than what gets installed.
          expected: {
            name: item.entry.package,
            version: item.entry.version,
            architecture: item.entry.architecture,
          },
          pathFilter: dpkgConfig.pathFilter,
        });
        unpacked.push(summary);
        progress({
          type: "package",
          name: item.entry.package,
          from: summary.fromVersion,
          to: summary.toVersion,
          status: "updated",
          detail: item.reason === "target" ? undefined : item.reason,
        });
      }
    } finally {
      // A failed unpack leaves read-aheads running (its own, when it failed before reading the
      // data, and the following packages'): stop them and their xz. A consumed one ignores this.
      for (const later of opened.slice(i))
        void later.then(
          (d) => d.close(),
          () => {},
        );
    }
  });
  let scriptsMs = 0;
  if (plan.runScripts) {
    const t = performance.now();
    await configure(sandbox, root, db, unpacked, install, ctx, { noNamespaces, warn });
    scriptsMs = performance.now() - t;
  } else {
    const scriptsNotRun = unpacked.flatMap((u) => u.scripts);
    const done: string[] = [];
    if (install.some((i) => i.entry.package === "ca-certificates") && (await regenerateCaBundle(root))) {
      // With the selection rewritten, the links in /etc/ssl/certs follow it as the program makes them.
      // Without a selection file the program would start afresh, which a shell-less image never did.
      const links = (await readFileInRoot(root, "/etc/ca-certificates.conf"))
        ? await updateCaCertificates(root, ["--hooksdir", ""])
        : undefined;
      done.push(
        `ca-certificates' update-ca-certificates (${links?.done ? "bundle and links" : "bundle"} rebuilt natively)`,
      );
    }
    if (scriptsNotRun.length)
      warn(
        `the image has no shell, so maintainer scripts did not run (${summariseScripts(scriptsNotRun)})${done.length ? `; done instead: ${done.join(", ")}` : ""}; the packages' files and database are updated as an image build without scripts leaves them (library upgrades within a stable release keep their sonames, so no ldconfig run is needed)`,
      );
  }

  const after = versions(await readDpkgDatabase(root));
  // Whether every target reached its fixed version is checked by the pipeline (validateTargets).
  const packageFiles = install.map((item, k) => ({
    name: item.entry.package,
    version: item.entry.version,
    file: paths[k]!,
  }));
  return { before, after, failed, warnings, scriptsMs, packageFiles };
}

/**
 * Open the image's verified repositories and resolve the targets against them. A function of its
 * own so the indexes (Debian's main one is 50 MB) can be collected as soon as the resolution is
 * made, not held through unpacking and the layer build.
 */
async function resolveFromRepositories(root: string, db: DpkgDatabase, targets: Targets, ctx: EngineContext) {
  const { progress, platform } = ctx;
  const arch = dpkgArchitecture(platform.architecture, platform.variant);
  const files = fileAccessFromRoot(root);
  const early = ctx.early?.find(
    (w): w is EarlyWork<EarlyRepositories> => w instanceof EarlyWork && w.owner === nativeDebEngine,
  );
  const taken = await early?.take(files, progress);
  // Opened early from the same files; the os-release detection read must be the one it used too.
  const usable = taken && isDeepStrictEqual(taken.value.os, ctx.distro.osRelease) ? taken.value : undefined;
  if (taken && !usable) releaseIndexes(taken.value.opened.repositories);
  const { repositories, policy, config } =
    usable?.opened ??
    (await withStep(progress, "repositories", "verifying the image's apt repositories", () =>
      openImageRepositories(files, ctx.distro.osRelease, repositoryOptions(ctx, progress, ctx.signal)),
    ));
  try {
    return resolveInstallSet({
      installed: installedPackages(db.packages),
      indexes: repositories.flatMap((r) => r.indexes),
      arch,
      targets,
      policy,
      upgradeAllowsNew: config.getBool("APT::Get::Upgrade-Allow-New", false),
      recommendsMatter: config.getBool("APT::Install-Recommends", true),
    });
  } finally {
    // The resolution holds the entries it picked; the indexes (most of the peak memory) go now.
    releaseIndexes(repositories);
  }
}

/** What opening the image's repositories takes from the run, early or not. */
function repositoryOptions(ctx: EarlyContext, progress: ProgressSink, signal: AbortSignal | undefined) {
  return {
    arch: dpkgArchitecture(ctx.platform.architecture, ctx.platform.variant),
    cacheDir: ctx.cacheDir,
    mirrors: ctx.mirrors,
    keyringFiles: ctx.keyringFiles,
    allowInsecureRepositories: ctx.allowInsecureRepositories,
    progress,
    signal,
  };
}

/** Close the indexes' cached files (a service runs many patches in one process). */
function releaseIndexes(repositories: readonly Repository[]): void {
  for (const r of repositories) for (const index of r.indexes) index.release?.();
}

/**
 * Configure the unpacked packages as `dpkg --configure --pending` would: natively when
 * decideConfigure finds an equivalent for every script and trigger (no runc is started, no code
 * of the image runs), else by the image's own dpkg in runc, with the stand-ins of
 * hooks/stand-ins.ts. A native hook that finds this image's case beyond it falls back to runc
 * too. The no-namespaces mode has no runc: it accepts ca-certificates' approximate equivalent and
 * refuses, in one line, what has none.
 */
async function configure(
  sandbox: EngineSandbox,
  root: string,
  db: DpkgDatabase,
  unpacked: readonly UnpackSummary[],
  install: readonly InstallItem[],
  ctx: EngineContext,
  mode: { noNamespaces: boolean; warn: (message: string) => void },
): Promise<void> {
  const { progress } = ctx;
  const work = decideConfigure(await readConfigureFacts(root, db, unpacked));
  const forced = !mode.noNamespaces && process.env[FORCE_RUNC_CONFIGURE] === "1";
  const exactly = work.missing.length === 0 && work.approximate.length === 0 && !forced;
  if (mode.noNamespaces && work.missing.length) refuseNeedsRuntime(work.missing);
  if (exactly || mode.noNamespaces) {
    const outcome = await withStep(
      progress,
      "configure",
      "configuring natively (maintainer scripts and triggers with native equivalents; no runc)",
      () => configureNatively(root, db, unpacked, work, progress),
    );
    if (outcome.done) {
      if (work.approximate.length)
        mode.warn(
          `the no-namespaces mode runs no code of the image, so ${work.approximate.join(", ")} did not run; done instead: ${outcome.notes.join(", ") || "nothing (the image has no CA bundle)"}`,
        );
      return;
    }
    if (mode.noNamespaces)
      throw new SutureError(
        "NEEDS_RUNTIME",
        `the no-namespaces mode runs no code of the image, and ${outcome.unsupported}, so it cannot be done natively here: patch as root, or where user namespaces work (suture doctor says what this host allows); nothing was written`,
      );
    progress({ type: "info", message: `configuring in the image: ${outcome.unsupported}` });
  } else if (work.missing.length || work.approximate.length)
    progress({
      type: "info",
      message: `configuring in the image: no native equivalent for ${[...work.missing, ...work.approximate].join(", ")}`,
    });
  await assertCanRun(ctx.platform);
  await withStep(
    progress,
    "configure",
    "running maintainer scripts and triggers (dpkg --configure)",
    async () => {
      // Programs with a native equivalent (hooks/stand-ins.ts) only record their calls while
      // dpkg runs the scripts; the calls are done natively right after.
      const standIns = await placeStandIns(root, new Set(install.map((i) => i.entry.package)));
      try {
        const r = await sandbox.run(
          ["dpkg", "--configure", "--pending", "--force-confold", "--force-confdef", "--force-unsafe-io"],
          { env: aptEnv(), timeoutMs: ctx.timeoutMs },
        );
        if (r.exitCode !== 0) throw aptFailure("dpkg --configure", r.exitCode, r.stderr || r.stdout);
        await standIns.replay(async (args) => {
          const run = await sandbox.run(args, { env: aptEnv(), timeoutMs: ctx.timeoutMs });
          if (run.exitCode !== 0) throw aptFailure(args[0]!, run.exitCode, run.stderr || run.stdout);
        }, progress);
      } finally {
        await standIns.restore();
      }
    },
  );
}

/**
 * Set to `1`, root and the user-namespace mode configure with the image's dpkg in runc even when
 * native equivalents cover everything: the differential tests' oracle
 * (test/integration/dpkg-native-configure.test.ts). Not a user option.
 */
export const FORCE_RUNC_CONFIGURE = "SUTURE_FORCE_RUNC_CONFIGURE";

/**
 * Refuse, in one line naming each package and what it needed, when a package has a maintainer
 * script or activates a trigger with no native equivalent: only running the image's code would
 * give the image root mode gives, and the no-namespaces mode cannot.
 */
function refuseNeedsRuntime(missing: readonly string[]): never {
  const shown = missing.length > 6 ? [...missing.slice(0, 6), `${missing.length - 6} more`] : missing;
  throw new SutureError(
    "NEEDS_RUNTIME",
    `the no-namespaces mode runs no code of the image, and ${shown.join(", ")} need${missing.length === 1 ? "s" : ""} maintainer scripts or triggers with no native equivalent: patch as root, or where user namespaces work (the user-namespace mode runs them; suture doctor says what this host allows); nothing was written`,
  );
}

function versions(db: DpkgDatabase): Map<string, string> {
  return installedVersions(installedPackages(db.packages));
}

/** `libssl3 postinst configure`, … → "postinst of libssl3, tzdata; …" (one line). */
function summariseScripts(calls: string[]): string {
  const byScript = new Map<string, Set<string>>();
  for (const c of calls) {
    const [pkg, script] = c.split(" ");
    if (!pkg || !script) continue;
    const set = byScript.get(script) ?? new Set<string>();
    set.add(pkg);
    byScript.set(script, set);
  }
  return [...byScript].map(([script, pkgs]) => `${script} of ${[...pkgs].join(", ")}`).join("; ");
}
