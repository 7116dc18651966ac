/**
 * The native rpm engine's plan and download step against signed rpm-md repositories served on
 * 127.0.0.1 (node:http), built here with the host's rpmbuild, rpmsign, gpg and createrepo_c
 * (test/lab/rpm.ts): an "old" libtiny 3.0.7-27 and tinyapp (which requires libtiny at its exact
 * EVR, as openssl requires openssl-libs) installed into a real sqlite rpmdb by the host's rpm,
 * and their signed -28 builds in the repository. The root is laid out as a RHEL 9 image: its
 * repository file with `$releasever`/`$basearch`, the vendor key under /etc/pki/rpm-gpg. The
 * server then lies in the ways a real mirror cannot be made to: tampered repomd.xml and
 * primary.xml, foreign signatures, packages that are not the ones listed, a gpgcheck=0
 * repository. Each is one UNTRUSTED line naming the repository, and nothing is written.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cp, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { detectDistroInRoot } from "../../src/distro/detect.ts";
import { parseOsRelease } from "../../src/distro/os-release.ts";
import { isSutureError } from "../../src/errors/errors.ts";
import type { EngineContext, EngineSandbox, Targets } from "../../src/patch/engines/engine.ts";
import { downloadRpmPackages } from "../../src/patch/engines/rpm/native/fetch.ts";
import { nativeRpmEngine } from "../../src/patch/engines/rpm/native/native.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { inLayoutImage } from "../lab/in-image.ts";
import { needs, requiring } from "../lab/requirements.ts";
import { buildRpm, createRepo, type RpmTestKey, rpmTestKey, signRpms, tool } from "../lab/rpm.ts";
import {
  RPM_LAB_EDITED_CONFIG,
  RPM_LAB_KINDS,
  type RpmLabKind,
  type RpmTestRepo,
  rpmLabFixes,
  rpmLabImage,
  startRpmTestRepo,
} from "../lab/rpm-lab.ts";

const { test, before, after } = await requiring(
  "loopback",
  "tool:rpmbuild",
  "tool:rpmsign",
  "tool:rpm",
  "tool:createrepo_c",
  "tool:gpg",
);

const TARGET = { name: "libtiny", fixedVersion: "3.0.7-28" };
// Resolved before any test is registered: an await between test() calls lets after() run early.
const withLab = await needs("root", "runc", "tool:umoci", "tool:mmdebstrap");

const OS_RELEASE = 'ID="rhel"\nVERSION_ID="9.4"\nPRETTY_NAME="Lab RHEL 9.4"\n';
const KEY_PATH = "/etc/pki/rpm-gpg/RPM-GPG-KEY-lab";

let work: string;
let root: string;
let labKey: RpmTestKey;
let otherKey: RpmTestKey;
let labKeyFile: string;
/** The -28 builds signed by the lab key, by name. */
const signed = new Map<string, string>();
/** The same builds signed by a key the image does not trust. */
const foreign = new Map<string, string>();
let server: Server;
let base: string;
/** URL path → bytes the server answers with; anything else is a 404. */
const files = new Map<string, Buffer>();

async function newBuild(dir: string, name: string): Promise<string> {
  return buildRpm(dir, {
    name,
    version: "3.0.7",
    release: "28",
    files: [{ path: `/usr/lib/${name}.txt`, content: `${name} 28\n` }],
    ...(name === "tinyapp" ? { requires: ["libtiny = 3.0.7-28"] } : {}),
  });
}

/** Serve `rpms` as the lab repository at /lab/9.4/x86_64/ (what the image's $releasever/$basearch expand to). */
async function serveRepo(
  rpms: readonly string[],
  options: { key?: RpmTestKey; edit?: (repoDir: string) => Promise<void> } = {},
): Promise<void> {
  const repo = await createRepo(work, rpms, {
    compress: "zstd",
    ...(options.key ? { key: options.key } : {}),
  });
  await options.edit?.(repo.dir);
  files.clear();
  const walk = async (dir: string, prefix: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) await walk(join(dir, entry.name), `${prefix}/${entry.name}`);
      else files.set(`${prefix}/${entry.name}`, await readFile(join(dir, entry.name)));
    }
  };
  await walk(repo.dir, "/lab/9.4/x86_64");
}

