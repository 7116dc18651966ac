/**
 * The RPM lab is sound (test/lab/rpm-lab.ts, rpm-repo.ts): every image is one suture detects as the
 * distribution it imitates; the signed test repository is something the REAL package managers in
 * the images accept — Debian's dnf 4.14 upgrades the dnf image through the repository's
 * loopback URL (gpgcheck and repo_gpgcheck on), after which `rpm -qa` shows the fixed builds,
 * `rpm -Va` finds only the app's config edits and `dnf check` nothing, and the edited nginx.conf is
 * kept with nginx.conf.rpmnew beside it; zypper 1.14 does the same in the zypper image, trusting
 * the key in the image's rpmdb. Every tampered variant of the repository is refused by that dnf
 * (and the metadata tampering by zypper), changing nothing. The shell-less micro and distroless
 * images run their program. A cold cache builds for about ten minutes; warm, about a minute.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { readRpmRepoConfig } from "../../src/distro/rpm/repo-config.ts";
import { rpmvercmp } from "../../src/distro/rpm/version.ts";
import { inspectImage } from "../../src/index.ts";
import { parseTrivyReport } from "../../src/report/trivy.ts";
import type { Sandbox } from "../../src/sandbox/sandbox.ts";
import { inLayoutImage } from "../lab/in-image.ts";
import { requiring } from "../lab/requirements.ts";
import { rpmCheckSig } from "../lab/rpm.ts";
import {
  RPM_LAB_APP_CONF,
  RPM_LAB_CHANGED_UNEDITED_CONFIG,
  RPM_LAB_DISTRO,
  RPM_LAB_EDITED_CONFIG,
  RPM_LAB_KINDS,
  RPM_LAB_REPO_CONFIG,
  type RpmLabKind,
  type RpmRepoTamper,
  type RpmTestRepo,
  rpmLabFixes,
  rpmLabImage,
  rpmLabRepoFiles,
  rpmLabReport,
  startRpmTestRepo,
} from "../lab/rpm-lab.ts";

const { after, before, test } = await requiring(
  "root",
  "runc",
  "loopback",
  "tool:umoci",
  "tool:mmdebstrap",
  "tool:rpmbuild",
  "tool:createrepo_c",
  "tool:gpg",
);

const run = promisify(execFile);
let work: string;
let repo: RpmTestRepo;

before(async () => {
  work = mkdtempSync("/var/tmp/suture-rpm-lab-");
  repo = await startRpmTestRepo();
});
after(async () => {
  await repo?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function inImage<T>(kind: RpmLabKind, fn: (sb: Sandbox) => Promise<T>): Promise<T> {
  return inLayoutImage({ ociDir: (await rpmLabImage(kind)).ociDir }, work, fn);
}

async function sh(sb: Sandbox, args: string[]): Promise<{ exitCode: number; out: string }> {
  const r = await sb.run(args, { timeoutMs: 600_000 });
  return { exitCode: r.exitCode, out: `${r.stdout}${r.stderr}` };
}

/** `rpm -qa` in the image as name → `[E:]V-R`. */
async function rpmQa(sb: Sandbox): Promise<Map<string, string>> {
  const r = await sh(sb, ["rpm", "-qa", "--qf", "%{NAME} %{EVR}\\n"]);
  assert.equal(r.exitCode, 0, r.out);
  return new Map(
    r.out
      .split("\n")
      .filter(Boolean)
      .map((l) => l.split(" ") as [string, string]),
  );
}

/** The real dnf's upgrade with the image's repository pointed at `url` (dnf's own mirror option). */
function dnfUpgrade(sb: Sandbox, url: string) {
  return sh(sb, [
    "dnf",
    "-y",
    "--setopt=install_weak_deps=False",
    `--setopt=baseos.baseurl=${url}`,
    "upgrade",
  ]);
}

