/**
 * Layer cache + overlay, for real: layers written with our tar writer and GNU tar, extracted by
 * materializeLayers, stacked with overlayfs, and the merged view checked. Needs root.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import zlib from "node:zlib";
import { getAttributeSync, setAttributeSync } from "@napi-rs/xattr";
import { isSutureError } from "../../src/errors/errors.ts";
import type { ProgressEvent } from "../../src/progress/events.ts";
import { pendingSandboxCleanups, runSandboxCleanups } from "../../src/sandbox/cleanup.ts";
import { isLayerCached, layerLowerDir, materializeLayers } from "../../src/sandbox/layer-cache.ts";
import { isMountPoint, mountOverlay, unmount } from "../../src/sandbox/overlay.ts";
import { withSandbox } from "../../src/sandbox/sandbox.ts";
import { requiring } from "../lab/requirements.ts";
import { gnuTarOf, imageOf, listTree, MTIME, snapshot, tarOf } from "./sandbox-fixtures.ts";

const { after, before, describe, test } = await requiring("root");

let work: string;
let counter = 0;
const mounted: string[] = [];

before(() => {
  // /var/tmp, not /tmp: the cache must sit on a filesystem that supports overlay upper dirs.
  work = mkdtempSync("/var/tmp/suture-sandbox-layers-");
});
after(async () => {
  for (const m of mounted) await unmount(m).catch(() => {});
  rmSync(work, { recursive: true, force: true });
});

function freshDir(name: string): string {
  const d = join(work, `${name}-${counter++}`);
  mkdirSync(d, { recursive: true });
  return d;
}

async function mountStack(lowerDirs: string[]): Promise<{ merged: string; upper: string }> {
  const d = freshDir("ovl");
  for (const x of ["upper", "work", "merged"]) mkdirSync(join(d, x));
  const spec = {
    lowerDirs,
    upperDir: join(d, "upper"),
    workDir: join(d, "work"),
    mergedDir: join(d, "merged"),
  };
  await mountOverlay(spec);
  mounted.push(spec.mergedDir);
  return { merged: spec.mergedDir, upper: spec.upperDir };
}

/** A layer made by GNU tar from real files: a file with file capabilities, a user xattr. */
function capabilityLayer(): { tar: Buffer; cap: Buffer } {
  const src = freshDir("caps-src");
  mkdirSync(join(src, "usr/bin"), { recursive: true });
  const ping = join(src, "usr/bin/ping");
  writeFileSync(ping, "ELF-ish");
  execFileSync("chmod", ["0755", ping]);
  // CAP_SETUID is bit 7: the xattr value holds a 0x80 byte, which a UTF-8 decoder would mangle.
  execFileSync("setcap", ["cap_net_raw,cap_setuid+ep", ping]);
  setAttributeSync(join(src, "usr"), "user.note", "from-gnu-tar");
  return { tar: gnuTarOf(src), cap: getAttributeSync(ping, "security.capability")! };
}

