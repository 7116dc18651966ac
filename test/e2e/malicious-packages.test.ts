/**
 * Hostile packages from a repository the image trusts, end to end: `suture patch` must never let a
 * package's own control fields or archive members name a path outside the image root.
 *
 * The repository is real (a signed apt repository on 127.0.0.1 built from .debs that the host's
 * dpkg-deb made here) and trusted the way an image makes it trusted: the distroless image through
 * `--keyring` for the release's default suites, the classic image through its own
 * sources.list.d entry and Signed-By key (an image alone is enough to point suture at a hostile
 * repository). Each hostile package aims at `/tmp/suture-escape-<random>*` on the host; the
 * patch must fail with one line naming the package, write no output, and leave no such path.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { generateKey, type PrivateKey, readPrivateKey } from "openpgp";
import { type TarWriteEntry, writeTar } from "../../src/archive/tar/write.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { oneLineError } from "../lab/cli.ts";
import { buildDeb, withDataEntries } from "../lab/deb.ts";
import { type DistrolessLab, distrolessLabImage } from "../lab/distroless.ts";
import { labImage } from "../lab/images.ts";
import { type LocalDeb, startLocalAptRepo } from "../lab/local-apt-repo.ts";
import { layoutWriter } from "../lab/oci-layout.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "loopback", "tool:dpkg-deb", "tool:mmdebstrap");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
/** Every escape this file attempts starts with this host path. */
const token = `suture-escape-${randomBytes(6).toString("hex")}`;
const escapeTo = `/tmp/${token}`;
/** A path that climbs out of any root (the overlay's merged dir, the dpkg info dir) to the host's /tmp. */
const climb = `${"../".repeat(30)}tmp/${token}`;

let work: string;
let signingKey: PrivateKey;
let keyring: string;
let distroless: DistrolessLab;
/** bookwormMinbase plus a layer whose sources.list.d trusts the test key for deb.debian.org/debian. */
let classicImage: string;
let classicVersion: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-malicious-"));
  const key = await generateKey({ userIDs: [{ name: "suture hostile test archive" }], format: "armored" });
  signingKey = await readPrivateKey({ armoredKey: key.privateKey });
  keyring = join(work, "test-archive.asc");
  await writeFile(keyring, key.publicKey);
  distroless = await distrolessLabImage();
  const minbase = await labImage("bookwormMinbase");
  classicVersion = minbase.packages.get("libacl1")!;
  assert.ok(classicVersion, "bookwormMinbase has libacl1");
  classicImage = await imageTrustingKey(minbase.layoutDir, key.publicKey, join(work, "classic-layout"));
});
after(() => rm(work, { recursive: true, force: true }));

/** Host paths the attacks aimed at that exist now (must stay empty). */
function escaped(): string[] {
  return readdirSync("/tmp").filter((n) => n.startsWith(token));
}

/**
 * A copy of a lab layout with one more layer: `/etc/apt/sources.list.d/debian.sources` naming
 * deb.debian.org/debian bookworm with `Signed-By: /etc/apt/keyrings/suture-test.asc`, and that key.
 */
