/**
 * The RPM lab (issue 14): rpm-family images built from real Debian packages, a signed loopback
 * repository holding their bookworm-security fixes as rpms (rpm-repo.ts), and Trivy reports.
 *
 * Usage (from a test; every artefact is cached by recipe, a warm call takes well under a second):
 *
 *   import { rpmLabImage, rpmLabReport, startRpmTestRepo } from "../lab/rpm-lab.ts";
 *   const image = await rpmLabImage("dnf");          // { ociDir, ref: "oci:…:latest", installed, … }
 *   const repo = await startRpmTestRepo();            // or { tamper: "repomd" | "primary" | "package-…" }
 *   // suture patch image.ref … --mirror repo.mirrorArg("dnf") --report <file of rpmLabReport("dnf")>
 *   //   (--keyring repo.publicKeyFile when a test wants an explicit key)
 *   await repo.close();
 *
 *   The fixes pending in each image: `await rpmLabFixes(kind)` (name, arch, installed, fixed, CVE ids).
 *   The lab key for --keyring: `repo.publicKeyFile` (or `(await rpmLabKeys()).lab.publicKeyFile`).
 *   The image's own dnf/zypper as the judge: see test/integration/rpm-lab.test.ts (inLayoutImage).
 *
 * Images (OCI layouts written by umoci, amd64, tag `latest`; two layers: the rootfs, then an app
 * layer with the config edits, a user `app` 1000:1000 with /home/app, /etc/app/app.conf and
 * /opt/app/bin/app + /usr/local/bin/app):
 *   "dnf"        Rocky-9.4-like: mmdebstrap of bookworm minbase + Debian's dnf 4.14 and rpm 4.18.
 *                The Debian userland (shell, python3, dnf, rpm, their libraries) was installed by
 *                dpkg; its dpkg database is NOT kept in the image (an image has one package
 *                database — rpm's — and suture's detection reads dpkg's first), so those files
 *                belong to no package, and the rpmdb has `debian-userland`, a package with no files
 *                that Provides what rpm packages require of that userland (/bin/sh, /sbin/ldconfig,
 *                libc6 = <its version>, …). rpm packages installed by the image's own rpm (in a
 *                chroot): rocky-release (os-release, /etc/redhat-release, /etc/yum.repos.d/rocky.repo
 *                with gpgcheck=1 repo_gpgcheck=1 and gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-lab)
 *                and the OLD lab packages (libonig5, libjq1, jq, unzip, nginx-common, rsync). The
 *                lab key is imported into the rpmdb (gpg-pubkey). /etc/rpm/macros sets
 *                `%_dbpath /var/lib/rpm` (Debian's rpm defaults to ~/.rpmdb). /etc/dnf/dnf.conf is
 *                Rocky's. `$releasever` comes from rocky-release's `system-release(releasever) = 9`.
 *   "zypper"     openSUSE-Leap-15.6-like: the same with Debian's zypper 1.14 instead of dnf, the
 *                rpmdb at /usr/lib/sysimage/rpm, /etc/zypp/repos.d/repo-oss.repo, /etc/products.d
 *                (zypper's $releasever), the lab key imported into the rpmdb as SUSE images have theirs.
 *   "tdnf"       Azure-Linux-3.0-like: a shell and rpm, /etc/tdnf/tdnf.conf, the repo file in
 *                /etc/yum.repos.d, the key in /etc/pki/rpm-gpg; no tdnf (Debian has none).
 *   "micro"      UBI-9-micro-like (ID=rhel): no shell, no rpm, no dnf. Only rpm-installed files
 *                (installed by the host's rpm with --root): redhat-release, the base libraries
 *                (libc6, libgcc-s1, libc-bin, libbz2-1.0) and libonig5, libjq1, jq, unzip,
 *                nginx-common; the rpmdb at /var/lib/rpm. Its command is `/usr/bin/jq --version`.
 *   "distroless" Azure-Linux-distroless-like: micro's files with azurelinux-release, and no rpmdb:
 *                only /var/lib/rpmmanifest/container-manifest-2 (rpm -qa with Azure Linux's format).
 * Every rpm database here is sqlite: Debian's rpm 4.18 has no ndb backend (real SUSE images use
 * ndb; the readers of it are tested against ../shared/fixtures/rpmdb).
 *
 * Cache: `rpmLabImage-<kind>-<hash16>/` with oci/, info.json (installed packages) and, for the
 * Debian-rooted kinds, dpkg-status (the userland's record the image lacks). The hash covers the
 * repository entry, the lab key and this file's bytes. Builds need root (mmdebstrap, chroot, umoci).
 */
