import { join } from "node:path";
import type { DistroInfo } from "../../../../distro/detect.ts";
import { assertRpmDatabaseWritable } from "../../../../distro/rpm/database/write.ts";
import { formatRpmEvr, RpmTag } from "../../../../distro/rpm/header.ts";
import { rpmHeaderDependencies } from "../../../../distro/rpm/header-contents.ts";
import {
  type InstalledRpm,
  installedRpmVersions,
  type RpmDatabaseLocation,
  readInstalledRpmsInRoot,
} from "../../../../distro/rpm/installed.ts";
import {
  type RpmRepo,
  type RpmRepoConfig,
  type RpmRepoTool,
  readRpmRepoConfig,
  repoKeyring,
} from "../../../../distro/rpm/repo-config.ts";
import { readRpmGpgDir, rpmdbKeyring } from "../../../../distro/rpm/signature.ts";
import { describeCause, isSutureError, quoteUntrusted, SutureError } from "../../../../errors/errors.ts";
import { readFileInRoot } from "../../../../fs/in-root.ts";
import { readFileCapped } from "../../../../fs/read-capped.ts";
import type { Platform } from "../../../../oci/manifest.ts";
import { withStep } from "../../../../progress/events.ts";
import { assertCanRun } from "../../../../sandbox/emulation.ts";
import { type Keyring, mergeKeyrings, parseKeyring } from "../../../../trust/keyring.ts";
import { nativeArch } from "../../../../vex/purl.ts";
import {
  beginApply,
  type EngineContext,
  type EnginePlan,
  type EngineResult,
  type EngineSandbox,
  type InstalledVersions,
  keyringFilesOf,
  type PatchEngine,
  type Targets,
} from "../../engine.ts";
import { imageHasProgram } from "../../shared/script-files.ts";
import { downloadRpmPackages, type RpmRepoTrust } from "./fetch.ts";
import { installRpmPackages } from "./install.ts";
import { addRepoFilelists, openRpmRepositories } from "./repositories.ts";
import { type RpmInstallChoice, resolveRpmUpgrade } from "./resolve.ts";

/** The native engine's plan: the resolved packages, their repositories' trust, the database read. */
interface RpmPlan extends EnginePlan {
  choices: RpmInstallChoice[];
  /** Installed packages a new one obsoletes (erased by the installer). */
  obsoleted: InstalledRpm[];
  /** Repository id → where its packages are fetched from and the keys they must be signed by. */
  trust: ReadonlyMap<string, RpmRepoTrust>;
  /** The database as the plan read it. */
  database: RpmDatabaseLocation;
  installed: InstalledRpm[];
  /** Installed versions as the plan read them. */
  before: InstalledVersions;
  /** Whether the image has a shell for the packages' scriptlets (install.ts runs them in runc). */
  runScripts: boolean;
}

/**
 * suture's own rpm engine: resolve the targets against the image's enabled rpm-md repositories
 * (repositories.ts: repomd.xml, its signature where the repository asks for one, primary.xml
 * checked against it; resolve.ts, as `dnf upgrade` would), download the packages and prove each
 * is the one its repository lists and is signed by a key the image trusts (fetch.ts), then
 * install them into the sandbox's root with rpm's semantics and update the image's database in
 * its own backend (install.ts), running scriptlets with the image's shell when it has one. Needs
 * no rpm, dnf or shell in the image (UBI micro, Azure Linux distroless).
 */
export const nativeRpmEngine: PatchEngine = {
  kind: "native",
  description: "updating rpm packages with suture's rpm engine",
  plan: planNative,
  apply: (sandbox, targets, ctx, plan) => applyNative(sandbox, targets, ctx, plan),
};

/** The engine's cache root under `--cache-dir`. */
const cacheRoot = (ctx: EngineContext) => join(ctx.cacheDir, "rpm-native");

async function readInstalled(
  root: string,
): Promise<{ location: RpmDatabaseLocation; packages: InstalledRpm[] }> {
  const db = await readInstalledRpmsInRoot(root);
  if (!db)
    throw new SutureError(
      "UNSUPPORTED_OS",
      "the image has no rpm database (/var/lib/rpm, /usr/lib/sysimage/rpm) and no rpm manifest, so it has no rpm packages to patch",
    );
  return db;
}

/** rpm's architecture name of the platform (`x86_64`, `aarch64`): what `$basearch` derives from. */
export function rpmArchFor(platform: Platform): string {
  return nativeArch("rpm", platform.architecture, platform.variant) ?? platform.architecture;
}

/** The capabilities dnf derives `$releasever` from (its DISTROVERPKG), in its order. */
const RELEASE_PROVIDES = [
  "system-release(releasever)",
  "system-release",
  "distribution-release",
  "redhat-release",
  "suse-release",
];

