import { type ChildProcess, spawn } from "node:child_process";
import { openSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A real `redis-server` (Debian's package) on 127.0.0.1, with nothing persisted, for one test file. */
export interface LabRedis {
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

/** A port the OS just handed out and released; the server binds it right after. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
export async function waitForPort(
  port: number,
  child: ChildProcess,
  what: string,
  logPath: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited early (${child.exitCode ?? child.signalCode}): ${tail(logPath)}`);
    }
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms: ${tail(logPath)}`);
}

export function tail(path: string): string {
  try {
    return readFileSync(path, "utf8").trim().split("\n").slice(-5).join(" | ");
  } catch {
    return "(no log)";
  }
}

/** Stop a server child: SIGTERM, SIGKILL after 5 s. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }
  running.delete(child);
}

/**
 * Start `redis-server` on a free loopback port with persistence off (`--save ""`, no AOF) and its
 * working directory in a temp dir. Resolves once it accepts connections.
 */
export async function startRedis(): Promise<LabRedis> {
  const dir = await mkdtemp(join(tmpdir(), "suture-redis-"));
  const logPath = join(dir, "redis.log");
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const log = openSync(logPath, "a");
    const child = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
      { stdio: ["ignore", log, log] },
    );
    running.add(child);
    try {
      await waitForPort(port, child, "redis-server", logPath);
    } catch (e) {
      await stopChild(child);
      if (attempt < 2) continue; // another process took the port between freePort and bind
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      async stop() {
        await stopChild(child);
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}
