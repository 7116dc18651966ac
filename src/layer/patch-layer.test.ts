import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type TestContext, test } from "node:test";
import { promisify } from "node:util";
import { setAttribute } from "@napi-rs/xattr";
import { needs } from "../../test/lab/requirements.ts";
import { listTar } from "../../test/lab/tar.ts";
import type { ProgressEvent } from "../progress/events.ts";
import { buildPatchLayer } from "./patch-layer.ts";

// Upper dirs laid out by hand (as overlayfs would leave them), for cases a mount makes awkward.
// test/integration/layer.test.ts drives the real overlay.

const run = promisify(execFile);

async function tempDir(t: TestContext): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), "suture-patch-layer-"));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

async function write(root: string, rel: string, content: string, mtime = 1_600_000_000): Promise<void> {
  const path = join(root, rel);
  await fs.mkdir(dirname(path), { recursive: true });
  await fs.writeFile(path, content);
  await fs.utimes(path, mtime, mtime);
}

/** The patch layer of `upper` over `lowers`, as a plain tar in `out`. */
function uncompressedLayer(upper: string, lowers: string[], out: string) {
  return buildPatchLayer({ upperDir: upper, lowerDirs: lowers, outFile: out, compression: "none" });
}

/** The layer's members as Python's tarfile (an independent reader) lists them; hardlinks with their target. */
async function names(file: string): Promise<string[]> {
  return (await listTar(await fs.readFile(file))).map((m) =>
    m.type === "hardlink" ? `${m.name} -> ${m.linkname}` : m.name,
  );
}

test("a hardlink group equal to the lowers is dropped whole; a changed one is written once", async (t) => {
  const dir = await tempDir(t);
  const lower = join(dir, "lower");
  const upper = join(dir, "upper");
  await write(lower, "same/a", "x");
  await write(lower, "same/b", "x");
  await write(lower, "mixed/a", "y");
  await write(upper, "same/a", "x");
  await fs.link(join(upper, "same/a"), join(upper, "same/b"));
  await write(upper, "mixed/a", "y");
  await fs.link(join(upper, "mixed/a"), join(upper, "mixed/new"));
  const out = join(dir, "l.tar");
  const layer = await uncompressedLayer(upper, [lower], out);
  assert.deepEqual(await names(out), ["mixed/", "mixed/a", "mixed/new -> mixed/a"]);
  assert.equal(layer.stats.droppedUnchanged, 2);
});

test("a file rewritten with the same bytes and a new mtime is kept only where the package format verifies times (rpm -V)", async (t) => {
  const dir = await tempDir(t);
  const lower = join(dir, "lower");
  const upper = join(dir, "upper");
  await write(lower, "usr/share/doc/p/README", "same", 1_600_000_000);
  await write(lower, "etc/p.conf", "same", 1_600_000_000);
  await write(upper, "usr/share/doc/p/README", "same", 1_700_000_000); // touched by the upgrade
  await write(upper, "etc/p.conf", "same", 1_600_000_000); // rewritten, same second
  const build = async (keepTouchedFiles: boolean) => {
    const out = join(dir, `l-${keepTouchedFiles}.tar`);
    const layer = await buildPatchLayer({
      upperDir: upper,
      lowerDirs: [lower],
      outFile: out,
      compression: "none",
      keepTouchedFiles,
    });
    return { members: await names(out), dropped: layer.stats.droppedUnchanged };
  };
  assert.deepEqual(await build(false), { members: [], dropped: 2 });
  assert.deepEqual(await build(true), {
    members: ["usr/", "usr/share/", "usr/share/doc/", "usr/share/doc/p/", "usr/share/doc/p/README"],
    dropped: 1,
  });
});

test("the walk order, not readdir's order, decides the bytes", async (t) => {
  const dir = await tempDir(t);
  const lower = join(dir, "lower");
  await fs.mkdir(lower);
  const digests: string[] = [];
  for (const [i, order] of [
    ["b", "a", "B", "é", "a-b", "a/c"],
    ["a/c", "é", "a-b", "B", "a", "b"],
  ].entries()) {
    const upper = join(dir, `upper${i}`);
    for (const name of order) {
      if (name === "a") await fs.mkdir(join(upper, "a"), { recursive: true });
      else await write(upper, name, name);
    }
    await fs.utimes(join(upper, "a"), 1_600_000_000, 1_600_000_000);
    const out = join(dir, `l${i}.tar`);
    const layer = await buildPatchLayer({
      upperDir: upper,
      lowerDirs: [lower],
      outFile: out,
      compression: "gzip",
    });
    digests.push(layer.descriptorFields.digest);
  }
  assert.equal(digests[0], digests[1]);
  const out = join(dir, "plain.tar");
  await buildPatchLayer({
    upperDir: join(dir, "upper0"),
    lowerDirs: [lower],
    outFile: out,
    compression: "none",
  });
  assert.deepEqual(await names(out), ["B", "a/", "a/c", "a-b", "b", "é"]);
});

