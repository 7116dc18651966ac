import assert from "node:assert/strict";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { requiring } from "../../../test/lab/requirements.ts";
import { type RpmTestKey, rpmScratch, rpmTestKey } from "../../../test/lab/rpm.ts";
import { isSutureError } from "../../errors/errors.ts";
import { expandRepoVars, parseIni, readRpmRepoConfig, repoKeyring, rpmBaseArch } from "./repo-config.ts";

// Real packages and repositories come from the host's rpm tools (scripts/install-system-deps.sh).
const { after, before, test } = await requiring("tool:gpg");

let scratch: Awaited<ReturnType<typeof rpmScratch>>;
let key: RpmTestKey;

before(async () => {
  scratch = await rpmScratch();
  key = await rpmTestKey(scratch.dir, "ed25519");
});
after(() => scratch?.remove());

let roots = 0;
async function imageRoot(files: Record<string, string>): Promise<string> {
  const root = join(scratch.dir, `root${roots++}`);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
  return root;
}

test("INI as dnf and zypp read it: continuation lines, comments, later keys win; junk is one clear line", () => {
  const sections = parseIni(
    "# comment\n[main]\ngpgcheck=1\n\n[baseos]\nname = BaseOS\nbaseurl=https://a/\n  https://b/\n; note\ngpgkey=file:///k1,file:///k2\nGPGCheck=0\ngpgcheck=1\n",
    "/etc/yum.repos.d/x.repo",
  );
  assert.deepEqual(
    sections.map((s) => [s.name, s.origin, Object.fromEntries(s.values)]),
    [
      ["main", "/etc/yum.repos.d/x.repo:2", { gpgcheck: "1" }],
      [
        "baseos",
        "/etc/yum.repos.d/x.repo:5",
        { name: "BaseOS", baseurl: "https://a/\nhttps://b/", gpgkey: "file:///k1,file:///k2", gpgcheck: "1" },
      ],
    ],
  );
  assert.throws(
    () => parseIni("baseurl=x\n", "/etc/yum.repos.d/y.repo"),
    (e: unknown) => isSutureError(e, "INVALID_MANIFEST") && /y\.repo:1/.test((e as Error).message),
  );
});

test("variables: bare, braced, with defaults; unknown ones are kept and reported", () => {
  const unknown = new Set<string>();
  const vars = { releasever: "9", basearch: "x86_64", contentdir: "centos" };
  assert.equal(
    expandRepoVars(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: dnf's ${var} syntax, not a template
      "https://m/$contentdir/${releasever}/BaseOS/$basearch/os/${stream:-9-stream}/$nope",
      vars,
      unknown,
    ),
    "https://m/centos/9/BaseOS/x86_64/os/9-stream/$nope",
  );
  assert.deepEqual([...unknown], ["nope"]);
  assert.equal(rpmBaseArch("i686"), "i386");
  assert.equal(rpmBaseArch("armv7hl"), "armhfp");
  assert.equal(rpmBaseArch("aarch64"), "aarch64");
});

