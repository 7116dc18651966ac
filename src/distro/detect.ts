import { listDirInRoot, readFileInRoot } from "../fs/in-root.ts";
import { readImageFiles } from "../image/files.ts";
import type { Image } from "../image/image.ts";
import { parseDpkgStatus } from "./dpkg/status.ts";
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
  /** Files the detection read, for later steps (apt sources, keyrings) to avoid re-reading. */
  files: Map<string, Buffer>;
}

const DPKG_STATUS = "/var/lib/dpkg/status";
const DPKG_STATUS_D = "/var/lib/dpkg/status.d/";
const APK_DB = "/lib/apk/db/installed";
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
const TOOLS = ["/usr/bin/apt-get", "/usr/bin/dpkg", "/sbin/apk", ...RPM_TOOLS];

/** Paths detection wants, plus apt's configuration so patching can reuse this read. */
export function detectionWants(path: string): boolean {
  return (
    path === "/etc/os-release" ||
    path === "/usr/lib/os-release" ||
    path === DPKG_STATUS ||
    (path.startsWith(DPKG_STATUS_D) && !path.endsWith(".md5sums")) ||
    path === APK_DB ||
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
    ...RPM_DBS,
    ...TOOLS,
    "/etc/apt/sources.list",
  ];
  for (const p of fixed) {
    const content = await readFileInRoot(root, p);
    if (content) files.set(p, content);
  }
  for (const dir of [DPKG_STATUS_D, "/etc/apt/sources.list.d/", "/etc/apt/trusted.gpg.d/"]) {
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
  if (has(DPKG_STATUS) && files.get(DPKG_STATUS)!.length > 0) {
    packageDb = "dpkg";
    installed = toMap(parseDpkgStatus(files.get(DPKG_STATUS)!.toString("utf8")));
  } else if (statusD.length) {
    packageDb = "dpkg-status.d";
    installed = toMap(parseDpkgStatus(statusD.map((p) => files.get(p)!.toString("utf8")).join("\n\n")));
  } else if (has(APK_DB)) {
    packageDb = "apk";
    installed = parseApkInstalled(files.get(APK_DB)!.toString("utf8"));
  } else if (RPM_DBS.some(has)) {
    packageDb = "rpm";
  }

  let packageManager: PackageManagerKind = "none";
  if (has("/usr/bin/apt-get") && packageDb === "dpkg") packageManager = "apt";
  else if (has("/usr/bin/dpkg") && packageDb === "dpkg") packageManager = "dpkg";
  else if (has("/sbin/apk")) packageManager = "apk";
  else if (RPM_TOOLS.some(has)) packageManager = "rpm";

  return { osRelease, packageDb, packageManager, installed, files };
}

function toMap(pkgs: { name: string; version: string; architecture: string }[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const p of pkgs) m.set(p.name, p.version);
  return m;
}

/** apk's installed db: `P:` name and `V:` version lines per package block. */
function parseApkInstalled(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const block of text.split(/\n\s*\n/)) {
    const name = /^P:(.+)$/m.exec(block)?.[1];
    const version = /^V:(.+)$/m.exec(block)?.[1];
    if (name && version) m.set(name, version);
  }
  return m;
}
