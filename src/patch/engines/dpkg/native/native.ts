import { join } from "node:path";
import { type DpkgDatabase, isInstalled, readDpkgDatabase } from "../../../../distro/dpkg/database.ts";
import { type DebPackage, openDeb } from "../../../../distro/dpkg/deb.ts";
import { readDpkgConfig } from "../../../../distro/dpkg/dpkg-config.ts";
import { downloadPackages } from "../../../../distro/dpkg/fetch-debs.ts";
import type { InstalledPackage } from "../../../../distro/dpkg/status.ts";
import { compareDebVersions } from "../../../../distro/dpkg/version.ts";
import type { OsRelease } from "../../../../distro/os-release.ts";
import { type ProgressSink, withStep } from "../../../../progress/events.ts";
import {
  type AptResult,
  aptEnv,
  aptFailure,
  cannotPatch,
  notReached,
  type PackageTarget,
  type SandboxRunner,
} from "../sandbox.ts";
import { type InstallItem, resolveInstallSet } from "./install-set.ts";
import { openImageRepositories } from "./repositories.ts";
import { regenerateCaBundle } from "./script-effects.ts";
import { unpackDeb } from "./unpack.ts";

/** How much of a coming package's decompressed data is held while the current one unpacks. */
const DEB_READ_AHEAD_BYTES = 16 * 1024 * 1024;
/** Packages whose data is decompressed ahead of the one being unpacked. */
const DEBS_DECOMPRESSED_AHEAD = 2;

export interface NativeOptions {
  /** dpkg architecture of the image. */
  arch: string;
  os?: OsRelease;
  cacheDir: string;
  mirrors?: Readonly<Record<string, string>>;
  keyringFile?: string;
  /** Accept unsigned repositories when the image's apt.conf allows them (see repositories.ts). */
  allowInsecureRepositories?: boolean;
  /**
   * Whether maintainer scripts and triggers can run in the image (it has a shell and dpkg, and its
   * architecture runs here); otherwise packages are recorded configured and the scripts listed.
   */
  runScripts: boolean;
  ignoreErrors?: boolean;
  timeoutMs?: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
  /** Called with the resolved packages before anything is downloaded; true = a cached result is used instead. */
  reuse?: (install: readonly InstallItem[]) => Promise<boolean>;
}

export interface NativeResult extends AptResult {
  /** Time spent in `dpkg --configure` (maintainer scripts and triggers). */
  scriptsMs: number;
  /** Maintainer script invocations that did not run (images without a shell). */
  scriptsNotRun: string[];
  /** `reuse` said an earlier result stands for this one: nothing was installed. */
  reused?: boolean;
}

/**
 * Patch with suture's own deb engine: resolve the targets against the image's verified
 * repositories, download the .debs in parallel (each checked against the signed index), unpack
 * them into the sandbox's overlay and update the dpkg database as dpkg would; then, when the image
 * can run them, let its own dpkg run the maintainer scripts and triggers (`dpkg --configure
 * --pending`), which is the only part that needs the image's programs.
 */
