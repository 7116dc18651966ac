/**
 * The realistic cases the minimal layer exists for. dpkg rewrites every file of each package it
 * installs, most of them byte-identical. Lower dir = this Debian machine's own root (read-only
 * through overlay); the .debs come from deb.debian.org through apt, which checks them against the
 * signed indexes; dpkg runs chrooted in the merged dir inside a private mount namespace, so no
 * mount outlives the test and the host is never written.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { promisify } from "node:util";
import { compareDebVersions } from "../../src/distro/dpkg/version.ts";
import { defaultExclude } from "../../src/layer/excludes.ts";
import { buildPatchLayer, type PatchLayer } from "../../src/layer/patch-layer.ts";
import { parseAptPolicy } from "../../src/patch/engines/dpkg/sandbox.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { requiring } from "../lab/requirements.ts";
import { listTar } from "../lab/tar.ts";

const { before, test } = await requiring("root", "loopback");

const run = promisify(execFile);

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);
const sh = (script: string) =>
  run("bash", ["-euo", "pipefail", "-c", script], {
    maxBuffer: 64 << 20,
    env: { ...process.env, PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" },
  });

interface DpkgRun {
  root: string;
  upper: string;
  layer: PatchLayer;
  /** Tar entries of the layer: name → type. */
  entries: Map<string, string>;
  naiveTar: number;
  naiveGzip: number;
  upperFiles: number;
}

/** Download `pkg=version` pairs, `dpkg -i` them in an overlay over "/", and build the layer. */
async function dpkgInOverlay(t: TestContext, packages: string[]): Promise<DpkgRun> {
  const root = await fs.mkdtemp(join(tmpdir(), "suture-layer-dpkg-"));
  t.after(() => fs.rm(root, { recursive: true, force: true }));
  const dl = join(root, "dl");
  const upper = join(root, "upper");
  for (const d of ["dl", "upper", "work", "merged"]) await fs.mkdir(join(root, d));
  // apt downloads as the _apt user when it can reach the directory.
  await fs.chmod(root, 0o755);
  await fs.chmod(dl, 0o777);
  await sh(`cd "${dl}" && apt-get download -qq ${packages.map((p) => `"${p}"`).join(" ")}`);
  const debs = (await fs.readdir(dl)).filter((n) => n.endsWith(".deb"));
  assert.equal(debs.length, packages.length, `apt downloaded ${packages.join(" ")}`);

  await sh(`unshare -m bash -euo pipefail -c '
    R="${root}"
    mount -t overlay overlay -o lowerdir=/,upperdir=$R/upper,workdir=$R/work,redirect_dir=off,metacopy=off $R/merged
    mount --bind /dev $R/merged/dev
    mount -t proc proc $R/merged/proc
    mount --bind $R/dl $R/merged/mnt
    chroot $R/merged dpkg -i --force-all ${debs.map((d) => `/mnt/${d}`).join(" ")} >/dev/null
  '`);

  const outFile = join(root, "layer.tar.gz");
  const started = performance.now();
  const layer = await buildPatchLayer({ upperDir: upper, lowerDirs: ["/"], outFile, compression: "gzip" });
  const elapsedMs = Math.round(performance.now() - started);

  const entries = new Map<string, string>();
  const { stdout: plain } = await run("bash", ["-c", `zcat "${outFile}" | base64 -w0`], {
    maxBuffer: 256 << 20,
  });
  for (const member of await listTar(Buffer.from(plain, "base64"))) entries.set(member.name, member.type);

  // The naive layer: the whole upper dir, as a plain tar of it (or `docker commit`) would give.
  const { stdout: naive } = await sh(
    `cd "${upper}" && echo $(tar -cf - . | wc -c) $(tar -cf - . | gzip -6 | wc -c) $(find . -type f | wc -l)`,
  );
  const [naiveTar, naiveGzip, upperFiles] = naive.trim().split(" ").map(Number) as [number, number, number];
  t.diagnostic(
    `upper dir: ${upperFiles} files, tar ${naiveTar} B, gzip ${naiveGzip} B; patch layer: ${layer.entries} entries, tar ${layer.uncompressedSize} B, gzip ${layer.descriptorFields.size} B; size ratio ${(layer.uncompressedSize / naiveTar).toFixed(4)} (tar), ${(layer.descriptorFields.size / naiveGzip).toFixed(4)} (gzip); dropped ${layer.stats.droppedUnchanged} entries / ${layer.stats.droppedUnchangedBytes} B; excluded ${layer.stats.excluded}; built in ${elapsedMs} ms`,
  );
  return { root, upper, layer, entries, naiveTar, naiveGzip, upperFiles };
}

/**
 * An essential package with more than 100 files whose installed version the archive still serves,
 * as `name=version`: a machine installed before a point release may have a version no suite has
 * any more.
 */