import { chmod, chown, cp, mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cachedEntry, labSha256, memoized } from "./alpine-repo.ts";
import { archiveMirror, archiveProxyEnv } from "./archive-mirror.ts";
import { labCacheDir } from "./cache.ts";
import { buildRpm, signRpms, tool } from "./rpm.ts";
import {
  type BuiltRpmRepo,
  RPM_LAB_DISTRO,
  RPM_LAB_EPOCH,
  RPM_LAB_MINIMAL_SET,
  type RpmLabKind,
  rpmLabRepoFiles,
} from "./rpm-repo.ts";

export {
  RPM_LAB_DISTRO,
  RPM_LAB_KINDS,
  type RpmLabKind,
  type RpmLabPackage,
  type RpmRepoTamper,
  type RpmTestRepo,
  type RpmTestRepoOptions,
  rpmLabKeys,
  rpmLabRepoFiles,
  startRpmTestRepo,
} from "./rpm-repo.ts";

/**
 * Each kind's build version, part of its cache key with the kind's recipe data (distribution,
 * tools, database path, repository entry, key). The key deliberately does not hash this file, so
 * that a change to one kind's build does not rebuild the others (a Debian-rooted image takes
 * minutes): BUMP the kind's number whenever its build below changes.
 */
const IMAGE_BUILDER: Record<RpmLabKind, number> = { dnf: 1, zypper: 2, tdnf: 1, micro: 1, distroless: 1 };
const CREATED = new Date(RPM_LAB_EPOCH * 1000).toISOString().replace(".000Z", "Z");
const IMAGE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BOOKWORM = "deb http://deb.debian.org/debian bookworm main";

/** The app layer's non-root user. */
export const RPM_LAB_USER = { name: "app", uid: 1000, gid: 1000, home: "/home/app" } as const;
export const RPM_LAB_APP_CONF = "/etc/app/app.conf";
/**
 * Config files of lab packages the app layer edits: nginx.conf changes in the fixed nginx-common
 * (an upgrade keeps the edit and writes nginx.conf.rpmnew); sites-available/default does not
 * (kept, no .rpmnew). mime.types changes but is not edited (replaced).
 */
export const RPM_LAB_EDITED_CONFIG = ["/etc/nginx/nginx.conf", "/etc/nginx/sites-available/default"] as const;
export const RPM_LAB_CHANGED_UNEDITED_CONFIG = "/etc/nginx/mime.types";

/** Where each kind keeps its rpm database (undefined: none, the manifest only). */
export const RPM_LAB_DBPATH: Record<RpmLabKind, string | undefined> = {
  dnf: "/var/lib/rpm",
  zypper: "/usr/lib/sysimage/rpm",
  tdnf: "/var/lib/rpm",
  micro: "/var/lib/rpm",
  distroless: undefined,
};

/**
 * What the image's package manager expands `$releasever` to (from its release package's
 * `system-release(releasever)`, zypper's /etc/products.d/baseproduct, tdnf's distroverpkg), and
 * which tool's configuration layout its repository file follows (suture's readRpmRepoConfig).
 */
export const RPM_LAB_REPO_CONFIG: Record<
  RpmLabKind,
  { releasever: string; tool: "dnf" | "zypper" | "tdnf" }
> = {
  dnf: { releasever: "9", tool: "dnf" },
  zypper: { releasever: "15.6", tool: "zypper" },
  tdnf: { releasever: "3.0", tool: "tdnf" },
  micro: { releasever: "9", tool: "dnf" },
  distroless: { releasever: "3.0", tool: "tdnf" },
};