async function writeRepoFile(settings: string): Promise<void> {
  await writeFile(
    join(root, "etc/yum.repos.d/lab.repo"),
    `[lab-baseos]\nname=Lab BaseOS $releasever\nbaseurl=${base}/lab/$releasever/$basearch/\nenabled=1\ngpgkey=file://${KEY_PATH}\n${settings}`,
  );
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-rpm-plan-"));
  root = join(work, "root");
  [labKey, otherKey] = await Promise.all([rpmTestKey(work, "rsa2048"), rpmTestKey(work, "ed25519")]);
  labKeyFile = join(work, "lab-key.asc");
  await writeFile(labKeyFile, labKey.publicArmored);
  // The installed -27 builds, in a real sqlite rpmdb written by the host's rpm.
  const old = [
    await buildRpm(work, {
      name: "libtiny",
      version: "3.0.7",
      release: "27",
      files: [{ path: "/usr/lib/libtiny.txt", content: "libtiny 27\n" }],
    }),
    await buildRpm(work, {
      name: "tinyapp",
      version: "3.0.7",
      release: "27",
      requires: ["libtiny = 3.0.7-27"],
      files: [{ path: "/usr/lib/tinyapp.txt", content: "tinyapp 27\n" }],
    }),
  ];
  await mkdir(join(root, "etc/yum.repos.d"), { recursive: true });
  await mkdir(join(root, "etc/pki/rpm-gpg"), { recursive: true });
  await writeFile(join(root, "etc/os-release"), OS_RELEASE);
  await writeFile(join(root, KEY_PATH.slice(1)), labKey.publicArmored);
  await tool("rpm", [
    "--root",
    root,
    "--dbpath",
    "/var/lib/rpm",
    "--define",
    "_db_backend sqlite",
    "-i",
    "--justdb",
    "--nodeps",
    "--nosignature",
    ...old,
  ]);
  for (const [keys, map] of [
    [labKey, signed],
    [otherKey, foreign],
  ] as const) {
    const dir = await mkdtemp(join(work, "builds-"));
    for (const name of ["libtiny", "tinyapp"]) map.set(name, await newBuild(dir, name));
    await signRpms(keys, [...map.values()]);
  }
  server = createServer((req, res) => {
    const body = files.get(new URL(req.url ?? "/", "http://x").pathname);
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-length": body.length }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server?.close();
  await rm(work, { recursive: true, force: true });
});

function sandbox(): EngineSandbox {
  return {
    mergedDir: root,
    run: () => {
      throw new Error("the plan runs nothing in the image");
    },
  };
}

function context(
  cacheDir: string,
  events: ProgressEvent[] = [],
  extra: Partial<EngineContext> = {},
): EngineContext {
  return {
    platform: { architecture: "amd64", os: "linux" },
    distro: {
      packageDb: "rpm",
      packageManager: "none",
      osRelease: parseOsRelease(OS_RELEASE),
      files: new Map(),
    },
    cacheDir,
    workDir: work,
    progress: (e) => events.push(e),
    ...extra,
  };
}

const plan = (ctx: EngineContext, targets: Targets = [TARGET]) =>
  nativeRpmEngine.plan!(sandbox(), targets, ctx);

/** Every path under `dir` with its content hash: what "nothing was written" is checked against. */
async function snapshot(dir: string): Promise<string> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isSymbolicLink()) out.push(`${p} -> ${await readlink(p)}`);
      else if (e.isFile())
        out.push(
          `${p} ${createHash("sha256")
            .update(await readFile(p))
            .digest("hex")}`,
        );
      else out.push(`${p} (special)`);
    }
  };
  await walk(dir);
  return out.sort().join("\n");
}

const oneLine = (e: unknown, code: string, pattern: RegExp) =>
  isSutureError(e) && e.code === code && !e.message.includes("\n") && pattern.test(e.message);