test("dnf: repos from /etc/yum.repos.d with dnf.conf's defaults, /etc/dnf/vars, mirrors; metalink-only repos noted", async () => {
  const root = await imageRoot({
    "/etc/dnf/dnf.conf": "[main]\ngpgcheck=True\ninstallonly_limit=3\n",
    "/etc/dnf/vars/contentdir": "centos\n",
    "/etc/yum.repos.d/centos.repo": [
      "[baseos]",
      "name=CentOS Stream $releasever - BaseOS",
      "baseurl=https://mirror.stream.centos.org/$releasever-stream/BaseOS/$basearch/os/",
      "gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-centosofficial",
      "  file:///etc/pki/rpm-gpg/RPM-GPG-KEY-extra",
      "repo_gpgcheck=1",
      "",
      "[appstream]",
      "metalink=https://mirrors.centos.org/metalink?repo=centos-appstream-$releasever-stream&arch=$basearch",
      "gpgcheck=0",
      "enabled=1",
      "",
      "[crb]",
      "baseurl=https://mirror.stream.centos.org/$releasever-stream/CRB/$basearch/os/",
      "enabled=0",
    ].join("\n"),
    "/etc/yum.repos.d/notes.txt": "[ignored]\nbaseurl=x\n",
  });
  const config = await readRpmRepoConfig(root, "dnf", {
    releasever: "9",
    arch: "x86_64",
    mirrors: { "https://mirror.stream.centos.org": "http://127.0.0.1:1/centos" },
  });
  assert.equal(config.vars.contentdir, "centos");
  assert.deepEqual(
    config.repos.map((r) => ({
      id: r.id,
      enabled: r.enabled,
      gpgcheck: r.gpgcheck,
      repoGpgcheck: r.repoGpgcheck,
    })),
    [
      { id: "baseos", enabled: true, gpgcheck: true, repoGpgcheck: true },
      { id: "appstream", enabled: true, gpgcheck: false, repoGpgcheck: false },
      { id: "crb", enabled: false, gpgcheck: true, repoGpgcheck: false },
    ],
  );
  const baseos = config.repos[0]!;
  assert.equal(baseos.name, "CentOS Stream 9 - BaseOS");
  assert.equal(baseos.origin, "/etc/yum.repos.d/centos.repo:1");
  assert.deepEqual(baseos.baseurls, ["https://mirror.stream.centos.org/9-stream/BaseOS/x86_64/os/"]);
  assert.deepEqual(baseos.fetchUrls, ["http://127.0.0.1:1/centos/9-stream/BaseOS/x86_64/os"]);
  assert.deepEqual(baseos.gpgkeys, [
    "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-centosofficial",
    "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-extra",
  ]);
  assert.equal(
    config.repos[1]!.metalink,
    "https://mirrors.centos.org/metalink?repo=centos-appstream-9-stream&arch=x86_64",
  );
  assert.ok(config.notes.some((n) => /appstream has only a metalink/.test(n)));
});

test("tdnf: tdnf.conf's repodir and gpgcheck, /etc/tdnf/vars (Azure Linux's layout)", async () => {
  const root = await imageRoot({
    "/etc/tdnf/tdnf.conf":
      "[main]\ngpgcheck=1\ninstallonly_limit=3\nrepodir=/etc/yum.repos.d\ndistroverpkg=azurelinux-release\n",
    "/etc/tdnf/vars/flavour": "base\n",
    "/etc/yum.repos.d/azurelinux-official-base.repo":
      "[azurelinux-official-base]\nname=Azure Linux Official Base $releasever $basearch\nbaseurl=https://packages.microsoft.com/azurelinux/$releasever/prod/$flavour/$basearch\ngpgkey=file:///etc/pki/rpm-gpg/MICROSOFT-RPM-GPG-KEY\ngpgcheck=1\nrepo_gpgcheck=1\nenabled=1\nskip_if_unavailable=True\n",
  });
  const config = await readRpmRepoConfig(root, "tdnf", { releasever: "3.0", arch: "aarch64" });
  assert.deepEqual(config.repos[0]!.baseurls, [
    "https://packages.microsoft.com/azurelinux/3.0/prod/base/aarch64",
  ]);
  assert.equal(config.repos[0]!.gpgcheck, true);
  assert.equal(config.repos[0]!.repoGpgcheck, true);
  assert.equal(config.vars.releasever_major, "3");
  assert.deepEqual(config.notes, []);
});

