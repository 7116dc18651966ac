/**
 * The rpm sandbox engine against a real dnf (Debian's dnf 4.14 with rpm 4.18, in a bookworm lab
 * image: the same dnf the rpm lab's images carry) in runc, upgrading packages built by rpmbuild,
 * signed with rpmsign and published by createrepo_c on loopback. The image's own rpm judges the
 * result (`rpm -q`, `rpm -V`), and the overlay's upper dir shows what would become the layer.
 */
import assert from "node:assert/strict";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join, normalize } from "node:path";
import type { DistroInfo } from "../../src/distro/detect.ts";
import { isSutureError } from "../../src/errors/errors.ts";
import type { EngineContext, Targets } from "../../src/patch/engines/engine.ts";
import { rpmSandboxEngine } from "../../src/patch/engines/rpm/sandbox.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import type { Sandbox } from "../../src/sandbox/sandbox.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { bookwormMinbase, type LabImage, type LabRecipe, labImage } from "../lab/images.ts";
import { inLayoutImage } from "../lab/in-image.ts";
import { requiring } from "../lab/requirements.ts";
import { buildRpm, createRepo, type RpmTestKey, rpmTestKey, signRpms } from "../lab/rpm.ts";

const { after, before, test } = await requiring(
  "root",
  "runc",
  "loopback",
  "tool:rpmbuild",
  "tool:rpmsign",
  "tool:createrepo_c",
  "tool:gpg",
);

/** bookwormMinbase with Debian's dnf and rpm: a real dnf 4 to run in runc. */
const bookwormDnf: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormDnf",
  parent: bookwormMinbase,
  steps: [{ kind: "apt-install", packages: ["dnf", "rpm"] }],
};

/** bookwormMinbase with Debian's zypper (libzypp) and rpm. */
const bookwormZypper: LabRecipe = {
  ...bookwormMinbase,
  name: "bookwormZypper",
  parent: bookwormMinbase,
  steps: [{ kind: "apt-install", packages: ["zypper", "rpm"] }],
};

/** The repository URL the image's repo file names; --mirror points it at the loopback server. */
const REPO_URL = "http://rpm.lab.invalid/lab/9/x86_64";
const KEY_PATH = "/etc/pki/rpm-gpg/RPM-GPG-KEY-lab";

interface Served {
  url: string;
  requests: string[];
  close: () => Promise<void>;
}

