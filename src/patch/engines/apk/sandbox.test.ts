import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { apkTestKey, buildApkIndex } from "../../../../test/lab/apk.ts";
import { parseApkRepositories } from "../../../distro/apk/config.ts";
import { apkKeyring } from "../../../distro/apk/signature.ts";
import type { ProgressEvent } from "../../../progress/events.ts";
import { trustedKeys } from "./keys.ts";
import { apkFailure, apkGlobalOptions, formatRepositoriesFile, unreachableTargets } from "./sandbox.ts";
import {
  allFresh,
  cachedIndexNames,
  INDEX_MAX_AGE_MINUTES,
  saveIndexes,
  seedIndexes,
  verifiedIndexes,
} from "./sandbox-cache.ts";

const scratch = await mkdtemp(join(tmpdir(), "suture-apk-sandbox-"));
after(() => rm(scratch, { recursive: true, force: true }));

const key = apkTestKey("lab.rsa.pub", 1024);
const otherKey = apkTestKey("lab.rsa.pub", 1024);
const keyring = apkKeyring([{ name: key.name, pem: key.publicPem }], "test");

function indexText(entries: readonly [name: string, version: string][]): string {
  return entries
    .map(([p, v]) => `C:Q1${"A".repeat(27)}=\nP:${p}\nV:${v}\nA:x86_64\nS:1\nI:1\nT:t\nU:u\nL:MIT\n\n`)
    .join("");
}

test("apk's failures: its first ERROR with the lines detailing it, and the exit status apk gave", () => {
  // Real apk-tools 2.14.4 output (Alpine 3.20.3) for a version constraint no package satisfies.
  const e = apkFailure(
    "apk upgrade",
    1,
    `fetch http://127.0.0.1:18931/main/x86_64/APKINDEX.tar.gz
ERROR: unable to select packages:
  demo-1.1-r0:
    breaks: world[demo>2]
`,
  );
  assert.equal(e.code, "PATCH_FAILED");
  assert.equal(
    e.message,
    "apk upgrade failed in the image (exit 1): ERROR: unable to select packages: | demo-1.1-r0: | breaks: world[demo>2]",
  );
  // `apk update` prints only warnings for a repository it could not use (real output).
  const update = apkFailure(
    "apk update",
    2,
    `fetch http://127.0.0.1:18931/main/x86_64/APKINDEX.tar.gz
WARNING: updating and opening http://127.0.0.1:18931/main: IO ERROR
2 unavailable, 0 stale; 15 distinct packages available`,
    "check the repositories",
  );
  assert.equal(update.code, "PATCH_FAILED");
  assert.match(
    update.message,
    /^apk update failed in the image \(exit 2\): WARNING: .*IO ERROR; check the repositories$/,
  );
});

test("a signature apk refused is UNTRUSTED, also when apk stopped on the stale repository it left", () => {
  // Real output: an index re-signed content under the old signature (apk update, then apk upgrade
  // refetching a stale index from the same mirror).
  const update = apkFailure(
    "apk update",
    2,
    `fetch http://127.0.0.1:18931/main/x86_64/APKINDEX.tar.gz
WARNING: updating and opening http://127.0.0.1:18931/main: BAD signature
2 unavailable, 0 stale; 15 distinct packages available`,
  );
  assert.equal(update.code, "UNTRUSTED");
  assert.match(update.message, /BAD signature; the mirror or a proxy is serving altered files/);
  const upgrade = apkFailure(
    "apk upgrade",
    99,
    `WARNING: fetching http://127.0.0.1:18931/main: BAD signature
ERROR: Not continuing due to stale/unavailable repositories.Use --force-missing-repositories to continue.`,
  );
  assert.equal(upgrade.code, "UNTRUSTED");
  assert.match(upgrade.message, /BAD signature \| ERROR: Not continuing/);
  assert.equal(apkFailure("apk upgrade", 1, "ERROR: demo-1.1-r0: BAD archive").code, "UNTRUSTED");
  // However long apk's output, the message is one line.
  const long = apkFailure("apk upgrade", 1, `ERROR: x\n${"  y\n".repeat(50)}${"z".repeat(5000)}`);
  assert.doesNotMatch(long.message, /\n/);
  assert.ok(long.message.length < 700);
});

