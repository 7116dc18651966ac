import { parseInstalledDb } from "../distro/apk/installed-db.ts";
import { type DistroInfo, detectFromFiles, detectionWants } from "../distro/detect.ts";
import { installedFromFiles } from "../distro/dpkg/database.ts";
import { checkPackageFields, type PackageFormat } from "../distro/package-syntax.ts";
import { formatRpmEvr, RpmTag } from "../distro/rpm/header.ts";
import { isRpmPublicKey } from "../distro/rpm/installed.ts";
import { isSutureError, SutureError } from "../errors/errors.ts";
import { readImageFiles } from "../image/files.ts";
import { type Image, imagePlatform } from "../image/image.ts";
import type { Platform } from "../oci/manifest.ts";
import { formatPurl } from "../vex/purl.ts";
import { type OsIdentity, osIdentity, RELEASE_FILES } from "./os-identity.ts";

/**
 * The neutral component list an SBOM is written from: one image's OS and installed packages, read
 * from its package database by the one reader of each format (the same files detection reads,
 * from the layers, never an extracted image). The writers (cyclonedx.ts, spdx.ts) only format it.
 */

export interface SbomPackage {
  format: PackageFormat;
  name: string;
  /** As the package manager writes it: deb `[epoch:]upstream-revision`, apk `1.2-r0`, rpm `[epoch:]version-release`. */
  version: string;
  /** The package's architecture as its database records it (deb `all`, rpm `noarch` included). */
  arch?: string;
  epoch?: number;
  /** The source package it was built from (deb Source, apk origin, rpm SOURCERPM). */
  source?: { name: string; version: string; release?: string; epoch?: number };
  /** What the database declares (apk `L:`, rpm LICENSE); dpkg records none. */
  license?: string;
  /** The purl as Trivy writes it for this package (see packagePurl). */
  purl: string;
  /** The version the image had before a suture patch changed it (patched-image SBOMs only). */
  previous?: { version: string; purl: string };
}

export interface SbomImage {
  /** The image's name as the user gave it (reference without transport decoration where possible). */
  name: string;
  /** The image manifest's digest. */
  digest: string;
  platform: Platform;
  /** Registry host and repository (`docker.io/library/nginx`), for the image's oci purl; absent off-registry. */
  repository?: string;
  os?: OsIdentity;
  packageDb: DistroInfo["packageDb"];
  /** Sorted by purl. */
  packages: SbomPackage[];
}

/** Paths the SBOM needs: what detection reads, plus the release files Trivy names the OS by. */
export function sbomWants(path: string): boolean {
  return detectionWants(path) || RELEASE_FILES.includes(path);
}

/** Read an image's OS and packages from its layers (one pass over them). */
export async function readImageInventory(
  image: Image,
  identity: { name: string; repository?: string },
  options: { signal?: AbortSignal } = {},
): Promise<SbomImage> {
  const files = await readImageFiles(image, sbomWants, {
    signal: options.signal,
    maxFileBytes: 256 * 1024 * 1024,
  });
  return inventoryFromFiles(files, {
    ...identity,
    digest: image.manifest.digest,
    platform: imagePlatform(image),
  });
}

const DB_FIX = "the image's package database is damaged or hostile; repair it in the image";

/** The inventory of an image given the files sbomWants selected (tests feed fixtures here). */
export function inventoryFromFiles(
  files: Map<string, Buffer>,
  image: { name: string; digest: string; platform: Platform; repository?: string },
): SbomImage {
  const distro = detectFromFiles(files);
  const os = osIdentity(distro, files);
  const packages = listPackages(distro, files).map((p) => ({ ...p, purl: packagePurl(p, os) }));
  packages.sort((a, b) => (a.purl < b.purl ? -1 : a.purl > b.purl ? 1 : 0));
  return {
    name: image.name,
    digest: image.digest,
    platform: image.platform,
    ...(image.repository ? { repository: image.repository } : {}),
    ...(os ? { os } : {}),
    packageDb: distro.packageDb,
    packages,
  };
}

type Listed = Omit<SbomPackage, "purl" | "previous">;

function listPackages(distro: DistroInfo, files: Map<string, Buffer>): Listed[] {
  try {
    if (distro.packageDb === "dpkg" || distro.packageDb === "dpkg-status.d") return dpkgPackages(files);
    if (distro.packageDb === "apk") return apkPackages(files);
    if (distro.packageDb === "rpm") return rpmPackages(distro);
    return [];
  } catch (e) {
    if (!isSutureError(e) || e.code === "INTERNAL" || e.code === "INVALID_MANIFEST") throw e;
    throw new SutureError("INVALID_MANIFEST", e.message, { cause: e });
  }
}

function checked(format: PackageFormat, p: Listed, where: string): Listed {
  checkPackageFields(format, { name: p.name, versionText: p.version, architecture: p.arch }, where, DB_FIX);
  return p;
}

const DPKG_STATUS = "/var/lib/dpkg/status";
const DPKG_STATUS_D = "/var/lib/dpkg/status.d/";

