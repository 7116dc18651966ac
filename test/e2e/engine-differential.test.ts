/**
 * The differential test of issue 4: patch the same real image with the image's own apt (sandbox
 * engine) and with suture's deb engine, then compare the two resulting trees file by file and the
 * two package databases. Every difference must be on the justified list below; anything else fails
 * the test and is printed.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { lstat, mkdtemp, readdir, readFile, readlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { patchIntoOciDir } from "../lab/cli.ts";
import { labImage, trivyReportFor } from "../lab/images.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("root", "runc", "tool:mmdebstrap", "tool:umoci");

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-differential-"));
});
after(() => rm(work, { recursive: true, force: true }));

/**
 * Paths whose contents legitimately differ between the engines, with why. dpkg's own bookkeeping
 * of a run is not part of what a package installs.
 */
const JUSTIFIED: { pattern: RegExp; why: string }[] = [
  {
    pattern:
      /^\/var\/lib\/dpkg\/(status-old|available|available-old|diversions-old|statoverride-old|lock.*)$/,
    why: "dpkg's backups and locks of its own run",
  },
  {
    pattern: /^\/var\/lib\/dpkg\/triggers\/(Lock|Unincorp)$/,
    why: "dpkg's trigger bookkeeping of its own run",
  },
  { pattern: /^\/var\/cache\/debconf\/.*$/, why: "debconf caches rewritten by apt's frontend run" },
  {
    pattern: /^\/var\/lib\/apt\/extended_states$/,
    why: "apt's auto-installed marks, written only when apt runs",
  },
  {
    pattern: /^\/var\/cache\/ldconfig\/aux-cache$/,
    why: "ldconfig's auxiliary cache keys libraries by inode and ctime, which differ on every run (two apt runs differ too)",
  },
];

interface Entry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  digest?: string;
  target?: string;
}

async function tree(root: string): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const walk = async (rel: string) => {
    for (const name of await readdir(join(root, rel))) {
      const p = `${rel}/${name}`;
      const st = await lstat(join(root, p));
      const e: Entry = { type: "other", mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
      if (st.isDirectory()) {
        e.type = "dir";
        await walk(p);
      } else if (st.isSymbolicLink()) {
        e.type = "symlink";
        e.target = await readlink(join(root, p));
      } else if (st.isFile()) {
        e.type = "file";
        e.digest = createHash("sha256")
          .update(await readFile(join(root, p)))
          .digest("hex");
      }
      out.set(p, e);
    }
  };
  await walk("");
  return out;
}

async function patchWith(
  engine: "native" | "sandbox",
  report: string,
  reference: string,
): Promise<Map<string, Entry>> {
  const out = join(work, engine);
  await patchIntoOciDir({ reference, engine, out, cacheDir: join(work, "cache"), report });
  const rootfs = join(work, `${engine}-rootfs`);
  await run("umoci", ["raw", "unpack", "--image", `${out}:${engine}`, rootfs]);
  return tree(rootfs);
}

test("the native engine and the image's own apt produce the same tree and package database", async () => {
  const lab = await labImage("bookwormNginx");
  const { path: report, fixes } = await trivyReportFor("bookwormNginx", {
    outFile: join(work, "report.json"),
  });
  assert.ok(fixes.length > 5, "a real multi-package report");
  const sandbox = await patchWith("sandbox", report, lab.reference);
  const native = await patchWith("native", report, lab.reference);

  const unexplained: string[] = [];
  const explained = new Map<string, string[]>();
  for (const path of new Set([...sandbox.keys(), ...native.keys()])) {
    const a = sandbox.get(path);
    const b = native.get(path);
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    const why = JUSTIFIED.find((j) => j.pattern.test(path))?.why;
    const what = `${path}: sandbox ${a ? JSON.stringify(a) : "absent"} / native ${b ? JSON.stringify(b) : "absent"}`;
    if (why) explained.set(why, [...(explained.get(why) ?? []), path]);
    else unexplained.push(what);
  }
  for (const [why, paths] of explained) console.log(`justified (${why}): ${paths.join(", ")}`);
  assert.deepEqual(unexplained, [], `unexplained differences:\n${unexplained.join("\n")}`);
});
