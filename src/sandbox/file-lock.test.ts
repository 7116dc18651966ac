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
    let release!: () => void;
    let holding!: () => void;
    const held = new Promise<void>((r) => {
      holding = r;
    });
    const first = withFileLock(lock, async () => {
      order.push("first-start");
      holding();
      await new Promise<void>((r) => {
        release = r;
      });
      order.push("first-end");
    });
    // Each step waits for the event it needs, not for a time a loaded machine may overrun.
    await held;
    let waiting!: () => void;
    const waited = new Promise<void>((r) => {
      waiting = r;
    });
    const second = withFileLock(lock, async () => order.push("second"), { onWait: () => waiting() });
    // The waiter is told why it waits: the first holder still holds the lock.
    await waited;
    release();
    await Promise.all([first, second]);
    assert.deepEqual(order, ["first-start", "first-end", "second"]);
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

test("a lock file that does not name one process is never broken: the waiter times out, no TypeError", async () => {
  const dir = await mkdtemp(join(tmpdir(), "suture-lock-"));
  try {
    const lock = join(dir, "lock");
    // A fractional pid would have reached process.kill (a TypeError); -1 asks about every process.
    for (const owner of [{ pid: 1.5 }, { pid: -1 }, { pid: 0 }, null]) {
      const text = JSON.stringify(owner === null ? null : { ...owner, host: hostname(), started: "x" });
      await writeFile(lock, text);
      await assert.rejects(
        withFileLock(lock, async () => "never", { waitMs: 100 }),
        (e: Error) => {
          assert.match(e.message, /held by process \? on \?: wait for it to finish, or remove the file/);
          return true;
        },
      );
      assert.equal(await readFile(lock, "utf8"), text, "left as it was");
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