test("plan: the target and what requires it at its exact EVR, from the signed repository the image's own repo file names", async () => {
  await writeRepoFile("gpgcheck=1\nrepo_gpgcheck=1\n");
  await serveRepo([...signed.values()], { key: labKey });
  const events: ProgressEvent[] = [];
  const cache = await mkdtemp(join(work, "cache-"));
  const before = await snapshot(root);
  const p = await plan(context(cache, events));
  assert.deepEqual(
    p.install.map((i) => `${i.name} ${i.from} -> ${i.to}: ${i.reason}`),
    [
      "libtiny 3.0.7-27 -> 3.0.7-28: target",
      "tinyapp 3.0.7-27 -> 3.0.7-28: tinyapp 3.0.7-27 needs libtiny = 3.0.7-27, which the upgrade of libtiny no longer provides",
    ],
  );
  const digest = (name: string) =>
    readFile(signed.get(name)!).then((b) => `sha256:${createHash("sha256").update(b).digest("hex")}`);
  assert.deepEqual(
    p.install.map((i) => i.digest),
    [await digest("libtiny"), await digest("tinyapp")],
  );
  assert.deepEqual(p.failed, []);
  // No /bin/sh in this root: scriptlets cannot run, and the result cache knows it.
  assert.ok(p.reuseKey?.includes("scripts=false"));
  assert.ok(p.reuseKey?.includes("arch=x86_64"));
  const info = events.find((e) => e.type === "info" && e.message.startsWith("rpm repository lab-baseos"));
  assert.match(
    (info as { message: string }).message,
    /\/lab\/9\.4\/x86_64\): 2 packages, repomd\.xml signed by suture rpm test rsa2048/,
  );
  assert.equal(await snapshot(root), before, "a plan writes nothing into the image");

  // Update-all finds the same two; a second plan reads primary.xml from the cache (verified again).
  const all = await plan(context(cache));
  assert.deepEqual(
    all.install.map((i) => i.name),
    ["libtiny", "tinyapp"],
  );
  assert.ok((await readdir(join(cache, "rpm-native/metadata"))).some((f) => f.startsWith("primary-sha256-")));
});

test("download: each package is proven (checksum, header, identity, signature by the image's key) into the store, and reused", async () => {
  await writeRepoFile("gpgcheck=1\n");
  await serveRepo([...signed.values()]);
  const cache = await mkdtemp(join(work, "cache-"));
  const ctx = context(cache);
  const p = (await plan(ctx)) as Awaited<ReturnType<typeof plan>> & {
    choices: unknown[];
    trust: Map<string, unknown>;
  };
  const items = (p.choices as { pkg: never; repo: { id: string } }[]).map((c) => ({
    pkg: c.pkg,
    repository: p.trust.get(c.repo.id) as never,
  }));
  const fetched = await downloadRpmPackages(items, { cacheDir: join(cache, "rpm-native") });
  assert.deepEqual(
    fetched.map((f) => `${f.pkg.nevra.name}-${f.pkg.nevra.version}-${f.pkg.nevra.release}`),
    ["libtiny-3.0.7-28", "tinyapp-3.0.7-28"],
  );
  for (const f of fetched) assert.ok(f.file.startsWith(join(cache, "rpm-native/packages/sha256-")));
  const events: ProgressEvent[] = [];
  files.clear(); // the server is gone: the store must serve
  await downloadRpmPackages(items, { cacheDir: join(cache, "rpm-native"), progress: (e) => events.push(e) });
  assert.equal(events.filter((e) => e.type === "blob" && e.action === "exists").length, 2);
});

test("a repomd.xml changed after signing, or signed by a key the image does not trust: UNTRUSTED, nothing written", async () => {
  await writeRepoFile("gpgcheck=1\nrepo_gpgcheck=1\n");
  const cache = await mkdtemp(join(work, "cache-"));
  const before = await snapshot(root);
  await serveRepo([...signed.values()], { key: otherKey });
  await assert.rejects(plan(context(cache)), (e) =>
    oneLine(e, "UNTRUSTED", /repomd\.xml of repository lab-baseos .*(no|not|unknown).*key/i),
  );
  await serveRepo([...signed.values()], {
    key: labKey,
    edit: async (dir) => {
      const path = join(dir, "repodata/repomd.xml");
      await writeFile(path, (await readFile(path, "utf8")).replace(/<revision>\d+/, "<revision>1"));
    },
  });
  await assert.rejects(plan(context(cache)), (e) =>
    oneLine(e, "UNTRUSTED", /repomd\.xml of repository lab-baseos/),
  );
  // Unsigned where the repository requires a signature.
  await serveRepo([...signed.values()]);
  await assert.rejects(plan(context(cache)), (e) => oneLine(e, "UNTRUSTED", /no repomd\.xml\.asc signature/));
  assert.equal(await snapshot(root), before);
});

