/**
 * The Alpine lab (issue 13): real Alpine 3.20.3 images, a signed test repository holding edge's
 * newer builds of their packages (alpine-repo.ts), and a Trivy report of the fixes pending.
 *
 * Images, as OCI layouts (tag `latest`) written by umoci — not by suture's own image code — from
 * Alpine's own minirootfs tarballs in ../shared/fixtures/alpine:
 *   "app":    layer 1 the 3.20.3 minirootfs as is; layer 2 the app layer:
 *               /etc/app/app.conf (a config file), /opt/app/bin/app and the symlink
 *               /usr/local/bin/app -> /opt/app/bin/app, a non-root user `app` (1000:1000) in
 *               /etc/passwd, /etc/group and /etc/shadow with /home/app (0750, owned by it),
 *               the lab repository's public key in /etc/apk/keys/ (an org trusting its own repo;
 *               /etc/apk/repositories keeps Alpine's real URLs: tests redirect them with --mirror),
 *               and a line added to /etc/securetty (busybox's; the repository updates busybox), so
 *               an upgrade keeps the edited file and writes the new one as securetty.apk-new.
 *             /etc/passwd, /etc/group and /etc/shadow are alpine-baselayout-data's protected files,
 *             also edited (the user), and that package is updated too: apk keeps them and writes
 *             `.apk-new` beside them as well.
 *   "static": one layer: the 3.20.3 rootfs without busybox, busybox-binsh, apk-tools, ssl_client,
 *             scanelf, musl-utils (libc-utils is not installed; musl-utils provides it) — their files,
 *             busybox's applet links, installed-db records, scripts and triggers, and world entries
 *             removed: no /bin/sh and no apk, like Chainguard's static images — plus the app layer
 *             without the securetty edit (busybox is gone).
 * Cached by recipe hash in the lab cache (cache.ts lock + atomic rename); a cold build takes seconds.
 */
