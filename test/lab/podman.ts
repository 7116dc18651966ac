import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { chmod, chown, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { processAlive } from "../../src/sandbox/file-lock.ts";

/**
 * A private `podman system service` (Debian's podman 4.3) for one test file: rootful, or rootless
 * as an unprivileged user the lab creates with its own subordinate ids — the Podman setups users
 * run suture against (issue 16). Storage, runtime dir, socket and containers.conf live in a fresh
 * temp dir, so neither a system Podman nor another test sees them.
 */
export interface LabPodman {
  /** `unix:///…/podman.sock`: pass as CONTAINER_HOST. */
  readonly host: string;
  readonly socketPath: string;
  /** The user the service runs as (`root`, or the lab's rootless user). */
  readonly user: string;
  /** Run the podman CLI against the same storage, as the service's user. */
  podman(args: string[]): Promise<{ stdout: string; stderr: string }>;
  stop(): Promise<void>;
}

/** The unprivileged user rootless Podman runs as in the lab, with a subordinate id range of its own. */
export const ROOTLESS_USER = "suture-podman";
const SUBID_RANGE = "400000:65536";

const run = promisify(execFile);
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

/** Creates the lab's unprivileged user (and its subordinate ids) if missing. */
export async function ensureRootlessUser(): Promise<void> {
  if (spawnSync("id", ["-u", ROOTLESS_USER]).status !== 0) {
    await run("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ROOTLESS_USER]);
  }
  // newuidmap maps the user's namespace from these ranges (podman refuses a single-id mapping
  // for images whose files belong to other ids).
  for (const file of ["/etc/subuid", "/etc/subgid"]) {
    const text = await readFile(file, "utf8").catch(() => "");
    if (!text.split("\n").some((l) => l.startsWith(`${ROOTLESS_USER}:`))) {
      await writeFile(
        file,
        `${text}${text && !text.endsWith("\n") ? "\n" : ""}${ROOTLESS_USER}:${SUBID_RANGE}\n`,
      );
    }
  }
}

export async function startPodman(options: { rootless: boolean; timeoutMs?: number }): Promise<LabPodman> {
  const dir = await mkdtemp(join(tmpdir(), "suture-podman-"));
  const user = options.rootless ? ROOTLESS_USER : "root";
  if (options.rootless) await ensureRootlessUser();
  const uid = Number(spawnSync("id", ["-u", user], { encoding: "utf8" }).stdout.trim());
  const gid = Number(spawnSync("id", ["-g", user], { encoding: "utf8" }).stdout.trim());
  await chown(dir, uid, gid);
  await chmod(dir, 0o700);
  // This machine's containers get no CAP_SYS_RESOURCE, so runc cannot set the rlimits Podman adds
  // by default ("error setting rlimit type 6"): the lab's containers keep the caller's limits.
  const conf = join(dir, "containers.conf");
  await writeFile(conf, "[containers]\ndefault_ulimits = []\n");
  await chown(conf, uid, gid);
  const socketPath = join(dir, "podman.sock");
  const env = {
    PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: dir,
    XDG_RUNTIME_DIR: dir,
    XDG_CONFIG_HOME: join(dir, "config"),
    CONTAINERS_CONF: conf,
  };
  // crun fails on this kernel setup (MACHINE-NOTES); no systemd, so cgroupfs and a file event log.
  const global = [
    `--root=${join(dir, "storage")}`,
    `--runroot=${join(dir, "run")}`,
    "--runtime=runc",
    "--cgroup-manager=cgroupfs",
    "--events-backend=file",
  ];
  const asUser = (args: string[]) =>
    options.rootless
      ? ["runuser", ["-u", user, "--", "env", ...envArgs(env), "podman", ...args]]
      : ["podman", args];
  const [cmd, args] = asUser([...global, "system", "service", "--time=0", `unix://${socketPath}`]) as [
    string,
    string[],
  ];
  const child = spawn(cmd, args, {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, ...env },
    detached: true,
  });
  running.add(child);
  let stderr = "";
  child.stderr?.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString("utf8")).slice(-8192);
  });
  let exited: number | null | undefined;
  child.on("exit", (code) => {
    exited = code;
    running.delete(child);
  });

  const stop = async () => {
    // The service and what it started (conmon, containers) share its process group.
    if (child.pid && processAlive(child.pid)) {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {}
      const deadline = Date.now() + 5000;
      while (processAlive(child.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
    }
    // Rootful overlay mounts of the storage, if a container was left; rootless ones die with the namespace.
    spawnSync("sh", ["-c", `grep -o ' ${dir}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l`]);
    if (options.rootless) {
      // Rootless storage holds files owned by subordinate ids: removed as the user, in its namespace.
      spawnSync("runuser", [
        "-u",
        user,
        "--",
        "env",
        ...envArgs(env),
        "podman",
        "unshare",
        "rm",
        "-rf",
        join(dir, "storage"),
      ]);
      // Rootless Podman keeps a pause process holding its namespace (its own session, so not in the
      // service's group); the lab user runs nothing else.
      spawnSync("pkill", ["-KILL", "-u", user]);
    }
    await rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  while ((await ping(socketPath)) !== "OK") {
    if (exited !== undefined || Date.now() > deadline) {
      await stop();
      throw new Error(
        `podman system service did not answer /_ping (exit ${exited}):\n${stderr.split("\n").slice(-10).join("\n")}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host: `unix://${socketPath}`,
    socketPath,
    user,
    podman: async (extra) => {
      const [c, a] = asUser([...global, ...extra]) as [string, string[]];
      return run(c, a, { env: { ...process.env, ...env }, maxBuffer: 16 * 1024 * 1024 });
    },
    stop,
  };
}

function envArgs(env: Record<string, string>): string[] {
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

function ping(socketPath: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ socketPath, path: "/_ping", host: "podman", timeout: 2000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve(body));
      res.on("error", () => resolve(undefined));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(undefined));
  });
}