/** The Debian packages mmdebstrap adds to minbase for the Debian-rooted kinds. */
const DEBIAN_TOOLS: Partial<Record<RpmLabKind, string[]>> = {
  dnf: ["dnf", "rpm"],
  zypper: ["zypper", "rpm"],
  tdnf: ["rpm"],
};

/** The base packages a Debian-rooted image's `debian-userland` stands for. */
const USERLAND_STANDS_FOR = ["libc6", "libgcc-s1", "libc-bin", "libbz2-1.0"];

/** The lab packages each kind has installed (old builds). */
function labPackagesOf(kind: RpmLabKind, repo: BuiltRpmRepo): string[] {
  const names = repo.packages.filter((p) => p.role === "lab").map((p) => p.name);
  return kind === "micro" || kind === "distroless"
    ? names.filter((n) => RPM_LAB_MINIMAL_SET.includes(n))
    : names;
}

export interface RpmLabFix {
  name: string;
  arch: string;
  /** `V-R` as installed and as fixed (Trivy's InstalledVersion / FixedVersion). */
  installed: string;
  fixed: string;
  /** CVE ids of the fixed build's Debian changelog entries (may be empty). */
  cves: string[];
}

/** The fixes the repository holds for the `kind` image. */
export async function rpmLabFixes(kind: RpmLabKind): Promise<RpmLabFix[]> {
  const repo = await rpmLabRepoFiles();
  const names = labPackagesOf(kind, repo);
  return repo.packages
    .filter((p) => p.fixed && names.includes(p.name))
    .map((p) => ({
      name: p.name,
      arch: p.arch,
      installed: p.installed.evr,
      fixed: p.fixed!.evr,
      cves: p.fixed!.cves,
    }));
}

export interface RpmLabImage {
  kind: RpmLabKind;
  /** The OCI image layout (read-only: shared by every test process). */
  ociDir: string;
  /** `oci:${ociDir}:latest`. */
  ref: string;
  /** Installed packages (`rpm -qa`): name → `[E:]V-R`, and their arch. */
  installed: Record<string, { evr: string; arch: string }>;
}

const imageMemo = new Map<string, Promise<RpmLabImage>>();

/** The lab image of `kind`, from the cache or built (minutes cold for the Debian-rooted kinds). */
export function rpmLabImage(kind: RpmLabKind): Promise<RpmLabImage> {
  return memoized(imageMemo, `${labCacheDir()}\0${kind}`, () => obtainImage(kind));
}

async function obtainImage(kind: RpmLabKind): Promise<RpmLabImage> {
  const repo = await rpmLabRepoFiles();
  const hash = labSha256(
    JSON.stringify({
      builder: IMAGE_BUILDER[kind],
      kind,
      distro: RPM_LAB_DISTRO[kind],
      tools: DEBIAN_TOOLS[kind] ?? null,
      dbpath: RPM_LAB_DBPATH[kind] ?? null,
      repo: repo.dir,
      key: repo.keys.lab.fingerprint,
    }),
  );
  const entry = join(labCacheDir(), `rpmLabImage-${kind}-${hash.slice(0, 16)}`);
  await cachedEntry(entry, "info.json", (staged) => buildImage(staged, kind, repo));
  const info = JSON.parse(await readFile(join(entry, "info.json"), "utf8")) as Pick<RpmLabImage, "installed">;
  const ociDir = join(entry, "oci");
  return { kind, ociDir, ref: `oci:${ociDir}:latest`, installed: info.installed };
}