test("the repository: every build signed by the lab key, each fix newer than its old build by the real rpm", async () => {
  const built = await rpmLabRepoFiles();
  const files = await readdir(join(built.root, "Packages"));
  for (const p of built.packages) {
    assert.ok(files.includes(p.installed.file), p.installed.file);
    if (!p.fixed) continue;
    assert.ok(files.includes(p.fixed.file), p.fixed.file);
    // rpm's own order (its lua rpm.vercmp) and suture's agree that the fix is newer.
    const { stdout } = await run("rpm", [
      "--eval",
      `%{lua: print(rpm.vercmp("${p.fixed.evr}", "${p.installed.evr}"))}`,
    ]);
    assert.equal(stdout.trim(), "1", `${p.name} ${p.fixed.evr} > ${p.installed.evr}`);
    assert.equal(rpmvercmp(p.fixed.evr, p.installed.evr), 1);
    const sig = await rpmCheckSig(work, join(built.root, "Packages", p.fixed.file), [
      built.keys.lab.publicArmored,
    ]);
    assert.match(sig, /Header V4 RSA\/SHA\d+ Signature, key ID [0-9a-f]+: OK/, sig);
    const other = await rpmCheckSig(work, join(built.otherKeyRoot, "Packages", p.fixed.file), [
      built.keys.lab.publicArmored,
    ]);
    assert.match(other, /NOKEY/, other);
  }
  const names = built.packages.map((p) => p.name);
  for (const n of ["libjq1", "jq", "unzip", "nginx-common", "rsync", "libc6"])
    assert.ok(names.includes(n), n);
  // The repomd signature is a detached armored one by the lab key.
  const home = mkdtempSync(join(work, "gnupg-"));
  await run("gpg", ["--homedir", home, "--batch", "--import", built.keys.lab.publicKeyFile]);
  await run("gpg", [
    "--homedir",
    home,
    "--batch",
    "--verify",
    join(built.root, "repodata/repomd.xml.asc"),
    join(built.root, "repodata/repomd.xml"),
  ]);
});

test("suture inspect sees every lab image as the distribution it imitates, with its rpm packages", async () => {
  for (const kind of RPM_LAB_KINDS) {
    const image = await rpmLabImage(kind);
    const result = await inspectImage(image.ref);
    const summary = result.images[0]!;
    const osId = RPM_LAB_DISTRO[kind].osRelease.match(/^ID="?([^"\n]+)/m)![1];
    assert.equal(summary.os?.id, osId, kind);
    assert.equal(summary.packageDb, "rpm", kind);
    const expectTool = { dnf: "dnf", zypper: "zypper", tdnf: "rpm", micro: "none", distroless: "none" }[kind];
    assert.equal(summary.packageManager, expectTool, kind);
    const versions = new Map(summary.packages?.map((p) => [p.name, p.version]));
    for (const f of await rpmLabFixes(kind))
      assert.equal(versions.get(f.name), f.installed, `${kind} ${f.name}`);
    if (kind === "distroless") assert.match(summary.packageDbFile?.path ?? "", /container-manifest-2$/);
  }
});

test("the Trivy reports parse as the families Trivy names, one entry per pending fix", async () => {
  for (const kind of RPM_LAB_KINDS) {
    const plan = parseTrivyReport(await rpmLabReport(kind), `${kind}.json`);
    const fixes = await rpmLabFixes(kind);
    assert.equal(
      plan.os?.family,
      {
        dnf: "rocky",
        zypper: "opensuse-leap",
        tdnf: "azurelinux",
        micro: "redhat",
        distroless: "azurelinux",
      }[kind],
    );
    const planned = new Map(plan.updates.map((u) => [u.name, u.fixedVersion]));
    for (const f of fixes) assert.equal(planned.get(f.name), f.fixed, `${kind} ${f.name}`);
  }
});

test("the real dnf upgrades the dnf image from the lab repository; rpm -Va and dnf check agree", async () => {
  const fixes = await rpmLabFixes("dnf");
  await inImage("dnf", async (sb) => {
    const before = await rpmQa(sb);
    for (const f of fixes) assert.equal(before.get(f.name), f.installed, f.name);
    const up = await dnfUpgrade(sb, repo.repoUrl("dnf"));
    assert.equal(up.exitCode, 0, up.out);
    assert.match(up.out, /nginx\.conf created as \/etc\/nginx\/nginx\.conf\.rpmnew/);
    const after = await rpmQa(sb);
    for (const f of fixes) assert.equal(after.get(f.name), f.fixed, f.name);
    // Only the app layer's edits differ from what rpm installed.
    const verify = await sh(sb, ["rpm", "-Va"]);
    const changed = verify.out
      .split("\n")
      .filter(Boolean)
      .map((l) => l.replace(/^\S+\s+(c\s+)?/, ""))
      .sort();
    assert.deepEqual(changed, [...RPM_LAB_EDITED_CONFIG].sort(), verify.out);
    const check = await sh(sb, ["dnf", "check"]);
    assert.equal(check.exitCode, 0, check.out);
    const files = await sh(sb, [
      "sh",
      "-c",
      `test -f /etc/nginx/nginx.conf.rpmnew && ! test -e ${RPM_LAB_CHANGED_UNEDITED_CONFIG}.rpmnew && ! test -e /etc/nginx/sites-available/default.rpmnew && grep -q 'suture lab app' /etc/nginx/nginx.conf && grep -q deb12u11 ${RPM_LAB_CHANGED_UNEDITED_CONFIG} && cat ${RPM_LAB_APP_CONF} && /usr/local/bin/app`,
    ]);
    assert.equal(files.exitCode, 0, files.out);
    assert.match(files.out, /"suture lab app"/);
  });
});

