/**
 * The test lab's real old Debian images.
 *
 * Each image is built from the real Debian archive with mmdebstrap (bookworm main ONLY, never
 * bookworm-security, so its packages are genuinely older than the security archive) and written as
 * an OCI image layout by umoci — deliberately not by suture's own image code, so that code is tested
 * against an independent construction. The rootfs gets the deb822 sources an official
 * `debian:bookworm` image ships (which do include bookworm-security), so a patcher finds real fixes.
 *
 * Images are cached by recipe in a fixed directory (`/var/cache/suture-lab`, or `$SUTURE_LAB_CACHE`)
 * under `<name>-<first 16 hex of the recipe hash>/`:
 *   oci/             the OCI image layout, tag `latest` (gzip layers, config with history)
 *   lab-image.json   what was built, from which recipe, when, with which tools
 *   dpkg-status      the image's final /var/lib/dpkg/status
 * An entry appears atomically (built in a temporary directory, then renamed) and is never modified
 * afterwards; a build holds `<entry>.lock` (an atomic mkdir) so concurrent test processes build a
 * recipe once. Build logs are kept under `logs/`.
 *
 * The recipe hash covers everything that decides the output except the archive's content at build
 * time: suite, mirror, components, architecture, packages, epoch, the hook scripts' bytes, the parent
 * recipe, and BUILDER_VERSION (bump it whenever the build steps in this file change).
 *
 * Pending security fixes (`pendingSecurityFixes`) come from the real bookworm-security archive:
 * its InRelease verified with gpgv against the Debian archive keyring, its Packages.xz verified
 * against the InRelease SHA256 list. `trivyReportFor` turns them into a Trivy-shaped JSON report.
 *
 * Builds need root (mmdebstrap --mode=root, umoci unpack with real ownership) and the tools that
 * scripts/install-system-deps.sh installs. Builds, the security reads and whatever a test does with
 * a lab image reach the archive through the lab's recording mirror (archive-mirror.ts), so they
 * work again without network.
 */
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { xz } from "@napi-rs/lzma";
import { SutureError } from "../../src/errors/errors.ts";
import { type Image, openImage } from "../../src/image/image.ts";
import { openLayoutSource } from "../../src/transports/layout/layout.ts";
import { archiveMirror, archiveProxyEnv } from "./archive-mirror.ts";
import { acquireLock, labCacheDir, releaseLock } from "./cache.ts";

export { labCacheDir } from "./cache.ts";

/** Bump when the build steps below change in a way that changes the images. */
const BUILDER_VERSION = 1;

const RECIPES_DIR = fileURLToPath(new URL("./recipes/", import.meta.url));
const INSTALL_SYSTEM_DEPS = fileURLToPath(new URL("../../scripts/install-system-deps.sh", import.meta.url));
const OFFICIAL_ROOTFS_HOOK = "official-rootfs.sh";
const DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg";
/** Where the security archive is, as reports name it; the lab reads it through the archive mirror. */
const SECURITY_MIRROR = "https://deb.debian.org/debian-security";
const IMAGE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export type LabArch = "amd64" | "arm64";

/** One layer of a lab image. */
export type LabLayerStep =
  /** mmdebstrap of the suite: the image's base layer (only as the first step of a parentless recipe). */
  | { readonly kind: "bootstrap"; readonly variant: "minbase" }
  /** apt-get install from the recipe's mirror/suite/components only (no security), as a diff layer. */
  | { readonly kind: "apt-install"; readonly packages: readonly string[] }
  /** A script from test/lab/recipes/ run on the unpacked rootfs as `sh SCRIPT ROOTFS`, as a diff layer. */
  | { readonly kind: "script"; readonly script: string; readonly createdBy: string };

export interface LabRecipe {
  readonly name: string;
  readonly suite: "bookworm" | "trixie";
  /**
   * The customize hook (in test/lab/recipes/) giving the rootfs the official image's sources for
   * the suite; default official-rootfs.sh (bookworm's). Only parentless recipes run it.
   */
  readonly officialRootfsHook?: string;
  readonly arch: LabArch;
  readonly mirror: string;
  readonly components: readonly string[];
  /**
   * SOURCE_DATE_EPOCH for every step: file mtimes newer than it are clamped to it and it is the
   * config/history timestamp, so rebuilding a step leaves unchanged files byte-identical and a diff
   * layer holds only what really changed.
   */
  readonly sourceDateEpoch: number;
  /** The image this one is built on: its layers are reused verbatim (same digests). */
  readonly parent?: LabRecipe;
  readonly steps: readonly LabLayerStep[];
}

/** 2026-01-01T00:00:00Z: before any lab build, after nothing that matters. */
const LAB_EPOCH = 1767225600;

/** debian:bookworm-like minbase, one layer, amd64. */
export const bookwormMinbase: LabRecipe = {
  name: "bookwormMinbase",
  suite: "bookworm",
  arch: "amd64",
  mirror: "http://deb.debian.org/debian",
  components: ["main"],
  sourceDateEpoch: LAB_EPOCH,
  steps: [{ kind: "bootstrap", variant: "minbase" }],
};

/**
 * bookwormMinbase (layer 1, same blob) + packages from bookworm main (layer 2) + local edits
 * (layer 3: a modified openssl and nginx conffile, /usr/local/bin/ssl -> /usr/bin/openssl, and
 * /srv/app owned by uid/gid 1000; see recipes/nginx-local-edits.sh).
 *
 * Pending in bookworm-security when this image was first built (2026-11-25; image debian_version
 * 12.15), i.e. what patching it installs — 20 binary packages from 13 source packages:
 *   openssl: openssl, libssl3 3.0.20-1~deb12u2 -> 3.0.22-1~deb12u2
 *   perl: perl, perl-base, perl-modules-5.36, libperl5.36 5.36.0-7+deb12u3 -> 5.36.0-7+deb12u4
 *   nginx: nginx, nginx-common 1.22.1-9+deb12u9 -> 1.22.1-9+deb12u11
 *   expat: libexpat1 2.5.0-1+deb12u2 -> 2.5.0-1+deb12u5
 *   tzdata: tzdata 2026b-0+deb12u1 -> 2026f-0+deb12u1
 *   ca-certificates: ca-certificates 20230311+deb12u1 -> 20250419~deb12u2
 *   unzip: unzip 6.0-28 -> 6.0-28+deb12u1
 *   apt: apt, libapt-pkg6.0 2.6.1 -> 2.6.2
 *   cyrus-sasl2: libsasl2-2, libsasl2-modules-db 2.1.28+dfsg-10 -> 2.1.28+dfsg-10+deb12u1
 *   brotli: libbrotli1 1.0.9-2+b6 -> 1.0.9-2+deb12u1; libssh2: libssh2-1 1.10.0-3+b1 -> 1.10.0-3+deb12u1
 *   pcre2: libpcre2-8-0 10.42-1 -> 10.42-1+deb12u2; xz-utils: liblzma5 5.4.1-1+deb12u1 -> 5.4.1-1+deb12u2
 * The archive moves on; `pendingSecurityFixes` reports the live list.
 */
