/**
 * Issue 11: with the image's apt configuration in play (backports, pins, holds, apt.conf), an
 * update-all patch by suture's deb engine installs exactly the package versions the image's own apt
 * (`apt-get upgrade`, sandbox engine) installs. Each lab image is bookwormMinbase plus one small
 * layer of configuration (or trixieMinbase, or a third-party repository layer built here); both
 * engines patch it and the dpkg databases of the two results are compared, then what the
 * configuration is for is checked in the native result.
 */
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { generateKey, readPrivateKey } from "openpgp";
import { installedFromStatus } from "../../src/distro/dpkg/database.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { patchIntoOciDir } from "../lab/cli.ts";
import { buildDeb } from "../lab/deb.ts";
import { type LabRecipeName, labImage, pendingSecurityFixes } from "../lab/images.ts";
import { type LocalAptRepo, startLocalAptRepo } from "../lab/local-apt-repo.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "runc", "loopback", "tool:mmdebstrap", "tool:umoci");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-config-differential-"));
});
after(() => rm(work, { recursive: true, force: true }));

interface Patched {
  /** name → "version status" of every package in the result's dpkg database. */
  packages: Map<string, string>;
  stderr: string;
}

/** An image to patch: a lab recipe, or a layout built by the test (with the flags it needs). */
interface Subject {
  label: string;
  reference: string;
  /** Package name → version before patching. */
  packages: Map<string, string>;
  extraArgs?: string[];
}

async function labSubject(recipe: LabRecipeName): Promise<Subject> {
  const lab = await labImage(recipe);
  return { label: recipe, reference: lab.reference, packages: lab.packages };
}

async function patchWith(subject: Subject, engine: "native" | "sandbox"): Promise<Patched> {
  const out = join(work, `${subject.label}-${engine}`);
  const { stderr } = await patchIntoOciDir({
    reference: subject.reference,
    engine,
    out,
    // Shared by both engines of all images: indexes and .debs are fetched once.
    cacheDir: join(work, "cache"),
    extraArgs: subject.extraArgs,
  });
  const rootfs = join(work, `${subject.label}-${engine}-rootfs`);
  await run("umoci", ["raw", "unpack", "--image", `${out}:${engine}`, rootfs]);
  const status = installedFromStatus(await readFile(join(rootfs, "var/lib/dpkg/status"), "utf8"));
  await rm(rootfs, { recursive: true, force: true });
  return { packages: new Map(status.map((p) => [p.name, `${p.version} ${p.status}`])), stderr };
}

/** Both engines patch the image; their package databases must agree. Returns both and the original. */
async function differential(image: LabRecipeName | Subject) {
  const subject = typeof image === "string" ? await labSubject(image) : image;
  const sandbox = await patchWith(subject, "sandbox");
  const native = await patchWith(subject, "native");
  const differences: string[] = [];
  for (const name of new Set([...sandbox.packages.keys(), ...native.packages.keys()])) {
    const a = sandbox.packages.get(name);
    const b = native.packages.get(name);
    if (a !== b) differences.push(`${name}: apt ${a ?? "absent"} / native ${b ?? "absent"}`);
  }
  assert.deepEqual(differences, [], `the engines installed different versions:\n${differences.join("\n")}`);
  const changed = [...native.packages].filter(([n, v]) => subject.packages.get(n) !== v.split(" ")[0]);
  assert.ok(changed.length > 0, "the update really upgraded something");
  return { subject, sandbox, native, changed };
}

const version = (p: Patched, name: string) => p.packages.get(name)?.split(" ")[0];

test("bookworm-backports enabled: nothing moves to a ~bpo version (NotAutomatic + ButAutomaticUpgrades = 100)", async () => {
  const { native } = await differential("bookwormBackports");
  const backported = [...native.packages].filter(([, v]) => /~bpo/.test(v));
  assert.deepEqual(backported, [], "no backport installed");
});

