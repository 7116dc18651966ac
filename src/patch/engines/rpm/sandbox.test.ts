import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, test } from "node:test";
import { gzipSync } from "node:zlib";
import type { DistroInfo } from "../../../distro/detect.ts";
import { readRpmRepoConfig, refuseUncheckedRepos } from "../../../distro/rpm/repo-config.ts";
import { isSutureError } from "../../../errors/errors.ts";
import {
  IN_CONTAINER,
  rpmRepoFiles,
  rpmSandboxUnavailable,
  rpmToolEnv,
  rpmToolFailure,
  rpmUpgradeCommands,
  tdnfConf,
  zyppConf,
} from "./sandbox.ts";
import {
  copyVerifiedRepodata,
  rpmMetadataCache,
  saveRepodata,
  sharesMetadataCache,
  verifiedRepodata,
} from "./sandbox-cache.ts";

const scratch = await mkdtemp(join(tmpdir(), "suture-rpm-sandbox-"));
after(() => rm(scratch, { recursive: true, force: true }));

async function put(root: string, path: string, text: string | Buffer): Promise<void> {
  await mkdir(dirname(join(root, path)), { recursive: true });
  await writeFile(join(root, path), text);
}

const NEVER = ["--nogpgcheck", "--no-gpg-checks", "--gpg-auto-import-keys", "--setopt=gpgcheck=0"];

test("copa's commands for each tool, with gpgcheck forced on and suture's repository and cache dirs", () => {
  const dnf = rpmUpgradeCommands("dnf", ["openssl-libs", "curl"]);
  assert.deepEqual(dnf, [
    {
      what: "dnf upgrade",
      args: [
        "dnf",
        "-y",
        "--setopt=install_weak_deps=False",
        `--setopt=reposdir=${IN_CONTAINER.repos}`,
        `--setopt=cachedir=${IN_CONTAINER.cache}`,
        "--setopt=keepcache=False",
        `--setopt=system_cachedir=${IN_CONTAINER.cache}`,
        `--setopt=logdir=${IN_CONTAINER.log}`,
        "--setopt=gpgcheck=True",
        "--refresh",
        "upgrade",
        "--",
        "openssl-libs",
        "curl",
      ],
    },
  ]);
  // update-all: no names, and no `--` either.
  assert.deepEqual(rpmUpgradeCommands("dnf", "all")[0]!.args.slice(-2), ["--refresh", "upgrade"]);
  assert.deepEqual(rpmUpgradeCommands("microdnf", ["zlib"])[0]!.args, [
    "microdnf",
    "-y",
    "--setopt=install_weak_deps=0",
    `--setopt=reposdir=${IN_CONTAINER.repos}`,
    `--setopt=cachedir=${IN_CONTAINER.cache}`,
    `--setopt=system_cachedir=${IN_CONTAINER.cache}`,
    "--setopt=gpgcheck=1",
    "--refresh",
    "update",
    "--",
    "zlib",
  ]);
  assert.deepEqual(rpmUpgradeCommands("tdnf", "all")[0]!.args, [
    "tdnf",
    "-y",
    "-c",
    `${IN_CONTAINER.etc}/tdnf.conf`,
    "--refresh",
    "update",
  ]);
  const yum = rpmUpgradeCommands("yum", ["bash"], { ignoreErrors: true })[0]!.args;
  assert.ok(yum.includes("--setopt=metadata_expire=0") && yum.includes("--skip-broken"), yum.join(" "));
  assert.ok(!yum.includes("--refresh"), "yum 3 has no --refresh");
  const dnf5 = rpmUpgradeCommands("dnf5", ["bash"])[0]!.args;
  assert.ok(dnf5.includes(`--setopt=system_cachedir=${IN_CONTAINER.cache}`), dnf5.join(" "));
  assert.deepEqual(rpmUpgradeCommands("zypper", ["libopenssl3"]), [
    {
      what: "zypper refresh",
      args: [
        "zypper",
        "--non-interactive",
        "--reposd-dir",
        IN_CONTAINER.repos,
        "--cache-dir",
        IN_CONTAINER.cache,
        "refresh",
      ],
    },
    {
      what: "zypper update",
      args: [
        "zypper",
        "--non-interactive",
        "--reposd-dir",
        IN_CONTAINER.repos,
        "--cache-dir",
        IN_CONTAINER.cache,
        "update",
        "--no-recommends",
        "--",
        "libopenssl3",
      ],
    },
  ]);
  for (const tool of ["dnf", "dnf5", "yum", "microdnf", "tdnf", "zypper"] as const) {
    for (const options of [{}, { allowInsecure: true }, { ignoreErrors: true }]) {
      for (const c of rpmUpgradeCommands(tool, ["a"], options))
        for (const flag of NEVER) assert.ok(!c.args.includes(flag), `${tool} ${c.args.join(" ")}`);
    }
  }
  // The user's --allow-insecure-repositories leaves gpgcheck as the image sets it.
  assert.ok(
    !rpmUpgradeCommands("dnf", "all", { allowInsecure: true })[0]!.args.includes("--setopt=gpgcheck=True"),
  );
  assert.ok(rpmToolEnv("zypper").includes(`ZYPP_CONF=${IN_CONTAINER.etc}/zypp.conf`));
  assert.ok(rpmToolEnv("dnf").includes("LC_ALL=C"));
});