describe("materializeLayers + mountOverlay", () => {
  test("give the merged view of files, links, devices, modes, owners, xattrs, whiteouts and opaque dirs", async () => {
    const layer1 = await tarOf([
      { name: "etc/", type: "directory" },
      { name: "etc/keep", content: "v1" },
      { name: "etc/gone", content: "deleted above" },
      { name: "opt/old/", type: "directory" },
      { name: "opt/old/a", content: "a" },
      { name: "opt/old/b", content: "b" },
      { name: "usr/bin/", type: "directory", mtime: MTIME - 100 },
      { name: "usr/bin/tool", content: "#!/bin/sh\necho tool\n", mode: 0o755 },
      { name: "usr/bin/su", content: "setuid", mode: 0o4755 },
      { name: "usr/bin/hard", type: "hardlink", linkname: "usr/bin/tool" },
      { name: "usr/bin/link", type: "symlink", linkname: "tool" },
      { name: "home/app/data", content: "owned", uid: 1000, gid: 1000, mode: 0o640 },
      { name: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 },
      { name: "run/fifo", type: "fifo", mode: 0o600 },
      { name: "srv/tagged", content: "t", xattrs: { "user.mime": "text/plain" } },
    ]);
    const caps = capabilityLayer();
    const layer3 = await tarOf([
      { name: "etc/.wh.gone", content: "" },
      { name: "etc/keep", content: "v3" },
      { name: "etc/new", content: "new" },
      { name: "opt/old/.wh..wh..opq", content: "" },
      { name: "opt/old/c", content: "c" },
    ]);
    const { image, diffIds } = await imageOf([layer1, caps.tar, layer3]);
    const cache = freshDir("cache");
    const events: ProgressEvent[] = [];
    const lowers = await materializeLayers(image, cache, { progress: (e) => events.push(e) });

    assert.deepEqual(
      lowers,
      diffIds.map((d) => layerLowerDir(cache, d)),
    );
    assert.equal(events.filter((e) => e.type === "step-done" && e.step === "extract-layer").length, 3);
    for (const d of diffIds) assert.ok(await isLayerCached(cache, d));
    // The top lower dir holds overlayfs' forms of the OCI whiteouts.
    assert.equal(lstatSync(join(lowers[2]!, "etc/gone")).rdev, 0);
    assert.ok(lstatSync(join(lowers[2]!, "etc/gone")).isCharacterDevice());
    assert.equal(getAttributeSync(join(lowers[2]!, "opt/old"), "trusted.overlay.opaque")?.toString(), "y");

    const { merged } = await mountStack(lowers);
    const at = (p: string) => join(merged, p);
    assert.equal(readFileSync(at("etc/keep"), "utf8"), "v3");
    assert.equal(readFileSync(at("etc/new"), "utf8"), "new");
    assert.ok(!existsSync(at("etc/gone")), "whiteout hides the lower file");
    assert.deepEqual(readdirSync(at("opt/old")), ["c"], "opaque dir hides the lower contents");
    assert.equal(statSync(at("usr/bin/su")).mode & 0o7777, 0o4755);
    assert.equal(lstatSync(at("usr/bin/hard")).ino, lstatSync(at("usr/bin/tool")).ino);
    assert.equal(lstatSync(at("usr/bin/hard")).nlink, 2);
    assert.ok(lstatSync(at("usr/bin/link")).isSymbolicLink());
    assert.equal(readFileSync(at("usr/bin/link"), "utf8"), "#!/bin/sh\necho tool\n");
    const data = lstatSync(at("home/app/data"));
    assert.deepEqual([data.uid, data.gid, data.mode & 0o777], [1000, 1000, 0o640]);
    assert.equal(data.mtimeMs, MTIME * 1000);
    assert.equal(lstatSync(at("dev/null")).rdev, (1 << 8) | 3);
    assert.ok(lstatSync(at("run/fifo")).isFIFO());
    assert.equal(getAttributeSync(at("srv/tagged"), "user.mime")?.toString(), "text/plain");
    assert.deepEqual(getAttributeSync(at("usr/bin/ping"), "security.capability"), caps.cap);
    assert.match(
      execFileSync("getcap", [at("usr/bin/ping")], { encoding: "utf8" }),
      /cap_setuid,cap_net_raw=ep/,
    );
    assert.equal(getAttributeSync(at("usr"), "user.note")?.toString(), "from-gnu-tar");
    // A directory's mtime survives the files written into it during extraction.
    assert.equal(lstatSync(join(lowers[0]!, "usr/bin")).mtimeMs, (MTIME - 100) * 1000);
  });

  test("the upper dir records only changes: 0/0 char devices for deletions, opaque xattr for replaced dirs", async () => {
    const { image } = await imageOf([
      await tarOf([
        { name: "etc/a", content: "a" },
        { name: "etc/b", content: "b" },
        { name: "var/lib/x/1", content: "1" },
      ]),
    ]);
    const lowers = await materializeLayers(image, freshDir("cache"));
    const before = snapshot(lowers[0]!);
    const { merged, upper } = await mountStack(lowers);
    writeFileSync(join(merged, "etc/a"), "changed");
    unlinkSync(join(merged, "etc/b"));
    rmSync(join(merged, "var/lib/x"), { recursive: true });
    mkdirSync(join(merged, "var/lib/x"));
    writeFileSync(join(merged, "var/lib/x/2"), "2");

    assert.deepEqual(listTree(upper), [
      "etc",
      "etc/a",
      "etc/b",
      "var",
      "var/lib",
      "var/lib/x",
      "var/lib/x/2",
    ]);
    assert.equal(readFileSync(join(upper, "etc/a"), "utf8"), "changed");
    const wh = lstatSync(join(upper, "etc/b"));
    assert.ok(wh.isCharacterDevice() && wh.rdev === 0);
    assert.equal(getAttributeSync(join(upper, "var/lib/x"), "trusted.overlay.opaque")?.toString(), "y");
    assert.deepEqual(snapshot(lowers[0]!), before, "the cached layer is untouched");
  });

  test("reuse the cache: a second call extracts nothing, concurrent calls extract once", async () => {
    const tars = await Promise.all([0, 1, 2].map((i) => tarOf([{ name: `f${i}`, content: String(i) }])));
    const { image } = await imageOf(tars);
    const cache = freshDir("cache");
    const events: ProgressEvent[] = [];
    const progress = (e: ProgressEvent) => events.push(e);
    const [a, b] = await Promise.all([
      materializeLayers(image, cache, { progress }),
      materializeLayers(image, cache, { progress }),
    ]);
    assert.deepEqual(a, b);
    assert.equal(events.filter((e) => e.type === "step" && e.step === "extract-layer").length, 3);
    const marker = statSync(join(a[0]!, "..", "complete")).mtimeMs;
    events.length = 0;
    assert.deepEqual(await materializeLayers(image, cache, { progress }), a);
    assert.equal(events.length, 0);
    assert.equal(statSync(join(a[0]!, "..", "complete")).mtimeMs, marker);
    assert.deepEqual(readdirSync(join(cache, "tmp")), []);
  });

  test("several processes materialising the same image at once all get the same, complete layers", async () => {
    const cache = freshDir("cache");
    // Each child builds the same (deterministic) image and extracts it into the shared cache, so
    // they race on the rename into layers/; every one must come back with the committed copy.
    const script = `
      import { imageOf, tarOf } from ${JSON.stringify(new URL("./sandbox-fixtures.ts", import.meta.url).href)};
      import { materializeLayers } from ${JSON.stringify(new URL("../../src/sandbox/layer-cache.ts", import.meta.url).href)};
      const files = Array.from({ length: 300 }, (_, i) => ({ name: "d/f" + i, content: "x".repeat(i) }));
      const { image } = await imageOf([await tarOf(files), await tarOf([{ name: "top", content: "t" }])]);
      console.log(JSON.stringify(await materializeLayers(image, process.argv[1])));
    `;
    const run = () =>
      new Promise<string>((resolve, reject) => {
        execFile(process.execPath, ["--input-type=module", "-e", script, cache], (err, stdout, stderr) =>
          err ? reject(new Error(stderr || String(err))) : resolve(stdout.trim()),
        );
      });
    const outputs = await Promise.all([run(), run(), run()]);
    assert.equal(new Set(outputs).size, 1);
    const lowers = JSON.parse(outputs[0]!) as string[];
    assert.equal(readdirSync(join(lowers[0]!, "d")).length, 300);
    assert.deepEqual(readdirSync(join(cache, "tmp")), []);
    assert.equal(readdirSync(join(cache, "layers")).length, 2);
  });

  test("a failed mount is a SANDBOX error naming the cause", async () => {
    const d = freshDir("badmount");
    for (const x of ["upper", "work", "merged"]) mkdirSync(join(d, x));
    await assert.rejects(
      mountOverlay({
        lowerDirs: [join(d, "does-not-exist")],
        upperDir: join(d, "upper"),
        workDir: join(d, "work"),
        mergedDir: join(d, "merged"),
      }),
      (e: unknown) => {
        assert.ok(isSutureError(e, "SANDBOX"), String(e));
        assert.match(e.message, /cannot mount overlay: lower dir .*does-not-exist is not a directory/);
        return true;
      },
    );
    assert.ok(!(await isMountPoint(join(d, "merged"))));
  });

  test("stack many layers under long paths (beyond the 4 KiB mount option limit)", async () => {
    const tars: Buffer[] = [];
    for (let i = 0; i < 70; i++) {
      tars.push(
        await tarOf([
          { name: `layers/${i}`, content: String(i) },
          { name: "top", content: `layer ${i}` },
        ]),
      );
    }
    const { image } = await imageOf(tars);
    const cache = join(
      freshDir("cache"),
      "a-rather-long-directory-name-to-make-every-lower-path-longer".repeat(2),
    );
    const lowers = await materializeLayers(image, cache);
    assert.ok(lowers.join(":").length > 4096, "the plain option string would overflow a page");
    const { merged } = await mountStack(lowers);
    assert.equal(readdirSync(join(merged, "layers")).length, 70);
    assert.equal(readFileSync(join(merged, "top"), "utf8"), "layer 69");
  });

  test("a layer listed twice keeps its top position (overlayfs refuses a lower dir twice)", async () => {
    const base = await tarOf([{ name: "shared", content: "from base" }]);
    const middle = await tarOf([
      { name: ".wh.shared", content: "" },
      { name: "middle", content: "m" },
    ]);
    const { image } = await imageOf([base, middle, base]);
    const lowers = await materializeLayers(image, freshDir("cache"));
    assert.equal(lowers.length, 2);
    const { merged } = await mountStack(lowers);
    assert.equal(readFileSync(join(merged, "shared"), "utf8"), "from base");
    assert.equal(readFileSync(join(merged, "middle"), "utf8"), "m");
  });
});

