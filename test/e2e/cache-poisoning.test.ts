/**
 * Issue 10: one cache dir, two images. Image A is hostile: apt hooks of its own overwrite every
 * apt list, every .deb and every file on every mount its apt can see. Patching it with the sandbox
 * engine (it may succeed or fail) must leave nothing in the shared cache that a later patch of a
 * clean image B trusts: B then patches correctly with both engines, and the shared .deb store still
 * holds exactly the packages its names promise.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { layoutWriter } from "../lab/oci-layout.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "tool:mmdebstrap", "tool:umoci");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-cache-poisoning-"));
});
after(() => rm(work, { recursive: true, force: true }));

/** A Packages stanza offering a "fixed" libexpat1 that is not Debian's. */
const FORGED_PACKAGES = `Package: libexpat1
Version: 99:9.9.9-1
Architecture: amd64
Maintainer: nobody
Filename: pool/main/e/expat/libexpat1_9.9.9-1_amd64.deb
Size: 4
SHA256: ${"0".repeat(64)}
Description: forged

`;

/**
 * The hostile image's hook. After `apt-get update` (`lists`): a forged stanza appended to every
 * Packages index, every Translation swapped for a symlink to a host path (a cache writer following
 * it would read outside the sandbox); apt still parses them, so the run goes on to dpkg. Before and
 * after every dpkg run (`all`): every list and archive ruined, and every .deb on any mount it can
 * see appended to (with the shared .deb store hard-linked in, that poisoned the store).
 */
const EVIL_SCRIPT = `#!/bin/sh
forged='${FORGED_PACKAGES}'
if [ "$1" = lists ]; then
  for f in /var/lib/apt/lists/*_Packages; do printf '\\n%s' "$forged" >>"$f"; done
  for f in /var/lib/apt/lists/*_Translation-*; do rm -f "$f"; ln -s /etc/hostname "$f"; done
  exit 0
fi
for dir in /var/lib/apt/lists /var/cache/apt; do
  find "$dir" -type f 2>/dev/null | while read -r f; do
    case "$f" in
      *.deb) printf 'EVIL' >>"$f" ;;
      *_Packages*) printf '%s' "$forged" >"$f" ;;
      *) printf 'garbage\\n' >"$f" ;;
    esac
  done
done
awk '{print $2}' /proc/mounts | while read -r m; do
  case "$m" in /proc*|/sys*|/dev*) continue ;; esac
  find "$m" -xdev -type f -name '*.deb' 2>/dev/null | while read -r f; do printf 'EVIL' >>"$f" 2>/dev/null; done
done
exit 0
`;

const EVIL_APT_CONF = `APT::Update::Post-Invoke { "/usr/local/bin/suture-evil lists"; };
DPkg::Pre-Invoke { "/usr/local/bin/suture-evil all"; };
DPkg::Post-Invoke { "/usr/local/bin/suture-evil all"; };
`;

/** The lab image plus one layer with the hostile apt configuration; an OCI layout of its own. */
async function hostileImage(base: { layoutDir: string; manifestDigest: string }): Promise<string> {
  const root = join(work, "evil-rootfs");
  await mkdir(join(root, "etc/apt/apt.conf.d"), { recursive: true });
  await mkdir(join(root, "usr/local/bin"), { recursive: true });
  await writeFile(join(root, "etc/apt/apt.conf.d/99evil"), EVIL_APT_CONF);
  await writeFile(join(root, "usr/local/bin/suture-evil"), EVIL_SCRIPT);
  await chmod(join(root, "usr/local/bin/suture-evil"), 0o755);
  const tar = join(work, "evil-layer.tar");
  await run("tar", ["--sort=name", "--numeric-owner", "--owner=0", "--group=0", "-C", root, "-cf", tar, "."]);
  const raw = await readFile(tar);
  const blob = (digest: string) => readFile(join(base.layoutDir, "blobs/sha256", digest.slice(7)));
  const manifest = JSON.parse((await blob(base.manifestDigest)).toString("utf8"));
  const config = JSON.parse((await blob(manifest.config.digest)).toString("utf8"));

  const layoutDir = join(work, "evil-oci");
  const writer = await layoutWriter(layoutDir);
  for (const l of manifest.layers) await writer.reuse(base.layoutDir, l.digest);
  const layer = await writer.put(gzipSync(raw));
  config.rootfs.diff_ids.push(`sha256:${createHash("sha256").update(raw).digest("hex")}`);
  config.history = [...(config.history ?? []), { created_by: "suture test: hostile apt hooks" }];
  const configDesc = await writer.put(Buffer.from(JSON.stringify(config)));
  manifest.config = { ...manifest.config, ...configDesc };
  manifest.layers = [
    ...manifest.layers,
    { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer },
  ];
  const mediaType = "application/vnd.oci.image.manifest.v1+json";
  await writer.tag(mediaType, await writer.put(Buffer.from(JSON.stringify({ mediaType, ...manifest }))));
  return `oci:${layoutDir}:latest`;
}