test(
  "opaque markers and whiteouts appear only where the lowers have something to hide",
  await needs("root"),
  async (t) => {
    const dir = await tempDir(t);
    const lower = join(dir, "lower");
    const upper = join(dir, "upper");
    await write(lower, "was-file", "f");
    await write(lower, "kept/x", "x");
    await write(upper, "was-file/inside", "i"); // a directory over a lower file
    await write(upper, "fresh/y", "y");
    await setAttribute(join(upper, "fresh"), "trusted.overlay.opaque", "y");
    await write(upper, "kept/z", "z");
    await setAttribute(join(upper, "kept"), "trusted.overlay.opaque", "y");
    await run("mknod", [join(upper, "kept/x"), "c", "0", "0"]); // inside an opaque dir: redundant
    await run("mknod", [join(upper, "never-existed"), "c", "0", "0"]);
    const out = join(dir, "l.tar");
    const layer = await uncompressedLayer(upper, [lower], out);
    assert.deepEqual(await names(out), [
      "fresh/",
      "fresh/y",
      "kept/",
      "kept/.wh..wh..opq",
      "kept/z",
      "was-file/",
      "was-file/inside",
    ]);
    assert.equal(layer.stats.opaqueDirs, 1);
    assert.equal(layer.stats.whiteouts, 0);
    assert.equal(layer.stats.droppedUnchanged, 2);
  },
);

test("a real file named like a whiteout is refused, and the output file is left as it was", async (t) => {
  const dir = await tempDir(t);
  const upper = join(dir, "upper");
  await write(upper, "etc/.wh.sneaky", "x");
  const out = join(dir, "l.tar");
  await fs.writeFile(out, "previous");
  await assert.rejects(uncompressedLayer(upper, [], out), { code: "UNSAFE_LAYER" });
  assert.equal(await fs.readFile(out, "utf8"), "previous");
  assert.deepEqual((await fs.readdir(dir)).sort(), ["l.tar", "upper"]);
});

test("sockets are skipped with a warning; a cancelled build leaves nothing behind", async (t) => {
  const dir = await tempDir(t);
  const upper = join(dir, "upper");
  await write(upper, "run-state/file", "x");
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(join(upper, "run-state/sock"), resolve));
  t.after(() => server.close());
  const events: ProgressEvent[] = [];
  const out = join(dir, "l.tar");
  await buildPatchLayer({
    upperDir: upper,
    lowerDirs: [],
    outFile: out,
    compression: "none",
    progress: (e) => events.push(e),
  });
  assert.deepEqual(await names(out), ["run-state/", "run-state/file"]);
  assert.ok(events.some((e) => e.type === "warning" && e.message.includes("/run-state/sock")));

  const controller = new AbortController();
  controller.abort();
  const out2 = join(dir, "cancelled.tar");
  await assert.rejects(
    buildPatchLayer({
      upperDir: upper,
      lowerDirs: [],
      outFile: out2,
      compression: "gzip",
      signal: controller.signal,
    }),
    { code: "CANCELLED" },
  );
  assert.deepEqual((await fs.readdir(dir)).sort(), ["l.tar", "upper"]);
});

test("missing input directories are reported as such", async (t) => {
  const dir = await tempDir(t);
  await assert.rejects(
    buildPatchLayer({
      upperDir: join(dir, "nope"),
      lowerDirs: [],
      outFile: join(dir, "x"),
      compression: "none",
    }),
    (e: Error & { code?: string }) => e.code === "IO" && e.message.includes("upper dir"),
  );
});

test("what the run wrote without a package-given time gets the epoch; packaged times stay; two runs give one digest", async (t) => {
  const dir = await tempDir(t);
  const lower = join(dir, "lower");
  await write(lower, "etc/keep", "old");
  await write(lower, "etc/gone", "old");
  const build = async (run: string, now: number) => {
    const upper = join(dir, `upper-${run}`);
    // A packaged file (its .deb's time), a database file and a new directory written "now".
    await write(upper, "usr/lib/p/lib.so", "new", 1_650_000_000);
    await write(upper, "var/lib/dpkg/status", "Package: p\n", now);
    await fs.mkdir(join(upper, "usr/lib/p/plugins"));
    await fs.writeFile(join(upper, "usr/lib/p/plugins/.keep"), "");
    await fs.utimes(join(upper, "usr/lib/p/plugins/.keep"), 1_650_000_000, 1_650_000_000);
    for (const d of ["usr/lib/p/plugins", "usr/lib/p", "usr/lib", "usr", "var/lib/dpkg", "var/lib", "var"])
      await fs.utimes(join(upper, d), now, now);
    const out = join(dir, `${run}.tar.gz`);
    const layer = await buildPatchLayer({
      upperDir: upper,
      lowerDirs: [lower],
      outFile: out,
      compression: "gzip",
      times: { writtenSince: now - 1, epoch: 1_500_000_000 },
    });
    return { layer, out };
  };
  const now = Math.floor(Date.now() / 1000);
  const first = await build("first", now);
  const second = await build("second", now + 3600);
  assert.equal(first.layer.descriptorFields.digest, second.layer.descriptorFields.digest);
  assert.equal(first.layer.diffID, second.layer.diffID);
  const gz = await fs.readFile(first.out);
  assert.equal(gz[9], 3, "the gzip header says Unix whatever the host");
  assert.equal(gz.readUInt32LE(4), 0, "the gzip header has no time");
  const { gunzipSync } = await import("node:zlib");
  const times = Object.fromEntries((await listTar(gunzipSync(gz))).map((m) => [m.name, m.mtime]));
  assert.deepEqual(times, {
    "usr/": 1_500_000_000,
    "usr/lib/": 1_500_000_000,
    "usr/lib/p/": 1_500_000_000,
    "usr/lib/p/lib.so": 1_650_000_000,
    "usr/lib/p/plugins/": 1_500_000_000,
    "usr/lib/p/plugins/.keep": 1_650_000_000,
    "var/": 1_500_000_000,
    "var/lib/": 1_500_000_000,
    "var/lib/dpkg/": 1_500_000_000,
    "var/lib/dpkg/status": 1_500_000_000,
  });
});