test("a primary.xml that is not the one repomd.xml lists: UNTRUSTED naming the repository", async () => {
  await writeRepoFile("gpgcheck=1\n");
  await serveRepo([...signed.values()], {
    edit: async (dir) => {
      const [primary] = (await readdir(join(dir, "repodata"))).filter((f) => f.includes("primary.xml"));
      const path = join(dir, "repodata", primary!);
      const bytes = await readFile(path);
      bytes[bytes.length - 5]! ^= 0xff;
      await writeFile(path, bytes);
    },
  });
  const cache = await mkdtemp(join(work, "cache-"));
  await assert.rejects(plan(context(cache)), (e) =>
    oneLine(e, "UNTRUSTED", /primary\.xml of repository lab-baseos .*(sha256|bytes).*use another mirror/),
  );
  assert.deepEqual(
    await readdir(join(cache, "rpm-native/metadata")),
    [],
    "a tampered primary is never cached",
  );
});

test("a package signed by a key the image does not trust, or whose bytes are not the listed ones: UNTRUSTED naming package and repository", async () => {
  await writeRepoFile("gpgcheck=1\n");
  const cache = await mkdtemp(join(work, "cache-"));
  await serveRepo([...foreign.values()]);
  const p = await plan(context(cache));
  await assert.rejects(nativeRpmEngine.apply(sandbox(), [TARGET], context(cache), p), (e) =>
    oneLine(
      e,
      "UNTRUSTED",
      /(libtiny|tinyapp)-3\.0\.7-28\.noarch .*repository lab-baseos.*(trusts no key|--keyring)/,
    ),
  );
  assert.deepEqual(
    await readdir(join(cache, "rpm-native/packages")),
    [],
    "nothing unproven enters the store",
  );

  // The repository lists the signed build; the mirror serves another one (same size, other bytes).
  await serveRepo([...signed.values()]);
  const listed = await plan(context(cache));
  for (const [path, bytes] of files)
    if (path.endsWith(".rpm")) {
      const copy = Buffer.from(bytes);
      copy[copy.length - 3]! ^= 0xff;
      files.set(path, copy);
    }
  await assert.rejects(nativeRpmEngine.apply(sandbox(), [TARGET], context(cache), listed), (e) =>
    oneLine(
      e,
      "UNTRUSTED",
      /(libtiny|tinyapp)-3\.0\.7-28\.noarch .*repository lab-baseos\).* has sha256 .* but the repository lists/,
    ),
  );
  assert.deepEqual(await readdir(join(cache, "rpm-native/packages")), []);
});

test("gpgcheck=0 in the image: refused in one line, unless --keyring keys verify the packages or --allow-insecure-repositories says so", async () => {
  await writeRepoFile("gpgcheck=0\n");
  await serveRepo([...signed.values()]);
  const cache = await mkdtemp(join(work, "cache-"));
  await assert.rejects(plan(context(cache)), (e) =>
    oneLine(
      e,
      "UNTRUSTED",
      /repository lab-baseos, which sets gpgcheck=0 .*--keyring.*--allow-insecure-repositories/,
    ),
  );
  const withKey = await plan(context(cache, [], { keyringFiles: [labKeyFile] }));
  assert.equal(withKey.install.length, 2);
  const insecure = await plan(context(cache, [], { allowInsecureRepositories: true }));
  assert.match(
    insecure.warnings.join("\n"),
    /lab-baseos sets gpgcheck=0: its packages are installed unsigned/,
  );
  assert.ok(insecure.reuseKey?.includes("unsigned=lab-baseos"));

  // --keyring with a key that did not sign them: the download is refused.
  const otherFile = join(work, "other-key.asc");
  await writeFile(otherFile, otherKey.publicArmored);
  const wrong = await plan(context(cache, [], { keyringFiles: [otherFile] }));
  await assert.rejects(
    nativeRpmEngine.apply(sandbox(), [TARGET], context(cache, [], { keyringFiles: [otherFile] }), wrong),
    (e) => oneLine(e, "UNTRUSTED", /(libtiny|tinyapp).*sets gpgcheck=0, so only --keyring keys are trusted/),
  );
});

