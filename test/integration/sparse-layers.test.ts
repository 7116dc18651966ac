/**
 * Sparse lowers (src/sandbox/sparse-layers.ts), for real: layers written with our tar writer,
 * extracted metadata-complete and content-sparse under an overlay, brought in on demand, and
 * compared with the full extraction. Needs root (owners, overlayfs); the run() test needs runc and
 * the minbase lab image.
 */
import assert from "node:assert/strict";
import { lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import zlib from "node:zlib";
import { isSutureError } from "../../src/errors/errors.ts";
import { sha256Digest } from "../../src/image/digest.ts";
import { openImage } from "../../src/image/image.ts";
import { editImage } from "../../src/mutate/mutate.ts";
import { MediaType } from "../../src/oci/media-types.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { type Sandbox, withSandbox } from "../../src/sandbox/sandbox.ts";
import { openLayoutSource } from "../../src/transports/layout/layout.ts";
import { labImage } from "../lab/images.ts";
import { needs, requiring } from "../lab/requirements.ts";
import { imageOf, MTIME, snapshot, tarOf } from "./sandbox-fixtures.ts";

const { after, before, describe, test } = await requiring("root");

let work: string;
let n = 0;
before(() => {
  // /var/tmp, not /tmp: overlay upper dirs need a real filesystem.
  work = mkdtempSync("/var/tmp/suture-sparse-layers-");
});
after(() => rmSync(work, { recursive: true, force: true }));

const SITE = "usr/local/lib/python3.11/site-packages/mlpkg";
const MODEL = Buffer.alloc(300_000, 7);

/** An application layer over a package-like base, and a layer above that deletes and adds. */
async function appImage() {
  const base = await tarOf([
    { name: "etc/", type: "directory" },
    { name: "etc/ld.so.conf", content: "include /etc/ld.so.conf.d/*.conf\n" },
    { name: "etc/ld.so.conf.d/", type: "directory" },
    { name: "etc/ld.so.conf.d/app.conf", content: "/app/lib\n" },
    { name: "usr/", type: "directory" },
    { name: "usr/bin/", type: "directory" },
    { name: "usr/bin/tool", content: "#!/bin/sh\n", mode: 0o755 },
    { name: "usr/share/", type: "directory" },
    // A package path that the image points into an application tree.
    { name: "usr/share/mlpkg", type: "symlink", linkname: `/${SITE}` },
  ]);
  const app = await tarOf([
    // Every parent listed: one the archive leaves out gets the time it was made, in any extraction.
    { name: "usr/", type: "directory" },
    { name: "usr/local/", type: "directory" },
    { name: "usr/local/lib/", type: "directory" },
    { name: "usr/local/lib/libmlrt.so.1", content: "ELF library", mode: 0o755 },
    { name: "usr/local/lib/python3.11/", type: "directory" },
    { name: "usr/local/lib/python3.11/site-packages/", type: "directory" },
    { name: `${SITE}/`, type: "directory", mode: 0o750, uid: 1000, gid: 1000, mtime: MTIME + 5 },
    { name: `${SITE}/__init__.py`, content: "import os\n", uid: 1000, gid: 1000, mode: 0o640 },
    { name: `${SITE}/other.py`, content: "x = 1\n" },
    { name: "opt/", type: "directory", mtime: MTIME + 9 },
    { name: "opt/model.bin", content: MODEL },
    { name: "opt/model-copy.bin", type: "hardlink", linkname: "opt/model.bin" },
    { name: "app/", type: "directory" },
    { name: "app/main.py", content: "print('hi')\n" },
    { name: "app/lib/", type: "directory" },
    { name: "app/lib/libapp.so.2", content: "ELF app library" },
  ]);
  const top = await tarOf([
    { name: "app/", type: "directory" },
    { name: "app/.wh.main.py", content: "" },
    { name: "opt/", type: "directory", mtime: MTIME + 9 },
    { name: "opt/new.bin", content: "new" },
  ]);
  return (await imageOf([base, app, top])).image;
}

function options(events: ProgressEvent[] = []) {
  return {
    cacheDir: join(work, `cache-${n++}`),
    workRoot: join(work, "sandboxes"),
    progress: (e: ProgressEvent) => void events.push(e),
    // These layers are tiny on purpose: sparse extraction is what is tested, not the small-layer rule.
    wholeLayersUpTo: 0,
  };
}

/** What the merged view shows, without inode numbers (they differ between any two trees). */
function view(sb: Sandbox): Map<string, string> {
  const out = new Map<string, string>();
  for (const [path, facts] of snapshot(sb.mergedDir))
    if (path !== ".") out.set(path, facts.replace(/ \d+ \[/, " ["));
  return out;
}

describe("sparse lowers", () => {
  test("files Debian packages never own are left out, their directories kept with real metadata; ensurePaths brings them in byte-exact", async () => {
    const image = await appImage();
    const full = await withSandbox(image, options(), async (sb) => view(sb));
    const events: ProgressEvent[] = [];
    await withSandbox(image, { ...options(events), sparse: true }, async (sb) => {
      const m = sb.mergedDir;
      assert.ok(sb.ensurePaths && sb.ensureUpperPaths && sb.complete, "a sparse sandbox");
      // Left out: the application's files; kept: packages' places, ldconfig's library dirs
      // (/usr/local/lib by rule, /app/lib because ld.so.conf.d names it).
      for (const p of [
        `${SITE}/__init__.py`,
        `${SITE}/other.py`,
        "opt/model.bin",
        "opt/model-copy.bin",
        "opt/new.bin",
      ])
        assert.equal(lstatSync(join(m, p), { throwIfNoEntry: false }), undefined, `${p} is left out`);
      for (const p of ["usr/bin/tool", "usr/local/lib/libmlrt.so.1", "app/lib/libapp.so.2", "etc/ld.so.conf"])
        assert.equal(view(sb).get(p), full.get(p), `${p} is there as in the full tree`);
      const dir = statSync(join(m, SITE), { bigint: true });
      assert.deepEqual(
        [dir.mode & 0o7777n, dir.uid, dir.gid, dir.mtimeNs],
        [0o750n, 1000n, 1000n, BigInt(MTIME + 5) * 1_000_000_000n],
        "the directory has the layer's metadata",
      );
      assert.ok(
        events.some(
          (e) =>
            e.type === "step-done" && /^layer 2\/3: .*; 6 files \(\d+ bytes\) left out/.test(e.message ?? ""),
        ),
        events.map((e) => ("message" in e ? e.message : "")).join("\n"),
      );

      // Through the image's symlink, as the unpacker names a package's path; a hardlink with its target.
      await sb.ensurePaths!(["/usr/share/mlpkg/__init__.py", "/opt/model-copy.bin"]);
      assert.equal(readFileSync(join(m, SITE, "__init__.py"), "utf8"), "import os\n");
      assert.ok(readFileSync(join(m, "opt/model-copy.bin")).equals(MODEL));
      assert.equal(lstatSync(join(sb.lowerDirs[1]!, "opt/model-copy.bin")).nlink, 2, "still one inode");
      assert.equal(
        lstatSync(join(m, `${SITE}/other.py`), { throwIfNoEntry: false }),
        undefined,
        "only what was asked",
      );
      // The deleted file comes into its layer, and the layer above still hides it.
      await sb.ensurePaths!(["/app/main.py"]);
      assert.ok(lstatSync(join(sb.lowerDirs[1]!, "app/main.py")).isFile());
      assert.equal(
        lstatSync(join(m, "app/main.py"), { throwIfNoEntry: false }),
        undefined,
        "whiteout still hides it",
      );

      await sb.ensurePaths!([`/${SITE}/other.py`, "/opt/model.bin", "/opt/new.bin"]);
      assert.deepEqual(
        view(sb),
        full,
        "once everything is in, the view is the full extraction's, times included",
      );
    });
  });

  test("ensureUpperPaths brings in what the patch replaced; complete() gives the full layers under the same upper dir", async () => {
    const image = await appImage();
    await withSandbox(image, { ...options(), sparse: true }, async (sb) => {
      writeFileSync(join(sb.mergedDir, "opt/model.bin"), "replaced");
      await sb.ensureUpperPaths!();
      assert.ok(
        readFileSync(join(sb.lowerDirs[1]!, "opt/model.bin")).equals(MODEL),
        "the lower file to compare with",
      );
      assert.equal(
        lstatSync(join(sb.lowerDirs[1]!, SITE, "other.py"), { throwIfNoEntry: false }),
        undefined,
        "only the upper dir's paths",
      );
      assert.equal(
        readFileSync(join(sb.mergedDir, "opt/model.bin"), "utf8"),
        "replaced",
        "the upper dir is kept",
      );
      await sb.complete!();
      assert.ok(
        sb.lowerDirs.every((d) => d.includes("/layers/")),
        "the layer cache's full trees",
      );
      assert.equal(readFileSync(join(sb.mergedDir, "opt/model.bin"), "utf8"), "replaced");
      assert.equal(readFileSync(join(sb.mergedDir, "opt/new.bin"), "utf8"), "new");
      assert.equal(readFileSync(join(sb.mergedDir, SITE, "other.py"), "utf8"), "x = 1\n");
    });
  });

  test("a left-out file is held to the extractor's rules: a symlinked parent is refused before anything is mounted", async () => {
    const outside = join(work, "outside");
    const evil = await tarOf([
      { name: "opt/", type: "directory" },
      { name: "opt/escape", type: "symlink", linkname: outside },
      { name: "opt/escape/payload.bin", content: "owned" },
    ]);
    const image = (await imageOf([evil])).image;
    await assert.rejects(
      withSandbox(image, { ...options(), sparse: true }, async () => {}),
      (e: unknown) => isSutureError(e, "UNSAFE_LAYER") && /symlink/.test(e.message),
    );
    assert.equal(lstatSync(join(outside, "payload.bin"), { throwIfNoEntry: false }), undefined);
  });

  test("a layer already complete in the layer cache is used as it is", async () => {
    const image = await appImage();
    const opts = options();
    await withSandbox(image, opts, async () => {}); // fills the cache
    await withSandbox(image, { ...opts, sparse: true }, async (sb) => {
      assert.ok(sb.lowerDirs.every((d) => d.includes("/layers/")));
      assert.ok(readFileSync(join(sb.mergedDir, "opt/model.bin")).equals(MODEL));
    });
  });

  test("a small layer is extracted whole and goes into the layer cache at once; a larger one stays sparse", async () => {
    const image = await appImage();
    const events: ProgressEvent[] = [];
    const opts = { ...options(events), wholeLayersUpTo: undefined };
    // The app layer's blob is about 1 KB: with a bound below it the layer stays sparse, as above.
    await withSandbox(image, { ...opts, sparse: true, wholeLayersUpTo: 512 }, async (sb) => {
      assert.ok(!sb.lowerDirs[1]!.includes("/layers/"), "the app layer is this run's sparse tree");
    });
    await withSandbox(image, { ...opts, sparse: true }, async (sb) => {
      assert.ok(
        sb.lowerDirs.every((d) => d.includes("/layers/")),
        "every layer (all below SMALL_LAYER_BYTES) is the layer cache's",
      );
      assert.ok(readFileSync(join(sb.mergedDir, "opt/model.bin")).equals(MODEL), "nothing left out");
    });
    assert.ok(
      events.some((e) => e.type === "step" && /whole: a small layer/.test(e.message ?? "")),
      "the progress says why the layer was not sparse",
    );
  });

  test("run() on a sparse sandbox sees the full tree", async (t) => {
    if (!(await needs("runc", "tool:mmdebstrap"))) return t.skip("needs runc and the minbase lab image");
    const lab = await labImage("bookwormMinbase");
    const source = await openLayoutSource(lab.layoutDir, lab.tag, {});
    try {
      const minbase = await openImage(source, { os: "linux", architecture: "amd64" });
      const gz = zlib.gzipSync(
        await tarOf([
          { name: "opt/", type: "directory" },
          { name: "opt/data.txt", content: "left out until a program runs\n" },
        ]),
      );
      const file = join(work, "opt-layer.tar.gz");
      writeFileSync(file, gz);
      const image = editImage(minbase, {
        addLayers: [
          {
            descriptor: { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(gz), size: gz.length },
            diffID: sha256Digest(zlib.gunzipSync(gz)),
            path: file,
          },
        ],
      });
      await withSandbox(image, { ...options(), sparse: true }, async (sb) => {
        assert.equal(lstatSync(join(sb.mergedDir, "opt/data.txt"), { throwIfNoEntry: false }), undefined);
        const r = await sb.run(["cat", "/opt/data.txt"]);
        assert.equal(r.exitCode, 0, r.stderr);
        assert.equal(r.stdout, "left out until a program runs\n");
      });
    } finally {
      await source.close();
    }
  });
});
