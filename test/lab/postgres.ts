import { type ChildProcess, execFile, spawn } from "node:child_process";
import { chownSync, existsSync, openSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { freePort, stopChild, tail, waitForPort } from "./redis.ts";

const run = promisify(execFile);

/** A real PostgreSQL server (Debian's package) on 127.0.0.1, in a temp dir, for one test file. */
export interface LabPostgres {
  /** `postgres://suture@127.0.0.1:PORT/postgres` (trust auth on loopback). */
  readonly url: string;
  /** A fresh, empty database; its URL. */
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

/** The server binaries of the newest installed major version (`/usr/lib/postgresql/N/bin`), if any. */
export function postgresBinDir(): string | undefined {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], "bin") : undefined;
}

/**
 * Start PostgreSQL: `initdb` into a temp dir (trust auth, superuser `suture`), then `postgres`
 * listening on 127.0.0.1:<free port> with its socket in the same dir and fsync off (a test server
 * keeps nothing). PostgreSQL refuses to run as root, so as root both run as the `postgres` user.
 * Resolves once a query answers.
 */
export async function startPostgres(): Promise<LabPostgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error("PostgreSQL is not installed: npm run lab:install as root");
  const dir = await mkdtemp(join(tmpdir(), "suture-postgres-"));
  const asUser: { uid?: number; gid?: number } = {};
  if (userInfo().uid === 0) {
    const { stdout: uid } = await run("id", ["-u", "postgres"]);
    const { stdout: gid } = await run("id", ["-g", "postgres"]);
    asUser.uid = Number(uid.trim());
    asUser.gid = Number(gid.trim());
    chownSync(dir, asUser.uid, asUser.gid);
  }
  const data = join(dir, "data");
  await run(join(bin, "initdb"), ["-D", data, "-U", "suture", "--auth=trust", "-E", "UTF8", "--no-sync"], {
    ...asUser,
    cwd: dir,
  });
  const logPath = join(dir, "postgres.log");
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const log = openSync(logPath, "a");
    if (asUser.uid !== undefined) chownSync(logPath, asUser.uid, asUser.gid ?? 0);
    const child: ChildProcess = spawn(
      join(bin, "postgres"),
      ["-D", data, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
      { ...asUser, cwd: dir, stdio: ["ignore", log, log] },
    );
    const stop = async () => {
      await stopChild(child);
      await rm(dir, { recursive: true, force: true });
    };
    try {
      await waitForPort(port, child, "postgres", logPath);
      const url = `postgres://suture@127.0.0.1:${port}/postgres`;
      await untilQueryAnswers(url, logPath);
      return {
        url,
        async createDatabase(name: string) {
          if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`not a plain database name: ${name}`);
          const client = new pg.Client({ connectionString: url });
          await client.connect();
          try {
            await client.query(`CREATE DATABASE ${name}`);
          } finally {
            await client.end();
          }
          return `postgres://suture@127.0.0.1:${port}/${name}`;
        },
        stop,
      };
    } catch (e) {
      await stopChild(child);
      if (attempt < 2 && child.exitCode !== null) continue; // the port was taken between freePort and bind
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }
}

/** The port opens before recovery ends ("the database system is starting up"): wait for a query. */
async function untilQueryAnswers(url: string, logPath: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      await client.query("SELECT 1");
      return;
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      await client.end().catch(() => {});
    }
  }
  throw new Error(`postgres did not answer within ${timeoutMs} ms (${String(last)}): ${tail(logPath)}`);
}