test("an unreachable repository is an error (dnf's skip_if_unavailable=False), a warning where the repo file allows skipping it", async () => {
  await writeRepoFile("gpgcheck=1\n");
  files.clear();
  const cache = await mkdtemp(join(work, "cache-"));
  await assert.rejects(plan(context(cache)), (e) =>
    oneLine(
      e,
      "NOT_FOUND",
      /repository lab-baseos \(\/etc\/yum\.repos\.d\/lab\.repo:1\) cannot be read: .*skip_if_unavailable=False/,
    ),
  );
  await writeRepoFile("gpgcheck=1\nskip_if_unavailable=1\n");
  const p = await plan(context(cache));
  assert.match(p.warnings.join("\n"), /repository lab-baseos is left out, as its skip_if_unavailable=1 says/);
  assert.match(p.failed[0]!.reason, /no enabled repository of the image offers it/);

  await rm(join(root, "etc/yum.repos.d/lab.repo"));
  await assert.rejects(plan(context(cache)), (e) => oneLine(e, "NOT_FOUND", /enables no rpm repository/));
  await writeRepoFile("gpgcheck=1\n");
});

test("apply: the planned packages installed into a copy of the root, its rpmdb written so that the host's rpm -qa and rpm -V agree", async () => {
  await writeRepoFile("gpgcheck=1\n");
  await serveRepo([...signed.values()]);
  const copy = join(work, "apply-root");
  await cp(root, copy, { recursive: true, verbatimSymlinks: true });
  const cache = await mkdtemp(join(work, "cache-"));
  const events: ProgressEvent[] = [];
  const target: EngineSandbox = { ...sandbox(), mergedDir: copy };
  const p = await nativeRpmEngine.plan!(target, [TARGET], context(cache));
  const result = await nativeRpmEngine.apply(target, [TARGET], context(cache, events), p);
  assert.equal(result.before.get("libtiny"), "3.0.7-27");
  assert.equal(result.after.get("libtiny"), "3.0.7-28");
  assert.equal(result.after.get("tinyapp"), "3.0.7-28");
  assert.deepEqual(result.failed, []);
  assert.equal(await readFile(join(copy, "usr/lib/libtiny.txt"), "utf8"), "libtiny 28\n");
  const rpm = (...args: string[]) => tool("rpm", ["--root", copy, "--dbpath", "/var/lib/rpm", ...args]);
  assert.deepEqual((await rpm("-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}\\n")).trim().split("\n").sort(), [
    "libtiny-3.0.7-28",
    "tinyapp-3.0.7-28",
  ]);
  assert.equal((await rpm("-V", "libtiny", "tinyapp")).trim(), "");
  assert.deepEqual(
    events.filter((e) => e.type === "package").map((e) => (e as { name: string }).name),
    ["libtiny", "tinyapp"],
  );
});