/** A static server of `dir` on 127.0.0.1 that records the paths asked for. */
async function serve(dir: string): Promise<Served> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    requests.push(path);
    const file = join(dir, path);
    stat(file).then(
      (st) => {
        if (!st.isFile()) throw new Error("not a file");
        res.writeHead(200, { "content-length": st.size });
        createReadStream(file).pipe(res);
      },
      () => {
        res.writeHead(404).end();
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

let work: string;
let lab: LabImage;
let zypperLab: LabImage;
let key: RpmTestKey;
let other: RpmTestKey;
let oldRpms: string[];
let good: Served;
let foreign: Served;
let tampered: Served;
/** The good packages with a signed repomd.xml, as SUSE's repositories publish them (zypper wants it). */
let signed: Served;
let foreignSigned: Served;

before(async () => {
  await useArchiveMirror();
  work = await mkdtemp("/var/tmp/suture-rpm-sandbox-");
  [key, other] = await Promise.all([rpmTestKey(work, "rsa2048"), rpmTestKey(work, "rsa2048")]);
  lab = await labImage(bookwormDnf);
  zypperLab = await labImage(bookwormZypper);
  const pkg = (name: string, version: string) =>
    buildRpm(work, {
      name,
      version,
      release: "1.el9",
      files: [
        { path: `/usr/share/${name}/version`, content: `${version}\n` },
        { path: `/etc/${name}.conf`, content: `# ${name} ${version}\nsetting = default\n`, config: true },
      ],
    });
  oldRpms = [await pkg("demo", "1.0"), await pkg("demo-extra", "1.0")];
  const newRpms = [await pkg("demo", "1.1"), await pkg("demo-extra", "1.1")];
  await signRpms(key, [...oldRpms, ...newRpms]);
  const foreignRpms = await Promise.all(
    newRpms.map(async (p, i) => {
      const copy = join(work, `foreign-${i}.rpm`);
      await copyFile(p, copy);
      return copy;
    }),
  );
  await signRpms(other, foreignRpms);
  const repo = await createRepo(work, newRpms);
  const foreignRepo = await createRepo(work, foreignRpms);
  // The same repository with one byte of primary changed after repomd.xml listed its checksum.
  const tamperedRepo = await createRepo(work, newRpms);
  const primary = (await readdir(join(tamperedRepo.dir, "repodata"))).find((f) => f.includes("primary.xml"))!;
  const bytes = await readFile(join(tamperedRepo.dir, "repodata", primary));
  bytes[bytes.length - 10]! ^= 0xff;
  await writeFile(join(tamperedRepo.dir, "repodata", primary), bytes);
  const signedRepo = await createRepo(work, newRpms, { key });
  const foreignSignedRepo = await createRepo(work, foreignRpms, { key });
  [good, foreign, tampered, signed, foreignSigned] = await Promise.all([
    serve(repo.dir),
    serve(foreignRepo.dir),
    serve(tamperedRepo.dir),
    serve(signedRepo.dir),
    serve(foreignSignedRepo.dir),
  ]);
});
after(async () => {
  await Promise.all([
    good?.close(),
    foreign?.close(),
    tampered?.close(),
    signed?.close(),
    foreignSigned?.close(),
  ]);
  if (work) await rm(work, { recursive: true, force: true });
});

async function put(sb: Sandbox, path: string, text: string): Promise<void> {
  await mkdir(dirname(join(sb.mergedDir, path)), { recursive: true });
  await writeFile(join(sb.mergedDir, path), text);
}

async function inImage(sb: Sandbox, args: string[]): Promise<string> {
  const r = await sb.run(args, { timeoutMs: 120_000 });
  assert.equal(r.exitCode, 0, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

/**
 * Make the lab image an rpm image as RHEL lays one out: rpm's database in /var/lib/rpm (Debian's
 * rpm keeps it in ~/.rpmdb unless told), the old packages installed by the image's own rpm, the
 * vendor key in /etc/pki/rpm-gpg and a repository file naming it.
 */
async function rpmImage(
  sb: Sandbox,
  repo: { gpgcheck?: string; gpgkey?: boolean; tool?: "dnf" | "zypper" } = {},
): Promise<void> {
  await put(sb, "/etc/rpm/macros.dbpath", "%_dbpath /var/lib/rpm\n");
  await put(sb, KEY_PATH, key.publicArmored);
  const gpgkey = repo.gpgkey === false ? "" : `gpgkey=file://${KEY_PATH}\n`;
  if (repo.tool === "zypper") {
    await put(
      sb,
      "/etc/zypp/repos.d/lab.repo",
      `[lab]\nname=Lab\nenabled=1\nautorefresh=1\nbaseurl=${REPO_URL}/\ntype=rpm-md\ngpgcheck=${repo.gpgcheck ?? "1"}\n${gpgkey}`,
    );
  } else {
    await put(sb, "/etc/dnf/dnf.conf", "[main]\ngpgcheck=1\ninstallonly_limit=3\nbest=False\n");
    await put(
      sb,
      "/etc/yum.repos.d/lab.repo",
      `[lab]\nname=Lab\nbaseurl=${REPO_URL}/\nenabled=1\ngpgcheck=${repo.gpgcheck ?? "1"}\n${gpgkey}`,
    );
  }
  await mkdir(join(sb.mergedDir, "var/lib/rpm"), { recursive: true });
  const drop = join(sb.scratchDir, "old-rpms");
  await mkdir(drop, { recursive: true });
  for (const p of oldRpms) await copyFile(p, join(drop, p.split("/").pop()!));
  // SUSE images carry their vendor's key in rpm's database, which is where zypp trusts keys from.
  const importKey = repo.tool === "zypper" && repo.gpgkey !== false ? ` && rpm --import ${KEY_PATH}` : "";
  const r = await sb.run(["sh", "-c", `rpm -i --nodeps /run/old-rpms/*.rpm${importKey}`], {
    timeoutMs: 120_000,
    mounts: [{ destination: "/run/old-rpms", source: drop, options: ["ro"] }],
  });
  assert.equal(r.exitCode, 0, r.stderr);
  assert.match(
    await inImage(sb, ["rpm", "-q", "demo", "demo-extra"]),
    /^demo-1\.0-1\.el9\.noarch\ndemo-extra-1\.0-1\.el9\.noarch\n$/,
  );
}

function context(
  sb: Sandbox,
  served: Served,
  events: ProgressEvent[],
  extra: Partial<EngineContext> = {},
  tool: "dnf" | "zypper" = "dnf",
): EngineContext {
  const distro = { packageDb: "rpm", packageManager: tool, files: new Map() } as unknown as DistroInfo;
  return {
    platform: { os: "linux", architecture: "amd64" },
    distro,
    cacheDir: join(work, "cache"),
    workDir: sb.scratchDir,
    mirrors: { [REPO_URL]: served.url },
    progress: (e) => events.push(e),
    ...extra,
  };
}

const DEMO: Targets = [{ name: "demo", fixedVersion: "1.1-1.el9", installedVersion: "1.0-1.el9" }];

/** Paths of the overlay's upper dir (what the layer is built from), relative, depth-first. */
async function upperPaths(sb: Sandbox): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for (const e of await readdir(join(sb.upperDir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      out.push(p);
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk("");
  return out;
}

test("a report's package upgraded by the image's dnf from a signed repository behind --mirror; the image's rpm agrees", async () => {
  await inLayoutImage({ ociDir: lab.layoutDir }, work, async (sb) => {
    await rpmImage(sb);
    const events: ProgressEvent[] = [];
    const result = await rpmSandboxEngine.apply(sb, DEMO, context(sb, good, events));
    assert.equal(result.before.get("demo"), "1.0-1.el9");
    assert.equal(result.after.get("demo"), "1.1-1.el9");
    // Only what the report asked for: dnf upgrade NAME leaves the rest alone.
    assert.equal(result.after.get("demo-extra"), "1.0-1.el9");
    assert.match(await inImage(sb, ["rpm", "-q", "demo"]), /^demo-1\.1-1\.el9\.noarch$/m);
    assert.equal((await sb.run(["rpm", "-V", "demo"])).exitCode, 0, "rpm -V demo");
    assert.equal(await readFile(join(sb.mergedDir, "usr/share/demo/version"), "utf8"), "1.1\n");
    // What would be the layer: the package's files and rpm's database, none of dnf's cache or
    // logs, nothing of suture's outside /run.
    const upper = await upperPaths(sb);
    assert.ok(upper.includes("usr/share/demo/version"), upper.join(" "));
    assert.ok(
      upper.some((p) => p.startsWith("var/lib/rpm/")),
      upper.join(" "),
    );
    for (const p of upper) {
      assert.doesNotMatch(p, /^var\/cache\/dnf\/./, p);
      assert.doesNotMatch(p, /^var\/log\/(dnf|hawkey)/, p);
      assert.doesNotMatch(p, /^etc\/yum\.repos\.d\/\d/, p);
    }
    // The mirror was used, the image's own repo file untouched.
    assert.ok(
      good.requests.some((r) => r.endsWith("/repodata/repomd.xml")),
      good.requests.join(" "),
    );
    assert.match(await readFile(join(sb.mergedDir, "etc/yum.repos.d/lab.repo"), "utf8"), /rpm\.lab\.invalid/);
  });
});

test("update-all upgrades every package; a second run reuses the verified metadata and fetches only repomd.xml", async () => {
  const from = good.requests.length;
  await inLayoutImage({ ociDir: lab.layoutDir }, work, async (sb) => {
    await rpmImage(sb);
    const events: ProgressEvent[] = [];
    const result = await rpmSandboxEngine.apply(sb, "all", context(sb, good, events));
    assert.equal(result.after.get("demo"), "1.1-1.el9");
    assert.equal(result.after.get("demo-extra"), "1.1-1.el9");
    assert.ok(
      events.some((e) => e.type === "info" && /cached metadata verified/.test(e.message)),
      "the first test's metadata was seeded",
    );
  });
  const metadata = good.requests.slice(from).filter((r) => r.includes("/repodata/"));
  assert.deepEqual(
    metadata.filter((r) => !r.endsWith("/repomd.xml")),
    [],
    `only repomd.xml is fetched again: ${metadata.join(" ")}`,
  );
  const caches = await readdir(join(work, "cache", "rpm-sandbox", "dnf"));
  assert.equal(caches.length, 1, "one cache for one configuration");
});

test("--keyring: the user's key verifies the packages for the run and is not left in the image's rpm database", async () => {
  const keyring = join(work, "lab.asc");
  await writeFile(keyring, key.publicArmored);
  await inLayoutImage({ ociDir: lab.layoutDir }, work, async (sb) => {
    // A repository without a gpgkey: only --keyring can make its packages verifiable.
    await rpmImage(sb, { gpgkey: false });
    const events: ProgressEvent[] = [];
    const result = await rpmSandboxEngine.apply(
      sb,
      DEMO,
      context(sb, good, events, { keyringFiles: [keyring], cacheDir: join(work, "cache-keyring") }),
    );
    assert.equal(result.after.get("demo"), "1.1-1.el9");
    assert.equal((await sb.run(["rpm", "-q", "gpg-pubkey"])).exitCode, 1, "no gpg-pubkey left behind");
  });
});

test("refused before or by the image's dnf, in one line: foreign signature, tampered primary, gpgcheck=0", async () => {
  const cases: [Served, Partial<EngineContext>, { gpgcheck?: string }, RegExp][] = [
    [foreign, {}, {}, /dnf refused what the repository served.*(GPG|Public key|signature)/i],
    [tampered, {}, {}, /dnf refused what the repository served.*checksum/i],
    [good, {}, { gpgcheck: "0" }, /sets gpgcheck=0/],
  ];
  for (const [served, extra, repo, why] of cases) {
    const from = served.requests.length;
    await inLayoutImage({ ociDir: lab.layoutDir }, work, async (sb) => {
      await rpmImage(sb, repo);
      const events: ProgressEvent[] = [];
      await assert.rejects(
        rpmSandboxEngine.apply(
          sb,
          DEMO,
          context(sb, served, events, { cacheDir: join(work, "cache-bad"), ...extra }),
        ),
        (e: unknown) => {
          assert.ok(isSutureError(e), String(e));
          assert.equal(e.code, "UNTRUSTED", e.message);
          assert.ok(!e.message.includes("\n"), e.message);
          assert.match(e.message, why);
          return true;
        },
      );
      assert.match(
        await inImage(sb, ["rpm", "-q", "demo"]),
        /^demo-1\.0-1\.el9\.noarch$/m,
        "nothing installed",
      );
    });
    if (repo.gpgcheck === "0") assert.equal(served.requests.length, from, "refused before dnf ran");
  }
});

test("zypper: the report's package upgraded from a signed repository, the key trusted through rpm's database; its cache, logs and history log stay out", async () => {
  await inLayoutImage({ ociDir: zypperLab.layoutDir }, work, async (sb) => {
    await rpmImage(sb, { tool: "zypper" });
    const events: ProgressEvent[] = [];
    const result = await rpmSandboxEngine.apply(
      sb,
      DEMO,
      context(sb, signed, events, { cacheDir: join(work, "cache-zypper") }, "zypper"),
    );
    assert.equal(result.before.get("demo"), "1.0-1.el9");
    assert.equal(result.after.get("demo"), "1.1-1.el9");
    assert.equal(result.after.get("demo-extra"), "1.0-1.el9");
    assert.equal((await sb.run(["rpm", "-V", "demo"])).exitCode, 0, "rpm -V demo");
    for (const p of await upperPaths(sb)) {
      assert.doesNotMatch(p, /^var\/cache\/zypp\/./, p);
      assert.doesNotMatch(p, /^var\/log\/zypper\.log|^var\/log\/zypp\//, p);
      assert.doesNotMatch(p, /^etc\/zypp\/repos\.d\/\d/, p);
      // zypp's anonymous id and refresh cookies describe the run, not the image.
      assert.doesNotMatch(p, /^var\/lib\/zypp\/AnonymousUniqueId$|^var\/lib\/YaST2\/cookies$/, p);
    }
    const caches = join(work, "cache-zypper", "rpm-sandbox", "zypper");
    assert.equal((await readdir(caches)).length, 1, "zypper's verified metadata was kept");
  });
  await inLayoutImage({ ociDir: zypperLab.layoutDir }, work, async (sb) => {
    await rpmImage(sb, { tool: "zypper" });
    await assert.rejects(
      rpmSandboxEngine.apply(
        sb,
        DEMO,
        context(sb, foreignSigned, [], { cacheDir: join(work, "cache-zypper-bad") }, "zypper"),
      ),
      (e: unknown) => isSutureError(e) && e.code === "UNTRUSTED" && !e.message.includes("\n"),
    );
    assert.match(
      await inImage(sb, ["rpm", "-q", "demo"]),
      /^demo-1\.0-1\.el9\.noarch$/m,
      "nothing installed",
    );
  });
});