test("zypper: repos.d with type, path, pkg_gpgcheck; gpgcheck defaults on; vars.d", async () => {
  const root = await imageRoot({
    "/etc/zypp/vars.d/product": "SLE_BCI\n",
    "/etc/zypp/repos.d/SLE_BCI.repo":
      "[SLE_BCI]\nname=SLE BCI\nenabled=1\nautorefresh=0\nbaseurl=https://updates.suse.com/SUSE/Products/SLE-BCI/$releasever_major-SP$releasever_minor/$basearch/product/\ngpgcheck=1\ntype=rpm-md\nkeeppackages=0\n",
    "/etc/zypp/repos.d/local.repo":
      "[local]\nbaseurl=http://10.0.0.1/$product\npath=/sub\npkg_gpgcheck=0\nrepo_gpgcheck=1\n",
    "/etc/zypp/repos.d/unsigned.repo": "[unsigned]\nbaseurl=http://10.0.0.1/u\ngpgcheck=0\n",
  });
  const config = await readRpmRepoConfig(root, "zypper", { releasever: "15.6", arch: "x86_64" });
  const byId = Object.fromEntries(config.repos.map((r) => [r.id, r]));
  assert.deepEqual(byId.SLE_BCI!.baseurls, [
    "https://updates.suse.com/SUSE/Products/SLE-BCI/15-SP6/x86_64/product/",
  ]);
  assert.equal(byId.SLE_BCI!.type, "rpm-md");
  assert.deepEqual([byId.SLE_BCI!.gpgcheck, byId.SLE_BCI!.repoGpgcheck], [true, true]);
  assert.deepEqual(byId.local!.baseurls, ["http://10.0.0.1/SLE_BCI"]);
  assert.equal(byId.local!.path, "/sub");
  assert.deepEqual([byId.local!.gpgcheck, byId.local!.repoGpgcheck], [false, true]);
  assert.deepEqual([byId.unsigned!.gpgcheck, byId.unsigned!.repoGpgcheck], [false, false]);
});

test("gpgkey files are read from the image, never through a symlink out of it; a missing key is one UNTRUSTED line", async () => {
  const hostSecret = join(scratch.dir, "host-key.asc");
  await writeFile(hostSecret, key.publicArmored);
  const root = await imageRoot({
    "/etc/pki/rpm-gpg/RPM-GPG-KEY-test": key.publicArmored,
    "/etc/yum.repos.d/a.repo": [
      "[good]",
      "baseurl=http://r/",
      "gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-test https://remote.example/key",
      "[escape]",
      "baseurl=http://r/",
      "gpgkey=file:///etc/pki/rpm-gpg/escape",
    ].join("\n"),
  });
  // An absolute link in the image means the image's own path: the host's file is never read.
  await symlink(hostSecret, join(root, "etc/pki/rpm-gpg/escape"));
  const config = await readRpmRepoConfig(root, "dnf");
  const [good, escaping] = config.repos;
  const ring = await repoKeyring(root, good!);
  assert.deepEqual(
    ring.keys.map((k) => k.getFingerprint()),
    [key.fingerprint],
  );
  await assert.rejects(
    repoKeyring(root, escaping!),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /not in the image/.test((e as Error).message),
  );
});

test("dnf reads pkg_gpgcheck as gpgcheck (dnf5's alias): the one assigned last decides, in the repo and in [main]", async () => {
  const root = await imageRoot({
    "/etc/dnf/dnf.conf": "[main]\ngpgcheck=1\npkg_gpgcheck=0\n",
    "/etc/yum.repos.d/f.repo":
      "[off-last]\nbaseurl=http://m/a/\ngpgcheck=1\npkg_gpgcheck=0\n\n[on-last]\nbaseurl=http://m/b/\npkg_gpgcheck=0\ngpgcheck=1\n\n[reassigned]\nbaseurl=http://m/c/\ngpgcheck=0\npkg_gpgcheck=1\ngpgcheck=1\npkg_gpgcheck=0\n\n[from-main]\nbaseurl=http://m/d/\n",
  });
  // What both engines act on: the native engine refuses an unchecked repository's packages by
  // this flag, the sandbox engine refuses the repository before its tool runs.
  const config = await readRpmRepoConfig(root, "dnf", { arch: "x86_64" });
  assert.deepEqual(
    config.repos.map((r) => [r.id, r.gpgcheck]),
    [
      ["off-last", false],
      ["on-last", true],
      ["reassigned", false],
      ["from-main", false],
    ],
  );
  // yum 3 and tdnf know no pkg_gpgcheck: their gpgcheck alone decides.
  const yum = await imageRoot({
    "/etc/yum.conf": "[main]\ngpgcheck=1\n",
    "/etc/yum.repos.d/f.repo": "[a]\nbaseurl=http://m/a/\ngpgcheck=1\npkg_gpgcheck=0\n",
  });
  assert.equal((await readRpmRepoConfig(yum, "yum", { arch: "x86_64" })).repos[0]!.gpgcheck, true);
});