async function imageTrustingKey(labLayout: string, publicKey: string, dir: string): Promise<string> {
  const blob = (digest: string) => join(labLayout, "blobs/sha256", digest.slice("sha256:".length));
  const index = JSON.parse(await readFile(join(labLayout, "index.json"), "utf8"));
  const manifestDescriptor = index.manifests[0];
  const manifest = JSON.parse(await readFile(blob(manifestDescriptor.digest), "utf8"));
  const config = JSON.parse(await readFile(blob(manifest.config.digest), "utf8"));
  const writer = await layoutWriter(dir);
  for (const layer of manifest.layers) await writer.reuse(labLayout, layer.digest);
  const sources = [
    "Types: deb",
    "URIs: http://deb.debian.org/debian",
    "Suites: bookworm",
    "Components: main",
    "Signed-By: /etc/apt/keyrings/suture-test.asc",
    "",
  ].join("\n");
  const meta = { uid: 0, gid: 0, mtime: 1767225600 };
  const file = (name: string, text: string): TarWriteEntry => {
    const body = Buffer.from(text);
    return {
      path: name,
      type: "file",
      mode: 0o644,
      ...meta,
      size: body.length,
      body: () => Readable.from([body]),
    };
  };
  const dirEntry = (name: string): TarWriteEntry => ({ path: name, type: "directory", mode: 0o755, ...meta });
  const chunks: Buffer[] = [];
  for await (const c of writeTar([
    dirEntry("etc"),
    dirEntry("etc/apt"),
    dirEntry("etc/apt/keyrings"),
    file("etc/apt/keyrings/suture-test.asc", publicKey),
    dirEntry("etc/apt/sources.list.d"),
    file("etc/apt/sources.list.d/debian.sources", sources),
  ]))
    chunks.push(c);
  const tar = Buffer.concat(chunks);
  const layer = await writer.put(gzipSync(tar));
  config.rootfs.diff_ids.push(`sha256:${createHash("sha256").update(tar).digest("hex")}`);
  config.history = [
    ...(config.history ?? []),
    { created: "2026-01-01T00:00:00Z", created_by: "suture test: trust a local repository" },
  ];
  const configDescriptor = await writer.put(Buffer.from(JSON.stringify(config)));
  const derived = {
    ...manifest,
    config: { ...manifest.config, ...configDescriptor },
    layers: [...manifest.layers, { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer }],
  };
  await writer.tag(
    "application/vnd.oci.image.manifest.v1+json",
    await writer.put(Buffer.from(JSON.stringify(derived))),
  );
  return `oci:${dir}:latest`;
}

interface Attack {
  image: "distroless" | "classic";
  debs: LocalDeb[];
}

/** Serve `debs`, patch, and return what the CLI did (rejecting when it succeeds is the caller's call). */
async function patchFrom(attack: Attack, name: string) {
  const repo = await startLocalAptRepo({
    suites: [
      { archive: "debian", suite: "bookworm" },
      { archive: "debian", suite: "bookworm-updates" },
      { archive: "debian-security", suite: "bookworm-security" },
    ],
    debs: attack.debs,
    signingKey,
  });
  const out = join(work, `out-${name}`);
  const args = [
    "patch",
    "-i",
    attack.image === "distroless" ? distroless.reference : classicImage,
    "-t",
    "patched",
    "--oci-dir",
    out,
    "--mirror",
    `http://deb.debian.org/debian=${repo.url}/debian`,
    "--mirror",
    `http://deb.debian.org/debian-security=${repo.url}/debian-security`,
    "--cache-dir",
    join(work, `cache-${attack.image}`),
    ...(attack.image === "distroless" ? ["--keyring", keyring] : []),
  ];
  const result = run(suture, args, { env: { ...process.env, CI: "true" }, maxBuffer: 64 * 1024 * 1024 });
  result.catch(() => {});
  return { result, out, repo };
}

async function refused(attack: Attack, name: string, error: RegExp, options: { downloaded?: boolean } = {}) {
  const { result, out, repo } = await patchFrom(attack, name);
  try {
    await assert.rejects(result, oneLineError(error));
    assert.equal(existsSync(out), false, "no output written");
    assert.deepEqual(escaped(), [], "nothing written on the host outside the work and cache dirs");
    if (options.downloaded !== false)
      assert.ok(
        repo.requests.some((p) => p.endsWith(".deb")),
        `the hostile package was downloaded, so the refusal is the unpacker's: ${repo.requests.join(" ")}`,
      );
  } finally {
    await repo.stop();
  }
}

const distrolessVersion = () => distroless.packages.get("libgomp1")!;
const control = (fields: Record<string, string>) =>
  `${Object.entries(fields)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n")}\nMaintainer: attacker <a@example.org>\nDescription: hostile\n`;
const scripts = [
  { path: "postinst", content: `#!/bin/sh\ntouch ${escapeTo}-ran\n` },
  { path: "shlibs", content: "libgomp 1 libgomp1\n", mode: 0o644 },
];

test("Multi-Arch: same with an Architecture that climbs out: refused before any database file is named (status.d)", async () => {
  const version = `${distrolessVersion()}+evil1`;
  const deb = await buildDeb(
    join(work, "multiarch-statusd.deb"),
    control({ Package: "libgomp1", Version: version, Architecture: `amd64/${climb}`, "Multi-Arch": "same" }),
    [{ path: "usr/lib/x86_64-linux-gnu/libgomp.so.1", content: "not a library" }],
    scripts,
  );
  await refused(
    {
      image: "distroless",
      debs: [{ path: deb, package: "libgomp1", version, architecture: "amd64", extra: "Multi-Arch: same" }],
    },
    "multiarch-statusd",
    /^error: package "libgomp1" \(.*\.deb\) has a package architecture "amd64\/\.\.\/.*" that breaks Debian Policy §5\.6; .*\[INVALID_ARCHIVE\]$/,
  );
});