/** Every file under `dir` (recursively), by path relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

async function assertStoreIntact(cache: string): Promise<number> {
  const debs = (await filesUnder(join(cache, "apt-native/debs"))).filter((f) => f.endsWith(".deb"));
  for (const f of debs) {
    const sha = createHash("sha256")
      .update(await readFile(f))
      .digest("hex");
    assert.equal(`${sha}.deb`, f.split("/").at(-1), `${f} no longer holds the package its name promises`);
  }
  return debs.length;
}

/**
 * No file of the cache (but the extracted image layers, which hold the hostile image itself) has
 * anything the hostile image wrote: garbage, the forged stanza, a .deb appended to.
 */
async function assertNothingHostile(cache: string): Promise<void> {
  for (const f of await filesUnder(cache)) {
    if (f.startsWith(join(cache, "layers/"))) continue;
    const bytes = await readFile(f);
    const text = bytes.toString("latin1");
    assert.doesNotMatch(text, /^garbage$|Description: forged/m, `${f} holds what the hostile image wrote`);
    assert.ok(!f.endsWith(".deb") || !text.endsWith("EVIL"), `${f} was appended to by the hostile image`);
  }
}

test("a hostile image's apt hooks cannot poison the shared cache for the next image", async () => {
  const lab = await labImage("bookwormNginx");
  const { path: report, fixes } = await trivyReportFor("bookwormNginx", {
    only: ["libexpat1"],
    outFile: join(work, "report.json"),
  });
  assert.equal(fixes.length, 1, "libexpat1 has a pending fix");
  const evil = await hostileImage(lab);
  const cache = join(work, "cache");
  const patch = (ref: string, engine: string, tag: string) =>
    run(
      suture,
      [
        "patch",
        "-i",
        ref,
        "-r",
        report,
        "-t",
        tag,
        "--oci-dir",
        join(work, `out-${tag}`),
        "--engine",
        engine,
        "--cache-dir",
        cache,
        // The hostile image is the lab image plus a layer: its own scan would list the same fix,
        // but name its own config, so the lab image's report is used for it knowingly.
        ...(ref === lab.reference ? [] : ["--ignore-report-image"]),
      ],
      { env: { ...process.env, CI: "true" }, maxBuffer: 64 * 1024 * 1024 },
    );

  // Image A: whether apt survives its own hooks does not matter; what it leaves behind does.
  const hostile = await patch(evil, "sandbox", "evil").then(
    () => "patched",
    (e: { stderr: string }) => e.stderr.trim().split("\n").at(-1),
  );
  console.log(`hostile image: ${hostile}`);
  await assertStoreIntact(cache);
  await assertNothingHostile(cache);

  // Image B, clean, same cache: both engines patch it correctly.
  for (const engine of ["sandbox", "native"]) {
    const tag = `clean-${engine}`;
    await patch(lab.reference, engine, tag);
    const rootfs = join(work, `rootfs-${engine}`);
    await run("umoci", ["raw", "unpack", "--image", `${join(work, `out-${tag}`)}:${tag}`, rootfs]);
    const { stdout } = await run("chroot", [
      rootfs,
      "dpkg-query",
      "-W",
      "-f",
      "${Package} ${Version}\\n",
      "libexpat1",
    ]);
    assert.equal(stdout.trim(), `libexpat1 ${fixes[0]!.fixed}`, `${engine}: libexpat1 at the fixed version`);
    const audit = await run("chroot", [rootfs, "dpkg", "--audit"]);
    assert.equal(audit.stdout, "", `${engine}: dpkg --audit finds nothing wrong`);
    const deb = fixes[0]!.sha256;
    const store = await readdir(join(cache, "apt-native/debs"));
    assert.ok(store.includes(`${deb}.deb`), `${engine}: the verified libexpat1 .deb is in the store`);
    assert.ok((await assertStoreIntact(cache)) >= 1);
  }

  // The clean image's run filled the lists cache, with verified files only (InRelease among them).
  const lists = await filesUnder(join(cache, "apt-lists"));
  assert.ok(
    lists.some((f) => f.endsWith("_InRelease")),
    `verified lists are cached: ${lists.join(", ")}`,
  );
  await assertNothingHostile(cache);
});