/** What the real dnf says when it refuses each tampered repository. */
const DNF_REFUSALS: Record<RpmRepoTamper, RegExp> = {
  repomd: /repomd\.xml GPG signature verification error: Bad GPG signature/,
  // The re-compressed primary may differ from repomd.xml's record in size before its checksum.
  primary: /(checksum doesn't match|size)[\s\S]*primary\.xml\.gz/,
  "package-other-key":
    /are already installed but they are not correct for this package|Public key for .* is not installed/,
  "package-bytes": /\.rpm: Downloading successful, but checksum doesn't match/,
  "package-unsigned": /GPG check FAILED/,
};

for (const tamper of [
  "repomd",
  "primary",
  "package-other-key",
  "package-bytes",
  "package-unsigned",
] as const) {
  test(`the real dnf refuses the repository tampered as "${tamper}" and changes nothing`, async () => {
    const bad = await startRpmTestRepo({ tamper: tamper as RpmRepoTamper });
    try {
      await inImage("dnf", async (sb) => {
        const before = await rpmQa(sb);
        const up = await dnfUpgrade(sb, bad.repoUrl("dnf"));
        assert.notEqual(up.exitCode, 0, up.out);
        assert.match(up.out, DNF_REFUSALS[tamper]);
        assert.deepEqual(await rpmQa(sb), before);
      });
    } finally {
      await bad.close();
    }
  });
}

test("the micro image has no shell, no rpm and no dnf, and still runs jq from its rpms", async () => {
  await inImage("micro", async (sb) => {
    const jq = await sh(sb, ["/usr/bin/jq", "--version"]);
    assert.equal(jq.exitCode, 0, jq.out);
    assert.match(jq.out, /^jq-1\.6/);
    const app = await sh(sb, ["/usr/local/bin/app", "-n", "1+1"]);
    assert.equal(app.out.trim(), "2");
    for (const absent of ["/bin/sh", "/usr/bin/rpm", "/usr/bin/dnf"])
      await assert.rejects(
        sb.run([absent, "--version"], { timeoutMs: 60_000 }).then((r) => {
          if (r.exitCode !== 0) throw new Error(`exit ${r.exitCode}`);
        }),
        absent,
      );
  });
});

test("the real zypper updates the zypper image from the lab repository, checking signatures with the rpmdb's key", async () => {
  const fixes = await rpmLabFixes("zypper");
  const distro = RPM_LAB_DISTRO.zypper;
  await inImage("zypper", async (sb) => {
    // The test's mirror: the repo file's host part points at the loopback server ($releasever stays).
    const mirrored = `${repo.url}${new URL(distro.mirrorFrom).pathname}`;
    const sed = await sh(sb, ["sed", "-i", `s#${distro.mirrorFrom}#${mirrored}#`, distro.repoFile.path]);
    assert.equal(sed.exitCode, 0, sed.out);
    const up = await sh(sb, ["zypper", "--non-interactive", "update"]);
    assert.equal(up.exitCode, 0, up.out);
    const after = await rpmQa(sb);
    for (const f of fixes) assert.equal(after.get(f.name), f.fixed, f.name);
    const verify = await sh(sb, ["rpm", "-Va"]);
    const changed = verify.out
      .split("\n")
      .filter(Boolean)
      .map((l) => l.replace(/^\S+\s+(c\s+)?/, ""))
      .sort();
    assert.deepEqual(changed, [...RPM_LAB_EDITED_CONFIG, distro.repoFile.path].sort(), verify.out);
    const rpmnew = await sh(sb, ["test", "-f", "/etc/nginx/nginx.conf.rpmnew"]);
    assert.equal(rpmnew.exitCode, 0);
  });
});

// libzypp checks the signed repomd.xml and, through it, every package's checksum; with signed
// metadata it does not check the packages' own signatures (its pkg_gpgcheck default), so the
// metadata tampering is what the real zypper is held to here.
for (const tamper of ["repomd", "primary"] as const) {
  test(`the real zypper refuses the repository tampered as "${tamper}" and changes nothing`, async () => {
    const bad = await startRpmTestRepo({ tamper });
    const distro = RPM_LAB_DISTRO.zypper;
    try {
      await inImage("zypper", async (sb) => {
        const before = await rpmQa(sb);
        const mirrored = `${bad.url}${new URL(distro.mirrorFrom).pathname}`;
        await sh(sb, ["sed", "-i", `s#${distro.mirrorFrom}#${mirrored}#`, distro.repoFile.path]);
        const up = await sh(sb, ["zypper", "--non-interactive", "update"]);
        assert.notEqual(up.exitCode, 0, up.out);
        assert.match(
          up.out,
          tamper === "repomd"
            ? /Signature verification failed for repomd\.xml/
            : /primary\.xml\.gz has wrong checksum|exceeded the expected filesize .*primary\.xml\.gz/,
        );
        assert.deepEqual(await rpmQa(sb), before);
      });
    } finally {
      await bad.close();
    }
  });
}

test("the distroless image keeps only Azure Linux's rpm manifest and runs jq", async () => {
  await inImage("distroless", async (sb) => {
    const jq = await sh(sb, ["/usr/bin/jq", "-n", '"ok"']);
    assert.equal(jq.out.trim(), '"ok"', jq.out);
  });
  const image = await rpmLabImage("distroless");
  const result = await inspectImage(image.ref);
  assert.equal(result.images[0]!.packageDbFile?.path, "/var/lib/rpmmanifest/container-manifest-2");
});

test("the tdnf image (no tdnf in Debian): rpm in it finds only the app's config edits, the app layer is whole", async () => {
  await inImage("tdnf", async (sb) => {
    const verify = await sh(sb, ["rpm", "-Va"]);
    const changed = verify.out
      .split("\n")
      .filter(Boolean)
      .map((l) => l.replace(/^\S+\s+(c\s+)?/, ""))
      .sort();
    assert.deepEqual(changed, [...RPM_LAB_EDITED_CONFIG].sort(), verify.out);
    const app = await sh(sb, [
      "sh",
      "-c",
      `id app && stat -c '%u:%g %a' /home/app && cat ${RPM_LAB_APP_CONF} && test -f /etc/tdnf/tdnf.conf && test ! -e /usr/bin/tdnf && /usr/local/bin/app`,
    ]);
    assert.equal(app.exitCode, 0, app.out);
    assert.match(app.out, /1000:1000 700/);
  });
});

test("each image's repository, as suture reads its repo file with the lab's --mirror, is the loopback repository", async () => {
  for (const kind of RPM_LAB_KINDS) {
    const { releasever, tool } = RPM_LAB_REPO_CONFIG[kind];
    const [from, to] = repo.mirrorArg(kind).split(/=(.*)/s) as [string, string];
    await inImage(kind, async (sb) => {
      const config = await readRpmRepoConfig(sb.mergedDir, tool, {
        releasever,
        arch: "x86_64",
        mirrors: { [from]: to },
      });
      const enabled = config.repos.filter((r) => r.enabled);
      assert.equal(enabled.length, 1, kind);
      const r = enabled[0]!;
      assert.equal(r.baseurls[0]!.replace(/\/$/, ""), RPM_LAB_DISTRO[kind].repoUrl.replace(/\/$/, ""), kind);
      assert.ok(r.gpgcheck, kind);
      assert.equal(r.fetchUrls[0]!.replace(/\/$/, ""), repo.repoUrl(kind).replace(/\/$/, ""), kind);
      const res = await fetch(`${r.fetchUrls[0]!.replace(/\/$/, "")}/repodata/repomd.xml`);
      assert.equal(res.status, 200, kind);
    });
  }
});

test("tamperPackages limits package tampering to the named packages; the rest stay lab-signed", async () => {
  const bad = await startRpmTestRepo({ tamper: "package-unsigned", tamperPackages: ["unzip"] });
  try {
    const built = await rpmLabRepoFiles();
    const fileOf = (name: string) => built.packages.find((p) => p.name === name)!.fixed!.file;
    const check = async (name: string) => {
      const res = await fetch(`${bad.repoUrl("dnf")}Packages/${fileOf(name)}`);
      assert.equal(res.status, 200);
      const file = join(work, `served-${fileOf(name)}`);
      await writeFile(file, Buffer.from(await res.arrayBuffer()));
      return rpmCheckSig(work, file, [built.keys.lab.publicArmored]);
    };
    assert.doesNotMatch(await check("unzip"), /Signature/, "unzip is served unsigned");
    assert.match(await check("jq"), /Signature, key ID [0-9a-f]+: OK/, "jq keeps the lab signature");
  } finally {
    await bad.close();
  }
});
