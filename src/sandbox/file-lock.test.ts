import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { withFileLock } from "./file-lock.ts";

test("a second holder waits for the first and then runs", async () => {
  const dir = await mkdtemp(join(tmpdir(), "suture-lock-"));
  try {
    const lock = join(dir, "lock");
    const order: string[] = [];
    let waited = false;
    let release!: () => void;
    const first = withFileLock(lock, async () => {
      order.push("first-start");
      await new Promise<void>((r) => {
        release = r;
      });
      order.push("first-end");
    });
    await new Promise((r) => setTimeout(r, 50));
    const second = withFileLock(lock, async () => order.push("second"), { onWait: () => (waited = true) });
    await new Promise((r) => setTimeout(r, 300));
    release();
    await Promise.all([first, second]);
    assert.deepEqual(order, ["first-start", "first-end", "second"]);
    assert.ok(waited, "the waiter was told why it waits");
    await assert.rejects(stat(lock), /ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a lock left by a dead process is broken; a live holder times out the waiter with a clear error", async () => {
  const dir = await mkdtemp(join(tmpdir(), "suture-lock-"));
  try {
    const lock = join(dir, "lock");
    const child = spawn("true");
    const deadPid = await new Promise<number>((r) => child.on("exit", () => r(child.pid!)));
    await writeFile(lock, JSON.stringify({ pid: deadPid, host: hostname(), started: "x" }));
    assert.equal(await withFileLock(lock, async () => "ran"), "ran");

    await writeFile(lock, JSON.stringify({ pid: process.pid, host: hostname(), started: "x" }));
    await assert.rejects(
      withFileLock(lock, async () => "never", { waitMs: 300 }),
      (e: Error) => {
        assert.match(e.message, new RegExp(`held by process ${process.pid}.*remove the file`));
        return true;
      },
    );
    assert.equal(JSON.parse(await readFile(lock, "utf8")).pid, process.pid, "a live holder's lock is kept");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
