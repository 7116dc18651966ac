/**
 * `suture worker`'s refusals: a missing or wrong flag is one `error:` line naming the fix (exit 2)
 * before any connection; an unreachable Postgres is one line without the password (exit 1); a
 * stopped worker exits 0.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { oneLineError, SUTURE } from "../lab/cli.ts";
import { freePort, type LabRedis, startRedis } from "../lab/redis.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("loopback", "tool:redis-server");
const run = promisify(execFile);
let redis: LabRedis;
let stateDir: string;

before(async () => {
  redis = await startRedis();
  stateDir = await mkdtemp(join(tmpdir(), "suture-worker-cli-"));
});
after(async () => {
  await redis?.stop();
  await rm(stateDir, { recursive: true, force: true });
});

test("usage errors: no --redis, a URL that is not redis://, a bad rate limit, no state", async () => {
  await assert.rejects(
    run(SUTURE, ["worker", "--state-dir", stateDir]),
    oneLineError(/needs the service's queue: give --redis/, 2),
  );
  await assert.rejects(
    run(SUTURE, ["worker", "--redis", "http://127.0.0.1:6379", "--state-dir", stateDir]),
    oneLineError(/invalid --redis .*redis:\/\/HOST:6379/, 2),
  );
  await assert.rejects(
    run(SUTURE, ["worker", "--redis", redis.url, "--state-dir", stateDir, "--registry-rate-limit", "lots"]),
    oneLineError(/invalid --registry-rate-limit "lots": give jobs per window, e\.g\. 20\/1m/, 2),
  );
  await assert.rejects(
    run(SUTURE, ["worker", "--redis", redis.url]),
    oneLineError(/give --database postgres:\/\//, 2),
  );
});

test("an unreachable Postgres: one line naming --database, the password left out", async () => {
  const port = await freePort();
  await assert.rejects(
    run(SUTURE, [
      "worker",
      "--redis",
      redis.url,
      "--database",
      `postgres://suture:s3cretpass@127.0.0.1:${port}/db`,
    ]),
    (e: { code: number; stderr: string }) => {
      oneLineError(/cannot use the Postgres database .*--database/, 1)(e);
      assert.ok(!e.stderr.includes("s3cretpass"), e.stderr);
      return true;
    },
  );
});

test("a worker on the embedded store starts, says where it takes jobs from, and stops on SIGTERM with exit 0", async () => {
  const child = spawn(SUTURE, ["worker", "--redis", redis.url, "--state-dir", stateDir, "-c", "2"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  await new Promise<void>((resolve, reject) => {
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      stderr += s;
      if (stderr.includes("taking jobs from")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`worker exited (${code}): ${stderr}`)));
  });
  assert.match(
    stderr,
    /suture worker: taking jobs from redis:\/\/127\.0\.0\.1:\d+ \(queue suture-patch\), 2 at once/,
  );
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill("SIGTERM");
  assert.equal(await exited, 0, stderr);
});
