import { isSutureError, SutureError } from "../errors/errors.ts";
import { listDirInRoot, readFileInRoot } from "../fs/in-root.ts";
import { readImageFiles } from "../image/files.ts";
import type { Image } from "../image/image.ts";
import { APK_ARCH_FILE, APK_REPOSITORIES_DIR, APK_REPOSITORIES_FILE, APK_WORLD_FILE } from "./apk/config.ts";
import { INSTALLED_DB_PATH, parseInstalledDb } from "./apk/installed-db.ts";
import { installedFromFiles, installedVersions } from "./dpkg/database.ts";
import { type OsRelease, parseOsRelease } from "./os-release.ts";
import {
  findRpmDatabase,
  type InstalledRpm,
  installedRpmVersions,
  RPM_DATABASE_FILES,
  type RpmDatabaseLocation,
  readInstalledRpms,
} from "./rpm/installed.ts";

/**
 * The tool inside the image that can change its package database: apt or dpkg (dpkg databases),
 * apk, and for rpm databases the rpm family's front ends — dnf (4), dnf5, microdnf (UBI minimal),
 * yum (CentOS 7, Amazon Linux 2), tdnf (Azure Linux, Photon), zypper (SUSE) — or rpm alone.
 */
export type PackageManagerKind =
  | "apt"
  | "dpkg"
  | "apk"
  | "dnf"
  | "dnf5"
  | "microdnf"
  | "yum"
  | "tdnf"
  | "zypper"
  | "rpm"
  | "none";

/** What an image runs, found from its files alone (no container started). */
export interface DistroInfo {
  osRelease?: OsRelease;
  /** The package database format, whatever tools exist to change it. */
  packageDb: "dpkg" | "dpkg-status.d" | "apk" | "rpm" | "none";
  /** The tool that can change it inside the image, if any. */
  packageManager: PackageManagerKind;
  /**
   * Installed packages by name → version, when the database format is supported (rpm:
   * `[epoch:]version-release`, the newest of a name installed more than once, no gpg-pubkey).
   */
  installed?: Map<string, string>;
  /**
   * For rpm images: where the image records its packages (which backend, which file: a database
   * under /usr/lib/sysimage/rpm or /var/lib/rpm, or Azure Linux distroless's manifest) and every
   * installed package with its header, as the one reader (distro/rpm/installed.ts) read them.
   */
  rpm?: { database: RpmDatabaseLocation; packages: InstalledRpm[] };
  /**
   * Files the detection read, for later steps (apt sources, keyrings) to avoid re-reading; for apk
   * images also `/etc/apk/{arch,repositories,world}` and `/etc/apk/repositories.d/*.list`.
   */
  files: Map<string, Buffer>;
}

const DPKG_STATUS = "/var/lib/dpkg/status";
const DPKG_STATUS_D = "/var/lib/dpkg/status.d/";
const APK_DB = INSTALLED_DB_PATH;
/** apk's own configuration files detection keeps (inspect shows them; readApkConfig is the engines'). */
const APK_CONFIG_FILES = [APK_ARCH_FILE, APK_REPOSITORIES_FILE, APK_WORLD_FILE];
/** apk-tools: /sbin/apk on Alpine, /usr/bin/apk on Wolfi and Chainguard. */
const APK_TOOLS = ["/sbin/apk", "/usr/bin/apk"];
/**
 * The rpm family's package tools, in the order detection names the image's package manager by:
 * tdnf and zypper only exist on their own distributions; `/usr/bin/dnf` is dnf 4 (a Python
 * script, `dnf-3`, which RHEL 8+ and Fedora ≤ 40 link dnf and yum to: it is read so that those
 * links lead somewhere) or, from Fedora 41, a symlink to dnf5; microdnf is UBI minimal's; yum
 * alone is CentOS 7 or Amazon Linux 2.
 */
const RPM_TOOLS = [
  "/usr/bin/tdnf",
  "/usr/bin/zypper",
  "/usr/bin/dnf",
  "/usr/bin/dnf-3",
  "/usr/bin/dnf5",
  "/usr/bin/microdnf",
  "/usr/bin/yum",
  "/usr/bin/rpm",
];
const TOOLS = ["/usr/bin/apt-get", "/usr/bin/dpkg", ...APK_TOOLS, ...RPM_TOOLS];

/** Paths detection wants, plus apt's configuration so patching can reuse this read. */
export function detectionWants(path: string): boolean {
  return (
    path === "/etc/os-release" ||
    path === "/usr/lib/os-release" ||
    path === DPKG_STATUS ||
    (path.startsWith(DPKG_STATUS_D) && !path.endsWith(".md5sums")) ||
    path === APK_DB ||
    APK_CONFIG_FILES.includes(path) ||
    isApkRepositoriesList(path) ||
    RPM_DATABASE_FILES.includes(path) ||
    TOOLS.includes(path) ||
    path === "/etc/apt/sources.list" ||
    path.startsWith("/etc/apt/sources.list.d/") ||
    path.startsWith("/etc/apt/trusted.gpg") ||
    path.startsWith("/etc/apt/preferences")
  );
}

/** Detect from an image's layers without unpacking (inspect). */
export async function detectDistro(
  image: Image,
  options: { signal?: AbortSignal } = {},
): Promise<DistroInfo> {
  return detectFromFiles(
    await readImageFiles(image, detectionWants, { signal: options.signal, maxFileBytes: 256 * 1024 * 1024 }),
  );
}

