import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { openSync, readFileSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, statfs } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { processAlive } from "../../src/sandbox/file-lock.ts";

/** A private Docker daemon for one test file. */
export interface LabDockerd {
  /** `unix:///…/docker.sock`: pass as DOCKER_HOST / TransportOptions.dockerHost. */
  readonly host: string;
  readonly socketPath: string;
  /** Engine version reported by /version, e.g. `20.10.24+dfsg1`. */
  readonly version: string;
  readonly apiVersion: string;
  /** Environment for running the docker CLI against this daemon. */
  readonly env: NodeJS.ProcessEnv;
  /** Stop the daemon (and its containerd), unmount what it mounted, delete its directories. */
  stop(): Promise<void>;
}

const OVERLAYFS_MAGIC = 0x794c7630;
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

/**
 * Start Debian's dockerd by hand (no systemd here) with its own data root, exec root, pid file and
 * a unix socket in a fresh temp dir, so tests in parallel and a system dockerd never collide. No
 * bridge and no iptables: tests only load, save and inspect images. Resolves once /_ping answers.
 */
export async function startDockerd(options: { timeoutMs?: number } = {}): Promise<LabDockerd> {
  const root = await mkdtemp(join(tmpdir(), "suture-dockerd-"));
  const socketPath = join(root, "docker.sock");
  const configFile = join(root, "daemon.json");
  writeFileSync(configFile, "{}\n");
  const dataRoot = join(root, "data");
  // overlay2 cannot sit on overlayfs (e.g. inside a container): give the data root a tmpfs there.
  if ((await statfs(root)).type === OVERLAYFS_MAGIC) {
    await mkdir(dataRoot);
    const r = spawnSync("mount", ["-t", "tmpfs", "-o", "size=4g,mode=0710", "tmpfs", dataRoot]);
    if (r.status !== 0) throw new Error(`cannot mount a tmpfs for dockerd's data root: ${r.stderr}`);
  }
  const logPath = join(root, "dockerd.log");
  const log = openSync(logPath, "a");
  const child = spawn(
    "dockerd",
    [
      "--config-file",
      configFile,
      "--data-root",
      dataRoot,
      "--exec-root",
      join(root, "exec"),
      "--pidfile",
      join(root, "dockerd.pid"),
      "--host",
      `unix://${socketPath}`,
      "--iptables=false",
      "--ip-masq=false",
      "--bridge=none",
      "--userland-proxy=false",
    ],
    { stdio: ["ignore", log, log], detached: false },
  );
  running.add(child);
  let exited: number | null | undefined;
  child.on("exit", (code) => {
    exited = code;
    running.delete(child);
  });

  const stop = async () => {
    await stopProcess(child);
    // dockerd stops its managed containerd; make sure of it by pid (never by name).
    const containerdPid = readPid(join(root, "exec", "containerd", "containerd.pid"));
    if (containerdPid && processAlive(containerdPid)) {
      process.kill(containerdPid, "SIGTERM");
      await waitFor(() => !processAlive(containerdPid), 5000).catch(() =>
        process.kill(containerdPid, "SIGKILL"),
      );
    }
    unmountUnder(root);
    await rm(root, { recursive: true, force: true });
  };

  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (;;) {
    if (exited !== undefined) {
      const tail = await readFile(logPath, "utf8").catch(() => "");
      await stop();
      throw new Error(
        `dockerd exited (code ${exited}) before answering:\n${tail.split("\n").slice(-15).join("\n")}`,
      );
    }
    if ((await ping(socketPath)) === "OK") break;
    if (Date.now() > deadline) {
      const tail = await readFile(logPath, "utf8").catch(() => "");
      await stop();
      throw new Error(`dockerd did not answer /_ping in time:\n${tail.split("\n").slice(-15).join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const info = JSON.parse(await get(socketPath, "/version")) as { Version: string; ApiVersion: string };
  const host = `unix://${socketPath}`;
  return {
    host,
    socketPath,
    version: info.Version,
    apiVersion: info.ApiVersion,
    env: { ...process.env, DOCKER_HOST: host, DOCKER_CONFIG: join(root, "cli-config") },
    stop,
  };
}

function get(socketPath: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path, host: "docker", timeout: 2000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve(body));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

async function ping(socketPath: string): Promise<string | undefined> {
  try {
    return await get(socketPath, "/_ping");
  } catch {
    return undefined;
  }
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await done;
  clearTimeout(timer);
}

function readPid(path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timeout");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Unmount every mount point below `root`, deepest first (overlay2 layers, netns, shm). */
function unmountUnder(root: string): void {
  let mountinfo = "";
  try {
    mountinfo = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return;
  }
  const points = mountinfo
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\040/g, " "))
    .filter((p) => p === root || p.startsWith(`${root}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of points) {
    const r = spawnSync("umount", [p], { stdio: "ignore" });
    if (r.status !== 0) spawnSync("umount", ["-l", p], { stdio: "ignore" });
  }
}