test("Multi-Arch: same with an Architecture that climbs out: refused before any info/ file is written (classic)", async () => {
  const version = `${classicVersion}+evil1`;
  const deb = await buildDeb(
    join(work, "multiarch-classic.deb"),
    control({ Package: "libacl1", Version: version, Architecture: `amd64/${climb}`, "Multi-Arch": "same" }),
    [{ path: "usr/lib/x86_64-linux-gnu/libacl.so.1", content: "not a library" }],
    scripts,
  );
  await refused(
    {
      image: "classic",
      debs: [{ path: deb, package: "libacl1", version, architecture: "amd64", extra: "Multi-Arch: same" }],
    },
    "multiarch-classic",
    /^error: package "libacl1" \(.*\.deb\) has a package architecture "amd64\/\.\.\/.*" that breaks Debian Policy §5\.6; .*\[INVALID_ARCHIVE\]$/,
  );
});

test("a package whose control names another package than its signed index entry is UNTRUSTED (classic)", async () => {
  const version = `${classicVersion}+evil2`;
  // Served as libacl1, but would be recorded as (and replace the database entry of) libc6.
  const deb = await buildDeb(
    join(work, "other-name.deb"),
    control({ Package: "libc6", Version: version, Architecture: "amd64", "Multi-Arch": "same" }),
    [{ path: "usr/lib/x86_64-linux-gnu/libc.so.6", content: "not a library" }],
  );
  await refused(
    { image: "classic", debs: [{ path: deb, package: "libacl1", version, architecture: "amd64" }] },
    "other-name",
    /^error: package "libacl1" ".*\+evil2" downloaded from the repository says Package "libc6" where its signed index says "libacl1": the repository serves a package that is not the one its signed index describes; .*\[UNTRUSTED\]$/,
  );
});

test("a package whose control Version differs from its signed index entry is UNTRUSTED (status.d)", async () => {
  const version = `${distrolessVersion()}+evil3`;
  const deb = await buildDeb(
    join(work, "other-version.deb"),
    control({ Package: "libgomp1", Version: `${distrolessVersion()}+evil9`, Architecture: "amd64" }),
    [{ path: "usr/lib/x86_64-linux-gnu/libgomp.so.1", content: "not a library" }],
  );
  await refused(
    { image: "distroless", debs: [{ path: deb, package: "libgomp1", version, architecture: "amd64" }] },
    "other-version",
    /^error: package "libgomp1" ".*\+evil3" downloaded .* says Version ".*\+evil9" where its signed index says ".*\+evil3": .*\[UNTRUSTED\]$/,
  );
});

test("a signed index whose entry has a Version no dpkg could build is refused before anything is downloaded", async () => {
  const deb = await buildDeb(
    join(work, "index-version.deb"),
    control({ Package: "libgomp1", Version: `${distrolessVersion()}+evil4`, Architecture: "amd64" }),
    [{ path: "usr/lib/x86_64-linux-gnu/libgomp.so.1", content: "not a library" }],
  );
  await refused(
    {
      image: "distroless",
      debs: [{ path: deb, package: "libgomp1", version: `99/${climb}`, architecture: "amd64" }],
    },
    "index-version",
    /^error: the signed index .*Packages.* \(package "libgomp1"\) has a package version "99\/\.\.\/.*" that breaks Debian Policy §5\.6; .*\[UNTRUSTED\]$/,
    { downloaded: false },
  );
});

