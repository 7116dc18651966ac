/**
 * The Alpine lab is sound: its images open, and the test repository is something the REAL apk
 * (apk-tools 2.14.4 inside the 3.20.3 image, run in runc) accepts: `apk update` verifies the signed
 * index with the key the image trusts, `apk upgrade` installs edge's builds (scripts and triggers
 * run), and afterwards `apk audit --system` finds nothing and `apk info -v` shows edge's versions.
 * A tampered or foreign-signed repository is refused by the same apk. About 20 s once cached.
 */
import assert from "node:assert/strict";
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { parseInstalledDb } from "../../src/distro/apk/installed-db.ts";
import type { Sandbox } from "../../src/sandbox/sandbox.ts";
import {
  ALPINE_LAB_APP_CONF,
  ALPINE_LAB_APP_LINK,
  ALPINE_LAB_EDITED_CONFIG,
  ALPINE_LAB_FIXES,
  ALPINE_LAB_USER,
  ALPINE_REPO_URL,
  type AlpineTestRepo,
  alpineLabImage,
  alpineLabIndex,
  alpineLabTrivyReport,
  startAlpineTestRepo,
} from "../lab/alpine-lab.ts";
import { inLayoutImage } from "../lab/in-image.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "runc", "loopback", "tool:umoci");

let work: string;
let repo: AlpineTestRepo;