export const bookwormNginx: LabRecipe = {
  name: "bookwormNginx",
  suite: "bookworm",
  arch: "amd64",
  mirror: "http://deb.debian.org/debian",
  components: ["main"],
  sourceDateEpoch: LAB_EPOCH,
  parent: bookwormMinbase,
  steps: [
    {
      kind: "apt-install",
      packages: ["nginx", "ca-certificates", "openssl", "libexpat1", "unzip", "curl", "tzdata", "perl"],
    },
    {
      kind: "script",
      script: "nginx-local-edits.sh",
      createdBy:
        "/bin/sh -c edit openssl.cnf and nginx.conf; ln -s /usr/bin/openssl /usr/local/bin/ssl; /srv/app as 1000:1000",
    },
  ],
};

/**
 * bookwormNginx (its three layers, same blobs) plus python3 from bookworm main (layer 4): issue
 * 15's "full report on an image whose fixes include ca-certificates, tzdata, perl and python".
 * bookworm main had python3.11 3.11.2-6+deb12u8 and bookworm-security 3.11.2-6+deb12u9 when it was
 * added (2026-12-02), so its full report also updates python3.11, python3.11-minimal,
 * libpython3.11-minimal and libpython3.11-stdlib, whose scripts byte-compile the standard library
 * (py3compile) and have no native equivalent: they run in runc.
 */
export const bookwormNginxPython: LabRecipe = {
  ...bookwormNginx,
  name: "bookwormNginxPython",
  parent: bookwormNginx,
  steps: [{ kind: "apt-install", packages: ["python3"] }],
};

/**
 * bookwormMinbase for arm64, bootstrapped under qemu-user emulation (about 4 minutes on 2 cores).
 * Not built by the default tests; requesting it installs qemu-user-static and enables binfmt.
 */
export const bookwormMinbaseArm64: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormMinbaseArm64",
  arch: "arm64",
};

/**
 * The bench's "library-only report" on bookwormNginx (bench/README.md): libraries whose updates
 * carry no maintainer script but the ldconfig trigger, plus openssl and unzip, whose scripts have
 * native equivalents, so the patch runs no code of the image.
 */
export const LIBRARY_REPORT_PACKAGES: readonly string[] = [
  "libssl3",
  "openssl",
  "libexpat1",
  "unzip",
  "liblzma5",
  "libbrotli1",
  "libssh2-1",
  "libpcre2-8-0",
  "libsasl2-2",
  "libsasl2-modules-db",
];

/**
 * bookwormNginx for arm64 (on bookwormMinbaseArm64), built under qemu-user emulation: the image of
 * issue 15's "full report as an amd64 + arm64 index within copa's 5-minute timeout" bench line.
 * Not built by the tests (several minutes cold); `npm run bench -- --only multi-full` builds it.
 */
export const bookwormNginxArm64: LabRecipe = {
  ...bookwormNginx,
  name: "bookwormNginxArm64",
  arch: "arm64",
  parent: bookwormMinbaseArm64,
};

/**
 * bookwormNginxPython for arm64 (on bookwormNginxArm64), built under qemu-user emulation: the
 * python image as an amd64 + arm64 index (`npm run bench -- --only multi-full`). Not built by the tests.
 */
export const bookwormNginxPythonArm64: LabRecipe = {
  ...bookwormNginxPython,
  name: "bookwormNginxPythonArm64",
  arch: "arm64",
  parent: bookwormNginxArm64,
};

/**
 * bookwormMinbase plus one tiny layer (/etc/suture-lab/marker): a two-layer image that builds in
 * seconds once bookwormMinbase is cached (no mmdebstrap run), for tests of the cache itself.
 */
export const bookwormMinbaseMarked: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormMinbaseMarked",
  parent: bookwormMinbase,
  steps: [
    {
      kind: "script",
      script: "marker-layer.sh",
      createdBy: "/bin/sh -c echo marker > /etc/suture-lab/marker",
    },
  ],
};

/**
 * bookwormMinbase made "slim" as Docker's official debian:*-slim images are: the
 * /etc/dpkg/dpkg.cfg.d/docker path-exclude/path-include rules, and the docs (all but copyright
 * files), man pages, info pages, translations and lintian overrides they exclude removed (as
 * whiteouts in the second layer). A patch must not bring any of them back.
 */
export const bookwormSlim: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormSlim",
  parent: bookwormMinbase,
  steps: [
    {
      kind: "script",
      script: "slim.sh",
      createdBy:
        "/bin/sh -c write /etc/dpkg/dpkg.cfg.d/docker (slim path-exclude rules) and remove what it excludes",
    },
  ],
};

/** bookwormMinbase with bookworm-backports enabled (recipes/apt-config-backports.sh). */
export const bookwormBackports: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormBackports",
  parent: bookwormMinbase,
  steps: [
    {
      kind: "script",
      script: "apt-config-backports.sh",
      createdBy: "/bin/sh -c enable bookworm-backports in /etc/apt/sources.list.d/backports.sources",
    },
  ],
};

/** bookwormMinbase with apt pins (tzdata 1001, liblzma5 -1 in bookworm-security) and apt held (recipes/apt-config-pins.sh). */
export const bookwormPinned: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormPinned",
  parent: bookwormMinbase,
  steps: [
    {
      kind: "script",
      script: "apt-config-pins.sh",
      createdBy: "/bin/sh -c write /etc/apt/preferences.d/suture-lab.pref; apt-mark hold apt",
    },
  ],
};

/** bookwormMinbase with `Acquire::Check-Valid-Until "false"` (recipes/apt-config-no-valid-until.sh). */
export const bookwormNoValidUntil: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormNoValidUntil",
  parent: bookwormMinbase,
  steps: [
    {
      kind: "script",
      script: "apt-config-no-valid-until.sh",
      createdBy: "/bin/sh -c write /etc/apt/apt.conf.d/99no-check-valid-until",
    },
  ],
};

/**
 * debian:trixie-like minbase, one layer, amd64: mmdebstrap of trixie main only, then the sources
 * debian:trixie ships (recipes/official-rootfs-trixie.sh), so trixie-security's fixes are pending.
 */
export const trixieMinbase: LabRecipe = {
  name: "trixieMinbase",
  suite: "trixie",
  arch: "amd64",
  mirror: "http://deb.debian.org/debian",
  components: ["main"],
  sourceDateEpoch: LAB_EPOCH,
  officialRootfsHook: "official-rootfs-trixie.sh",
  steps: [{ kind: "bootstrap", variant: "minbase" }],
};

/**
 * bookwormMinbase with trixie and trixie-security listed beside bookworm and
 * `APT::Default-Release "bookworm"` (recipes/apt-config-default-release.sh).
 */