import {
  chmod,
  chown,
  mkdir,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  unlink,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import {
  type InstalledPackage,
  ownedPaths,
  parseInstalledDb,
  serializeInstalledDb,
} from "../../src/distro/apk/installed-db.ts";
import {
  ALPINE_REPO_URL,
  type AlpineArch,
  alpineLabKeys,
  alpineTestRepoFiles,
  cachedEntry,
  labSha256,
  memoized,
  runLabTool,
} from "./alpine-repo.ts";
import { minirootfs, readRootfsFiles } from "./alpine-rootfs.ts";
import { labCacheDir } from "./cache.ts";
import { layoutWriter } from "./oci-layout.ts";

export {
  ALPINE_COMMUNITY_URL,
  ALPINE_REPO_URL,
  type AlpineArch,
  type AlpineRepoTamper,
  type AlpineTestRepo,
  type AlpineTestRepoOptions,
  alpineLabKeys,
  startAlpineTestRepo,
} from "./alpine-repo.ts";

/** Bump when the image build below changes in a way this file's bytes do not show. */
const IMAGE_BUILDER = 1;
const ALPINE_RELEASE = "3.20.3";
/** 2026-01-01T00:00:00Z, the lab's fixed build time (as images.ts). */
const LAB_EPOCH = 1767225600;
const CREATED = new Date(LAB_EPOCH * 1000).toISOString().replace(".000Z", "Z");
const IMAGE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The app layer's non-root user. */
export const ALPINE_LAB_USER = { name: "app", uid: 1000, gid: 1000, home: "/home/app" } as const;
export const ALPINE_LAB_APP_CONF = "/etc/app/app.conf";
export const ALPINE_LAB_APP_LINK = { path: "/usr/local/bin/app", target: "/opt/app/bin/app" } as const;
/** The protected config files the app layer edits (each owned by a package the repository updates). */
export const ALPINE_LAB_EDITED_CONFIG = {
  app: ["/etc/securetty", "/etc/passwd", "/etc/group", "/etc/shadow"],
  static: ["/etc/passwd", "/etc/group", "/etc/shadow"],
} as const;

/** Removed from the "static" variant (those of them installed in 3.20.3). */
export const ALPINE_STATIC_REMOVED: readonly string[] = [
  "busybox",
  "busybox-binsh",
  "apk-tools",
  "ssl_client",
  "scanelf",
  "musl-utils",
  "libc-utils",
];

/**
 * The fixes the test repository holds for the 3.20.3 image: real newer builds from edge.
 * Mind alpine-baselayout 3.6.8: in 3.20.3 /var/lock is a directory (with subsys/), in 3.6.8 a
 * symlink to ../run/lock, and its `.pre-upgrade` makes that change (also /var/spool/mail, modprobe.d).
 * The real apk with --no-scripts fails on it ("failed to rename … to var/lock"); an engine that
 * cannot run the script (no shell: the static image) must cope with a directory replaced by a symlink.
 */
export const ALPINE_LAB_FIXES: ReadonlyArray<{ name: string; installed: string; fixed: string }> = [
  { name: "alpine-baselayout", installed: "3.6.5-r0", fixed: "3.6.8-r0" },
  { name: "alpine-baselayout-data", installed: "3.6.5-r0", fixed: "3.6.8-r0" },
  { name: "alpine-keys", installed: "2.4-r1", fixed: "2.5-r0" },
  { name: "apk-tools", installed: "2.14.4-r0", fixed: "2.14.4-r3" },
  { name: "busybox", installed: "1.36.1-r29", fixed: "1.36.1-r32" },
  { name: "busybox-binsh", installed: "1.36.1-r29", fixed: "1.36.1-r32" },
  { name: "libcrypto3", installed: "3.3.2-r0", fixed: "3.3.2-r1" },
  { name: "libssl3", installed: "3.3.2-r0", fixed: "3.3.2-r1" },
  { name: "musl", installed: "1.2.5-r0", fixed: "1.2.5-r3" },
  { name: "musl-utils", installed: "1.2.5-r0", fixed: "1.2.5-r3" },
  { name: "ssl_client", installed: "1.36.1-r29", fixed: "1.36.1-r32" },
  { name: "zlib", installed: "1.3.1-r1", fixed: "1.3.1-r2" },
];

export interface AlpineLabImage {
  /** The OCI image layout (read-only: shared by every test process). */
  ociDir: string;
  /** `oci:${ociDir}:latest`. */
  ref: string;
  /** The image's /lib/apk/db/installed. */
  installed: string;
}

const OCI_ARCH: Record<AlpineArch, string> = { x86_64: "amd64", aarch64: "arm64" };

const imageMemo = new Map<string, Promise<AlpineLabImage>>();

/** The lab image of `variant` for `arch` (default x86_64), from the cache or built (seconds). */
export function alpineLabImage(
  variant: "app" | "static",
  arch: AlpineArch = "x86_64",
): Promise<AlpineLabImage> {
  const k = `${labCacheDir()}\0${variant}\0${arch}`;
  return memoized(imageMemo, k, () => obtainImage(variant, arch));
}

async function obtainImage(variant: "app" | "static", arch: AlpineArch): Promise<AlpineLabImage> {
  const { lab } = await alpineLabKeys();
  const hash = labSha256(
    JSON.stringify({
      builder: IMAGE_BUILDER,
      variant,
      arch,
      key: lab.publicPem,
      rootfs: labSha256(await readFile(minirootfs(ALPINE_RELEASE, arch))),
      code: labSha256(await readFile(new URL(import.meta.url))),
    }),
  );
  const entry = join(labCacheDir(), `alpineLab-${variant}-${arch}-${hash.slice(0, 16)}`);
  await cachedEntry(entry, "installed", (staged) => buildImage(staged, variant, arch));
  const ociDir = join(entry, "oci");
  return { ociDir, ref: `oci:${ociDir}:latest`, installed: await readFile(join(entry, "installed"), "utf8") };
}

async function buildImage(staged: string, variant: "app" | "static", arch: AlpineArch): Promise<void> {
  const work = join(staged, "work");
  const layout = join(staged, "oci");
  const image = `${layout}:latest`;
  await mkdir(work);
  const fixture = minirootfs(ALPINE_RELEASE, arch);
  await runLabTool("umoci", ["init", "--layout", layout]);
  await runLabTool("umoci", ["new", "--image", image]);
  const rootfsTar = join(work, "rootfs.tar");
  let installed: string;
  let createdBy: string;
  if (variant === "app") {
    const raw = gunzipSync(await readFile(fixture));
    await writeFile(rootfsTar, raw);
    installed = (await readRootfsFiles(fixture, (p) => p === "lib/apk/db/installed"))
      .get("lib/apk/db/installed")!
      .toString("utf8");
    createdBy = `/bin/sh -c #(nop) ADD file:alpine-minirootfs-${ALPINE_RELEASE}-${arch}.tar.gz in / `;
  } else {
    const rootfs = join(work, "rootfs");
    await mkdir(rootfs);
    await runLabTool("tar", ["-xzf", fixture, "-C", rootfs, "--numeric-owner"]);
    installed = await stripToStatic(rootfs);
    await runLabTool("tar", ["--sort=name", "--numeric-owner", "-C", rootfs, "-cf", rootfsTar, "."]);
    createdBy = `suture lab: alpine-minirootfs-${ALPINE_RELEASE}-${arch} without ${ALPINE_STATIC_REMOVED.join(" ")} (no shell, no apk)`;
  }
  const addLayer = (tar: string, history: string) =>
    runLabTool("umoci", [
      "raw",
      "add-layer",
      "--image",
      image,
      "--history.created",
      CREATED,
      "--history.created_by",
      history,
      tar,
    ]);
  await addLayer(rootfsTar, createdBy);
  const appTar = join(work, "app.tar");
  await appLayer(join(work, "app"), appTar, fixture, variant);
  await addLayer(
    appTar,
    `/bin/sh -c #(nop) COPY app files; adduser -D -u 1000 app; trust the lab repository key${variant === "app" ? "; edit /etc/securetty" : ""}`,
  );
  await runLabTool("umoci", [
    "config",
    "--image",
    image,
    "--created",
    CREATED,
    "--architecture",
    OCI_ARCH[arch],
    "--os",
    "linux",
    "--config.env",
    IMAGE_PATH,
    "--config.cmd",
    variant === "app" ? "/bin/sh" : ALPINE_LAB_APP_LINK.path,
    "--history.created",
    CREATED,
    "--history.created_by",
    `/bin/sh -c #(nop)  CMD ["${variant === "app" ? "/bin/sh" : ALPINE_LAB_APP_LINK.path}"]`,
  ]);
  await runLabTool("umoci", ["gc", "--layout", layout]);
  await rm(work, { recursive: true, force: true });
  await writeFile(join(staged, "installed"), installed);
}

/** The app layer's tree at `dir`, archived by GNU tar into `tarPath` (owners and modes as set). */
async function appLayer(
  dir: string,
  tarPath: string,
  fixture: string,
  variant: "app" | "static",
): Promise<void> {
  const { lab } = await alpineLabKeys();
  const base = await readRootfsFiles(fixture, (p) =>
    ["etc/passwd", "etc/group", "etc/shadow", "etc/securetty"].includes(p),
  );
  const u = ALPINE_LAB_USER;
  const entries: string[] = [];
  const dirAt = async (p: string, mode = 0o755, uid = 0, gid = 0) => {
    await mkdir(join(dir, p), { recursive: true });
    await chown(join(dir, p), uid, gid);
    await chmod(join(dir, p), mode);
    entries.push(p);
  };
  const fileAt = async (p: string, data: Buffer | string, mode = 0o644, uid = 0, gid = 0) => {
    await writeFile(join(dir, p), data);
    await chown(join(dir, p), uid, gid);
    await chmod(join(dir, p), mode);
    entries.push(p);
  };
  const append = (p: string, text: string) => Buffer.concat([base.get(p)!, Buffer.from(text)]);
  await dirAt("etc");
  await dirAt("etc/app");
  await fileAt(
    "etc/app/app.conf",
    "# suture lab app: must survive patching byte for byte\nlisten = 0.0.0.0:8080\nuser = app\n",
  );
  await fileAt("etc/passwd", append("etc/passwd", `app:x:${u.uid}:${u.gid}:app:${u.home}:/sbin/nologin\n`));
  await fileAt("etc/group", append("etc/group", `app:x:${u.gid}:\n`));
  await fileAt("etc/shadow", append("etc/shadow", "app:!::0:::::\n"), 0o640, 0, 42);
  if (variant === "app")
    await fileAt("etc/securetty", append("etc/securetty", "# suture lab: the app's serial console\nttyS4\n"));
  await dirAt("etc/apk");
  await dirAt("etc/apk/keys");
  await fileAt(`etc/apk/keys/${lab.name}`, lab.publicPem);
  await dirAt("home");
  await dirAt("home/app", 0o750, u.uid, u.gid);
  await fileAt("home/app/notes.txt", "owned by the app user\n", 0o600, u.uid, u.gid);
  await dirAt("opt");
  await dirAt("opt/app");
  await dirAt("opt/app/bin");
  await fileAt("opt/app/bin/app", "#!/bin/sh\necho suture lab app\n", 0o755);
  await dirAt("usr");
  await dirAt("usr/local");
  await dirAt("usr/local/bin");
  await symlink(ALPINE_LAB_APP_LINK.target, join(dir, "usr/local/bin/app"));
  entries.push("usr/local/bin/app");
  await runLabTool("tar", [
    "--numeric-owner",
    `--mtime=@${LAB_EPOCH}`,
    "--no-recursion",
    "-C",
    dir,
    "-cf",
    tarPath,
    ...entries,
  ]);
}

/**
 * Turns the extracted rootfs into the static variant in place and returns its installed db:
 * removed packages' files and applet links, records, scripts, triggers and world entries.
 */
async function stripToStatic(rootfs: string): Promise<string> {
  const dbPath = join(rootfs, "lib/apk/db/installed");
  const all = parseInstalledDb(await readFile(dbPath, "utf8"));
  const removed = all.filter((p) => ALPINE_STATIC_REMOVED.includes(p.info.name));
  const kept = all.filter((p) => !ALPINE_STATIC_REMOVED.includes(p.info.name));
  const keptDirs = new Set(kept.flatMap((p) => ownedPaths(p).dirs));
  for (const p of removed) for (const f of ownedPaths(p).files) await rm(join(rootfs, f), { force: true });
  // busybox's applets are symlinks its trigger made (`busybox --install -s`): no package owns them.
  for (const d of ["bin", "sbin", "usr/bin", "usr/sbin"]) {
    for (const name of await readdir(join(rootfs, d)).catch(() => [] as string[])) {
      const target = await readlink(join(rootfs, d, name)).catch(() => undefined);
      if (target === "/bin/busybox") await unlink(join(rootfs, d, name));
    }
  }
  const removedDirs = removed
    .flatMap((p) => ownedPaths(p).dirs)
    .filter((d) => !keptDirs.has(d))
    .sort((a, b) => b.length - a.length);
  for (const d of removedDirs) {
    const left = await readdir(join(rootfs, d)).catch(() => undefined);
    if (left?.length === 0) await rm(join(rootfs, d), { recursive: true });
  }
  const text = serializeInstalledDb(kept);
  await writeFile(dbPath, text);
  const removedChecksums = new Set(removed.map(checksumOf));
  const triggersPath = join(rootfs, "lib/apk/db/triggers");
  const triggers = (await readFile(triggersPath, "utf8"))
    .split("\n")
    .filter((l) => l !== "" && !removedChecksums.has(l.split(" ")[0]!));
  await writeFile(triggersPath, triggers.map((l) => `${l}\n`).join(""));
  const worldPath = join(rootfs, "etc/apk/world");
  const world = (await readFile(worldPath, "utf8"))
    .split("\n")
    .filter((w) => w !== "" && !ALPINE_STATIC_REMOVED.includes(w));
  await writeFile(worldPath, world.map((w) => `${w}\n`).join(""));
  // scripts.tar: keep the members of kept packages (GNU tar rewrites it from an extracted copy).
  const scripts = join(rootfs, "lib/apk/db/scripts.tar");
  const scriptsDir = join(rootfs, "..", "scripts");
  await mkdir(scriptsDir);
  await runLabTool("tar", ["-xf", scripts, "-C", scriptsDir]);
  const keptPrefixes = kept.map((p) => `${p.info.name}-${p.info.version}.${checksumOf(p)}.`);
  const keptScripts = (await runLabTool("tar", ["-tf", scripts]))
    .split("\n")
    .filter((n) => n !== "" && keptPrefixes.some((k) => n.startsWith(k)));
  await rm(scripts);
  await runLabTool("tar", [
    "--numeric-owner",
    "--format=ustar",
    "-C",
    scriptsDir,
    "-cf",
    scripts,
    "--files-from=/dev/null",
    ...keptScripts,
  ]);
  await rm(scriptsDir, { recursive: true });
  return text;
}

function checksumOf(p: InstalledPackage): string {
  return p.fields.find(([l]) => l === "C")?.[1] ?? "";
}

const indexMemo = new Map<string, Promise<{ ociDir: string; ref: string }>>();

/** The "app" variant for amd64 and arm64 behind one OCI image index (tag `latest`), cached. */
export function alpineLabIndex(): Promise<{ ociDir: string; ref: string }> {
  return memoized(indexMemo, labCacheDir(), obtainIndex);
}

async function obtainIndex(): Promise<{ ociDir: string; ref: string }> {
  const images = await Promise.all((["x86_64", "aarch64"] as const).map((a) => alpineLabImage("app", a)));
  const tops = await Promise.all(images.map((i) => readFile(join(i.ociDir, "index.json"), "utf8")));
  const entry = join(labCacheDir(), `alpineLabIndex-${labSha256(tops.join("\n")).slice(0, 16)}`);
  await cachedEntry(entry, "oci/index.json", async (staged) => {
    const layout = await layoutWriter(join(staged, "oci"));
    const manifests: unknown[] = [];
    for (const [i, arch] of (["x86_64", "aarch64"] as const).entries()) {
      const from = images[i]!.ociDir;
      const top = JSON.parse(tops[i]!).manifests[0] as { mediaType: string; digest: string; size: number };
      const blob = async (d: string) =>
        JSON.parse(await readFile(join(from, "blobs/sha256", d.slice(7)), "utf8"));
      const manifest = await blob(top.digest);
      for (const d of [
        top.digest,
        manifest.config.digest,
        ...manifest.layers.map((l: { digest: string }) => l.digest),
      ])
        await layout.reuse(from, d);
      const platform: Record<string, string> = { os: "linux", architecture: OCI_ARCH[arch] };
      if (arch === "aarch64") platform.variant = "v8";
      manifests.push({ mediaType: top.mediaType, digest: top.digest, size: top.size, platform });
    }
    const index = await layout.put(
      Buffer.from(
        JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests }),
      ),
    );
    await layout.tag("application/vnd.oci.image.index.v1+json", index);
  });
  const ociDir = join(entry, "oci");
  return { ociDir, ref: `oci:${ociDir}:latest` };
}