describe("materializeLayers refuses bad layers", () => {
  /** Extract, expect `code`, and check nothing reached the cache or the world outside it. */
  async function expectRejected(
    layers: (outside: string) => Promise<Buffer[]>,
    code: "UNSAFE_LAYER" | "DIGEST_MISMATCH",
    mentions: string,
    diffIds?: string[],
  ) {
    const root = freshDir("malicious");
    const cache = join(root, "cache");
    const outside = join(root, "outside");
    mkdirSync(outside);
    writeFileSync(join(outside, "victim"), "keep");
    const { image } = await imageOf(await layers(outside), { diffIds });
    await assert.rejects(materializeLayers(image, cache), (e: unknown) => {
      assert.ok(isSutureError(e, code), `expected ${code}, got ${String(e)}`);
      assert.ok(e.message.includes(mentions), `message names ${mentions}: ${e.message}`);
      return true;
    });
    assert.deepEqual(readdirSync(outside), ["victim"]);
    assert.equal(readFileSync(join(outside, "victim"), "utf8"), "keep");
    assert.deepEqual(readdirSync(join(cache, "layers")), [], "nothing committed to the cache");
    assert.deepEqual(readdirSync(join(cache, "tmp")), [], "temp extraction removed");
  }

  test("../escape", async () => {
    await expectRejected(
      async () => [await tarOf([{ name: "../../../outside/escape", content: "x" }])],
      "UNSAFE_LAYER",
      "../../../outside/escape",
    );
  });

  test("absolute symlink, then a write through it", async () => {
    await expectRejected(
      async (outside) => [
        await tarOf([
          { name: "evil", type: "symlink", linkname: outside },
          { name: "evil/pwned", content: "x" },
        ]),
      ],
      "UNSAFE_LAYER",
      "evil/pwned",
    );
  });

  test("relative symlink climbing out, then a write through it", async () => {
    await expectRejected(
      async () => [
        await tarOf([
          { name: "up", type: "symlink", linkname: "../../../../outside" },
          { name: "up/victim", content: "overwritten" },
        ]),
      ],
      "UNSAFE_LAYER",
      "up/victim",
    );
  });

  test("hardlink to /etc/passwd outside the layer", async () => {
    const before = statSync("/etc/passwd").nlink;
    await expectRejected(
      async () => [await tarOf([{ name: "passwd", type: "hardlink", linkname: "/etc/passwd" }])],
      "UNSAFE_LAYER",
      "passwd",
    );
    await expectRejected(
      async () => [
        await tarOf([{ name: "passwd", type: "hardlink", linkname: "../../../../../../../../etc/passwd" }]),
      ],
      "UNSAFE_LAYER",
      "passwd",
    );
    assert.equal(statSync("/etc/passwd").nlink, before);
  });

  test("the second layer of a good image is bad: the good one stays cached, the bad one does not", async () => {
    const good = await tarOf([{ name: "ok", content: "ok" }]);
    const bad = await tarOf([{ name: "/abs", content: "x" }]);
    const root = freshDir("mixed");
    const { image, diffIds } = await imageOf([good, bad]);
    await assert.rejects(materializeLayers(image, join(root, "cache"), { concurrency: 1 }), (e: unknown) =>
      isSutureError(e, "UNSAFE_LAYER"),
    );
    assert.ok(await isLayerCached(join(root, "cache"), diffIds[0]!));
    assert.ok(!(await isLayerCached(join(root, "cache"), diffIds[1]!)));
  });

  test("diff_id mismatch", async () => {
    const t = await tarOf([{ name: "f", content: "real content" }]);
    const claimed = `sha256:${"ab".repeat(32)}`;
    await expectRejected(async () => [t], "DIGEST_MISMATCH", claimed, [claimed]);
  });

  test("a tampered compressed blob", async () => {
    const cache = freshDir("cache");
    const { image, blobs, layerDigests } = await imageOf([await tarOf([{ name: "f", content: "original" }])]);
    const other = zlib.gzipSync(await tarOf([{ name: "f", content: "tampered" }]));
    blobs.set(layerDigests[0]!, other);
    await assert.rejects(materializeLayers(image, cache), (e: unknown) =>
      isSutureError(e, "DIGEST_MISMATCH"),
    );
    assert.deepEqual(readdirSync(join(cache, "layers")), []);
  });
});