test("metalink and mirrorlist repositories (Fedora, Rocky): found through their list, --mirror applied to both, a metalink's hashes checked", async () => {
  const ML = "https://mirrors.example.invalid";
  const CDN = "https://cdn.example.invalid";
  const ctx = (cache: string) => context(cache, [], { mirrors: { [ML]: `${base}/ml`, [CDN]: base } });
  await serveRepo([...signed.values()]);
  const repomd = files.get("/lab/9.4/x86_64/repodata/repomd.xml")!;
  const metalink = (hash: string) =>
    Buffer.from(
      `<?xml version="1.0"?><metalink version="3.0" xmlns="http://www.metalinker.org/"><files><file name="repomd.xml"><verification><hash type="sha256">${hash}</hash></verification><resources><url protocol="https" preference="100">${CDN}/lab/9.4/x86_64/repodata/repomd.xml</url></resources></file></files></metalink>`,
    );
  await writeFile(
    join(root, "etc/yum.repos.d/lab.repo"),
    `[lab-baseos]\nmetalink=${ML}/metalink?repo=lab-$releasever&arch=$basearch\ngpgcheck=1\ngpgkey=file://${KEY_PATH}\n`,
  );
  files.set("/ml/metalink", metalink(createHash("sha256").update(repomd).digest("hex")));
  const cache = await mkdtemp(join(work, "cache-"));
  assert.deepEqual(
    (await plan(ctx(cache))).install.map((i) => i.name),
    ["libtiny", "tinyapp"],
  );

  files.set("/ml/metalink", metalink("0".repeat(64)));
  await assert.rejects(plan(ctx(cache)), (e) =>
    oneLine(e, "UNTRUSTED", /repomd\.xml of repository lab-baseos .*none of the versions its metalink lists/),
  );

  files.delete("/ml/metalink");
  files.set("/ml/mirrorlist", Buffer.from(`# lab\n${CDN}/nowhere/\n${CDN}/lab/9.4/x86_64/\n`));
  await writeFile(
    join(root, "etc/yum.repos.d/lab.repo"),
    `[lab-baseos]\n#baseurl=${CDN}/lab/$releasever/$basearch/\nmirrorlist=${ML}/mirrorlist?arch=$basearch\ngpgcheck=1\ngpgkey=file://${KEY_PATH}\n`,
  );
  // The first mirror has no repository: the next one is tried, as dnf tries them.
  assert.deepEqual(
    (await plan(ctx(cache))).install.map((i) => i.name),
    ["libtiny", "tinyapp"],
  );
  await writeRepoFile("gpgcheck=1\n");
});

// ---------------------------------------------------------------------------------------------
// The RPM lab (test/lab/rpm-lab.ts): its images (dnf/Rocky, zypper/openSUSE, tdnf/Azure Linux,
// micro/UBI without shell or rpm, distroless/Azure Linux with only an rpm manifest) and its
// signed repository of Debian's bookworm-security fixes converted to rpms.

async function labPlan(
  kind: RpmLabKind,
  repo: RpmTestRepo,
  targets: Targets | "report",
  extra: Partial<EngineContext> = {},
) {
  const image = await rpmLabImage(kind);
  const fixes = await rpmLabFixes(kind);
  const [from, to] = repo.mirrorArg(kind).split(/=(.*)/s) as [string, string];
  const cache = await mkdtemp(join(work, "cache-"));
  return inLayoutImage(image, work, async (sb) => {
    const distro = await detectDistroInRoot(sb.mergedDir);
    const ctx = context(cache, [], { distro, mirrors: { [from]: to }, ...extra });
    const before = await snapshot(sb.mergedDir);
    const wanted =
      targets === "report"
        ? fixes.map((f) => ({ name: f.name, fixedVersion: f.fixed, installedVersion: f.installed }))
        : targets;
    const p = await nativeRpmEngine.plan!(sb, wanted, ctx);
    assert.equal(await snapshot(sb.mergedDir), before, "a plan changes nothing in the image");
    return { p, fixes, ctx, sb };
  });
}

for (const kind of RPM_LAB_KINDS) {
  test(
    `lab ${kind}: the report's fixes and update-all plan exactly the fixed builds, verified with the image's own keys`,
    withLab,
    async () => {
      const repo = await startRpmTestRepo();
      try {
        for (const targets of ["report", "all"] as const) {
          const { p, fixes } = await labPlan(kind, repo, targets);
          assert.deepEqual(p.failed, [], kind);
          assert.deepEqual(
            p.install.map((i) => `${i.name} ${i.from} -> ${i.to}`).sort(),
            fixes.map((f) => `${f.name} ${f.installed} -> ${f.fixed}`).sort(),
            `${kind} ${targets}`,
          );
          assert.ok(p.install.every((i) => /^sha256:[0-9a-f]{64}$/.test(i.digest)));
        }
      } finally {
        await repo.close();
      }
    },
  );
}