export interface AlpineTrivyOptions {
  variant?: "app" | "static";
  arch?: AlpineArch;
  /** Package names to report (default: every pending fix of the variant). */
  only?: readonly string[];
  /** ArtifactName (default `suture-lab/alpine-<variant>:3.20.3`). */
  artifactName?: string;
}

/**
 * A Trivy JSON report (SchemaVersion 2, OS family "alpine", Metadata.OS.Name 3.20.3) of the lab
 * image's pending fixes. Honesty note: no scanner produced it. The name/installed/fixed triples are
 * real (the 3.20.3 image and edge's builds); the IDs are `ALPINE-LAB-<package>-<fixed>`, not CVEs.
 */
export function alpineLabTrivyReport(options: AlpineTrivyOptions = {}): object {
  const variant = options.variant ?? "app";
  const arch = options.arch ?? "x86_64";
  const artifact = options.artifactName ?? `suture-lab/alpine-${variant}:${ALPINE_RELEASE}`;
  const fixes = ALPINE_LAB_FIXES.filter(
    (f) =>
      (variant === "app" || !ALPINE_STATIC_REMOVED.includes(f.name)) &&
      (!options.only || options.only.includes(f.name)),
  );
  return {
    SchemaVersion: 2,
    CreatedAt: new Date(LAB_EPOCH * 1000).toISOString(),
    ArtifactName: artifact,
    ArtifactType: "container_image",
    Metadata: { OS: { Family: "alpine", Name: ALPINE_RELEASE }, RepoTags: [], RepoDigests: [] },
    Results: [
      {
        Target: `${artifact} (alpine ${ALPINE_RELEASE})`,
        Class: "os-pkgs",
        Type: "alpine",
        Vulnerabilities: fixes.map((f) => ({
          VulnerabilityID: `ALPINE-LAB-${f.name}-${f.fixed}`,
          PkgID: `${f.name}@${f.installed}`,
          PkgName: f.name,
          PkgIdentifier: {
            PURL: `pkg:apk/alpine/${f.name}@${f.installed}?arch=${arch}&distro=${ALPINE_RELEASE}`,
          },
          InstalledVersion: f.installed,
          FixedVersion: f.fixed,
          Status: "fixed",
          SeveritySource: "alpine",
          PrimaryURL: `${ALPINE_REPO_URL}/${arch}/${f.name}-${f.fixed}.apk`,
          DataSource: { ID: "alpine", Name: "Alpine Secdb", URL: "https://secdb.alpinelinux.org/" },
          Title: `${f.name}: newer build ${f.fixed} in the suture lab repository (from Alpine edge)`,
          Description: "suture lab: derived from Alpine's 3.20.3 and edge minirootfs, not from a scanner.",
          Severity: "UNKNOWN",
        })),
      },
    ],
  };
}

/** Every lab artefact, built or loaded (for warming the cache). */
export async function buildAlpineLab(): Promise<void> {
  await alpineTestRepoFiles("lab");
  await alpineTestRepoFiles("other");
  for (const variant of ["app", "static"] as const)
    for (const arch of ["x86_64", "aarch64"] as const) await alpineLabImage(variant, arch);
  await alpineLabIndex();
}