describe("withSandbox", () => {
  test("unmounts and removes its dirs when the callback throws", async () => {
    const { image } = await imageOf([await tarOf([{ name: "etc/os-release", content: "ID=test\n" }])]);
    const workRoot = freshDir("work");
    let merged = "";
    await assert.rejects(
      withSandbox(image, { cacheDir: freshDir("cache"), workRoot }, async (s) => {
        merged = s.mergedDir;
        assert.ok(await isMountPoint(s.mergedDir));
        assert.equal(await readFile(join(s.mergedDir, "etc/os-release"), "utf8"), "ID=test\n");
        writeFileSync(join(s.mergedDir, "etc/changed"), "x");
        assert.deepEqual(listTree(s.upperDir), ["etc", "etc/changed"]);
        throw new Error("callback failed");
      }),
      /callback failed/,
    );
    assert.ok(!(await isMountPoint(merged)));
    assert.deepEqual(readdirSync(workRoot), []);
    assert.deepEqual(pendingSandboxCleanups(), []);
  });

  test("a signal handler's runSandboxCleanups tears the sandbox down", async () => {
    const { image } = await imageOf([await tarOf([{ name: "f", content: "x" }])]);
    const workRoot = freshDir("work");
    const result = await withSandbox(image, { cacheDir: freshDir("cache"), workRoot }, async (s) => {
      assert.equal(pendingSandboxCleanups().length, 1);
      const failures = await runSandboxCleanups();
      assert.deepEqual(failures, []);
      return isMountPoint(s.mergedDir);
    });
    assert.equal(result, false);
    assert.deepEqual(readdirSync(workRoot), []);
  });

  test("gives the merged root the image's root directory metadata", async () => {
    const { image } = await imageOf([
      await tarOf([{ name: "./", type: "directory", mode: 0o755, mtime: MTIME }]),
    ]);
    await withSandbox(image, { cacheDir: freshDir("cache"), workRoot: freshDir("work") }, async (s) => {
      const st = statSync(s.mergedDir);
      assert.equal(st.mode & 0o7777, 0o755);
      assert.equal(st.uid, 0);
    });
  });
});