test("apk is handed suture's repositories file, keys dir and private cache dir, under /run", () => {
  const options = apkGlobalOptions();
  for (const flag of ["--repositories-file", "--keys-dir", "--cache-dir"]) {
    const value = options[options.indexOf(flag) + 1]!;
    assert.match(value, /^\/run\/suture-apk\//, flag);
  }
  assert.ok(!options.includes("--allow-untrusted"));
});

test("the repositories file keeps the image's order and tags, with --mirror applied", () => {
  const repositories = parseApkRepositories(
    "https://dl-cdn.alpinelinux.org/alpine/v3.20/main\n# comment\n@edge https://dl-cdn.alpinelinux.org/alpine/edge/main/\n/media/cdrom/apks\n",
    "/etc/apk/repositories",
    { "https://dl-cdn.alpinelinux.org/alpine": "http://127.0.0.1:8080/alpine" },
  );
  assert.equal(
    formatRepositoriesFile({ repositories }),
    "http://127.0.0.1:8080/alpine/v3.20/main\n@edge http://127.0.0.1:8080/alpine/edge/main\n/media/cdrom/apks\n",
  );
});

test("index cache names are apk's own: SHA-1 of the index URL; local repositories have none", () => {
  const repositories = parseApkRepositories(
    "http://127.0.0.1:18931/main\n@tagged http://127.0.0.1:18931/main\n/media/cdrom/apks\n",
    "/etc/apk/repositories",
  );
  const names = cachedIndexNames(repositories, "x86_64");
  // apk-tools 2.14.4 wrote APKINDEX.6d2de107.tar.gz for this repository (seen in /var/cache/apk).
  assert.deepEqual(
    names.map((n) => [n.url, n.file]),
    [["http://127.0.0.1:18931/main/x86_64/APKINDEX.tar.gz", "APKINDEX.6d2de107.tar.gz"]],
  );
});

test("only indexes that verify are cached, seeded back with their mtime, and re-verified on reuse", async () => {
  const repositories = parseApkRepositories(
    "http://a.example/main\nhttp://b.example/main\nhttp://c.example/main\nhttp://d.example/main\n",
    "/etc/apk/repositories",
  );
  const names = cachedIndexNames(repositories, "x86_64");
  const [a, b, c, d] = names.map((n) => n.file);
  const run = join(scratch, "run1");
  await mkdir(run);
  const good = buildApkIndex(indexText([["zlib", "1.3.1-r2"]]), key);
  const fetched = new Date(Date.now() - 60_000);
  await writeFile(join(run, a!), good);
  await utimes(join(run, a!), fetched, fetched);
  // Signed by a key of the same name that is not the trusted one.
  await writeFile(join(run, b!), buildApkIndex(indexText([["zlib", "9-r0"]]), otherKey));
  // Tampered after signing.
  const tampered = Buffer.from(good);
  tampered[tampered.length - 20]! ^= 1;
  await writeFile(join(run, c!), tampered);
  // A symlink the image's code planted to a file suture would otherwise read.
  await writeFile(join(scratch, "outside"), good);
  await symlink(join(scratch, "outside"), join(run, d!));

  const verified = await verifiedIndexes(run, names, keyring);
  assert.deepEqual([...verified.keys()], [a]);
  assert.deepEqual(
    verified.get(a!)!.index.packages.map((p) => `${p.name}-${p.version}`),
    ["zlib-1.3.1-r2"],
  );

  const shared = join(scratch, "shared", "indexes");
  await mkdir(join(scratch, "shared"));
  assert.equal(await saveIndexes(verified, shared), 1);
  assert.deepEqual(await readdir(shared), [a]);
  // Nothing verified: the shared cache stays as it was.
  assert.equal(await saveIndexes(new Map(), shared), 0);
  assert.deepEqual(await readdir(shared), [a]);

  const run2 = join(scratch, "run2");
  const seeded = await seedIndexes(shared, run2, names, keyring);
  assert.deepEqual([...seeded.keys()], [a]);
  assert.equal((await stat(join(run2, a!))).mtime.getTime(), fetched.getTime());
  // The cached index is altered behind suture's back: it is no longer handed out.
  await writeFile(join(shared, a!), tampered);
  const run3 = join(scratch, "run3");
  assert.equal((await seedIndexes(shared, run3, names, keyring)).size, 0);
  assert.deepEqual(await readdir(run3), []);

  // apk refetches by itself what is older than its max age; suture runs `apk update` unless all are fresh.
  const one = names.slice(0, 1);
  assert.ok(allFresh(one, seeded));
  assert.ok(!allFresh(names, seeded), "repositories without a cached index");
  assert.ok(!allFresh(one, seeded, fetched.getTime() + INDEX_MAX_AGE_MINUTES * 60_000 + 1));
  // An index stamped in the future (by the image's apk, or a clock step) is no proof it is fresh.
  assert.ok(!allFresh(one, seeded, fetched.getTime() - 60_000), "an mtime in the future is stale");
});

test("a target is unreachable when no untagged (or world-pinned tag's) index offers its fix", () => {
  const repositories = parseApkRepositories(
    "http://r.example/main\n@edge http://r.example/edge\n",
    "/etc/apk/repositories",
  );
  const [main, edge] = cachedIndexNames(repositories, "x86_64");
  const index = (entries: [string, string][]) => ({
    packages: entries.map(([name, version]) => ({ name, version }) as never),
    signedBy: key.name,
  });
  const indexes = [
    {
      name: main!,
      bytes: Buffer.alloc(0),
      mtime: new Date(),
      index: index([
        ["zlib", "1.3.1-r2"],
        ["musl", "1.2.5-r0"],
      ]),
    },
    {
      name: edge!,
      bytes: Buffer.alloc(0),
      mtime: new Date(),
      index: index([
        ["musl", "1.2.5-r3"],
        ["busybox", "1.36.1-r32"],
      ]),
    },
  ];
  const targets = [
    { name: "zlib", fixedVersion: "1.3.1-r2" },
    { name: "musl", fixedVersion: "1.2.5-r1" },
    { name: "busybox", fixedVersion: "1.36.1-r30" },
    { name: "gone", fixedVersion: "1" },
  ];
  assert.deepEqual(
    unreachableTargets(targets, indexes, ["busybox@edge", "zlib"]).map((f) => [f.name, f.reason]),
    [
      [
        "musl",
        "no version ≥ 1.2.5-r1 in the image's apk repositories (best: 1.2.5-r0); check them or --mirror",
      ],
      ["gone", "no version ≥ 1 in the image's apk repositories (best: none); check them or --mirror"],
    ],
  );
});

test("trusted keys: the image's and --keyring's; an image key apk could not use is left out with a warning", async () => {
  const events: ProgressEvent[] = [];
  const file = join(scratch, "extra.rsa.pub");
  await writeFile(file, otherKey.publicPem);
  const { keyring: ring, pems } = await trustedKeys(
    {
      keys: new Map([
        [key.name, Buffer.from(key.publicPem)],
        ["broken.rsa.pub", Buffer.from("not a key")],
      ]),
    },
    [file, join(scratch, "ignored.gpg")],
    (e) => events.push(e),
  );
  assert.deepEqual([...pems.keys()], [key.name, "extra.rsa.pub"]);
  assert.deepEqual([...ring.keys.keys()], [key.name, "extra.rsa.pub"]);
  assert.equal(events.length, 1);
  assert.match(
    (events[0] as { message: string }).message,
    /broken\.rsa\.pub.*not a PEM public key.*\(left out\)$/,
  );

  const junk = join(scratch, "junk.rsa.pub");
  await writeFile(junk, "junk");
  await assert.rejects(
    trustedKeys({ keys: new Map() }, [junk], () => {}),
    { code: "UNTRUSTED" },
  );
  await assert.rejects(
    trustedKeys({ keys: new Map() }, [join(scratch, "missing.rsa.pub")], () => {}),
    {
      code: "USAGE",
    },
  );
});