async function reinstallable(): Promise<string | undefined> {
  for (const name of ["coreutils", "util-linux", "dpkg", "perl-base"]) {
    const { stdout: installed } = await sh(`dpkg-query -W -f='\${Version}' ${name}`);
    const { stdout: offered } = await sh(`apt-cache madison ${name}`);
    if (offered.split("\n").some((line) => line.split("|")[1]?.trim() === installed))
      return `${name}=${installed}`;
  }
  return undefined;
}

test("reinstalling an installed package's own .deb gives an empty layer", async (t) => {
  const pkg = await reinstallable();
  if (!pkg) {
    t.skip("the archive serves none of the installed versions of coreutils, util-linux, dpkg, perl-base");
    return;
  }
  t.diagnostic(`reinstalling ${pkg}`);
  const r = await dpkgInOverlay(t, [pkg]);
  t.diagnostic(`entries: ${[...r.entries.keys()].join(" ")}`);
  assert.ok(r.upperFiles > 100, `dpkg rewrote the package's files (${r.upperFiles} in the upper dir)`);
  assert.ok(r.layer.stats.droppedUnchanged > 100);
  for (const name of r.entries.keys())
    assert.match(name, /^var\/(lib\/(dpkg\/.*)?)?$/, `${name} is dpkg bookkeeping`);
  assert.ok(r.layer.descriptorFields.size < r.naiveGzip / 50, "under 2% of the naive layer");
});

/**
 * Groups of packages from one source, each with a library whose bytes change with every build, in
 * order of preference.
 */
const REPLACEABLE: { packages: string[]; library: RegExp }[] = [
  { packages: ["libssl3", "openssl"], library: /\/libssl\.so\.3$/ },
  { packages: ["libexpat1"], library: /\/libexpat\.so\.1\.[\d.]+$/ },
  { packages: ["libsqlite3-0"], library: /\/libsqlite3\.so\.0\.[\d.]+$/ },
  { packages: ["libxml2"], library: /\/libxml2\.so\.2\.[\d.]+$/ },
  { packages: ["zlib1g"], library: /\/libz\.so\.1\.[\d.]+$/ },
];

/**
 * The first group for which apt offers a version other than the one installed here, and that
 * version: the candidate when it differs (an upgrade), else the newest other one (a downgrade).
 * Chosen when the test runs, because which versions exist depends on the day (a point release
 * folds security's versions into main) and on how up to date this machine is.
 */
async function replaceableGroup(): Promise<
  { packages: string[]; library: RegExp; version: string } | undefined
> {
  const names = REPLACEABLE.flatMap((g) => g.packages);
  const { stdout } = await sh(`apt-cache policy ${names.join(" ")}`);
  const policy = parseAptPolicy(stdout);
  for (const group of REPLACEABLE) {
    const [first, ...rest] = group.packages.map((n) => policy.get(n));
    if (!first) continue;
    const others = first.versions
      .filter((v) => v !== first.installed && rest.every((p) => p?.versions.includes(v)))
      .sort((a, b) => compareDebVersions(b, a));
    const version = others.find((v) => v === first.candidate) ?? others[0];
    if (version) return { ...group, version };
  }
  return undefined;
}

test("installing another version of openssl keeps exactly the files whose bytes or metadata changed", async (t) => {
  const group = await replaceableGroup();
  if (!group) {
    t.skip(
      "apt offers no version other than the installed one of any of openssl, expat, sqlite, libxml2, zlib",
    );
    return;
  }
  t.diagnostic(`installing ${group.packages.join(", ")} ${group.version}`);
  const r = await dpkgInOverlay(
    t,
    group.packages.map((p) => `${p}=${group.version}`),
  );

  // Independently of compare.ts: every non-directory upper entry whose content (cmp), type, mode
  // or owner (stat) differs from the host's file at the same path.
  const { stdout } = await sh(`cd "${r.upper}" && find . ! -type d | while IFS= read -r f; do
      p="\${f#.}"
      if [ -c "$f" ]; then echo "W $p"; continue; fi
      if [ ! -e "$p" ] && [ ! -L "$p" ]; then echo "N $p"; continue; fi
      if [ "$(stat -c '%f %u %g' "$f")" != "$(stat -c '%f %u %g' "$p")" ]; then echo "M $p"; continue; fi
      if [ -L "$f" ]; then [ "$(readlink "$f")" = "$(readlink "$p")" ] || echo "L $p"; continue; fi
      cmp -s "$f" "$p" || echo "C $p"
    done`);
  const changed = stdout
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((line) => line.slice(2))
    .filter((path) => !defaultExclude(path, { type: "file", size: 1 }));
  const written = [...r.entries]
    .filter(([, type]) => type !== "directory")
    .map(([name]) => `/${name.replace(/(^|\/)\.wh\./, "$1")}`);
  assert.deepEqual(written.sort(), changed.sort());
  assert.ok(
    written.some((p) => group.library.test(p)),
    "the other version's library is in the layer",
  );
  assert.ok(r.layer.stats.droppedUnchanged > 0, "identical files (docs, unchanged modules) were dropped");
  assert.ok(r.layer.uncompressedSize < r.naiveTar, "smaller than the whole upper dir");
});
