import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { setAttribute } from "@napi-rs/xattr";
import { needs } from "../../test/lab/requirements.ts";
import { LowerView } from "./lower-view.ts";

const run = promisify(execFile);

/** Lay out a directory: "dir/" → directory, "wh" → whiteout, "opq/" → opaque directory, else file content. */
async function layout(root: string, spec: Record<string, string>): Promise<void> {
  for (const [rel, what] of Object.entries(spec)) {
    const path = join(root, rel);
    await fs.mkdir(dirname(path), { recursive: true });
    if (what === "dir/") await fs.mkdir(path, { recursive: true });
    else if (what === "opq/") {
      await fs.mkdir(path, { recursive: true });
      await setAttribute(path, "trusted.overlay.opaque", "y");
    } else if (what === "wh") await run("mknod", [path, "c", "0", "0"]);
    else await fs.writeFile(path, what);
  }
}

// Whiteouts are device nodes and opaque dirs carry trusted.* xattrs: only root makes them.
test(
  "lookups honour whiteouts, opaque dirs and files hiding lower dirs, top layer first",
  await needs("root"),
  async (t) => {
    const root = await fs.mkdtemp(join(tmpdir(), "suture-lower-"));
    t.after(() => fs.rm(root, { recursive: true, force: true }));
    const [l0, l1, upper] = ["l0", "l1", "upper"].map((d) => join(root, d)) as [string, string, string];
    await layout(l0, {
      "a/file1": "l0",
      "a/dir1/x": "l0",
      b: "l0 file",
      "c/d/e": "l0",
      "f/g": "l0",
      "keep/k": "l0",
    });
    await layout(l1, {
      "a/file1": "wh",
      "a/dir1": "opq/",
      "a/dir1/y": "l1",
      "b/inner": "l1",
      f: "l1 file",
      "keep/": "dir/",
    });
    await layout(upper, { "c/": "opq/" });

    const view = new LowerView([l0, l1]);
    assert.equal(view.lookup("a/file1"), undefined);
    assert.equal(view.lookup("a/dir1/x"), undefined);
    assert.equal(view.lookup("a/dir1/y")?.path, join(l1, "a/dir1/y"));
    assert.equal(view.lookup("a/dir1")?.path, join(l1, "a/dir1"));
    assert.equal(view.lookup("b")?.path, join(l1, "b"));
    assert.equal(view.lookup("b/inner")?.path, join(l1, "b/inner"));
    assert.equal(view.lookup("f")?.stat.isFile(), true);
    assert.equal(view.lookup("f/g"), undefined, "a file in l1 hides l0's directory");
    assert.equal(view.lookup("keep/k")?.path, join(l0, "keep/k"), "plain dirs merge");
    assert.equal(view.lookup("c/d/e")?.path, join(l0, "c/d/e"));
    assert.equal(view.lookup("nothing/here"), undefined);

    const withUpper = new LowerView([l0, l1], { upperDir: upper });
    assert.equal(withUpper.lookup("c/d/e"), undefined, "the upper's opaque dir hides the lowers");
    assert.equal(withUpper.lookup("c")?.path, join(l0, "c"), "but not the path itself");
  },
);