for (const [tamper, when, message] of [
  ["repomd", "plan", /repomd\.xml of repository .* signature/i],
  ["primary", "plan", /primary\.xml of repository .*(repomd\.xml|the repository) lists/],
  ["package-other-key", "apply", /repository .*(trusts no key|--keyring)/],
  ["package-bytes", "apply", /repository .*(but the repository lists|digest|tampered)/],
  ["package-unsigned", "apply", /is not signed/],
] as const) {
  test(
    `lab: a repository with ${tamper} is refused in one line, nothing written to the image`,
    withLab,
    async () => {
      const repo = await startRpmTestRepo({ tamper });
      try {
        const image = await rpmLabImage("distroless");
        const [from, to] = repo.mirrorArg("distroless").split(/=(.*)/s) as [string, string];
        const cache = await mkdtemp(join(work, "cache-"));
        await inLayoutImage(image, work, async (sb) => {
          const distro = await detectDistroInRoot(sb.mergedDir);
          const ctx = context(cache, [], { distro, mirrors: { [from]: to } });
          const before = await snapshot(sb.mergedDir);
          const attempt =
            when === "plan" ? nativeRpmEngine.plan!(sb, "all", ctx) : nativeRpmEngine.apply(sb, "all", ctx);
          await assert.rejects(attempt, (e) => oneLine(e, "UNTRUSTED", message));
          assert.equal(await snapshot(sb.mergedDir), before);
        });
      } finally {
        await repo.close();
      }
    },
  );
}

for (const kind of ["micro", "distroless"] as const) {
  test(
    `lab ${kind}: apply with no shell and no rpm in the image: every fix installed, the image's own record of its packages says so`,
    withLab,
    async () => {
      const repo = await startRpmTestRepo();
      try {
        const image = await rpmLabImage(kind);
        const fixes = await rpmLabFixes(kind);
        const [from, to] = repo.mirrorArg(kind).split(/=(.*)/s) as [string, string];
        const cache = await mkdtemp(join(work, "cache-"));
        await inLayoutImage(image, work, async (sb) => {
          const distro = await detectDistroInRoot(sb.mergedDir);
          const ctx = context(cache, [], { distro, mirrors: { [from]: to } });
          const targets = fixes.map((f) => ({ name: f.name, fixedVersion: f.fixed }));
          const result = await nativeRpmEngine.apply(sb, targets, ctx);
          for (const f of fixes) assert.equal(result.after.get(f.name), f.fixed, f.name);
          assert.deepEqual(result.failed, []);
          const again = await detectDistroInRoot(sb.mergedDir);
          for (const f of fixes)
            assert.equal(again.installed?.get(f.name), f.fixed, `${kind}: detection reads ${f.name}`);
        });
      } finally {
        await repo.close();
      }
    },
  );
}

test(
  "lab dnf: apply with the image's shell: every fix installed, and the image's own rpm -qa, rpm -Va and dnf check agree",
  withLab,
  async () => {
    const repo = await startRpmTestRepo();
    try {
      const image = await rpmLabImage("dnf");
      const fixes = await rpmLabFixes("dnf");
      const [from, to] = repo.mirrorArg("dnf").split(/=(.*)/s) as [string, string];
      const cache = await mkdtemp(join(work, "cache-"));
      await inLayoutImage(image, work, async (sb) => {
        const distro = await detectDistroInRoot(sb.mergedDir);
        const ctx = context(cache, [], { distro, mirrors: { [from]: to } });
        const targets = fixes.map((f) => ({ name: f.name, fixedVersion: f.fixed }));
        const p = await nativeRpmEngine.plan!(sb, targets, ctx);
        assert.ok(p.reuseKey?.includes("scripts=true"));
        const result = await nativeRpmEngine.apply(sb, targets, ctx, p);
        for (const f of fixes) assert.equal(result.after.get(f.name), f.fixed, f.name);
        const run = async (args: string[]) => {
          const r = await sb.run(args, { timeoutMs: 600_000 });
          return { exitCode: r.exitCode, out: `${r.stdout}${r.stderr}` };
        };
        const qa = await run(["rpm", "-qa", "--qf", "%{NAME} %{EVR}\\n"]);
        assert.equal(qa.exitCode, 0, qa.out);
        const versions = new Map(
          qa.out
            .split("\n")
            .filter(Boolean)
            .map((l) => l.split(" ") as [string, string]),
        );
        for (const f of fixes) assert.equal(versions.get(f.name), f.fixed, `rpm -qa: ${f.name}`);
        // Only the app layer's edits differ from what rpm recorded.
        const verify = await run(["rpm", "-Va"]);
        const changed = verify.out
          .split("\n")
          .filter(Boolean)
          .map((l) => l.replace(/^\S+\s+(c\s+)?/, ""))
          .sort();
        assert.deepEqual(changed, [...RPM_LAB_EDITED_CONFIG].sort(), verify.out);
        const check = await run(["dnf", "check"]);
        assert.equal(check.exitCode, 0, check.out);
        const files = await run([
          "sh",
          "-c",
          "test -f /etc/nginx/nginx.conf.rpmnew && grep -q 'suture lab app' /etc/nginx/nginx.conf && /usr/local/bin/app",
        ]);
        assert.equal(files.exitCode, 0, files.out);
      });
    } finally {
      await repo.close();
    }
  },
);