/**
 * `$releasever` as dnf finds it: the version of the `system-release(releasever)` provide, or the
 * VERSION of the package providing `system-release` (…); os-release's VERSION_ID when the image
 * records no headers (a manifest).
 */
export function detectReleasever(installed: readonly InstalledRpm[], distro: DistroInfo): string | undefined {
  for (const capability of RELEASE_PROVIDES) {
    for (const p of installed) {
      if (!p.header) continue;
      const provides = rpmHeaderDependencies(p.header, "provide", p.nevra.name);
      const hit = provides.find((d) => d.name === capability);
      if (!hit) continue;
      if (capability === "system-release(releasever)" && hit.version)
        return hit.version.replace(/^\d+:/, "").replace(/-.*$/, "");
      return p.header.string(RpmTag.VERSION) ?? p.nevra.version;
    }
  }
  return distro.osRelease?.versionId;
}

const VARS_DIRS = ["/etc/dnf/vars", "/etc/yum/vars", "/etc/tdnf/vars", "/etc/zypp/vars.d"];

async function hasReleaseverFile(root: string): Promise<boolean> {
  for (const dir of VARS_DIRS)
    if ((await readFileInRoot(root, `${dir}/releasever`)) !== undefined) return true;
  return false;
}

/** Whose repository files the image's front end reads, and then the others', in the order tried. */
function repoTools(distro: DistroInfo): RpmRepoTool[] {
  const first: RpmRepoTool =
    distro.packageManager === "tdnf"
      ? "tdnf"
      : distro.packageManager === "zypper"
        ? "zypper"
        : distro.packageManager === "yum"
          ? "yum"
          : "dnf";
  return [first, ...(["dnf", "tdnf", "zypper", "yum"] as const).filter((t) => t !== first)];
}

/** The image's repository configuration: its front end's, or (no front end) the first tool's that defines any. */
async function readRepoConfig(
  root: string,
  distro: DistroInfo,
  arch: string,
  ctx: EngineContext,
  releasever?: string,
) {
  let config: RpmRepoConfig | undefined;
  for (const tool of repoTools(distro)) {
    const read = await readRpmRepoConfig(root, tool, {
      arch,
      ...(releasever === undefined ? {} : { releasever }),
      ...(ctx.mirrors ? { mirrors: ctx.mirrors } : {}),
    });
    config ??= read;
    if (read.repos.length) return read;
  }
  return config!;
}

/** `--keyring` OpenPGP files, merged. A file that cannot be read or is no key is a USAGE error. */
async function extraKeys(files: readonly string[] | undefined): Promise<Keyring> {
  const rings: Keyring[] = [];
  for (const file of keyringFilesOf("openpgp", files ?? [])) {
    let bytes: Buffer;
    try {
      bytes = await readFileCapped(file, { limit: 16 * 1024 * 1024, what: `--keyring ${file}` });
    } catch (e) {
      if (isSutureError(e)) throw e;
      throw new SutureError(
        "USAGE",
        `--keyring ${quoteUntrusted(file)} cannot be read (${describeCause(e)}): give the path of an OpenPGP public key file`,
        { cause: e },
      );
    }
    rings.push(await parseKeyring(bytes, `--keyring ${file}`));
  }
  return mergeKeyrings(rings);
}

/**
 * What the engine would install, resolved against the image's verified repositories, without
 * downloading or changing anything (`--dry-run`, and the result cache's key).
 */