test("compiled Python made from a source the layer drops records the time of the source the image keeps", async (t) => {
  const dir = await tempDir(t);
  const lower = join(dir, "lower");
  const upper = join(dir, "upper");
  const lib = "usr/lib/python3/dist-packages";
  // Compiled by the host's Python, as py3compile would (timestamp-based, PEP 552).
  const compile = async (root: string, name: string) => {
    await fs.mkdir(join(root, lib, "__pycache__"), { recursive: true });
    await run(
      "python3",
      [
        "-c",
        "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)",
        // Relative to the root, as in the image: the code records the path it was compiled from.
        `${lib}/${name}.py`,
        `${lib}/__pycache__/${name}.cpython-3.pyc`,
      ],
      { cwd: root },
    );
    await fs.utimes(join(root, lib, "__pycache__", `${name}.cpython-3.pyc`), 1_700_000_500, 1_700_000_500);
  };
  const recordedTime = (pyc: Buffer) => pyc.readUInt32LE(8);
  const same = "def f():\n    return 1\n";
  // abc: the same bytes rewritten by the upgrade (new mtime) and compiled again; the lowers had its pyc.
  await write(lower, `${lib}/abc.py`, same, 1_600_000_000);
  await compile(lower, "abc");
  await write(upper, `${lib}/abc.py`, same, 1_700_000_000);
  await compile(upper, "abc");
  // other: the same, but the lowers had no pyc for it.
  await write(lower, `${lib}/other.py`, same, 1_600_000_000);
  await write(upper, `${lib}/other.py`, same, 1_700_000_000);
  await compile(upper, "other");
  // linked: a link to other.py, rewritten as it was (Debian's _sysconfigdata__linux_*.py); Python
  // records the time of what it points to.
  for (const root of [lower, upper]) await fs.symlink("other.py", join(root, lib, "linked.py"));
  await compile(upper, "linked");
  // deep: the same file through a path with a directory in it, which the builder does not follow.
  for (const root of [lower, upper])
    await fs.symlink("../dist-packages/other.py", join(root, lib, "deep.py"));
  await compile(upper, "deep");
  // new: a changed source goes in the layer, and its pyc as compiled.
  await write(lower, `${lib}/new.py`, same, 1_600_000_000);
  await write(upper, `${lib}/new.py`, "def f():\n    return 2\n", 1_700_000_000);
  await compile(upper, "new");
  const out = join(dir, "l.tar");
  const layer = await uncompressedLayer(upper, [lower], out);
  const members = await listTar(await fs.readFile(out), { bodies: true });
  assert.deepEqual(
    members.filter((m) => m.type === "file").map((m) => m.name),
    [
      `${lib}/__pycache__/deep.cpython-3.pyc`,
      `${lib}/__pycache__/linked.cpython-3.pyc`,
      `${lib}/__pycache__/new.cpython-3.pyc`,
      `${lib}/__pycache__/other.cpython-3.pyc`,
      `${lib}/new.py`,
    ],
    "abc's pyc, given the kept time, is the lowers' own; the unchanged sources stay below",
  );
  const content = (name: string) =>
    members.find((m) => m.name === `${lib}/__pycache__/${name}.cpython-3.pyc`)!.body;
  assert.equal(recordedTime(content("other")), 1_600_000_000, "the time of the other.py the image keeps");
  assert.equal(
    recordedTime(content("deep")),
    1_700_000_000,
    "a link through a directory is left as compiled",
  );
  assert.equal(
    recordedTime(content("linked")),
    1_600_000_000,
    "the time of the file the kept link points to",
  );
  assert.equal(
    recordedTime(content("new")),
    1_700_000_000,
    "new.py is in the layer with the time it was compiled from",
  );
  const upperOther = await fs.readFile(join(upper, lib, "__pycache__", "other.cpython-3.pyc"));
  assert.deepEqual(content("other").subarray(16), upperOther.subarray(16), "only the header's time differs");
  assert.equal(layer.stats.pycTimesKept, 2);
});