async function buildImage(staged: string, kind: RpmLabKind, repo: BuiltRpmRepo): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error(
      `building the rpm lab image ${kind} needs root (mmdebstrap, chroot, umoci); run the tests as root`,
    );
  const work = join(staged, "work");
  const rootfs = join(work, "rootfs");
  const layout = join(staged, "oci");
  const image = `${layout}:latest`;
  await mkdir(work);
  const distro = RPM_LAB_DISTRO[kind];
  const dbpath = RPM_LAB_DBPATH[kind] ?? "/var/lib/rpm";
  const pkgFile = (name: string) => {
    const p = repo.packages.find((q) => q.name === name)!;
    return join(repo.root, "Packages", p.installed.file);
  };
  const toInstall = [distro.release.name, ...labPackagesOf(kind, repo)].map(pkgFile);
  let createdBy: string;
  const tools = DEBIAN_TOOLS[kind];
  if (tools) {
    await tool(
      "mmdebstrap",
      [
        "--mode=root",
        "--variant=minbase",
        `--include=${tools.join(",")}`,
        "--quiet",
        "bookworm",
        rootfs,
        BOOKWORM,
      ],
      { ...archiveProxyEnv(await archiveMirror()), SOURCE_DATE_EPOCH: String(RPM_LAB_EPOCH) },
    );
    if (kind === "zypper") {
      // As on openSUSE: /var/lib/rpm is a link to the database's real place (libzypp prefers an
      // existing /var/lib/rpm, which Debian's rpm package ships empty, over rpm's %_dbpath).
      await rm(join(rootfs, "var/lib/rpm"), { recursive: true, force: true });
      await symlink("../../usr/lib/sysimage/rpm", join(rootfs, "var/lib/rpm"));
    }
    await mkdir(join(rootfs, "etc/rpm"), { recursive: true });
    await writeFile(join(rootfs, "etc/rpm/macros"), `%_dbpath ${dbpath}\n`);
    await mkdir(join(rootfs, dbpath), { recursive: true });
    const status = await readFile(join(rootfs, "var/lib/dpkg/status"), "utf8");
    await writeFile(join(staged, "dpkg-status"), status);
    const userland = await userlandRpm(
      work,
      status,
      await readFile(join(rootfs, "etc/debian_version"), "utf8"),
    );
    await signRpms(repo.keys.lab, [userland]);
    await tool("gpgconf", ["--kill", "all"], { GNUPGHOME: repo.keys.lab.gnupgHome });
    const inRoot = join(rootfs, "tmp/lab-rpms");
    await mkdir(inRoot);
    for (const f of [userland, ...toInstall]) await cp(f, join(inRoot, f.split("/").at(-1)!));
    await cp(repo.keys.lab.publicKeyFile, join(inRoot, "lab.asc"));
    // The image's own rpm (Debian's refuses to install without --force-debian).
    await tool("chroot", [rootfs, "rpm", "--import", "/tmp/lab-rpms/lab.asc"]);
    await tool("sh", ["-c", `chroot "$1" sh -c 'rpm -i --force-debian /tmp/lab-rpms/*.rpm'`, "sh", rootfs]);
    await rm(inRoot, { recursive: true });
    await configureTool(kind, rootfs);
    // One package database in the image: rpm's (see the file comment).
    for (const p of ["var/lib/dpkg", "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf", "var/log"])
      await rm(join(rootfs, p), { recursive: true, force: true });
    await mkdir(join(rootfs, "var/log"));
    await tool("find", [join(rootfs, "dev"), "-xdev", "-mindepth", "1", "-delete"]);
    createdBy = `mmdebstrap --variant=minbase --include=${tools.join(",")} bookworm; rpm -i ${distro.release.name} debian-userland ${labPackagesOf(kind, repo).join(" ")} (suture lab)`;
  } else {
    await mkdir(rootfs);
    await tool("rpm", ["--root", rootfs, "--dbpath", dbpath, "--import", repo.keys.lab.publicKeyFile]);
    const base = repo.packages.filter((p) => p.role === "base").map((p) => pkgFile(p.name));
    await tool("rpm", ["--root", rootfs, "--dbpath", dbpath, "-i", "--force-debian", ...base, ...toInstall]);
    await mkdir(join(rootfs, "tmp"), { mode: 0o1777 });
    await chmod(join(rootfs, "tmp"), 0o1777);
    for (const d of ["dev", "proc", "sys", "root", "run"]) await mkdir(join(rootfs, d), { recursive: true });
    if (kind === "distroless") {
      const manifest = await tool("rpm", [
        "--root",
        rootfs,
        "--dbpath",
        dbpath,
        "-qa",
        "--qf",
        "%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{INSTALLTIME}\\t%{BUILDTIME}\\t%{VENDOR}\\t%{EPOCH}\\t%{SIZE}\\t%{ARCH}\\t%{EPOCHNUM}\\t%{SOURCERPM}\\n",
      ]);
      await mkdir(join(rootfs, "var/lib/rpmmanifest"), { recursive: true });
      await writeFile(join(rootfs, "var/lib/rpmmanifest/container-manifest-2"), manifest);
      await writeFile(
        join(rootfs, "var/lib/rpmmanifest/container-manifest-1"),
        manifest
          .split("\n")
          .filter(Boolean)
          .map((l) => {
            const f = l.split("\t");
            return `${f[0]}-${f[1]}.${f[7]}\n`;
          })
          .join(""),
      );
    }
    createdBy = `rpm --root / --dbpath ${dbpath} -i ${distro.release.name} ${repo.packages
      .filter((p) => p.role === "base")
      .map((p) => p.name)
      .join(" ")} ${labPackagesOf(kind, repo).join(" ")} (suture lab)`;
  }
  const installed = await installedOf(rootfs, dbpath);
  if (kind === "distroless") await rm(join(rootfs, dbpath.slice(1)), { recursive: true, force: true });
  await tool("umoci", ["init", "--layout", layout]);
  await tool("umoci", ["new", "--image", image]);
  const rootfsTar = join(work, "rootfs.tar");
  await tool("tar", ["--sort=name", "--numeric-owner", "--xattrs", "-C", rootfs, "-cf", rootfsTar, "."]);
  const addLayer = (tar: string, history: string) =>
    tool("umoci", [
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
  await appLayer(kind, rootfs, join(work, "app"), appTar);
  await addLayer(
    appTar,
    "/bin/sh -c #(nop) COPY app files; useradd -u 1000 app; edit nginx.conf, sites-available/default",
  );
  const cmd = kind === "micro" || kind === "distroless" ? ["/usr/bin/jq", "--version"] : ["/bin/bash"];
  await tool("umoci", [
    "config",
    "--image",
    image,
    "--created",
    CREATED,
    "--architecture",
    "amd64",
    "--os",
    "linux",
    "--config.env",
    IMAGE_PATH,
    ...cmd.flatMap((c) => ["--config.cmd", c]),
    "--history.created",
    CREATED,
    "--history.created_by",
    `/bin/sh -c #(nop)  CMD ${JSON.stringify(cmd)}`,
  ]);
  await tool("umoci", ["gc", "--layout", layout]);
  await rm(work, { recursive: true, force: true });
  await writeFile(join(staged, "info.json"), JSON.stringify({ kind, installed }, null, 1));
}

/** `rpm -qa` of the root with the host's rpm: name → EVR and arch. */
async function installedOf(rootfs: string, dbpath: string): Promise<RpmLabImage["installed"]> {
  const out = await tool("rpm", [
    "--root",
    rootfs,
    "--dbpath",
    dbpath,
    "-qa",
    "--qf",
    "%{NAME} %{EVR} %{ARCH}\\n",
  ]);
  const installed: RpmLabImage["installed"] = {};
  for (const line of out.split("\n").filter(Boolean).sort()) {
    const [name, evr, arch] = line.split(" ") as [string, string, string];
    installed[name] = { evr, arch };
  }
  return installed;
}

/**
 * `debian-userland`: no files; Provides what the lab's rpms require of the dpkg-installed userland,
 * at the versions its dpkg status records (so `rpm -V`, `dnf check` and dependency solving agree).
 */
async function userlandRpm(work: string, status: string, debianVersion: string): Promise<string> {
  const versions = new Map<string, string>();
  for (const para of status.split("\n\n")) {
    const name = /^Package: (.+)$/m.exec(para)?.[1];
    const version = /^Version: (.+)$/m.exec(para)?.[1];
    if (name && version) versions.set(name, version);
  }
  const provides = ["/bin/sh", "/usr/bin/sh", "/sbin/ldconfig", "/usr/sbin/ldconfig"];
  for (const name of USERLAND_STANDS_FOR) {
    const v = versions.get(name);
    if (!v) continue;
    const dash = v.lastIndexOf("-");
    provides.push(`${name} = ${dash >= 0 ? `${v.slice(0, dash)}-${v.slice(dash + 1)}` : v}`);
  }
  return buildRpm(work, {
    name: "debian-userland",
    version: debianVersion.trim(),
    release: "1",
    files: [],
    provides,
    payload: "w19.zstdio",
  });
}

/** The package tool's own configuration, as the imitated distribution ships it. */
async function configureTool(kind: RpmLabKind, rootfs: string): Promise<void> {
  if (kind === "dnf") {
    await mkdir(join(rootfs, "etc/dnf"), { recursive: true });
    await writeFile(
      join(rootfs, "etc/dnf/dnf.conf"),
      "[main]\ngpgcheck=1\ninstallonly_limit=3\nclean_requirements_on_remove=True\nbest=True\nskip_if_unavailable=False\n",
    );
  } else if (kind === "tdnf") {
    await mkdir(join(rootfs, "etc/tdnf"), { recursive: true });
    await writeFile(
      join(rootfs, "etc/tdnf/tdnf.conf"),
      "[main]\ngpgcheck=1\ninstallonly_limit=3\nclean_requirements_on_remove=true\nrepodir=/etc/yum.repos.d\ncachedir=/var/cache/tdnf\ndistroverpkg=azurelinux-release\n",
    );
  }
}

/** The app layer's tree at `dir`, archived by GNU tar into `tarPath` (owners and modes as set). */
async function appLayer(kind: RpmLabKind, rootfs: string, dir: string, tarPath: string): Promise<void> {
  const u = RPM_LAB_USER;
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
  const base = async (p: string) => readFile(join(rootfs, p)).catch(() => Buffer.alloc(0));
  const append = async (p: string, text: string) => Buffer.concat([await base(p), Buffer.from(text)]);
  const shellless = kind === "micro" || kind === "distroless";
  await dirAt("etc");
  await dirAt("etc/app");
  await fileAt(
    "etc/app/app.conf",
    "# suture lab app: must survive patching byte for byte\nlisten = 0.0.0.0:8080\nuser = app\n",
  );
  await dirAt("etc/nginx");
  await fileAt(
    "etc/nginx/nginx.conf",
    await append("etc/nginx/nginx.conf", "# suture lab app: worker tuning\n"),
  );
  await dirAt("etc/nginx/sites-available");
  await fileAt(
    "etc/nginx/sites-available/default",
    await append("etc/nginx/sites-available/default", "# suture lab app: proxied to :8080\n"),
  );
  const passwd = shellless ? Buffer.from("root:x:0:0:root:/root:/sbin/nologin\n") : await base("etc/passwd");
  const group = shellless ? Buffer.from("root:x:0:\n") : await base("etc/group");
  const shadow = shellless ? Buffer.from("root:!locked::0:99999:7:::\n") : await base("etc/shadow");
  await fileAt(
    "etc/passwd",
    Buffer.concat([passwd, Buffer.from(`app:x:${u.uid}:${u.gid}:app:${u.home}:/sbin/nologin\n`)]),
  );
  await fileAt("etc/group", Buffer.concat([group, Buffer.from(`app:x:${u.gid}:\n`)]));
  await fileAt("etc/shadow", Buffer.concat([shadow, Buffer.from("app:!!:20454::::::\n")]), 0o640);
  await dirAt("home");
  await dirAt("home/app", 0o700, u.uid, u.gid);
  await fileAt("home/app/notes.txt", "owned by the app user\n", 0o600, u.uid, u.gid);
  await dirAt("opt");
  await dirAt("opt/app");
  await dirAt("opt/app/bin");
  if (shellless) {
    await symlink("/usr/bin/jq", join(dir, "opt/app/bin/app"));
    entries.push("opt/app/bin/app");
  } else {
    await fileAt("opt/app/bin/app", "#!/bin/sh\nexec jq -n '\"suture lab app\"'\n", 0o755);
  }
  await dirAt("usr");
  await dirAt("usr/local");
  await dirAt("usr/local/bin");
  await symlink("/opt/app/bin/app", join(dir, "usr/local/bin/app"));
  entries.push("usr/local/bin/app");
  await tool("tar", [
    "--numeric-owner",
    `--mtime=@${RPM_LAB_EPOCH}`,
    "--no-recursion",
    "-C",
    dir,
    "-cf",
    tarPath,
    ...entries,
  ]);
}

// ---------------------------------------------------------------------------------------------
// Reports

export interface RpmLabTrivyOptions {
  /** Package names to report (default: every pending fix of the image). */
  only?: readonly string[];
  /** ArtifactName (default `suture-lab/rpm-<kind>:latest`). */
  artifactName?: string;
}

/**
 * A Trivy JSON report (SchemaVersion 2) of the lab image's pending fixes, shaped like Trivy's own
 * rpm reports (../shared/fixtures/trivy-golden/rockylinux-8.json): family rocky / opensuse-leap /
 * azurelinux / redhat, `[E:]V-R` versions (lib32z1 has epoch 1; the distroless report's
 * InstalledVersion lacks it, as Trivy reads no epoch from Azure Linux's manifest), PURLs with arch,
 * distro and `epoch=`. Honesty note: no scanner made it;
 * the name/installed/fixed triples are the lab's real ones, the ids the CVEs of the fixed deb's
 * changelog (a package whose changelog names none gets `SUTURE-LAB-<name>-<fixed>`).
 */
export async function rpmLabReport(kind: RpmLabKind, options: RpmLabTrivyOptions = {}): Promise<object> {
  const distro = RPM_LAB_DISTRO[kind];
  const { family, name: osName } = distro.trivy;
  const purlNamespace = family === "opensuse-leap" ? "opensuse" : family;
  const artifact = options.artifactName ?? `suture-lab/rpm-${kind}:latest`;
  const fixes = (await rpmLabFixes(kind)).filter((f) => !options.only || options.only.includes(f.name));
  return {
    SchemaVersion: 2,
    CreatedAt: new Date(RPM_LAB_EPOCH * 1000).toISOString(),
    ArtifactName: artifact,
    ArtifactType: "container_image",
    Metadata: {
      OS: { Family: family, Name: osName },
      RepoTags: [],
      RepoDigests: [],
      ImageConfig: { architecture: "amd64", os: "linux" },
    },
    Results: [
      {
        Target: `${artifact} (${family} ${osName})`,
        Class: "os-pkgs",
        Type: family,
        Vulnerabilities: fixes.flatMap((f) => {
          // Trivy's PURL carries the epoch as a qualifier, its version without it. From Azure
          // Linux's manifest (distroless) Trivy reads no epoch at all, so there InstalledVersion
          // lacks it too, while FixedVersion (from the advisory) keeps it.
          const epoch = /^(\d+):/.exec(f.installed)?.[1];
          const bare = f.installed.replace(/^\d+:/, "");
          const installed = kind === "distroless" ? bare : f.installed;
          const purl = `pkg:rpm/${purlNamespace}/${f.name}@${bare}?arch=${f.arch}&distro=${family}-${osName}${epoch && kind !== "distroless" ? `&epoch=${epoch}` : ""}`;
          return (f.cves.length ? f.cves : [`SUTURE-LAB-${f.name}-${f.fixed}`]).map((id) => ({
            VulnerabilityID: id,
            PkgID: `${f.name}@${bare}.${f.arch}`,
            PkgName: f.name,
            PkgIdentifier: { PURL: purl },
            InstalledVersion: installed,
            FixedVersion: f.fixed,
            Status: "fixed",
            SeveritySource: family,
            PrimaryURL: id.startsWith("CVE-") ? `https://avd.aquasec.com/nvd/${id.toLowerCase()}` : undefined,
            Title: `${f.name}: fixed in ${f.fixed} (suture lab, from Debian bookworm-security)`,
            Severity: "UNKNOWN",
          }));
        }),
      },
    ],
  };
}

/** Every lab artefact, built or loaded (for warming the cache). */
export async function buildRpmLab(): Promise<void> {
  await rpmLabRepoFiles();
  for (const kind of ["dnf", "micro", "distroless", "tdnf", "zypper"] as const) await rpmLabImage(kind);
}