/** Detect from an unpacked or mounted root filesystem (the patch sandbox's merged dir). */
export async function detectDistroInRoot(root: string): Promise<DistroInfo> {
  const files = new Map<string, Buffer>();
  const fixed = [
    "/etc/os-release",
    "/usr/lib/os-release",
    DPKG_STATUS,
    APK_DB,
    ...APK_CONFIG_FILES,
    ...RPM_DATABASE_FILES,
    ...TOOLS,
    "/etc/apt/sources.list",
  ];
  for (const p of fixed) {
    const content = await readFileInRoot(root, p);
    if (content) files.set(p, content);
  }
  for (const dir of [
    DPKG_STATUS_D,
    "/etc/apt/sources.list.d/",
    "/etc/apt/trusted.gpg.d/",
    APK_REPOSITORIES_DIR,
  ]) {
    for (const name of await listDirInRoot(root, dir)) {
      const p = `${dir}${name}`;
      if (!detectionWants(p)) continue;
      const content = await readFileInRoot(root, p);
      if (content) files.set(p, content);
    }
  }
  return detectFromFiles(files);
}

export function detectFromFiles(files: Map<string, Buffer>): DistroInfo {
  const osText = files.get("/etc/os-release") ?? files.get("/usr/lib/os-release");
  const osRelease = osText ? parseOsRelease(osText.toString("utf8")) : undefined;
  const has = (p: string) => files.has(p);
  const statusD = [...files.keys()].filter((p) => p.startsWith(DPKG_STATUS_D));

  let packageDb: DistroInfo["packageDb"] = "none";
  let installed: Map<string, string> | undefined;
  let rpm: DistroInfo["rpm"];
  // The dpkg database is read by the one reader the engines use (distro/dpkg/database.ts).
  const dpkg = installedFromFiles(
    files.get(DPKG_STATUS)?.toString("utf8"),
    new Map(statusD.map((p) => [p.slice(DPKG_STATUS_D.length), files.get(p)!.toString("utf8")])),
  );
  if (dpkg) {
    packageDb = dpkg.layout === "classic" ? "dpkg" : "dpkg-status.d";
    installed = installedVersions(dpkg.packages);
  } else if (has(APK_DB)) {
    packageDb = "apk";
    installed = apkInstalledVersions(files.get(APK_DB)!);
  } else {
    const database = findRpmDatabase(has);
    if (database !== undefined) {
      packageDb = "rpm";
      rpm = { database, packages: rpmPackages(database, files) };
      installed = installedRpmVersions(rpm.packages);
    }
  }

  let packageManager: PackageManagerKind = "none";
  if (has("/usr/bin/apt-get") && packageDb === "dpkg") packageManager = "apt";
  else if (has("/usr/bin/dpkg") && packageDb === "dpkg") packageManager = "dpkg";
  else if (APK_TOOLS.some(has) && packageDb === "apk") packageManager = "apk";
  else if (packageDb === "rpm") packageManager = rpmPackageManager(files);

  return { osRelease, packageDb, packageManager, installed, ...(rpm === undefined ? {} : { rpm }), files };
}

/** `/etc/apk/repositories.d/NAME.list`: the only files there apk reads. */
function isApkRepositoriesList(path: string): boolean {
  return (
    path.startsWith(APK_REPOSITORIES_DIR) &&
    path.endsWith(".list") &&
    !path.slice(APK_REPOSITORIES_DIR.length).includes("/")
  );
}

/**
 * Name → version of apk's installed db, read by the one reader the apk engines use
 * (distro/apk/installed-db.ts). A database that reader refuses is the image's manifest of what it
 * has, damaged: INVALID_MANIFEST, as a damaged dpkg status is, with the reader's one line.
 */
function apkInstalledVersions(db: Buffer): Map<string, string> {
  try {
    return new Map(parseInstalledDb(db.toString("utf8")).map((p) => [p.info.name, p.info.version]));
  } catch (e) {
    if (!isSutureError(e) || e.code === "INTERNAL") throw e;
    throw new SutureError("INVALID_MANIFEST", e.message, { cause: e });
  }
}

/**
 * The packages of an rpm database or manifest, read by the one reader the rpm engines will use
 * (distro/rpm/installed.ts). A database it refuses is the image's record of what it has, damaged:
 * INVALID_MANIFEST, as a damaged dpkg status or apk database is, with the reader's one line.
 */
function rpmPackages(database: RpmDatabaseLocation, files: Map<string, Buffer>): InstalledRpm[] {
  try {
    return readInstalledRpms(database, (p) => files.get(p));
  } catch (e) {
    if (!isSutureError(e) || e.code === "INTERNAL") throw e;
    throw new SutureError("INVALID_MANIFEST", e.message, { cause: e });
  }
}

/** Which rpm front end the image has (see RPM_TOOLS for the order and why). */
function rpmPackageManager(files: Map<string, Buffer>): PackageManagerKind {
  if (files.has("/usr/bin/tdnf")) return "tdnf";
  if (files.has("/usr/bin/zypper")) return "zypper";
  const dnf = files.get("/usr/bin/dnf");
  // dnf 4 is a Python script; a /usr/bin/dnf that is not a script is dnf5 under its old name.
  if (dnf !== undefined) return files.has("/usr/bin/dnf5") && !isScript(dnf) ? "dnf5" : "dnf";
  if (files.has("/usr/bin/dnf5")) return "dnf5";
  if (files.has("/usr/bin/microdnf")) return "microdnf";
  if (files.has("/usr/bin/yum")) return "yum";
  if (files.has("/usr/bin/rpm")) return "rpm";
  return "none";
}

function isScript(content: Buffer): boolean {
  return content.length >= 2 && content[0] === 0x23 && content[1] === 0x21;
}