export const bookwormDefaultRelease: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormDefaultRelease",
  parent: bookwormMinbase,
  steps: [
    {
      kind: "script",
      script: "apt-config-default-release.sh",
      createdBy:
        '/bin/sh -c add trixie sources in /etc/apt/sources.list.d/trixie.sources; APT::Default-Release "bookworm"',
    },
  ],
};

/**
 * bookwormDefaultRelease with `APT::Default-Release "bookworm*"`, which also covers
 * bookworm-security and bookworm-updates (recipes/apt-config-default-release-glob.sh).
 */
export const bookwormDefaultReleaseGlob: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormDefaultReleaseGlob",
  parent: bookwormDefaultRelease,
  steps: [
    {
      kind: "script",
      script: "apt-config-default-release-glob.sh",
      createdBy: '/bin/sh -c write APT::Default-Release "bookworm*" to /etc/apt/apt.conf.d/99default-release',
    },
  ],
};

export const labRecipes = {
  bookwormMinbase,
  bookwormNginx,
  bookwormNginxPython,
  bookwormMinbaseArm64,
  bookwormNginxArm64,
  bookwormNginxPythonArm64,
  bookwormMinbaseMarked,
  bookwormSlim,
  bookwormBackports,
  bookwormPinned,
  bookwormNoValidUntil,
  trixieMinbase,
  bookwormDefaultRelease,
  bookwormDefaultReleaseGlob,
} as const;
export type LabRecipeName = keyof typeof labRecipes;

/** A cached lab image. */
export interface LabImage {
  readonly recipe: LabRecipe;
  /** The OCI image layout directory (read-only: it is shared by every test process). */
  readonly layoutDir: string;
  readonly tag: "latest";
  /** `oci:<layoutDir>:latest`, as skopeo and suture spell it. */
  readonly reference: string;
  /** sha256 hex of the recipe (see the file comment). */
  readonly recipeHash: string;
  /** `sha256:…` of the manifest tagged `latest`. */
  readonly manifestDigest: string;
  /** Installed package name -> version, from the image's /var/lib/dpkg/status. */
  readonly packages: Map<string, string>;
  /** Content of the image's /etc/debian_version, e.g. "12.12". */
  readonly debianVersion: string;
  /** Whether this process built the entry (false: it came from the cache or another process's build). */
  readonly built: boolean;
}

function resolveRecipe(recipe: LabRecipeName | LabRecipe): LabRecipe {
  if (typeof recipe !== "string") return recipe;
  const r = labRecipes[recipe];
  if (!r)
    throw new SutureError(
      "USAGE",
      `unknown lab recipe "${recipe}"; use one of ${Object.keys(labRecipes).join(", ")}`,
    );
  return r;
}

const hashMemo = new Map<LabRecipe, Promise<string>>();

/** The sha256 hex that keys a recipe's cache entry. */
export function labRecipeHash(recipe: LabRecipeName | LabRecipe): Promise<string> {
  const r = resolveRecipe(recipe);
  let h = hashMemo.get(r);
  if (!h) {
    h = computeRecipeHash(r);
    hashMemo.set(r, h);
  }
  return h;
}

async function computeRecipeHash(r: LabRecipe): Promise<string> {
  const fileSha = async (name: string) => sha256Hex(await fs.readFile(path.join(RECIPES_DIR, name)));
  const material = {
    builder: BUILDER_VERSION,
    name: r.name,
    suite: r.suite,
    arch: r.arch,
    mirror: r.mirror,
    components: r.components,
    sourceDateEpoch: r.sourceDateEpoch,
    officialRootfsHook: await fileSha(officialHookOf(r)),
    parent: r.parent ? await labRecipeHash(r.parent) : null,
    steps: await Promise.all(
      r.steps.map(async (s) => (s.kind === "script" ? { ...s, sha256: await fileSha(s.script) } : s)),
    ),
  };
  return sha256Hex(JSON.stringify(material));
}

function entryDirFor(r: LabRecipe, hash: string): string {
  return path.join(labCacheDir(), `${r.name}-${hash.slice(0, 16)}`);
}

const imageMemo = new Map<string, Promise<LabImage>>();

/**
 * The lab image for a recipe: from the cache when present (a cheap read), otherwise built first
 * (minutes; the parent recipe is built or loaded too). Safe to call from several processes at once:
 * one builds, the others wait for its entry. Throws if the build fails; nothing half-built is cached.
 */
export async function labImage(recipe: LabRecipeName | LabRecipe): Promise<LabImage> {
  const r = resolveRecipe(recipe);
  const hash = await labRecipeHash(r);
  const key = `${labCacheDir()}\0${hash}`;
  let p = imageMemo.get(key);
  if (!p) {
    p = obtainImage(r, hash);
    imageMemo.set(key, p);
    p.catch(() => imageMemo.delete(key));
  }
  return p;
}

async function obtainImage(r: LabRecipe, hash: string): Promise<LabImage> {
  const entry = entryDirFor(r, hash);
  if (await exists(path.join(entry, "lab-image.json"))) return loadEntry(r, hash, entry, false);
  if (r.parent) await labImage(r.parent);
  await fs.mkdir(labCacheDir(), { recursive: true });
  const lock = `${entry}.lock`;
  const done = () => exists(path.join(entry, "lab-image.json"));
  let built = false;
  if (await acquireLock(lock, done)) {
    try {
      // Re-check under the lock: another process may have finished between our check and mkdir.
      if (!(await done())) built = await buildEntry(r, hash, entry);
    } finally {
      await releaseLock(lock);
    }
  }
  return loadEntry(r, hash, entry, built);
}

async function loadEntry(r: LabRecipe, hash: string, entry: string, built: boolean): Promise<LabImage> {
  const layoutDir = path.join(entry, "oci");
  const info = JSON.parse(await fs.readFile(path.join(entry, "lab-image.json"), "utf8")) as {
    debianVersion: string;
  };
  const manifestDigest = await taggedManifestDigest(layoutDir, "latest");
  const status = await fs.readFile(path.join(entry, "dpkg-status"), "utf8");
  const packages = new Map(parseDpkgStatus(status).map((p) => [p.name, p.version] as const));
  return {
    recipe: r,
    layoutDir,
    tag: "latest",
    reference: `oci:${layoutDir}:latest`,
    recipeHash: hash,
    manifestDigest,
    packages,
    debianVersion: info.debianVersion,
    built,
  };
}