test("repository files handed to the tool: the image's keys kept, baseurl mirrored, gpgcheck forced, --keyring keys added", async () => {
  const root = join(scratch, "dnf-root");
  await put(root, "/etc/dnf/dnf.conf", "[main]\ngpgcheck=1\ninstall_weak_deps=False\n");
  await put(
    root,
    "/etc/yum.repos.d/lab.repo",
    `[lab-baseos]
name=Lab BaseOS $releasever
baseurl=http://repo.example.com/lab/$releasever/BaseOS/$basearch/os/
metalink=https://mirrors.example.com/metalink?repo=baseos
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-lab
priority=10
exclude=kernel*

[lab-extras]
baseurl=http://other.example.org/extras/
  http://other2.example.org/extras/
enabled=0
gpgcheck=0
`,
  );
  const config = await readRpmRepoConfig(root, "dnf", {
    arch: "x86_64",
    mirrors: { "http://repo.example.com/lab": "http://127.0.0.1:8080/mirror" },
  });
  // The disabled gpgcheck=0 repository is no reason to refuse.
  refuseUncheckedRepos(config, { extraKeys: false, allowInsecure: false });
  const files = await rpmRepoFiles(root, config, {
    tool: "dnf",
    extraKeyUrls: [`file://${IN_CONTAINER.keys}/keyring-1.asc`],
  });
  assert.deepEqual([...files.keys()], ["1-lab.repo"]);
  const text = files.get("1-lab.repo")!;
  assert.match(text, /^\[lab-baseos\]$/m);
  // $releasever is the image's tool's to expand; $basearch was known.
  assert.match(text, /^baseurl=http:\/\/127\.0\.0\.1:8080\/mirror\/\$releasever\/BaseOS\/x86_64\/os$/m);
  assert.doesNotMatch(text, /metalink/, "the tools prefer a metalink over the mirrored baseurl");
  assert.match(text, /^priority=10$/m);
  assert.match(text, /^exclude=kernel\*$/m);
  assert.match(
    text,
    /^gpgkey=file:\/\/\/etc\/pki\/rpm-gpg\/RPM-GPG-KEY-lab\n {2}file:\/\/\/run\/suture-rpm\/keys\/keyring-1\.asc$/m,
  );
  // The disabled repository stays disabled; its checks are forced on all the same.
  const extras = text.slice(text.indexOf("[lab-extras]"));
  assert.match(extras, /^enabled=0$/m);
  assert.match(extras, /^gpgcheck=1$/m);
  assert.match(
    extras,
    /^baseurl=http:\/\/other\.example\.org\/extras\/\n {2}http:\/\/other2\.example\.org\/extras\/$/m,
  );
  // What the tool reads back is what suture meant: parse our file as the image's.
  const again = join(scratch, "dnf-again");
  await put(again, "/etc/yum.repos.d/1-lab.repo", text);
  const reread = await readRpmRepoConfig(again, "dnf", { arch: "x86_64" });
  assert.deepEqual(
    reread.repos.map((r) => [r.id, r.enabled, r.gpgcheck, r.gpgkeys.length]),
    [
      ["lab-baseos", true, true, 2],
      ["lab-extras", false, true, 1],
    ],
  );
  // Without a mirror that applies, the image's baseurl (and its metalink) are kept as written.
  const plain = await rpmRepoFiles(root, await readRpmRepoConfig(root, "dnf", { arch: "x86_64" }), {
    tool: "dnf",
  });
  assert.match(
    plain.get("1-lab.repo")!,
    /^baseurl=http:\/\/repo\.example\.com\/lab\/\$releasever\/BaseOS\/\$basearch\/os\/$/m,
  );
  assert.match(plain.get("1-lab.repo")!, /^metalink=/m);
});