test("pins and a hold: tzdata stays at its 1001 pin, liblzma5 never comes from bookworm-security, apt stays held", async () => {
  const { native } = await differential("bookwormPinned");
  // The versions before patching, from the parent image (the lab lists only packages in state "install").
  const base = (await labImage("bookwormMinbase")).packages;
  assert.equal(version(native, "tzdata"), base.get("tzdata"));
  assert.equal(version(native, "liblzma5"), base.get("liblzma5"));
  assert.equal(version(native, "apt"), base.get("apt"));
  assert.equal(
    version(native, "libapt-pkg6.0"),
    base.get("libapt-pkg6.0"),
    "kept back: it recommends the newer apt",
  );
  assert.match(native.packages.get("apt") ?? "", / hold ok installed$/, "the hold survives");
});

test('Acquire::Check-Valid-Until "false": the native engine accepts the image, as its apt does', async () => {
  await differential("bookwormNoValidUntil");
});

test("trixie: both engines apply trixie-security's fixes from the sources debian:trixie ships", async () => {
  const pending = await pendingSecurityFixes("trixieMinbase");
  assert.ok(pending.length > 0, "trixie-security has fixes for the image (else this test proves nothing)");
  const { native } = await differential("trixieMinbase");
  const missing = pending
    .filter((f) => !dpkgVersionAtLeast(version(native, f.name) ?? "0", f.fixed))
    .map((f) => `${f.name} ${f.installed} -> ${version(native, f.name)} (trixie-security has ${f.fixed})`);
  assert.deepEqual(missing, [], "every pending trixie-security fix is applied");
});

test('APT::Default-Release "bookworm" beside trixie sources: bookworm-security stays at 500 below the installed 990, so neither engine upgrades anything', async () => {
  const subject = await labSubject("bookwormDefaultRelease");
  assert.ok(
    (await pendingSecurityFixes("bookwormDefaultRelease")).length > 0,
    "bookworm-security has fixes for the image: only the policy keeps them out",
  );
  for (const engine of ["sandbox", "native"] as const) {
    const out = join(work, `${subject.label}-${engine}`);
    const { stdout, stderr } = await run(
      suture,
      ["patch", "-i", subject.reference, "-t", engine, "--oci-dir", out, "--engine", engine],
      { env: { ...process.env, CI: "true" }, maxBuffer: 64 * 1024 * 1024 },
    );
    assert.match(
      `${stdout}${stderr}`,
      /is up to date: nothing to patch, nothing written/,
      `${engine}: nothing to patch`,
    );
    assert.equal(existsSync(out), false, `${engine}: no output`);
  }
});

test('APT::Default-Release "bookworm*" beside trixie sources: bookworm-security\'s fixes come in (990), nothing from trixie (500)', async () => {
  const { native, changed } = await differential("bookwormDefaultReleaseGlob");
  const pending = await pendingSecurityFixes("bookwormDefaultReleaseGlob");
  assert.ok(pending.length > 0, "bookworm-security has fixes for the image");
  for (const f of pending) assert.equal(version(native, f.name), f.fixed, `${f.name} from bookworm-security`);
  const fixed = new Map(pending.map((f) => [f.name, f.fixed]));
  const fromElsewhere = changed.filter(
    ([n, v]) => fixed.get(n) !== v.split(" ")[0] && !/[+~]deb12u\d+ /.test(v),
  );
  assert.deepEqual(
    fromElsewhere,
    [],
    "every upgrade is bookworm-security's fix or a bookworm update (deb12uN)",
  );
  const trixie = [...native.packages].filter(([, v]) => /[+~]deb13/.test(v));
  assert.deepEqual(trixie, [], "nothing from trixie");
  assert.match(version(native, "apt") ?? "", /^2\.6\./, "apt stays at bookworm's 2.6 (trixie has 3.x)");
});

/** The third-party repository as the image names it; `--mirror` sends both engines to the loopback one. */
const THIRD_PARTY_URI = "http://thirdparty.suture.test/debian";

/**
 * bookwormMinbase plus a layer made the way an image build makes it: a third-party source with its
 * own Signed-By key, and that source's package suture-demo 1.0 installed by dpkg itself (in a
 * chroot of the unpacked image), repacked by umoci as a diff layer.
 */