async function planNative(sandbox: EngineSandbox, targets: Targets, ctx: EngineContext): Promise<RpmPlan> {
  const root = sandbox.mergedDir;
  const { progress } = ctx;
  const db = await readInstalled(root);
  const arch = rpmArchFor(ctx.platform);
  // A releasever the image sets in a vars file wins over the detected one, as dnf reads its vars
  // after detecting (Amazon Linux 2023 sets `latest` there).
  const releasever = (await hasReleaseverFile(root)) ? undefined : detectReleasever(db.packages, ctx.distro);
  const config = await readRepoConfig(root, ctx.distro, arch, ctx, releasever);
  const extra = await extraKeys(ctx.keyringFiles);
  const headers = db.packages.flatMap((p) => (p.header ? [p.header] : []));
  const imported = await rpmdbKeyring(headers, db.location.path);
  const gpgDir = await readRpmGpgDir(root);
  const repoKeys = new Map<string, Promise<Keyring>>();
  const keysOf = (repo: RpmRepo) => {
    let keys = repoKeys.get(repo.id);
    if (!keys) {
      keys = repoKeyring(root, repo);
      repoKeys.set(repo.id, keys);
    }
    return keys;
  };
  // The /bin/sh rpm runs scriptlets with (a file, as the image resolves it).
  const runScripts = imageHasProgram(root, "/bin/sh");
  const arches = new Set([
    arch,
    "noarch",
    ...db.packages.flatMap((p) => (p.nevra.arch ? [p.nevra.arch] : [])),
  ]);

  const opened = await withStep(progress, "repositories", "verifying the image's rpm repositories", () =>
    openRpmRepositories(config.repos, {
      cacheDir: cacheRoot(ctx),
      // dnf checks repomd.xml.asc with the repository's gpgkey= keys; zypp with its trusted
      // keyring, which is the rpm database's gpg-pubkeys (SUSE's repo files name remote keys only).
      repomdKeyring: async (repo) =>
        mergeKeyrings([await keysOf(repo), extra, ...(config.tool === "zypper" ? [imported.keyring] : [])]),
      ...(ctx.mirrors ? { mirrors: ctx.mirrors } : {}),
      // Builds no upgrade could take (other arches, sources) are dropped as they stream: Fedora's
      // x86_64 repository also lists its i686 multilib packages.
      keep: (p) => arches.has(p.arch),
      // Its warnings are the plan's (shown once, by the dry run or by apply), not sent on here.
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    }),
  );
  for (const r of opened.repositories)
    progress({
      type: "info",
      message: `rpm repository ${r.repo.id} (${r.baseUrl}): ${r.packages.length} packages${r.signedBy ? `, repomd.xml signed by ${r.signedBy}` : ""}`,
    });
  const resolve = (filelistsRead: boolean) =>
    resolveRpmUpgrade({
      installed: db.packages,
      repositories: opened.repositories.map((r) => ({ repo: r.repo, packages: r.packages })),
      targets,
      arch,
      filelistsRead,
    });
  let resolution = resolve(false);
  if (resolution.unknownFiles.length) {
    // A Requires names a path primary.xml does not list: as dnf, the filelists decide.
    const wanted = new Set(resolution.unknownFiles);
    await withStep(
      progress,
      "filelists",
      `looking up ${wanted.size} required files in the repositories' filelists`,
      () =>
        Promise.all(
          opened.repositories.map((r) =>
            addRepoFilelists(r, wanted, {
              cacheDir: cacheRoot(ctx),
              ...(ctx.signal ? { signal: ctx.signal } : {}),
            }),
          ),
        ),
    );
    resolution = resolve(true);
  }

  // Each chosen package's repository: the keys its packages must be signed by. A gpgcheck=0
  // repository is trusted only through --keyring, or unsigned with --allow-insecure-repositories.
  const trust = new Map<string, RpmRepoTrust>();
  const warnings = [...config.notes, ...opened.warnings, ...resolution.warnings];
  for (const choice of resolution.install) {
    const repo = choice.repo;
    if (trust.has(repo.id)) continue;
    const baseUrl = opened.repositories.find((r) => r.repo === repo)!.baseUrl;
    if (repo.gpgcheck) {
      let own: Keyring;
      try {
        own = await keysOf(repo);
      } catch (e) {
        // A gpgkey= file the image lacks: rpm still checks packages against the keys imported
        // into its database, so those (and the others) decide; the missing file is said.
        if (!isSutureError(e, "UNTRUSTED")) throw e;
        warnings.push(`${e.message} (its packages are checked against the other keys the image trusts)`);
        own = mergeKeyrings([]);
      }
      const keyring = mergeKeyrings([own, imported.keyring, gpgDir.keyring, extra]);
      trust.set(repo.id, { repo, baseUrl, keyring, unsigned: false });
      continue;
    }
    if (extra.keys.length) {
      trust.set(repo.id, { repo, baseUrl, keyring: extra, unsigned: false });
      continue;
    }
    if (!ctx.allowInsecureRepositories)
      throw new SutureError(
        "UNTRUSTED",
        `${choice.pkg.name} would come from repository ${repo.id}, which sets gpgcheck=0 (${quoteUntrusted(repo.origin)}), and suture installs only packages whose signature is verified: set gpgcheck=1 in the image, pass the vendor's key with --keyring, or --allow-insecure-repositories to take its packages unsigned`,
      );
    warnings.push(
      `repository ${repo.id} sets gpgcheck=0: its packages are installed unsigned (--allow-insecure-repositories), checked only against its metadata's checksums`,
    );
    trust.set(repo.id, { repo, baseUrl, keyring: extra, unsigned: true });
  }
  const obsoleted = resolution.obsoleted.map((o) => o.installed);
  const nevra = (p: InstalledRpm) =>
    `${p.nevra.name}-${p.nevra.epoch ?? 0}:${p.nevra.version}-${p.nevra.release}.${p.nevra.arch ?? ""}`;
  return {
    choices: resolution.install,
    obsoleted,
    trust,
    database: db.location,
    installed: db.packages,
    before: installedRpmVersions(db.packages),
    runScripts,
    install: resolution.install.map((c) => ({
      name: c.pkg.name,
      ...(c.from === undefined ? {} : { from: c.from }),
      to: `${c.pkg.epoch ? `${c.pkg.epoch}:` : ""}${c.pkg.version}-${c.pkg.release}`,
      reason: c.why,
      // primary.xml's pkgid names exactly one .rpm file.
      digest: `${c.pkg.checksum.type}:${c.pkg.checksum.value}`,
    })),
    failed: resolution.failed,
    warnings: [...warnings, ...resolution.obsoleted.map((o) => `${nevra(o.installed)} is erased: ${o.why}`)],
    reuseKey: [
      `scripts=${runScripts}`,
      `arch=${arch}`,
      `db=${db.location.backend}:${db.location.path}`,
      `obsoleted=${obsoleted.map(nevra).join(",")}`,
      `unsigned=${[...trust.values()]
        .filter((t) => t.unsigned)
        .map((t) => t.repo.id)
        .join(",")}`,
    ],
  };
}