test("a data.tar member that climbs out with '..' is the package's error, and nothing of it is written", async () => {
  const version = `${distrolessVersion()}+evil5`;
  const deb = await withDataEntries(
    await buildDeb(
      join(work, "data-climb.deb"),
      control({ Package: "libgomp1", Version: version, Architecture: "amd64" }),
      [{ path: "usr/lib/x86_64-linux-gnu/libgomp.so.1", content: "not a library" }],
    ),
    [
      { path: "usr", type: "directory" },
      { path: "usr/lib", type: "directory" },
      { path: "usr/lib/ok", type: "file", content: "fine\n" },
      { path: climb, type: "file", content: "escaped\n" },
    ],
  );
  await refused(
    { image: "distroless", debs: [{ path: deb, package: "libgomp1", version, architecture: "amd64" }] },
    "data-climb",
    /^error: package libgomp1 .*\+evil5 \(.*\.deb\) has a data\.tar member "(\.\.\/)+.*" that is absolute or climbs out of the root with '\.\.'; .*\[INVALID_ARCHIVE\]$/,
  );
});

test("an absolute hardlink target in data.tar is the package's error", async () => {
  const version = `${distrolessVersion()}+evil6`;
  const deb = await withDataEntries(
    await buildDeb(
      join(work, "hardlink.deb"),
      control({ Package: "libgomp1", Version: version, Architecture: "amd64" }),
      [{ path: "usr/lib/x86_64-linux-gnu/libgomp.so.1", content: "not a library" }],
    ),
    [
      { path: "usr", type: "directory" },
      { path: "usr/lib", type: "directory" },
      { path: "usr/lib/link", type: "hardlink", linkname: `${escapeTo}-hardlink` },
    ],
  );
  await refused(
    { image: "distroless", debs: [{ path: deb, package: "libgomp1", version, architecture: "amd64" }] },
    "hardlink",
    /^error: package libgomp1 .*\(.*\.deb\) has a data\.tar hardlink \/usr\/lib\/link target "\/tmp\/suture-escape-.*-hardlink" that is absolute .*\[INVALID_ARCHIVE\]$/,
  );
});

test("an absolute symlink from one package is followed inside the image by the next, never on the host", async () => {
  // libgcc-s1 (unpacked first: no dependencies, name order) plants /usr/share/suture-link -> an
  // absolute path; libgomp1 then ships a file below the link. As dpkg in a chroot would, the file
  // lands in the image's own /opt, and the patch succeeds. (/opt, not /tmp: the patch layer
  // leaves out /tmp, and the file must be seen in the layer.)
  const hostDir = `/opt/${token}-dir`;
  const gcc = `${distroless.packages.get("libgcc-s1")!}+evil7`;
  const gomp = `${distrolessVersion()}+evil7`;
  const link = await withDataEntries(
    await buildDeb(
      join(work, "link.deb"),
      control({ Package: "libgcc-s1", Version: gcc, Architecture: "amd64" }),
      [],
    ),
    [
      { path: "usr", type: "directory" },
      { path: "usr/share", type: "directory" },
      { path: "usr/share/suture-link", type: "symlink", linkname: hostDir },
    ],
  );
  const through = await withDataEntries(
    await buildDeb(
      join(work, "through.deb"),
      control({ Package: "libgomp1", Version: gomp, Architecture: "amd64" }),
      [],
    ),
    [
      { path: "usr", type: "directory" },
      { path: "usr/share", type: "directory" },
      { path: "usr/share/suture-link/pwned", type: "file", content: "inside the image\n" },
    ],
  );
  const { result, out, repo } = await patchFrom(
    {
      image: "distroless",
      debs: [
        { path: link, package: "libgcc-s1", version: gcc, architecture: "amd64" },
        { path: through, package: "libgomp1", version: gomp, architecture: "amd64" },
      ],
    },
    "symlink",
  );
  try {
    await result;
  } finally {
    await repo.stop();
  }
  assert.equal(existsSync(hostDir), false, "nothing written on the host");
  assert.deepEqual(escaped(), []);
  const index = JSON.parse(await readFile(join(out, "index.json"), "utf8"));
  const blob = (d: string) => join(out, "blobs/sha256", d.slice("sha256:".length));
  const manifest = JSON.parse(await readFile(blob(index.manifests[0].digest), "utf8"));
  const { stdout } = await run("tar", ["-tvf", blob(manifest.layers.at(-1).digest)], {
    maxBuffer: 64 * 1024 * 1024,
  });
  assert.match(stdout, new RegExp(`usr/share/suture-link -> ${hostDir}\\n`), stdout);
  assert.match(stdout, new RegExp(`opt/${token}-dir/pwned\\n`), "the file is in the image's own /opt");
});