test("a repository that turns signature checks off is refused in one line, unless --keyring or --allow-insecure-repositories", async () => {
  const root = join(scratch, "insecure-root");
  await put(root, "/etc/dnf/dnf.conf", "[main]\ngpgcheck=1\n");
  await put(root, "/etc/yum.repos.d/local.repo", "[local]\nbaseurl=http://127.0.0.1:1/repo\ngpgcheck=0\n");
  const config = await readRpmRepoConfig(root, "dnf", { arch: "x86_64" });
  assert.throws(
    () => refuseUncheckedRepos(config, { extraKeys: false, allowInsecure: false }),
    (e: unknown) =>
      isSutureError(e) &&
      e.code === "UNTRUSTED" &&
      !e.message.includes("\n") &&
      e.message.includes("local") &&
      e.message.includes("/etc/yum.repos.d/local.repo:1") &&
      e.message.includes("--allow-insecure-repositories"),
  );
  refuseUncheckedRepos(config, { extraKeys: true, allowInsecure: false });
  refuseUncheckedRepos(config, { extraKeys: false, allowInsecure: true });
  // With the user's consent the image's own setting is what the tool gets.
  const files = await rpmRepoFiles(root, config, { tool: "dnf", allowInsecure: true });
  assert.match(files.get("1-local.repo")!, /^gpgcheck=0$/m);
  // No gpgcheck anywhere: dnf's own default is off, so this is refused too.
  const bare = join(scratch, "bare-root");
  await put(bare, "/etc/yum.repos.d/x.repo", "[x]\nbaseurl=http://127.0.0.1:1/x\n");
  const bareConfig = await readRpmRepoConfig(bare, "dnf", { arch: "x86_64" });
  assert.throws(
    () => refuseUncheckedRepos(bareConfig, { extraKeys: false, allowInsecure: false }),
    (e: unknown) => isSutureError(e) && e.code === "UNTRUSTED",
  );
});

test("dnf5's pkg_gpgcheck=0 after gpgcheck=1 is refused, and the staged files end every section with both checks on", async () => {
  // The security review's reproduction: gpgcheck=1 then pkg_gpgcheck=0 (one setting in dnf5).
  const root = join(scratch, "pkg-gpgcheck-root");
  await put(root, "/etc/dnf/dnf.conf", "[main]\ngpgcheck=1\n");
  await put(
    root,
    "/etc/yum.repos.d/f.repo",
    "[fedora]\nname=Fedora\nbaseurl=http://mirror.example/fedora/\ngpgcheck=1\npkg_gpgcheck=0\n",
  );
  const config = await readRpmRepoConfig(root, "dnf", { arch: "x86_64" });
  assert.throws(
    () => refuseUncheckedRepos(config, { extraKeys: false, allowInsecure: false }),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /fedora/.test((e as Error).message),
  );
  // With --keyring keys it is checked against them: the staged file turns both keys on, last.
  for (const tool of ["dnf5", "dnf", "yum", "microdnf", "tdnf"] as const) {
    const [text] = [
      ...(await rpmRepoFiles(root, config, { tool, extraKeyUrls: ["file:///run/k.asc"] })).values(),
    ];
    assert.match(text!, /\ngpgcheck=1\npkg_gpgcheck=1\n$/, `${tool}: ${text}`);
    assert.doesNotMatch(text!, /gpgcheck=0/, tool);
  }
});