function dpkgPackages(files: Map<string, Buffer>): Listed[] {
  const statusD = new Map(
    [...files]
      .filter(([p]) => p.startsWith(DPKG_STATUS_D))
      .map(([p, c]) => [p.slice(DPKG_STATUS_D.length), c.toString("utf8")] as const),
  );
  const db = installedFromFiles(files.get(DPKG_STATUS)?.toString("utf8"), statusD);
  return (db?.packages ?? []).map((p) => {
    const { epoch } = splitDebEpoch(p.version);
    // `Source: name (version)` when the source version differs from the binary's (binNMUs).
    const sourceField = /^(\S+)(?:\s+\((\S+)\))?/.exec(p.paragraph.get("source") ?? "");
    const sourceVersion = sourceField?.[2] ?? p.version;
    const src = splitDebEpoch(sourceVersion);
    return checked(
      "deb",
      {
        format: "deb",
        name: p.name,
        version: p.version,
        arch: p.architecture,
        ...(epoch ? { epoch } : {}),
        source: {
          name: sourceField?.[1] ?? p.name,
          version: src.rest,
          ...(src.epoch ? { epoch: src.epoch } : {}),
        },
      },
      "the image's dpkg database",
    );
  });
}

/** `1:2.36-9` → epoch 1, `2.36-9`. */
function splitDebEpoch(version: string): { epoch: number; rest: string } {
  const m = /^(\d+):(.*)$/.exec(version);
  return m ? { epoch: Number(m[1]), rest: m[2]! } : { epoch: 0, rest: version };
}

function apkPackages(files: Map<string, Buffer>): Listed[] {
  const text = files.get("/lib/apk/db/installed")?.toString("utf8") ?? "";
  return parseInstalledDb(text).map(({ info }) =>
    checked(
      "apk",
      {
        format: "apk",
        name: info.name,
        version: info.version,
        ...(info.arch ? { arch: info.arch } : {}),
        source: { name: info.origin ?? info.name, version: info.version },
        ...(info.license ? { license: info.license } : {}),
      },
      "the image's apk database",
    ),
  );
}

function rpmPackages(distro: DistroInfo): Listed[] {
  return (distro.rpm?.packages ?? [])
    .filter((p) => !isRpmPublicKey(p))
    .map((p) => {
      const { nevra } = p;
      const source = p.sourceRpm ? parseSourceRpm(p.sourceRpm) : undefined;
      const license = p.header?.string(RpmTag.LICENSE);
      return checked(
        "rpm",
        {
          format: "rpm",
          name: nevra.name,
          version: formatRpmEvr(nevra),
          ...(nevra.arch ? { arch: nevra.arch } : {}),
          ...(nevra.epoch ? { epoch: nevra.epoch } : {}),
          ...(source ? { source: { ...source, ...(nevra.epoch ? { epoch: nevra.epoch } : {}) } } : {}),
          ...(license ? { license } : {}),
        },
        `the image's rpm database ${distro.rpm!.database.path}`,
      );
    });
}

/**
 * `glibc-2.34-60.el9.src.rpm` → glibc, 2.34, 60.el9 (name-version-release, the last two hyphens;
 * rpm puts no epoch in the file name, so the binary's epoch is the source's, as Trivy assumes).
 */
export function parseSourceRpm(file: string): { name: string; version: string; release: string } | undefined {
  const m = /^(.+)-([^-]+)-([^-]+)\.(?:no)?src\.rpm$/.exec(file);
  return m ? { name: m[1]!, version: m[2]!, release: m[3]! } : undefined;
}

/**
 * The purl of an installed package as Trivy writes it (pkg/purl in Trivy): namespace the OS family
 * (openSUSE Leap and Tumbleweed both `opensuse`); `arch` as the database says; the epoch as an
 * `epoch` qualifier, never in the version (deb and rpm alike); `distro` `<family>-<release>` for
 * deb and rpm, the bare release for apk (Trivy's `distro=3.20.3`). Releases are named as Trivy
 * names them (Debian's /etc/debian_version, Alpine's /etc/alpine-release; see os-identity.ts).
 */
export function packagePurl(p: Omit<SbomPackage, "purl">, os: OsIdentity | undefined): string {
  const version =
    p.format === "deb" ? splitDebEpoch(p.version).rest : p.format === "rpm" ? rpmVr(p) : p.version;
  const family = os?.family;
  const namespace =
    family === undefined
      ? undefined
      : p.format === "rpm" && family.startsWith("opensuse")
        ? "opensuse"
        : family;
  const distro =
    os === undefined || os.release === ""
      ? undefined
      : p.format === "apk"
        ? os.release
        : `${family}-${os.release}`;
  return formatPurl({
    type: p.format,
    namespace,
    name: p.name,
    version,
    qualifiers: { arch: p.arch, epoch: p.epoch ? String(p.epoch) : undefined, distro },
  });
}

function rpmVr(p: Omit<SbomPackage, "purl">): string {
  const m = /^\d+:(.*)$/.exec(p.version);
  return m ? m[1]! : p.version;
}
