/**
 * The differential test of issue 4: patch the same real image with the image's own apt (sandbox
 * engine) and with suture's deb engine, then compare the two resulting trees file by file and the
 * two package databases. Every difference must be on the justified list below; anything else fails
 * the test and is printed.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { patchIntoOciDir } from "../lab/cli.ts";
import { treeSnapshot } from "../lab/file-tree.ts";
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

async function patchWith(
  engine: "native" | "sandbox",
  report: string,
  reference: string,
): Promise<Map<string, string>> {
  const out = join(work, engine);
  await patchIntoOciDir({ reference, engine, out, cacheDir: join(work, "cache"), report });
  const rootfs = join(work, `${engine}-rootfs`);
  await run("umoci", ["raw", "unpack", "--image", `${out}:${engine}`, rootfs]);
  return treeSnapshot(rootfs);
}

test("the native engine and the image's own apt produce the same tree and package database", async () => {
  // The nginx lab image with python3: its full report updates perl, tzdata, ca-certificates,
  // nginx and python3.11, whose scripts byte-compile the standard library (py3compile).
  const lab = await labImage("bookwormNginxPython");
  const { path: report, fixes } = await trivyReportFor("bookwormNginxPython", {
    outFile: join(work, "report.json"),
  });
  assert.ok(fixes.length > 5, "a real multi-package report");
  assert.ok(
    fixes.some((f) => f.name === "python3.11-minimal"),
    "python among the fixes",
  );
  const sandbox = await patchWith("sandbox", report, lab.reference);
  const native = await patchWith("native", report, lab.reference);

  const unexplained: string[] = [];
  const explained = new Map<string, string[]>();
  for (const path of new Set([...sandbox.keys(), ...native.keys()])) {
    const a = sandbox.get(path);
    const b = native.get(path);
    if (a === b) continue;
    const why = JUSTIFIED.find((j) => j.pattern.test(path))?.why;
    const what = `${path}: sandbox ${a ?? "absent"} / native ${b ?? "absent"}`;
    if (why) explained.set(why, [...(explained.get(why) ?? []), path]);
    else unexplained.push(what);
  }
  for (const [why, paths] of explained) console.log(`justified (${why}): ${paths.join(", ")}`);
  assert.deepEqual(unexplained, [], `unexplained differences:\n${unexplained.join("\n")}`);
});