test("remote gpgkey URLs are left out of the staged files with a warning naming the repository; file:// and --keyring keys stay", async () => {
  const root = join(scratch, "remote-key-root");
  await put(root, "/etc/dnf/dnf.conf", "[main]\ngpgcheck=1\n");
  await put(
    root,
    "/etc/yum.repos.d/k.repo",
    `[vendor]
baseurl=http://vendor.example/repo/
gpgkey=https://vendor.example/RPM-GPG-KEY
  file:///etc/pki/rpm-gpg/RPM-GPG-KEY-vendor,http://vendor.example/old.key

[remote-only]
baseurl=http://other.example/repo/
gpgkey=https://other.example/key.asc
`,
  );
  const config = await readRpmRepoConfig(root, "dnf", { arch: "x86_64" });
  const warnings: string[] = [];
  const files = await rpmRepoFiles(root, config, {
    tool: "dnf",
    extraKeyUrls: [`file://${IN_CONTAINER.keys}/keyring-1.asc`],
    warn: (m) => warnings.push(m),
  });
  const [text] = [...files.values()];
  assert.doesNotMatch(text!, /https?:\/\/[^\n]*\.(?:key|asc)|RPM-GPG-KEY\n/);
  assert.match(
    text!,
    /\[vendor\]\nbaseurl=http:\/\/vendor\.example\/repo\/\ngpgkey=file:\/\/\/etc\/pki\/rpm-gpg\/RPM-GPG-KEY-vendor\n {2}file:\/\/\/run\/suture-rpm\/keys\/keyring-1\.asc\n/,
  );
  assert.match(
    text!,
    /\[remote-only\]\nbaseurl=http:\/\/other\.example\/repo\/\ngpgkey=file:\/\/\/run\/suture-rpm\/keys\/keyring-1\.asc\n/,
  );
  assert.equal(warnings.length, 2);
  assert.match(
    warnings[0]!,
    /repository vendor .*https:\/\/vendor\.example\/RPM-GPG-KEY.*http:\/\/vendor\.example\/old\.key.*--keyring/,
  );
  assert.match(warnings[1]!, /repository remote-only /);
  // Without --keyring, a repository with only a remote key is staged with no gpgkey at all.
  const bare = [...(await rpmRepoFiles(root, config, { tool: "dnf" })).values()][0]!;
  assert.match(
    bare,
    /\[remote-only\]\nbaseurl=http:\/\/other\.example\/repo\/\ngpgcheck=1\npkg_gpgcheck=1\n$/,
  );
});

test("zypper's files: pkg_gpgcheck forced, no gpgkey added (keys reach zypper through rpm's keyring); zypp.conf keeps the image's settings", async () => {
  const root = join(scratch, "zypper-root");
  await put(root, "/etc/zypp/zypp.conf", "[main]\nsolver.onlyRequires = true");
  await put(
    root,
    "/etc/zypp/repos.d/repo-oss.repo",
    "[repo-oss]\nname=Main\nenabled=1\nautorefresh=1\nbaseurl=http://download.example.org/distribution/leap/$releasever/repo/oss/\ntype=rpm-md\ngpgcheck=1\n",
  );
  const config = await readRpmRepoConfig(root, "zypper", { arch: "x86_64" });
  const text = (await rpmRepoFiles(root, config, { tool: "zypper", extraKeyUrls: ["file:///x.asc"] })).get(
    "1-repo-oss.repo",
  )!;
  assert.match(text, /^pkg_gpgcheck=1$/m);
  assert.match(text, /^type=rpm-md$/m);
  assert.match(text, /^autorefresh=1$/m);
  assert.doesNotMatch(text, /gpgkey/);
  const conf = await zyppConf(root);
  assert.match(
    conf,
    /^solver\.onlyRequires = true\n\n\[main\]\nhistory\.logfile = \/run\/suture-rpm\/log\/zypp-history\n$/m,
  );
});