async function taggedManifestDigest(layoutDir: string, tag: string): Promise<string> {
  const index = JSON.parse(await fs.readFile(path.join(layoutDir, "index.json"), "utf8")) as {
    manifests?: { digest: string; annotations?: Record<string, string> }[];
  };
  const m = index.manifests?.find((d) => d.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (!m)
    throw new SutureError(
      "NOT_FOUND",
      `lab layout ${layoutDir} has no tag "${tag}"; delete the entry to rebuild it`,
    );
  return m.digest;
}

// ---------------------------------------------------------------------------------------------
// Building

interface BuildContext {
  readonly r: LabRecipe;
  readonly work: string;
  readonly layout: string;
  readonly bundle: string;
  readonly log: string;
  readonly created: string;
  haveBundle: boolean;
  rootfsTar?: string;
}

/** Builds the recipe into `entry`; false if another builder's equivalent entry got there first. */
async function buildEntry(r: LabRecipe, hash: string, entry: string): Promise<boolean> {
  if (process.getuid?.() !== 0) {
    throw new SutureError(
      "USAGE",
      `building lab image ${r.name} needs root (mmdebstrap --mode=root, umoci unpack); run the tests as root`,
    );
  }
  if (r.arch !== hostDebianArch()) await enableForeignArch(r.arch);
  const root = labCacheDir();
  const logs = path.join(root, "logs");
  await fs.mkdir(logs, { recursive: true });
  const work = await fs.mkdtemp(path.join(root, `.build-${r.name}-`));
  const staged = path.join(work, "entry");
  await fs.mkdir(staged);
  const ctx: BuildContext = {
    r,
    work,
    layout: path.join(staged, "oci"),
    bundle: path.join(work, "bundle"),
    log: path.join(work, "build.log"),
    created: new Date(r.sourceDateEpoch * 1000).toISOString().replace(".000Z", "Z"),
    haveBundle: false,
  };
  const keptLog = path.join(logs, `${path.basename(entry)}.log`);
  try {
    if (r.parent) {
      const parent = await labImage(r.parent);
      await run(ctx, "cp", ["-a", parent.layoutDir, ctx.layout]);
    } else {
      await run(ctx, "umoci", ["init", "--layout", ctx.layout]);
      await run(ctx, "umoci", ["new", "--image", `${ctx.layout}:latest`]);
    }
    for (const [i, step] of r.steps.entries()) {
      if (step.kind === "bootstrap") {
        if (i !== 0 || r.parent)
          throw new SutureError(
            "INTERNAL",
            `recipe ${r.name}: bootstrap must be the first step of a parentless recipe`,
          );
        await bootstrapLayer(ctx, step.variant);
      } else if (step.kind === "apt-install") {
        await aptInstallLayer(ctx, step.packages);
      } else {
        await scriptLayer(ctx, step.script, step.createdBy);
      }
    }
    await configure(ctx);
    await run(ctx, "umoci", ["gc", "--layout", ctx.layout]);
    await collectImageFacts(ctx, staged, hash);
    // umoci writes blobs 0600; the cache is shared by test processes that may not run as root.
    await run(ctx, "chmod", ["-R", "a+rX", staged]);
    const won = await fs.rename(staged, entry).then(
      () => true,
      async (e: NodeJS.ErrnoException) => {
        // Another builder won the race: its entry is equivalent, keep it.
        const taken = e.code === "ENOTEMPTY" || e.code === "EEXIST";
        if (taken && (await exists(path.join(entry, "lab-image.json")))) return false;
        throw e;
      },
    );
    if (won) await fs.copyFile(ctx.log, keptLog).catch(() => undefined);
    return won;
  } catch (e) {
    await fs.copyFile(ctx.log, keptLog).catch(() => undefined);
    throw e instanceof SutureError
      ? e
      : new SutureError(
          "IO",
          `building lab image ${r.name} failed: ${(e as Error).message}; see ${keptLog}`,
          { cause: e },
        );
  } finally {
    await removeTree(work);
  }
}

/** The recipe's official-image hook script, inherited from its base recipe. */
function officialHookOf(r: LabRecipe): string {
  return r.officialRootfsHook ?? (r.parent ? officialHookOf(r.parent) : OFFICIAL_ROOTFS_HOOK);
}

/** `sh -c` hook running the official-image customisation on mmdebstrap's rootfs ("$1"). */
function officialHook(r: LabRecipe): string {
  return `sh '${path.join(RECIPES_DIR, officialHookOf(r))}' "$1"`;
}

function mirrorLine(r: LabRecipe): string {
  return `deb ${r.mirror} ${r.suite} ${r.components.join(" ")}`;
}

/**
 * mmdebstrap's environment: apt (on the host, and in the chroot for apt-install layers) reaches
 * the archive through the recording mirror. The proxy goes in the environment, not in --aptopt:
 * mmdebstrap keeps --aptopt in the image's /etc/apt/apt.conf.d/99mmdebstrap, and the port must
 * leave no trace in the image (nor in the recipe hash, which CI caches images by).
 */
async function buildEnv(r: LabRecipe): Promise<Record<string, string>> {
  return { ...archiveProxyEnv(await archiveMirror()), SOURCE_DATE_EPOCH: String(r.sourceDateEpoch) };
}

function mmdebstrapCommon(r: LabRecipe): string[] {
  return [
    "--mode=root",
    `--arch=${r.arch}`,
    // official-rootfs.sh empties lists and caches itself, the way the official image does.
    "--skip=cleanup/apt/lists",
    "--skip=cleanup/apt/cache",
  ];
}

async function bootstrapLayer(ctx: BuildContext, variant: "minbase"): Promise<void> {
  const { r } = ctx;
  const rootfsTar = path.join(ctx.work, "rootfs.tar");
  const layerTar = path.join(ctx.work, "layer.tar");
  await run(
    ctx,
    "mmdebstrap",
    [
      `--variant=${variant}`,
      ...mmdebstrapCommon(r),
      `--customize-hook=${officialHook(r)}`,
      r.suite,
      rootfsTar,
      mirrorLine(r),
    ],
    { env: await buildEnv(r) },
  );
  // mmdebstrap's tarball carries the device nodes it made; an image's /dev is an empty directory.
  await run(ctx, "mmtarfilter", ["--path-exclude=/dev/*"], { stdin: rootfsTar, stdout: layerTar });
  await run(ctx, "umoci", [
    "raw",
    "add-layer",
    "--image",
    `${ctx.layout}:latest`,
    "--history.created",
    ctx.created,
    "--history.created_by",
    `mmdebstrap --variant=${variant} --arch=${r.arch} ${r.suite} '${mirrorLine(r)}' (suture lab)`,
    layerTar,
  ]);
  await fs.rm(layerTar);
  ctx.rootfsTar = rootfsTar;
}

async function ensureBundle(ctx: BuildContext): Promise<void> {
  if (ctx.haveBundle) return;
  await run(ctx, "umoci", ["unpack", "--image", `${ctx.layout}:latest`, ctx.bundle]);
  ctx.haveBundle = true;
}

async function aptInstallLayer(ctx: BuildContext, packages: readonly string[]): Promise<void> {
  const { r } = ctx;
  await ensureBundle(ctx);
  const rootfs = path.join(ctx.bundle, "rootfs");
  // mmdebstrap on the existing rootfs (custom variant, non-empty target): it provides the mounts,
  // policy-rc.d (no daemon starts), apt config and cleanup. apt must see only the recipe's
  // sources, so the image's debian.sources (with bookworm-security) goes away until the
  // customize hook writes it back; the image's empty resolv.conf is replaced by the host's.
  await run(
    ctx,
    "mmdebstrap",
    [
      "--variant=custom",
      ...mmdebstrapCommon(r),
      "--skip=check/empty",
      `--setup-hook=rm -f "$1"/etc/apt/sources.list.d/*; cat /etc/resolv.conf > "$1/etc/resolv.conf"`,
      `--customize-hook=chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${packages.join(" ")}`,
      `--customize-hook=${officialHook(r)}`,
      r.suite,
      rootfs,
      mirrorLine(r),
    ],
    { env: await buildEnv(r) },
  );
  if (ctx.rootfsTar) await fs.rm(ctx.rootfsTar, { force: true });
  ctx.rootfsTar = undefined;
  await removeDeviceNodes(ctx, rootfs);
  await repack(ctx, `apt-get install -y --no-install-recommends ${packages.join(" ")} # ${mirrorLine(r)}`);
}

async function scriptLayer(ctx: BuildContext, script: string, createdBy: string): Promise<void> {
  await ensureBundle(ctx);
  await run(ctx, "sh", [path.join(RECIPES_DIR, script), path.join(ctx.bundle, "rootfs")]);
  await repack(ctx, createdBy);
}

async function removeDeviceNodes(ctx: BuildContext, rootfs: string): Promise<void> {
  await assertNoMountsUnder(path.join(rootfs, "dev"));
  await run(ctx, "find", [path.join(rootfs, "dev"), "-xdev", "-mindepth", "1", "-delete"]);
}

/** Clamp mtimes like mmdebstrap's tar output does, then let umoci diff the rootfs into a layer. */
async function repack(ctx: BuildContext, createdBy: string): Promise<void> {
  const rootfs = path.join(ctx.bundle, "rootfs");
  const epoch = `@${ctx.r.sourceDateEpoch}`;
  await run(ctx, "find", [
    rootfs,
    "-xdev",
    "-newermt",
    epoch,
    "-exec",
    "touch",
    "-h",
    "-d",
    epoch,
    "{}",
    "+",
  ]);
  await run(ctx, "umoci", [
    "repack",
    "--image",
    `${ctx.layout}:latest`,
    "--refresh-bundle",
    "--history.created",
    ctx.created,
    "--history.created_by",
    createdBy,
    ctx.bundle,
  ]);
}

async function configure(ctx: BuildContext): Promise<void> {
  const base = ["config", "--image", `${ctx.layout}:latest`, "--created", ctx.created];
  if (ctx.r.parent) {
    // Env, Cmd and platform are inherited; only the image's creation time moves.
    await run(ctx, "umoci", [...base, "--no-history"]);
    return;
  }
  await run(ctx, "umoci", [
    ...base,
    "--architecture",
    ctx.r.arch,
    "--os",
    "linux",
    "--config.env",
    IMAGE_PATH,
    "--config.cmd",
    "bash",
    "--history.created",
    ctx.created,
    "--history.created_by",
    '/bin/sh -c #(nop)  CMD ["bash"]',
  ]);
}

async function collectImageFacts(ctx: BuildContext, staged: string, hash: string): Promise<void> {
  const readFromImage = async (p: string): Promise<Buffer> => {
    if (ctx.haveBundle) return fs.readFile(path.join(ctx.bundle, "rootfs", p));
    if (!ctx.rootfsTar) throw new SutureError("INTERNAL", `recipe ${ctx.r.name} produced no rootfs`);
    return (await run(ctx, "tar", ["-xOf", ctx.rootfsTar, `./${p}`], { capture: true })).stdout;
  };
  const status = await readFromImage("var/lib/dpkg/status");
  const debianVersion = (await readFromImage("etc/debian_version")).toString("utf8").trim();
  await fs.writeFile(path.join(staged, "dpkg-status"), status);
  const tools = {
    mmdebstrap: (await run(ctx, "mmdebstrap", ["--version"], { capture: true })).stdout.toString().trim(),
    umoci: (await run(ctx, "umoci", ["--version"], { capture: true })).stdout.toString().trim(),
  };
  const info = {
    recipe: { ...ctx.r, parent: ctx.r.parent?.name ?? null },
    recipeHash: hash,
    manifestDigest: await taggedManifestDigest(ctx.layout, "latest"),
    debianVersion,
    packageCount: parseDpkgStatus(status.toString("utf8")).length,
    builtAt: new Date().toISOString(),
    tools,
  };
  await fs.writeFile(path.join(staged, "lab-image.json"), `${JSON.stringify(info, null, 2)}\n`);
}

function hostDebianArch(): LabArch | string {
  return process.arch === "x64" ? "amd64" : process.arch;
}

async function enableForeignArch(arch: LabArch): Promise<void> {
  if (arch !== "arm64")
    throw new SutureError("UNSUPPORTED_PLATFORM", `the lab cannot emulate ${arch}; only arm64 on amd64`);
  // The host's own packages, from the host's sources: not the lab's archive use, and this process
  // (blocked in spawnSync) could not answer a proxy it serves itself, so no archive mirror here.
  const env = { ...process.env };
  for (const [k, v] of Object.entries(archiveProxyEnv(await archiveMirror())))
    if (env[k] === v) delete env[k];
  const res = spawnSync("bash", [INSTALL_SYSTEM_DEPS, "--arm64-emulation"], { encoding: "utf8", env });
  if (res.status !== 0) {
    throw new SutureError(
      "SANDBOX",
      `enabling arm64 emulation failed (${lastLine(res.stderr) || `exit ${res.status}`}); run scripts/install-system-deps.sh --arm64-emulation as root`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Processes and files

interface RunOptions {
  env?: Record<string, string>;
  stdin?: string;
  stdout?: string;
  capture?: boolean;
}

/** Runs a tool, appending its output to the build log; rejects with the last stderr line on failure. */
async function run(
  ctx: Pick<BuildContext, "log">,
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<{ stdout: Buffer }> {
  const log = await fs.open(ctx.log, "a");
  const stdin = opts.stdin ? await fs.open(opts.stdin, "r") : undefined;
  const stdout = opts.stdout ? await fs.open(opts.stdout, "w") : undefined;
  try {
    await log.write(`\n$ ${cmd} ${args.map((a) => JSON.stringify(a)).join(" ")}\n`);
    return await new Promise((resolve, reject) => {
      const child = spawn(cmd, args, {
        env: { ...process.env, ...opts.env },
        stdio: [stdin ? stdin.fd : "ignore", stdout ? stdout.fd : opts.capture ? "pipe" : log.fd, "pipe"],
      });
      const out: Buffer[] = [];
      let errTail = "";
      child.stdout?.on("data", (b: Buffer) => out.push(b));
      child.stderr?.on("data", (b: Buffer) => {
        errTail = (errTail + b.toString("utf8")).slice(-4000);
        log.write(b).catch(() => undefined);
      });
      child.on("error", (e) =>
        reject(
          new SutureError("IO", `cannot run ${cmd}: ${e.message}; run scripts/install-system-deps.sh`, {
            cause: e,
          }),
        ),
      );
      child.on("close", (code, signal) => {
        if (code === 0) resolve({ stdout: Buffer.concat(out) });
        else
          reject(
            new SutureError(
              "IO",
              `${cmd} ${args[0] ?? ""} failed (${signal ?? `exit ${code}`}): ${lastLine(errTail) || "no error output"}`,
            ),
          );
      });
    });
  } finally {
    await stdin?.close();
    await stdout?.close();
    await log.close();
  }
}

function lastLine(text: string): string {
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.findLast((l) => l.startsWith("E:")) ?? lines.at(-1) ?? "";
}

/** Mount points at or below `dir`, deepest first. */
async function mountsUnder(dir: string): Promise<string[]> {
  const info = await fs.readFile("/proc/self/mountinfo", "utf8");
  const prefix = path.resolve(dir);
  return info
    .split("\n")
    .map((l) => l.split(" ")[4]?.replace(/\\040/g, " "))
    .filter((m): m is string => !!m && (m === prefix || m.startsWith(`${prefix}/`)))
    .sort((a, b) => b.length - a.length);
}

async function assertNoMountsUnder(dir: string): Promise<void> {
  const mounts = await mountsUnder(dir);
  if (mounts.length > 0) {
    throw new SutureError(
      "SANDBOX",
      `${mounts[0]} is still mounted after mmdebstrap; unmount it before retrying`,
    );
  }
}

/**
 * Removes a build directory without ever descending into a mount a failed mmdebstrap left behind
 * (a bind-mounted /dev or /proc must not be emptied): unmount first, then rm --one-file-system.
 */
async function removeTree(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) spawnSync("umount", ["-l", m]);
  if ((await mountsUnder(dir)).length > 0) return; // leave it for a human rather than risk the host
  spawnSync("rm", ["-rf", "--one-file-system", dir]);
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

function sha256Hex(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

// ---------------------------------------------------------------------------------------------
// Debian control files (a deliberately small, independent parser: the lab is an oracle for suture's)

type Stanza = Map<string, string>;

function parseStanzas(text: string): Stanza[] {
  const out: Stanza[] = [];
  let cur: Stanza = new Map();
  let last = "";
  for (const line of text.split("\n")) {
    if (line.trim() === "") {
      if (cur.size) out.push(cur);
      cur = new Map();
      last = "";
    } else if (line.startsWith(" ") || line.startsWith("\t")) {
      if (last) cur.set(last, `${cur.get(last)}\n${line.slice(1)}`);
    } else {
      const i = line.indexOf(":");
      if (i > 0) {
        last = line.slice(0, i);
        cur.set(last, line.slice(i + 1).trim());
      }
    }
  }
  if (cur.size) out.push(cur);
  return out;
}

interface DpkgPackage {
  name: string;
  version: string;
  arch: string;
  source: string;
  sourceVersion: string;
}

/** Packages with Status "install ok installed" from a dpkg status file. */
function parseDpkgStatus(text: string): DpkgPackage[] {
  return parseStanzas(text)
    .filter((s) => s.get("Status") === "install ok installed")
    .map((s) => {
      const name = s.get("Package") ?? "";
      const version = s.get("Version") ?? "";
      const [source, sourceVersion] = parseSourceField(s.get("Source"), name, version);
      return { name, version, arch: s.get("Architecture") ?? "all", source, sourceVersion };
    });
}

/** `Source: name (version)` with both parts optional (defaults: the binary's name and version). */
function parseSourceField(field: string | undefined, name: string, version: string): [string, string] {
  const m = /^(\S+)(?:\s+\((\S+)\))?$/.exec(field ?? "");
  return m ? [m[1], m[2] ?? version] : [name, version];
}

/** dpkg's own ordering (the system dpkg: independent of suture's implementation). */
function dpkgVersionGreater(a: string, b: string): boolean {
  return spawnSync("dpkg", ["--compare-versions", a, "gt", b]).status === 0;
}

// ---------------------------------------------------------------------------------------------
// Pending security fixes

/** An installed package for which bookworm-security has a newer version. */
export interface PendingFix {
  /** Binary package name, as dpkg and scanners name it. */
  readonly name: string;
  readonly arch: string;
  readonly installed: string;
  /** The newest version in bookworm-security. */
  readonly fixed: string;
  readonly source: string;
  /** Source version of the installed and of the fixed package (differ from binaries' on binNMUs). */
  readonly installedSource: string;
  readonly fixedSource: string;
  /** Pool path of the fixed .deb and its SHA256/size from the verified Packages index. */
  readonly filename: string;
  readonly sha256: string;
  readonly size: number;
}

interface SecurityPackage {
  name: string;
  version: string;
  arch: string;
  source: string;
  sourceVersion: string;
  filename: string;
  sha256: string;
  size: number;
}

const securityIndexMemo = new Map<string, Promise<SecurityPackage[]>>();

/**
 * Every package of the recipe's image for which its release's security suite (bookworm-security,
 * trixie-security) currently has a newer version,
 * sorted by name. Reads the live security archive (InRelease verified with gpgv against the
 * Debian archive keyring, Packages.xz against InRelease's SHA256), so the answer follows the
 * archive; it is never empty for bookwormNginx while bookworm is supported.
 */
export async function pendingSecurityFixes(recipe: LabRecipeName | LabRecipe): Promise<PendingFix[]> {
  const r = resolveRecipe(recipe);
  const img = await labImage(r);
  const installed = parseDpkgStatus(
    await fs.readFile(path.join(path.dirname(img.layoutDir), "dpkg-status"), "utf8"),
  );
  const index = await securityIndex(securitySuiteOf(r), r.arch);
  const byName = new Map<string, SecurityPackage[]>();
  for (const p of index) byName.set(p.name, [...(byName.get(p.name) ?? []), p]);
  const fixes: PendingFix[] = [];
  for (const pkg of installed) {
    const candidates = (byName.get(pkg.name) ?? []).filter((c) => c.arch === pkg.arch || c.arch === "all");
    let best: SecurityPackage | undefined;
    for (const c of candidates) if (!best || dpkgVersionGreater(c.version, best.version)) best = c;
    if (!best || best.version === pkg.version || !dpkgVersionGreater(best.version, pkg.version)) continue;
    fixes.push({
      name: pkg.name,
      arch: pkg.arch,
      installed: pkg.version,
      fixed: best.version,
      source: best.source,
      installedSource: pkg.sourceVersion,
      fixedSource: best.sourceVersion,
      filename: best.filename,
      sha256: best.sha256,
      size: best.size,
    });
  }
  return fixes.sort((a, b) => a.name.localeCompare(b.name));
}

/** The security suite of the recipe's release (`bookworm-security`, `trixie-security`). */
function securitySuiteOf(r: LabRecipe): string {
  return `${r.suite}-security`;
}

function securityIndex(suite: string, arch: string): Promise<SecurityPackage[]> {
  const key = `${suite}\0${arch}`;
  let p = securityIndexMemo.get(key);
  if (!p) {
    p = fetchSecurityIndex(suite, arch);
    securityIndexMemo.set(key, p);
    p.catch(() => securityIndexMemo.delete(key));
  }
  return p;
}

async function fetchSecurityIndex(securitySuite: string, arch: string): Promise<SecurityPackage[]> {
  const release = await verifiedRelease(securitySuite);
  const rel = `main/binary-${arch}/Packages.xz`;
  const entry = release.sha256.get(rel);
  if (!entry)
    throw new SutureError(
      "NOT_FOUND",
      `${securitySuite} InRelease lists no ${rel}; is ${arch} still supported?`,
    );
  const xzBytes = await fetchBytes(`${await securityArchive()}/dists/${securitySuite}/${rel}`);
  if (xzBytes.length !== entry.size || sha256Hex(xzBytes) !== entry.sha256) {
    throw new SutureError(
      "DIGEST_MISMATCH",
      `${rel} from ${SECURITY_MIRROR} does not match its InRelease SHA256; retry later (mirror sync)`,
      {
        retryable: true,
      },
    );
  }
  const text = (await xz.decompress(xzBytes)).toString("utf8");
  return parseStanzas(text).map((s) => {
    const name = s.get("Package") ?? "";
    const version = s.get("Version") ?? "";
    const [source, sourceVersion] = parseSourceField(s.get("Source"), name, version);
    return {
      name,
      version,
      arch: s.get("Architecture") ?? "",
      source,
      sourceVersion,
      filename: s.get("Filename") ?? "",
      sha256: s.get("SHA256") ?? "",
      size: Number(s.get("Size") ?? "0"),
    };
  });
}

interface VerifiedRelease {
  sha256: Map<string, { sha256: string; size: number }>;
}

/** bookworm-security's InRelease, signature-checked with gpgv and checked for freshness. */
async function verifiedRelease(securitySuite: string): Promise<VerifiedRelease> {
  const raw = await fetchBytes(`${await securityArchive()}/dists/${securitySuite}/InRelease`);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "suture-lab-release-"));
  try {
    const signed = path.join(dir, "InRelease");
    const content = path.join(dir, "Release");
    await fs.writeFile(signed, raw);
    const res = spawnSync("gpgv", ["--keyring", DEBIAN_KEYRING, "--output", content, signed], {
      encoding: "utf8",
    });
    if (res.status !== 0) {
      throw new SutureError(
        "UNTRUSTED",
        `${securitySuite} InRelease failed gpgv against ${DEBIAN_KEYRING}: ${lastLine(res.stderr)}`,
      );
    }
    // Only the signed text counts: gpgv writes exactly that, without armour or unsigned trailers.
    const [fields] = parseStanzas(await fs.readFile(content, "utf8"));
    if (fields?.get("Codename") !== securitySuite) {
      throw new SutureError(
        "UNTRUSTED",
        `signed Release names codename ${fields?.get("Codename")}, not ${securitySuite}`,
      );
    }
    const validUntil = Date.parse(fields.get("Valid-Until") ?? "");
    if (!(validUntil > Date.now())) {
      throw new SutureError(
        "UNTRUSTED",
        `${securitySuite} InRelease expired (Valid-Until ${fields.get("Valid-Until")}); a stale mirror?`,
      );
    }
    const sha256 = new Map<string, { sha256: string; size: number }>();
    for (const line of (fields.get("SHA256") ?? "").split("\n")) {
      const [hash, size, name] = line.trim().split(/\s+/);
      if (hash && size && name) sha256.set(name, { sha256: hash, size: Number(size) });
    }
    return { sha256 };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** The security archive as the recording mirror serves it (verified here with gpgv all the same). */
async function securityArchive(): Promise<string> {
  return `${(await archiveMirror()).url}/debian-security`;
}

async function fetchBytes(url: string): Promise<Buffer> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new SutureError("NETWORK", `cannot reach ${url}: ${(e as Error).message}`, {
      cause: e,
      retryable: true,
    });
  }
  if (!res.ok)
    throw new SutureError("NETWORK", `GET ${url} answered ${res.status}`, { retryable: res.status >= 500 });
  return Buffer.from(await res.arrayBuffer());
}

/** Streams a pool file to `dest`, checking its size and SHA256 from the verified Packages index. */
async function fetchVerifiedFile(url: string, sha256: string, size: number, dest: string): Promise<void> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new SutureError("NETWORK", `cannot reach ${url}: ${(e as Error).message}`, {
      cause: e,
      retryable: true,
    });
  }
  if (!res.ok || !res.body)
    throw new SutureError("NETWORK", `GET ${url} answered ${res.status}`, { retryable: res.status >= 500 });
  const hash = createHash("sha256");
  let n = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      n += chunk.length;
      cb(null, chunk);
    },
  });
  await pipeline(Readable.fromWeb(res.body as WebReadableStream), tap, createWriteStream(dest));
  if (n !== size || hash.digest("hex") !== sha256) {
    await fs.rm(dest, { force: true });
    throw new SutureError(
      "DIGEST_MISMATCH",
      `${url} does not match the SHA256/size in the verified Packages index`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Trivy-shaped report

/** The packages patch tests usually care about (restrict a report to them with `only`). */
export const CORE_PENDING_PACKAGES: readonly string[] = [
  "openssl",
  "libssl3",
  "libexpat1",
  "tzdata",
  "perl-base",
];

export interface TrivyReportOptions {
  /** Binary package names to report (those without a pending fix are silently absent). Default: all. */
  readonly only?: readonly string[];
  /** Where to write the JSON. Default: a new temporary directory. */
  readonly outFile?: string;
  /**
   * Take vulnerability IDs from the fixed packages' Debian changelogs (downloads one .deb per source
   * package from the security archive, cached by SHA256 under the lab cache). Default true.
   */
  readonly cveIds?: boolean;
}

export interface TrivyVulnerability {
  VulnerabilityID: string;
  PkgID: string;
  PkgName: string;
  PkgIdentifier: { PURL: string };
  InstalledVersion: string;
  FixedVersion: string;
  Status: "fixed";
  SeveritySource: "debian";
  PrimaryURL: string;
  DataSource: { ID: string; Name: string; URL: string };
  Title: string;
  Description: string;
  Severity: "UNKNOWN";
}

export interface TrivyReport {
  SchemaVersion: 2;
  CreatedAt: string;
  ArtifactName: string;
  ArtifactType: "container_image";
  Metadata: {
    OS: { Family: "debian"; Name: string };
    ImageID: string;
    DiffIDs: string[];
    RepoTags: string[];
    RepoDigests: string[];
    ImageConfig: unknown;
  };
  Results: {
    Target: string;
    Class: "os-pkgs";
    Type: "debian";
    Vulnerabilities: TrivyVulnerability[];
  }[];
}

/**
 * Writes a Trivy JSON report (SchemaVersion 2, the shape `trivy image --format json` emits) of the
 * recipe's image listing its pending bookworm-security fixes.
 *
 * Honesty note: no scanner produced this. The package/installed/fixed triples are real (from the
 * image's dpkg status and the verified security archive). VulnerabilityIDs are the CVE IDs named in
 * the Debian changelog entries between the installed and the fixed version; where those name none
 * (or `cveIds: false`) the ID is `DEBIAN-FIX-<source>-<fixed source version>`. Severity is UNKNOWN.
 */
export async function trivyReportFor(
  recipe: LabRecipeName | LabRecipe,
  options: TrivyReportOptions = {},
): Promise<{ path: string; report: TrivyReport; fixes: PendingFix[] }> {
  const r = resolveRecipe(recipe);
  const img = await labImage(r);
  let fixes = await pendingSecurityFixes(r);
  if (options.only) {
    const only = new Set(options.only);
    fixes = fixes.filter((f) => only.has(f.name));
  }
  const idsBySource = new Map<string, string[]>();
  for (const f of fixes) {
    const key = `${f.source}\0${f.installedSource}\0${f.fixedSource}`;
    if (idsBySource.has(key)) continue;
    const found = options.cveIds === false ? [] : await cveIdsBetween(f, securitySuiteOf(r), r.arch);
    idsBySource.set(key, found.length ? found : [`DEBIAN-FIX-${f.source}-${f.fixedSource}`]);
  }
  const distro = `debian-${img.debianVersion}`;
  const vulns: TrivyVulnerability[] = [];
  for (const f of fixes) {
    for (const id of idsBySource.get(`${f.source}\0${f.installedSource}\0${f.fixedSource}`) ?? []) {
      const isCve = id.startsWith("CVE-");
      vulns.push({
        VulnerabilityID: id,
        PkgID: `${f.name}@${f.installed}`,
        PkgName: f.name,
        PkgIdentifier: {
          PURL: `pkg:deb/debian/${f.name}@${encodeURIComponent(f.installed)}?arch=${f.arch}&distro=${distro}`,
        },
        InstalledVersion: f.installed,
        FixedVersion: f.fixed,
        Status: "fixed",
        SeveritySource: "debian",
        PrimaryURL: isCve
          ? `https://security-tracker.debian.org/tracker/${id}`
          : `${SECURITY_MIRROR}/${f.filename}`,
        DataSource: {
          ID: "debian",
          Name: "Debian Security Tracker",
          URL: "https://salsa.debian.org/security-tracker-team/security-tracker",
        },
        Title: `${f.source}: fixed in ${securitySuiteOf(r)} ${f.fixedSource}`,
        Description: `suture lab: derived from the ${securitySuiteOf(r)} archive (Packages and changelog), not from a scanner.`,
        Severity: "UNKNOWN",
      });
    }
  }
  vulns.sort(
    (a, b) => a.PkgName.localeCompare(b.PkgName) || a.VulnerabilityID.localeCompare(b.VulnerabilityID),
  );
  const manifest = JSON.parse(await readBlob(img.layoutDir, img.manifestDigest)) as {
    config: { digest: string };
  };
  const config = JSON.parse(await readBlob(img.layoutDir, manifest.config.digest)) as {
    rootfs: { diff_ids: string[] };
  };
  const report: TrivyReport = {
    SchemaVersion: 2,
    CreatedAt: new Date().toISOString(),
    ArtifactName: img.layoutDir,
    ArtifactType: "container_image",
    Metadata: {
      OS: { Family: "debian", Name: img.debianVersion },
      ImageID: manifest.config.digest,
      DiffIDs: config.rootfs.diff_ids,
      RepoTags: [],
      RepoDigests: [],
      ImageConfig: config,
    },
    Results: [
      {
        Target: `${img.layoutDir} (debian ${img.debianVersion})`,
        Class: "os-pkgs",
        Type: "debian",
        Vulnerabilities: vulns,
      },
    ],
  };
  const out =
    options.outFile ??
    path.join(await fs.mkdtemp(path.join(os.tmpdir(), "suture-lab-trivy-")), `${r.name}.trivy.json`);
  await fs.writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
  return { path: out, report, fixes };
}

async function readBlob(layoutDir: string, digest: string): Promise<string> {
  const [alg, hex] = digest.split(":");
  return fs.readFile(path.join(layoutDir, "blobs", alg, hex), "utf8");
}

/**
 * CVE IDs named in the changelog entries of `fix.source` newer than the installed source version and
 * not newer than the fixed one, read from a fixed .deb of that source (the smallest one that carries
 * a changelog; docs of some binaries are symlinks to another package's).
 */
async function cveIdsBetween(fix: PendingFix, suite: string, arch: string): Promise<string[]> {
  const index = await securityIndex(suite, arch);
  const debs = index
    .filter((p) => p.source === fix.source && p.sourceVersion === fix.fixedSource)
    .sort((a, b) => a.size - b.size)
    .slice(0, 4);
  let changelog = "";
  for (const deb of debs) {
    changelog = await changelogOf(deb);
    if (changelog) break;
  }
  const ids = new Set<string>();
  let inRange = false;
  for (const line of changelog.split("\n")) {
    const head = /^(\S+) \(([^)]+)\) [^;]*;/.exec(line);
    if (head) {
      const v = head[2];
      if (!dpkgVersionGreater(v, fix.installedSource)) break; // entries are newest first
      inRange = !dpkgVersionGreater(v, fix.fixedSource);
      continue;
    }
    if (inRange) for (const m of line.matchAll(/CVE-\d{4}-\d{4,}/g)) ids.add(m[0]);
  }
  return [...ids].sort();
}

/** The Debian changelog inside a security .deb ("" if it has none), cached by the .deb's SHA256. */
async function changelogOf(deb: SecurityPackage): Promise<string> {
  const cacheDir = path.join(labCacheDir(), "security-changelogs");
  const cached = path.join(cacheDir, `${deb.sha256}.changelog`);
  try {
    return await fs.readFile(cached, "utf8");
  } catch {
    // not cached yet
  }
  await fs.mkdir(cacheDir, { recursive: true });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "suture-lab-deb-"));
  try {
    const file = path.join(dir, "pkg.deb");
    await fetchVerifiedFile(`${await securityArchive()}/${deb.filename}`, deb.sha256, deb.size, file);
    const res = spawnSync(
      "sh",
      [
        "-c",
        'dpkg-deb --fsys-tarfile "$1" | tar -xO --wildcards "./usr/share/doc/*/changelog.Debian.gz"',
        "sh",
        file,
      ],
      { maxBuffer: 64 << 20 },
    );
    const text = res.status === 0 && res.stdout.length > 0 ? gunzipSync(res.stdout).toString("utf8") : "";
    const tmp = `${cached}.${process.pid}.tmp`;
    await fs.writeFile(tmp, text);
    await fs.rename(tmp, cached);
    return text;
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** A lab image opened as the library's Image value (its one platform), for tests below the CLI. */
export async function labImageValue(
  lab: LabImage,
  architecture: "amd64" | "arm64" = "amd64",
): Promise<Image> {
  return openImage(await openLayoutSource(lab.layoutDir, lab.tag, {}), { os: "linux", architecture });
}