async function thirdPartyImage(publicKey: string, demo10: string): Promise<Subject> {
  const minbase = await labImage("bookwormMinbase");
  const layout = join(work, "thirdparty-layout");
  const bundle = join(work, "thirdparty-bundle");
  await run("cp", ["-a", minbase.layoutDir, layout]);
  await run("umoci", ["unpack", "--image", `${layout}:latest`, bundle]);
  const rootfs = join(bundle, "rootfs");
  await mkdir(join(rootfs, "etc/apt/keyrings"), { recursive: true });
  await writeFile(join(rootfs, "etc/apt/keyrings/suture-demo.asc"), publicKey, { mode: 0o644 });
  await writeFile(
    join(rootfs, "etc/apt/sources.list.d/suture-demo.sources"),
    [
      "Types: deb",
      `URIs: ${THIRD_PARTY_URI}`,
      "Suites: bookworm",
      "Components: main",
      "Signed-By: /etc/apt/keyrings/suture-demo.asc",
      "",
    ].join("\n"),
    { mode: 0o644 },
  );
  await copyFile(demo10, join(rootfs, "suture-demo.deb"));
  await run("chroot", [rootfs, "dpkg", "-i", "/suture-demo.deb"]);
  await rm(join(rootfs, "suture-demo.deb"));
  const status = installedFromStatus(await readFile(join(rootfs, "var/lib/dpkg/status"), "utf8"));
  await run("umoci", [
    "repack",
    "--image",
    `${layout}:latest`,
    "--history.created_by",
    "suture test: add the suture-demo repository and dpkg -i suture-demo 1.0",
    bundle,
  ]);
  await rm(bundle, { recursive: true, force: true });
  return {
    label: "thirdparty",
    reference: `oci:${layout}:latest`,
    packages: new Map(status.map((p) => [p.name, p.version])),
    extraArgs: ["--mirror", `${THIRD_PARTY_URI}=${repo?.url}/debian`],
  };
}

let repo: LocalAptRepo | undefined;
after(() => repo?.stop());

const demoControl = (v: string) =>
  [
    "Package: suture-demo",
    `Version: ${v}`,
    "Architecture: all",
    "Maintainer: suture test <test@example.org>",
    "Description: a third-party package for the engine differential",
    "",
  ].join("\n");

test("a third-party repository with its own key: suture-demo 1.0 -> 1.1 from it, Debian's fixes from bookworm-security", async () => {
  const key = await generateKey({
    userIDs: [{ name: "suture-demo third-party archive" }],
    format: "armored",
  });
  const debs = join(work, "debs");
  await mkdir(debs);
  const deb = (v: string) =>
    buildDeb(join(debs, `suture-demo_${v}_all.deb`), demoControl(v), [
      { path: "usr/share/suture-demo/VERSION", content: `${v}\n` },
    ]);
  const demo10 = await deb("1.0");
  const demo11 = await deb("1.1");
  repo = await startLocalAptRepo({
    suites: [{ archive: "debian", suite: "bookworm" }],
    debs: [
      { path: demo10, package: "suture-demo", version: "1.0", architecture: "all" },
      { path: demo11, package: "suture-demo", version: "1.1", architecture: "all" },
    ],
    signingKey: await readPrivateKey({ armoredKey: key.privateKey }),
  });
  const subject = await thirdPartyImage(key.publicKey, demo10);
  assert.equal(subject.packages.get("suture-demo"), "1.0", "dpkg installed suture-demo 1.0 in the image");
  const { native, sandbox, changed } = await differential(subject);
  assert.equal(version(native, "suture-demo"), "1.1");
  assert.equal(version(sandbox, "suture-demo"), "1.1");
  const pending = await pendingSecurityFixes("bookwormMinbase");
  assert.ok(pending.length > 0, "bookworm-security has fixes for the image");
  for (const f of pending) assert.equal(version(native, f.name), f.fixed, `${f.name} from bookworm-security`);
  assert.deepEqual(
    changed.map(([n]) => n).sort(),
    [...pending.map((f) => f.name), "suture-demo"].sort(),
    "exactly the security fixes and suture-demo changed",
  );
  assert.ok(
    repo.requests.includes("/debian/pool/main/suture-demo_1.1_all.deb"),
    `suture-demo 1.1 came from the third-party repository: ${repo.requests.join(" ")}`,
  );
});

function dpkgVersionAtLeast(a: string, b: string): boolean {
  return spawnSync("dpkg", ["--compare-versions", a, "ge", b]).status === 0;
}