test("tdnf.conf of the run: the image's [main] with suture's repodir, cachedir and gpgcheck", async () => {
  const root = join(scratch, "tdnf-root");
  await put(
    root,
    "/etc/tdnf/tdnf.conf",
    "[main]\ngpgcheck=0\ninstallonly_limit=3\nclean_requirements_on_remove=true\nrepodir=/etc/yum.repos.d\n",
  );
  const conf = await tdnfConf(root, false);
  assert.equal(
    conf,
    `[main]\ngpgcheck=1\ninstallonly_limit=3\nclean_requirements_on_remove=true\nrepodir=${IN_CONTAINER.repos}\ncachedir=${IN_CONTAINER.cache}\nkeepcache=0\n`,
  );
  assert.match(await tdnfConf(root, true), /^gpgcheck=0$/m);
});

test("a tool's failure is one line: refused signatures and checksums are UNTRUSTED, the rest PATCH_FAILED", () => {
  // dnf 4.14's words for a package signed by a key the image does not trust.
  const untrusted = rpmToolFailure(
    "dnf",
    "dnf upgrade",
    1,
    `Downloading Packages:
demo-1.1-1.x86_64.rpm                                  2.1 MB/s |  6.4 kB     00:00
warning: /run/suture-rpm/cache/lab-3f1c/packages/demo-1.1-1.x86_64.rpm: Header V4 RSA/SHA256 Signature, key ID 1a2b3c4d: NOKEY
Public key for demo-1.1-1.x86_64.rpm is not installed. Failing package is: demo-1.1-1.x86_64
 GPG Keys are configured as: file:///etc/pki/rpm-gpg/RPM-GPG-KEY-lab
The downloaded packages were saved in cache until the next successful transaction.
You can remove cached packages by executing 'dnf clean packages'.
Error: GPG check FAILED
`,
  );
  assert.equal(untrusted.code, "UNTRUSTED");
  assert.ok(!untrusted.message.includes("\n"));
  assert.match(
    untrusted.message,
    /^dnf upgrade: dnf refused what the repository served .*: Public key for demo-1\.1-1\.x86_64\.rpm is not installed/,
  );
  assert.match(untrusted.message, /--keyring KEYFILE/);
  const checksum = rpmToolFailure(
    "dnf",
    "dnf upgrade",
    1,
    "Errors during downloading metadata for repository 'lab':\n  - Downloading successful, but checksum doesn't match. Calculated: 1 Expected: 2\nError: Failed to download metadata for repo 'lab'\n",
  );
  assert.equal(checksum.code, "UNTRUSTED");
  const zypper = rpmToolFailure(
    "zypper",
    "zypper refresh",
    4,
    "Signature verification failed for file 'repomd.xml' from repository 'lab'.\n",
  );
  assert.equal(zypper.code, "UNTRUSTED");
  const missing = rpmToolFailure(
    "dnf",
    "dnf upgrade",
    1,
    "Last metadata expiration check: 0:00:01 ago.\nPackage nosuch available, but not installed.\nError: No packages marked for upgrade.\n\u001b[0m",
  );
  assert.equal(missing.code, "PATCH_FAILED");
  assert.equal(
    missing.message,
    "dnf upgrade failed in the image (exit 1): Error: No packages marked for upgrade.; check the image's repositories (or their --mirror)",
  );
  const tdnf = rpmToolFailure("tdnf", "tdnf update", 1, "Error(1011) : No matching packages\n");
  assert.match(tdnf.message, /Error\(1011\) : No matching packages/);
});

test("the sandbox engine says why it cannot run: distroless manifest, or no package manager", () => {
  const distro = (packageManager: DistroInfo["packageManager"], backend: "sqlite" | "manifest") =>
    ({
      packageDb: "rpm",
      packageManager,
      files: new Map(),
      rpm: {
        database: {
          backend,
          path:
            backend === "manifest"
              ? "/var/lib/rpmmanifest/container-manifest-2"
              : "/var/lib/rpm/rpmdb.sqlite",
        },
        packages: [],
      },
    }) as DistroInfo;
  assert.equal(rpmSandboxUnavailable(distro("dnf", "sqlite"), "Lab 9"), undefined);
  assert.equal(rpmSandboxUnavailable(distro("zypper", "sqlite"), "Lab 9"), undefined);
  assert.match(
    rpmSandboxUnavailable(distro("none", "manifest"), "Azure Linux 3.0")!,
    /container-manifest-2 \(a distroless image\)/,
  );
  assert.equal(
    rpmSandboxUnavailable(distro("rpm", "sqlite"), "UBI 9 Micro"),
    "needs dnf, yum, microdnf, tdnf or zypper in the image, and UBI 9 Micro has only rpm",
  );
});