before(async () => {
  work = mkdtempSync("/var/tmp/suture-alpine-lab-");
  repo = await startAlpineTestRepo();
});
after(async () => {
  await repo?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

function inImage<T>(
  ref: { ociDir: string },
  architecture: string,
  fn: (sb: Sandbox) => Promise<T>,
): Promise<T> {
  return inLayoutImage({ ociDir: ref.ociDir, architecture }, work, fn);
}

async function apk(sb: Sandbox, args: string[]): Promise<{ exitCode: number; out: string }> {
  const r = await sb.run(["/sbin/apk", ...args], { timeoutMs: 120_000 });
  return { exitCode: r.exitCode, out: `${r.stdout}${r.stderr}` };
}

/** A repositories file naming the loopback repositories (as a --mirror rewrites the image's). */
function useRepo(sb: Sandbox, ...urls: string[]): string[] {
  writeFileSync(join(sb.mergedDir, "etc/apk/lab-repositories"), urls.map((u) => `${u}\n`).join(""));
  return ["--repositories-file", "/etc/apk/lab-repositories"];
}

test("the app image: 3.20.3 rootfs plus the app layer; the repository key is trusted", async () => {
  const lab = await alpineLabImage("app");
  const installed = parseInstalledDb(lab.installed);
  for (const f of ALPINE_LAB_FIXES)
    assert.equal(installed.find((p) => p.info.name === f.name)?.info.version, f.installed, f.name);
  await inImage(lab, "amd64", async (sb) => {
    const root = sb.mergedDir;
    assert.match(readFileSync(join(root, "etc/alpine-release"), "utf8"), /^3\.20\.3/);
    assert.equal(readFileSync(join(root, "etc/apk/repositories"), "utf8").split("\n")[0], ALPINE_REPO_URL);
    assert.ok(existsSync(join(root, "etc/apk/keys", repo.keyName)), "the lab key is in /etc/apk/keys");
    assert.ok(existsSync(join(root, ALPINE_LAB_APP_CONF)));
    assert.equal(readlinkSync(join(root, ALPINE_LAB_APP_LINK.path)), ALPINE_LAB_APP_LINK.target);
    const home = lstatSync(join(root, ALPINE_LAB_USER.home));
    assert.deepEqual([home.uid, home.gid, home.mode & 0o7777], [1000, 1000, 0o750]);
    assert.match(readFileSync(join(root, "etc/passwd"), "utf8"), /^app:x:1000:1000:/m);
  });
});

test("the static image: no shell, no apk, their records gone; the rest of the db intact", async () => {
  const lab = await alpineLabImage("static");
  const names = parseInstalledDb(lab.installed).map((p) => p.info.name);
  assert.deepEqual(names, [
    "alpine-baselayout",
    "alpine-baselayout-data",
    "alpine-keys",
    "ca-certificates-bundle",
    "libcrypto3",
    "libssl3",
    "musl",
    "zlib",
  ]);
  await inImage(lab, "amd64", async (sb) => {
    for (const gone of [
      "bin/sh",
      "bin/busybox",
      "bin/ls",
      "sbin/apk",
      "usr/bin/getent",
      "lib/apk/db/scripts.tar/x",
    ])
      assert.ok(!existsSync(join(sb.mergedDir, gone)), `${gone} is gone`);
    assert.equal(readFileSync(join(sb.mergedDir, "lib/apk/db/installed"), "utf8"), lab.installed);
    assert.ok(existsSync(join(sb.mergedDir, ALPINE_LAB_APP_CONF)));
    assert.doesNotMatch(
      readFileSync(join(sb.mergedDir, "etc/apk/world"), "utf8"),
      /busybox|apk-tools|libc-utils/,
    );
  });
});

test("the index holds amd64 and arm64 app images", async () => {
  const index = await alpineLabIndex();
  const top = JSON.parse(readFileSync(join(index.ociDir, "index.json"), "utf8"));
  const blob = JSON.parse(
    readFileSync(join(index.ociDir, "blobs/sha256", top.manifests[0].digest.slice(7)), "utf8"),
  );
  assert.deepEqual(
    blob.manifests.map((m: { platform: { architecture: string } }) => m.platform.architecture),
    ["amd64", "arm64"],
  );
  const arm = await alpineLabImage("app", "aarch64");
  assert.match(arm.installed, /^A:aarch64$/m);
});

test("the image's real apk: update and upgrade from the lab repository, then audit and info are clean", async () => {
  const lab = await alpineLabImage("app");
  await inImage(lab, "amd64", async (sb) => {
    const repos = useRepo(sb, repo.url, repo.communityUrl);
    const update = await apk(sb, ["update", ...repos]);
    assert.equal(update.exitCode, 0, update.out);
    assert.match(update.out, /OK: \d+ distinct packages available/);
    assert.doesNotMatch(update.out, /unavailable|WARNING/);
    const upgrade = await apk(sb, ["upgrade", "--no-cache", ...repos]);
    assert.equal(upgrade.exitCode, 0, upgrade.out);
    assert.doesNotMatch(upgrade.out, /ERROR|WARNING|error/, upgrade.out);
    const info = await apk(sb, ["info", "-v"]);
    for (const f of ALPINE_LAB_FIXES)
      assert.match(info.out, new RegExp(`^${f.name}-${f.fixed.replace(/\./g, "\\.")}$`, "m"));
    const audit = await apk(sb, ["audit", "--system"]);
    assert.equal(audit.exitCode, 0, audit.out);
    assert.equal(audit.out.trim(), "", `apk audit --system found:\n${audit.out}`);
    const outdated = await apk(sb, ["version", "-l", "<", ...repos]);
    assert.doesNotMatch(outdated.out, /</, outdated.out);
    // The edited protected config files were kept, the packages' new ones written beside them.
    for (const f of ALPINE_LAB_EDITED_CONFIG.app) {
      assert.ok(existsSync(join(sb.mergedDir, `${f}.apk-new`)), `${f}.apk-new written`);
    }
    assert.match(readFileSync(join(sb.mergedDir, "etc/securetty"), "utf8"), /ttyS4/);
    assert.match(readFileSync(join(sb.mergedDir, "etc/passwd"), "utf8"), /^app:x:1000:1000:/m);
    assert.match(readFileSync(join(sb.mergedDir, ALPINE_LAB_APP_CONF), "utf8"), /^user = app$/m);
    assert.equal(readlinkSync(join(sb.mergedDir, ALPINE_LAB_APP_LINK.path)), ALPINE_LAB_APP_LINK.target);
    assert.equal(lstatSync(join(sb.mergedDir, ALPINE_LAB_USER.home)).uid, ALPINE_LAB_USER.uid);
    // alpine-baselayout's .pre-upgrade ran: /var/lock is now the symlink 3.6.8 ships.
    assert.equal(readlinkSync(join(sb.mergedDir, "var/lock")), "../run/lock");
    // busybox's trigger ran: its applets are still there.
    assert.equal(readlinkSync(join(sb.mergedDir, "bin/ls")), "/bin/busybox");
    assert.ok(repo.requests.includes("/v3.20/main/x86_64/APKINDEX.tar.gz"), repo.requests.join(" "));
  });
});

test("the aarch64 repository and the static image, judged by the same apk with --root", async () => {
  const app = await alpineLabImage("app");
  const arm = await alpineLabImage("app", "aarch64");
  const staticImage = await alpineLabImage("static");
  await inImage(arm, "arm64", (armSb) =>
    inImage(staticImage, "amd64", (staticSb) =>
      inImage(app, "amd64", async (sb) => {
        const repos = useRepo(sb, repo.url, repo.communityUrl);
        const mounts = [
          { destination: "/arm64", source: armSb.mergedDir },
          { destination: "/static", source: staticSb.mergedDir },
        ];
        const run = async (args: string[]) => {
          const r = await sb.run(["/sbin/apk", ...args], { timeoutMs: 120_000, mounts });
          return { exitCode: r.exitCode, out: `${r.stdout}${r.stderr}` };
        };
        // arm64: its own arch and keys (the lab key is in its /etc/apk/keys), no scripts (no
        // emulation). alpine-baselayout is left out: its .pre-upgrade turns the directory /var/lock
        // into a symlink, and without it apk cannot install 3.6.8 over 3.6.5.
        const baselayout = ["alpine-baselayout", "alpine-baselayout-data"];
        const fixes = ALPINE_LAB_FIXES.filter((f) => !baselayout.includes(f.name));
        const upgrade = await run([
          "--root",
          "/arm64",
          "--no-scripts",
          "add",
          "--upgrade",
          "--update-cache",
          ...repos,
          ...fixes.map((f) => f.name),
        ]);
        assert.equal(upgrade.exitCode, 0, upgrade.out);
        assert.ok(repo.requests.includes("/v3.20/main/aarch64/APKINDEX.tar.gz"), repo.requests.join(" "));
        const info = await run(["--root", "/arm64", "info", "-v"]);
        for (const f of fixes) assert.match(info.out, new RegExp(`^${f.name}-${f.fixed}$`, "m"));
        const audit = await run(["--root", "/arm64", "audit", "--system"]);
        assert.equal(audit.out.trim(), "", audit.out);
        // static: every file its db lists is there as listed.
        const staticAudit = await run(["--root", "/static", "audit", "--system"]);
        assert.equal(staticAudit.exitCode, 0, staticAudit.out);
        assert.equal(staticAudit.out.trim(), "", staticAudit.out);
      }),
    ),
  );
});

test("the same apk refuses the repository signed by another key and the tampered ones", async () => {
  const lab = await alpineLabImage("app");
  const other = await startAlpineTestRepo({ signWith: "other" });
  const tamperedIndex = await startAlpineTestRepo({ tamper: "index-bytes" });
  const tamperedData = await startAlpineTestRepo({ tamper: "package-data", tamperPackages: ["zlib"] });
  const tamperedControl = await startAlpineTestRepo({ tamper: "package-control", tamperPackages: ["zlib"] });
  try {
    await inImage(lab, "amd64", async (sb) => {
      for (const [bad, why] of [
        [other, /UNTRUSTED signature/],
        [tamperedIndex, /BAD signature/],
      ] as const) {
        const update = await apk(sb, ["update", ...useRepo(sb, bad.url)]);
        assert.notEqual(update.exitCode, 0, update.out);
        assert.match(update.out, why, update.out);
      }
      for (const bad of [tamperedData, tamperedControl]) {
        const repos = useRepo(sb, bad.url);
        assert.equal((await apk(sb, ["update", ...repos])).exitCode, 0);
        const add = await apk(sb, ["upgrade", "--no-cache", ...repos, "zlib"]);
        assert.notEqual(add.exitCode, 0, add.out);
        assert.match(add.out, /ERROR: zlib-1\.3\.1-r2: BAD signature/, add.out);
      }
      assert.match((await apk(sb, ["info", "-v"])).out, /^zlib-1\.3\.1-r1$/m);
    });
  } finally {
    for (const r of [other, tamperedIndex, tamperedData, tamperedControl]) await r.close();
  }
});

test("the Trivy report lists the pending fixes for the alpine family", () => {
  const report = alpineLabTrivyReport() as {
    Metadata: { OS: { Family: string; Name: string } };
    Results: { Type: string; Vulnerabilities: { PkgName: string; FixedVersion: string }[] }[];
  };
  assert.deepEqual(report.Metadata.OS, { Family: "alpine", Name: "3.20.3" });
  assert.equal(report.Results[0]!.Type, "alpine");
  assert.equal(report.Results[0]!.Vulnerabilities.length, ALPINE_LAB_FIXES.length);
  const staticReport = alpineLabTrivyReport({ variant: "static" }) as typeof report;
  assert.ok(!staticReport.Results[0]!.Vulnerabilities.some((v) => v.PkgName === "busybox"));
});