export async function applyNative(
  sandbox: SandboxRunner,
  targets: PackageTarget[] | "all",
  options: NativeOptions,
): Promise<NativeResult> {
  const progress = options.progress ?? (() => {});
  const root = sandbox.mergedDir;
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    progress({ type: "warning", message });
  };
  const db = await readDpkgDatabase(root);
  const before = versions(db);
  const resolution = await resolveFromRepositories(root, db, targets, options, progress);
  for (const w of resolution.warnings) warn(w);
  const failed = [...resolution.failed];
  if (failed.length && !options.ignoreErrors) {
    throw cannotPatch(failed);
  }
  if (resolution.install.length === 0) {
    return { changed: new Map(), failed, warnings, installMs: 0, scriptsMs: 0, scriptsNotRun: [] };
  }

  if (await options.reuse?.(resolution.install)) {
    return {
      changed: new Map(),
      failed,
      warnings,
      installMs: 0,
      scriptsMs: 0,
      scriptsNotRun: [],
      reused: true,
    };
  }

  // The image's dpkg honours its path-exclude/path-include rules on every unpack (slim images
  // drop docs, man pages and locales this way); read them once, before anything is downloaded.
  const dpkgConfig = await readDpkgConfig(root);
  if (dpkgConfig.unhonoured.length)
    warn(
      `the image's dpkg configuration sets ${dpkgConfig.unhonoured.join(", ")}, which the native engine does not apply (it unpacks as --force-confold --force-confdef into /); use --engine sandbox for the image's dpkg to apply them`,
    );

  const started = performance.now();
  const paths = await withStep(
    progress,
    "download",
    `downloading ${resolution.install.length} packages`,
    () =>
      downloadPackages(
        resolution.install.map((i) => i.entry),
        { cacheDir: join(options.cacheDir, "apt-native"), progress, signal: options.signal },
      ),
  );
  const scriptsNotRun: string[] = [];
  await withStep(progress, "install", `unpacking ${paths.length} packages into the image`, async () => {
    // While one package is unpacked, the data archives of the next ones are decompressed (xz, each
    // in its own process): unpacking mostly waits for xz, and two of them use both cores.
    const opened: Promise<DebPackage>[] = [];
    const openUpTo = (end: number) => {
      for (let j = opened.length; j < Math.min(end, paths.length); j++) {
        const deb = openDeb(paths[j]!, { readAhead: DEB_READ_AHEAD_BYTES });
        deb.catch(() => {}); // reported when its turn comes, not as an unhandled rejection now
        opened.push(deb);
      }
    };
    let i = 0;
    try {
      for (; i < paths.length; i++) {
        options.signal?.throwIfAborted();
        openUpTo(i + 1 + DEBS_DECOMPRESSED_AHEAD);
        const deb = await opened[i]!;
        const item = resolution.install[i]!;
        const summary = await unpackDeb(root, deb, db, {
          state: options.runScripts ? "unpacked" : "installed",
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
        if (!options.runScripts) scriptsNotRun.push(...summary.scripts);
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
  const installMs = performance.now() - started;

  let scriptsMs = 0;
  if (options.runScripts) {
    const t = performance.now();
    await withStep(
      progress,
      "configure",
      "running maintainer scripts and triggers (dpkg --configure)",
      async () => {
        const r = await sandbox.run(
          ["dpkg", "--configure", "--pending", "--force-confold", "--force-confdef", "--force-unsafe-io"],
          { env: aptEnv(), timeoutMs: options.timeoutMs },
        );
        if (r.exitCode !== 0) throw aptFailure("dpkg --configure", r.exitCode, r.stderr || r.stdout);
      },
    );
    scriptsMs = performance.now() - t;
  } else if (scriptsNotRun.length) {
    const done: string[] = [];
    if (
      resolution.install.some((i) => i.entry.package === "ca-certificates") &&
      (await regenerateCaBundle(root))
    ) {
      done.push("ca-certificates' update-ca-certificates (bundle rebuilt natively)");
    }
    warn(
      `the image has no shell, so maintainer scripts did not run (${summariseScripts(scriptsNotRun)})${done.length ? `; done instead: ${done.join(", ")}` : ""}; the packages' files and database are updated as an image build without scripts leaves them (library upgrades within a stable release keep their sonames, so no ldconfig run is needed)`,
    );
  }

  const after = versions(await readDpkgDatabase(root));
  if (targets !== "all") {
    for (const t of targets) {
      if (failed.some((f) => f.name === t.name)) continue;
      const v = after.get(t.name);
      if (v && compareDebVersions(v, t.fixedVersion) < 0) {
        failed.push({ name: t.name, reason: `installed ${v} is lower than required ${t.fixedVersion}` });
      }
    }
    if (failed.length && !options.ignoreErrors) {
      throw notReached(failed);
    }
  }
  const changed = new Map<string, { from?: string; to: string }>();
  for (const [name, v] of after)
    if (before.get(name) !== v) changed.set(name, { from: before.get(name), to: v });
  return { changed, failed, warnings, installMs, scriptsMs, scriptsNotRun };
}

/**
 * What applyNative would install, resolved against the image's verified repositories, without
 * downloading or unpacking anything (`--dry-run`).
 */
export async function planNative(
  root: string,
  targets: PackageTarget[] | "all",
  options: NativeOptions,
): Promise<{ install: InstallItem[]; failed: { name: string; reason: string }[]; warnings: string[] }> {
  const db = await readDpkgDatabase(root);
  return resolveFromRepositories(root, db, targets, options, options.progress ?? (() => {}));
}

/**
 * Open the image's verified repositories and resolve the targets against them. A function of its
 * own so the indexes (Debian's main one is 50 MB) can be collected as soon as the resolution is
 * made, not held through unpacking and the layer build.
 */
async function resolveFromRepositories(
  root: string,
  db: DpkgDatabase,
  targets: PackageTarget[] | "all",
  options: NativeOptions,
  progress: ProgressSink,
) {
  const { repositories, policy, config } = await withStep(
    progress,
    "repositories",
    "verifying the image's apt repositories",
    () =>
      openImageRepositories(root, options.os, {
        arch: options.arch,
        cacheDir: options.cacheDir,
        mirrors: options.mirrors,
        keyringFile: options.keyringFile,
        allowInsecureRepositories: options.allowInsecureRepositories,
        progress,
        signal: options.signal,
      }),
  );
  return resolveInstallSet({
    installed: installedPackages(db),
    indexes: repositories.flatMap((r) => r.indexes),
    arch: options.arch,
    targets,
    policy,
    upgradeAllowsNew: config.getBool("APT::Get::Upgrade-Allow-New", false),
    recommendsMatter: config.getBool("APT::Install-Recommends", true),
  });
}

function versions(db: DpkgDatabase): Map<string, string> {
  return new Map(db.packages.filter(isInstalled).map((p) => [p.name, p.version]));
}

/** The resolver reads installed packages in status-file form. */
function installedPackages(db: DpkgDatabase): InstalledPackage[] {
  return db.packages.filter(isInstalled).map((p) => {
    const paragraph = new Map(p.fields.map((f) => [f.name.toLowerCase(), f.value.trim()]));
    const source = paragraph.get("source");
    return {
      name: p.name,
      version: p.version,
      architecture: p.architecture,
      source: source ? source.split(" ")[0]! : p.name,
      status: p.status ?? "install ok installed",
      paragraph,
    };
  });
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