/** A repository's metadata as a tool caches it: repomd.xml and a primary it lists. */
async function cachedRepo(dir: string, primaryXml: string): Promise<{ primaryPath: string }> {
  const primary = gzipSync(Buffer.from(primaryXml));
  const sum = createHash("sha256").update(primary).digest("hex");
  const open = createHash("sha256").update(primaryXml).digest("hex");
  const href = `repodata/${sum}-primary.xml.gz`;
  await put(dir, href, primary);
  await put(
    dir,
    "repodata/repomd.xml",
    `<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1700000000</revision>
  <data type="primary">
    <checksum type="sha256">${sum}</checksum>
    <open-checksum type="sha256">${open}</open-checksum>
    <location href="${href}"/>
    <timestamp>1700000000</timestamp>
    <size>${primary.length}</size>
    <open-size>${primaryXml.length}</open-size>
  </data>
  <data type="filelists">
    <checksum type="sha256">${"ab".repeat(32)}</checksum>
    <location href="repodata/${"ab".repeat(32)}-filelists.xml.gz"/>
  </data>
</repomd>
`,
  );
  return { primaryPath: join(dir, href) };
}

test("the metadata cache keeps only repositories whose files match their repomd.xml, and never the tools' own caches", async () => {
  const tool = join(scratch, "tool-cache");
  await cachedRepo(join(tool, "lab-baseos-0123456789abcdef"), '<metadata packages="0"/>');
  const { primaryPath } = await cachedRepo(
    join(tool, "lab-appstream-fedcba9876543210"),
    '<metadata packages="1"/>',
  );
  await cachedRepo(join(tool, "raw", "repo-oss"), '<metadata packages="2"/>');
  // What else the tools keep there: solv caches, packages, a repository whose repomd.xml is a symlink.
  await put(tool, "lab-baseos.solv", "solv");
  await put(tool, "lab-baseos-0123456789abcdef/packages/demo-1.1-1.x86_64.rpm", "rpm");
  await mkdir(join(tool, "planted", "repodata"), { recursive: true });
  await symlink("/etc/passwd", join(tool, "planted", "repodata", "repomd.xml"));
  // One repository's primary altered after it was fetched.
  await writeFile(primaryPath, gzipSync(Buffer.from('<metadata packages="999"/>')));

  const verified = await verifiedRepodata(tool);
  assert.deepEqual(
    verified.map((v) => [v.dir, v.files.length]),
    [
      ["lab-baseos-0123456789abcdef", 2],
      ["raw/repo-oss", 2],
    ],
  );
  const shared = join(scratch, "shared", "metadata");
  assert.equal(await saveRepodata(tool, shared), 2);
  assert.deepEqual((await readdir(shared)).sort(), ["lab-baseos-0123456789abcdef", "raw"]);
  assert.deepEqual(await readdir(join(shared, "lab-baseos-0123456789abcdef")), ["repodata"]);
  // The next run's private copy holds the same verified files.
  const next = join(scratch, "next-run");
  const seeded = await copyVerifiedRepodata(shared, next);
  assert.equal(seeded.length, 2);
  assert.equal(
    await readFile(join(next, "raw/repo-oss/repodata/repomd.xml"), "utf8"),
    await readFile(join(tool, "raw/repo-oss/repodata/repomd.xml"), "utf8"),
  );
  // Nothing verified: the shared cache is left as it was.
  assert.equal(await saveRepodata(join(scratch, "empty"), shared), 0);
  assert.equal((await verifiedRepodata(shared)).length, 2);
});

/** A repomd.xml listing one file at `href` with the checksum and size of `body`. */
function repomdListing(href: string, body: Buffer, size = body.length): string {
  const sum = createHash("sha256").update(body).digest("hex");
  return `<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo">
  <data type="primary"><checksum type="sha256">${sum}</checksum><location href="${href}"/><size>${size}</size></data>
</repomd>
`;
}

