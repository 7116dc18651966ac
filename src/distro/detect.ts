import { isSutureError, SutureError } from "../errors/errors.ts";
import { listDirInRoot, readFileInRoot } from "../fs/in-root.ts";
import { readImageFiles } from "../image/files.ts";
import type { Image } from "../image/image.ts";
import { APK_ARCH_FILE, APK_REPOSITORIES_DIR, APK_REPOSITORIES_FILE, APK_WORLD_FILE } from "./apk/config.ts";
import { INSTALLED_DB_PATH, parseInstalledDb } from "./apk/installed-db.ts";
import { installedFromFiles, installedVersions } from "./dpkg/database.ts";
import { type OsRelease, parseOsRelease } from "./os-release.ts";

export type PackageManagerKind = "apt" | "dpkg" | "apk" | "rpm" | "none";

/** What an image runs, found from its files alone (no container started). */
export interface DistroInfo {
  osRelease?: OsRelease;
  /** The package database format, whatever tools exist to change it. */
  packageDb: "dpkg" | "dpkg-status.d" | "apk" | "rpm" | "none";
  /** The tool that can change it inside the image, if any. */
  packageManager: PackageManagerKind;
  /** Installed packages by name → version, when the database format is supported. */
  installed?: Map<string, string>;
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
const RPM_DBS = [
  "/var/lib/rpm/rpmdb.sqlite",
  "/var/lib/rpm/Packages",
  "/var/lib/rpm/Packages.db",
  "/usr/lib/sysimage/rpm/rpmdb.sqlite",
];
/** Package tools of the rpm family; any of them means an rpm-based image. */
const RPM_TOOLS = [
  "/usr/bin/rpm",
  "/usr/bin/dnf",
  "/usr/bin/yum",
  "/usr/bin/microdnf",
  "/usr/bin/tdnf",
  "/usr/bin/zypper",
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
    RPM_DBS.includes(path) ||
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
    ...RPM_DBS,
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
  } else if (RPM_DBS.some(has)) {
    packageDb = "rpm";
  }

  let packageManager: PackageManagerKind = "none";
  if (has("/usr/bin/apt-get") && packageDb === "dpkg") packageManager = "apt";
  else if (has("/usr/bin/dpkg") && packageDb === "dpkg") packageManager = "dpkg";
  else if (APK_TOOLS.some(has) && packageDb === "apk") packageManager = "apk";
  else if (RPM_TOOLS.some(has)) packageManager = "rpm";

  return { osRelease, packageDb, packageManager, installed, files };
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