test("a database the native engine cannot write (SUSE's ndb): apply is refused before anything is fetched, naming --engine sandbox", async () => {
  const suse = join(work, "suse-root");
  await mkdir(join(suse, "usr/lib/sysimage/rpm"), { recursive: true });
  await cp(
    join(import.meta.dirname, "../../../shared/fixtures/rpmdb/sle15-bci/Packages.db"),
    join(suse, "usr/lib/sysimage/rpm/Packages.db"),
  );
  const before = await snapshot(suse);
  const cache = await mkdtemp(join(work, "cache-"));
  await assert.rejects(nativeRpmEngine.apply({ ...sandbox(), mergedDir: suse }, "all", context(cache)), (e) =>
    oneLine(e, "UNSUPPORTED_OS", /Packages\.db is an ndb database: patch with --engine sandbox/),
  );
  assert.equal(await snapshot(suse), before);
  assert.deepEqual(await readdir(cache), [], "nothing fetched");
});

test("a Requires on a path primary.xml does not list is answered from the repository's filelists, checked against repomd.xml", async () => {
  const dir = await mkdtemp(join(work, "filelists-"));
  const tinydata = await buildRpm(dir, {
    name: "tinydata",
    version: "1",
    release: "1",
    files: [{ path: "/usr/share/tinydata/data.txt", content: "data\n" }],
  });
  const tinyapp = await buildRpm(dir, {
    name: "tinyapp",
    version: "3.0.7",
    release: "29",
    requires: ["libtiny = 3.0.7-28", "/usr/share/tinydata/data.txt"],
    files: [{ path: "/usr/lib/tinyapp.txt", content: "tinyapp 29\n" }],
  });
  await signRpms(labKey, [tinydata, tinyapp]);
  await writeRepoFile("gpgcheck=1\n");
  await serveRepo([signed.get("libtiny")!, tinyapp, tinydata]);
  const cache = await mkdtemp(join(work, "cache-"));
  const events: ProgressEvent[] = [];
  const p = await plan(context(cache, events));
  assert.deepEqual(
    p.install.map((i) => `${i.name} ${i.to}`),
    ["libtiny 3.0.7-28", "tinydata 1-1", "tinyapp 3.0.7-29"],
  );
  assert.match(
    p.install[1]!.reason,
    /new dependency of tinyapp 3\.0\.7-29 \(\/usr\/share\/tinydata\/data\.txt\)/,
  );
  assert.ok(events.some((e) => e.type === "step" && e.step === "filelists"));

  // A filelists.xml that is not the one repomd.xml lists.
  for (const [path, bytes] of files)
    if (path.includes("filelists.xml")) {
      const copy = Buffer.from(bytes);
      copy[copy.length - 5]! ^= 0xff;
      files.set(path, copy);
    }
  await assert.rejects(plan(context(await mkdtemp(join(work, "cache-")))), (e) =>
    oneLine(e, "UNTRUSTED", /filelists\.xml of repository lab-baseos .*(repomd\.xml|the repository) lists/),
  );
});