test("the image's tool cannot make the cache copy a host file, read a FIFO or an endless file, or pass a symlinked dir", async () => {
  // The security review's reproduction: the tool (image code, cache mounted writable) plants
  // `escape -> <host dir>` and a repomd.xml whose location goes through it.
  const host = join(scratch, "host-secret");
  const secret = Buffer.from("host secret value\n");
  await put(host, "known.txt", secret);
  const tool = join(scratch, "hostile-tool-cache");
  await mkdir(join(tool, "baseos-1"), { recursive: true });
  await symlink(host, join(tool, "baseos-1", "escape"));
  await put(tool, "baseos-1/repodata/repomd.xml", repomdListing("escape/known.txt", secret));
  // A repodata dir that is a symlink to the host dir, its repomd.xml listing the secret under it.
  await mkdir(join(tool, "linked"), { recursive: true });
  await put(host, "repodata/repomd.xml", repomdListing("repodata/known.txt", secret));
  await put(host, "repodata/known.txt", secret);
  await symlink(join(host, "repodata"), join(tool, "linked", "repodata"));
  // A listed file that is a symlink to the host file, and one that is a FIFO (would block a read).
  await put(tool, "filelink/repodata/repomd.xml", repomdListing("repodata/known.txt", secret));
  await symlink(join(host, "known.txt"), join(tool, "filelink", "repodata", "known.txt"));
  await put(tool, "fifo/repodata/repomd.xml", repomdListing("repodata/p.xml", secret));
  const { execFileSync } = await import("node:child_process");
  execFileSync("mkfifo", [join(tool, "fifo", "repodata", "p.xml")]);
  // A file longer than repomd.xml declares is not read past its declared size.
  await put(tool, "long/repodata/repomd.xml", repomdListing("repodata/p.xml", secret));
  await put(tool, "long/repodata/p.xml", Buffer.concat([secret, Buffer.alloc(4096)]));

  const shared = join(scratch, "hostile-shared", "metadata");
  const kept = await saveRepodata(tool, shared);
  // baseos-1's only listed file is no plain repodata/ name: its repomd.xml alone may stay, the
  // host file never does; every other planted repository is left out whole.
  assert.ok(kept <= 1, `kept ${kept}`);
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const path = join(dir, e.name);
      if (e.isDirectory()) await walk(path);
      else found.push(path.slice(shared.length + 1));
    }
  };
  await walk(shared);
  for (const file of found)
    assert.notEqual(
      await readFile(join(shared, file), "utf8"),
      secret.toString(),
      `${file} is the host's file`,
    );
  assert.deepEqual(
    found.filter((f) => !f.endsWith("repodata/repomd.xml")),
    [],
    "no listed file was copied",
  );
  assert.ok(!found.some((f) => /^(linked|filelink|fifo|long)\//.test(f)), found.join(", "));
});

test("yum 3 shares no metadata cache (it prefers a cached repomd.xml dated later); the other tools do", () => {
  assert.equal(sharesMetadataCache("yum"), false);
  for (const tool of ["dnf", "dnf5", "microdnf", "tdnf", "zypper"])
    assert.equal(sharesMetadataCache(tool), true);
});

test("the cache is keyed by tool, architecture, repository files and extra keys", () => {
  const files = new Map([["1-lab.repo", "[lab]\nbaseurl=http://x/\n"]]);
  const a = rpmMetadataCache("/c", "dnf", "x86_64", files, []);
  assert.match(a.dir, /^\/c\/rpm-sandbox\/dnf\/[0-9a-f]{16}\/metadata$/);
  assert.equal(a.dir, rpmMetadataCache("/c", "dnf", "x86_64", new Map(files), []).dir);
  for (const other of [
    rpmMetadataCache("/c", "tdnf", "x86_64", files, []),
    rpmMetadataCache("/c", "dnf", "aarch64", files, []),
    rpmMetadataCache("/c", "dnf", "x86_64", new Map([["1-lab.repo", "[lab]\nbaseurl=http://y/\n"]]), []),
    rpmMetadataCache("/c", "dnf", "x86_64", files, ["ABCD"]),
  ])
    assert.notEqual(other.dir, a.dir);
});