function isRpmPlan(plan: EnginePlan | undefined): plan is RpmPlan {
  return plan !== undefined && "choices" in plan && "trust" in plan && "database" in plan;
}

async function applyNative(
  sandbox: EngineSandbox,
  targets: Targets,
  ctx: EngineContext,
  given: EnginePlan | undefined,
): Promise<EngineResult> {
  // A Berkeley DB or ndb database (RHEL 8, Amazon Linux 2, SUSE) is refused before anything is
  // fetched; the plan itself stays possible (a dry run with --engine sandbox uses it).
  const database = isRpmPlan(given) ? given.database : (await readInstalled(sandbox.mergedDir)).location;
  assertRpmDatabaseWritable(database);
  const plan = isRpmPlan(given) ? given : await planNative(sandbox, targets, ctx);
  const { progress } = ctx;
  const { warnings, warn, failed } = beginApply(plan, ctx);
  const { before, choices } = plan;
  if (choices.length === 0 && plan.obsoleted.length === 0)
    return { before, after: before, failed, warnings, scriptsMs: 0 };
  // Scriptlets run in the image's own shell; a foreign architecture then needs QEMU, checked
  // before anything is downloaded.
  if (plan.runScripts) await assertCanRun(ctx.platform);

  const fetched = await withStep(progress, "download", `downloading ${choices.length} rpm packages`, () =>
    downloadRpmPackages(
      choices.map((c) => ({ pkg: c.pkg, repository: plan.trust.get(c.repo.id)! })),
      { cacheDir: cacheRoot(ctx), progress, ...(ctx.signal ? { signal: ctx.signal } : {}) },
    ),
  );
  const items = choices.map((c, i) => ({
    pkg: fetched[i]!.pkg,
    file: fetched[i]!.file,
    repository: c.repo.id,
    ...(c.replaces ? { replaces: c.replaces } : {}),
  }));
  const installed = await withStep(
    progress,
    "install",
    `installing ${choices.length} rpm packages into the image`,
    () =>
      installRpmPackages(items, {
        sandbox,
        database: plan.database,
        installed: plan.installed,
        obsoleted: plan.obsoleted,
        runScripts: plan.runScripts,
        progress,
        ...(ctx.signal ? { signal: ctx.signal } : {}),
        ...(ctx.timeoutMs === undefined ? {} : { timeoutMs: ctx.timeoutMs }),
      }),
  );
  for (const w of installed.warnings) warn(w);
  for (const c of choices)
    progress({
      type: "package",
      name: c.pkg.name,
      ...(c.from === undefined ? {} : { from: c.from }),
      to: `${c.pkg.epoch ? `${c.pkg.epoch}:` : ""}${c.pkg.version}-${c.pkg.release}`,
      status: "updated",
      ...(c.why === "target" ? {} : { detail: c.why }),
    });
  const after = installedRpmVersions((await readInstalled(sandbox.mergedDir)).packages);
  // Whether every target reached its fixed version is checked by the pipeline (validateTargets).
  const packageFiles = fetched.map((f) => ({
    name: f.pkg.nevra.name,
    version: formatRpmEvr(f.pkg.nevra),
    file: f.file,
  }));
  return { before, after, failed, warnings, scriptsMs: installed.scriptsMs, packageFiles };
}
