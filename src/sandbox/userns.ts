import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { ownersRecorded } from "../fs/owners.ts";
import { NO_NAMESPACES_MODE_LINE } from "./no-namespaces.ts";

/**
 * The user-namespace patch mode (issue 16, mode 2): a non-root caller's patch runs as uid 0 of a
 * user + mount namespace mapped from its subordinate ids. The library notices it is there (from
 * /proc/self/uid_map) and adapts what differs from root mode:
 * - overlayfs must be mounted with `userxattr` and reads `user.overlay.*` xattrs (the kernel
 *   refuses `trusted.*` to a namespaced root), so layers extracted for it carry
 *   `user.overlay.opaque` and live in their own cache dir;
 * - `redirect_dir=off` is refused there (EPERM); `nofollow` keeps the same upper-dir contract
 *   (renamed lower directories are copied, never redirected).
 */

/** Whether this process runs in a user namespace other than the initial one. */
export function inUserNamespace(): boolean {
  cachedInUserNamespace ??= parseInUserNamespace(readUidMap());
  return cachedInUserNamespace;
}
let cachedInUserNamespace: boolean | undefined;

function readUidMap(): string {
  try {
    return readFileSync("/proc/self/uid_map", "utf8");
  } catch {
    // No /proc: nothing tells us otherwise, so assume the initial namespace.
    return "0 0 4294967295";
  }
}

/** The initial namespace maps every id onto itself: one line `0 0 4294967295`. */
export function parseInUserNamespace(uidMap: string): boolean {
  return uidMap.trim().split(/\s+/).join(" ") !== "0 0 4294967295";
}

/** The xattr namespace overlayfs reads its markers (opaque, …) from in this process's mode. */
export function overlayXattrPrefix(): "trusted.overlay." | "user.overlay." {
  return inUserNamespace() ? "user.overlay." : "trusted.overlay.";
}

/**
 * Names the flavour of overlay lower dirs this process makes (it decides the layer cache dir):
 * a tree with `trusted.overlay.opaque` dirs reads wrong under a `userxattr` mount and vice versa.
 */
export function overlayFlavour(): "root" | "userxattr" | "plain" {
  // Mode 3 (no namespaces) mounts nothing: its trees carry their owners in a record beside them.
  if (ownersRecorded()) return "plain";
  return inUserNamespace() ? "userxattr" : "root";
}

/** One `/proc/PID/uid_map` line: `inside outside count`. */
export interface IdRange {
  inside: number;
  outside: number;
  count: number;
}

export function parseIdMap(text: string): IdRange[] {
  return text
    .split("\n")
    .map((l) => l.trim().split(/\s+/).map(Number))
    .filter((f) => f.length === 3 && f.every(Number.isInteger))
    .map(([inside, outside, count]) => ({ inside: inside!, outside: outside!, count: count! }));
}

/** How many ids this namespace maps (1 for a single-id `--map-root-user` mapping). */
export async function mappedIdCount(): Promise<number> {
  const text = await readFile("/proc/self/uid_map", "utf8").catch(() => "0 0 4294967295");
  return parseIdMap(text).reduce((n, r) => n + r.count, 0);
}

/** The environment variable a re-executed patch finds itself by (never set by users). */
export const USERNS_ENV = "SUTURE_IN_USERNS";

/**
 * Whether this command must re-run itself in a user namespace: a non-root caller, not already
 * re-executed (a caller that is uid 0 in some namespace of its own patches in place).
 */
export function needsUserNamespace(env: NodeJS.ProcessEnv = process.env): boolean {
  const uid = process.geteuid?.();
  return uid !== undefined && uid !== 0 && env[USERNS_ENV] === undefined;
}

/** Whether `user` (name or uid) has a range in /etc/subuid and /etc/subgid. */
export async function hasSubordinateIds(user: string | undefined, uid: number): Promise<boolean> {
  const listed = async (file: string) =>
    (await readFile(file, "utf8").catch(() => "")).split("\n").some((l) => {
      const [who, , count] = l.split(":");
      return (who === user || who === String(uid)) && Number(count) > 0;
    });
  return (await listed("/etc/subuid")) && (await listed("/etc/subgid"));
}

/**
 * The unshare(1) arguments that run a command as root of a new user + mount + pid namespace: ids
 * mapped from the caller's subordinate ranges (`--map-auto`, via newuidmap), or only the caller's
 * own id when it has none. A pid namespace makes every process the patch starts die with it. It
 * needs a /proc of its own, which the kernel may refuse (see `freshProcAllowed`): then there is
 * no pid namespace, as runc reads `/proc/<pid>` of the processes it starts by the pids it sees.
 */
export function unshareArgs(subordinateIds: boolean, ownProc = true): string[] {
  return [
    ...(subordinateIds ? ["--map-auto"] : []),
    "--map-root-user",
    "--mount",
    ...(ownProc ? ["--pid", "--fork", "--mount-proc"] : ["--fork"]),
  ];
}

/** Set (to "host") for a re-executed patch whose namespace could not mount a /proc of its own. */
export const USERNS_PROC_ENV = "SUTURE_USERNS_PROC";

/**
 * Whether a new user namespace may mount a fresh proc here. The kernel refuses it (EPERM) while
 * the /proc we see has mounts over parts of it that hide something, as a container runtime's
 * masked paths do (Docker's /proc/kcore, /proc/sys read-only, …): a new proc would reveal them.
 */
export async function freshProcAllowed(): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = spawn(
      "unshare",
      ["--map-root-user", "--mount", "--pid", "--fork", "--mount-proc", "true"],
      {
        stdio: "ignore",
      },
    );
    probe.once("error", () => resolve(false));
    probe.once("exit", (code) => resolve(code === 0));
  });
}

/**
 * Whether this process's namespace runs on the outer /proc (no fresh one could be mounted, and so
 * no pid namespace): the sandbox's runc cannot mount one either and binds it instead (runc allows
 * binding a procfs onto /proc).
 */
export function procIsBorrowed(env: NodeJS.ProcessEnv = process.env): boolean {
  return inUserNamespace() && env[USERNS_PROC_ENV] === "host";
}

/**
 * Re-run this very command (same node, same script, same arguments) as root of a fresh user
 * namespace and return its exit code. Stdio is shared. The child gets its own process group, so a
 * terminal's ^C reaches it once, forwarded by us; unshare(1) itself ignores SIGINT/SIGTERM while it
 * waits, so we signal the namespace's first process (its only child) directly, then wait for it
 * to clean up: its mounts vanish with the mount namespace, its processes with the pid namespace.
 */
export async function reexecInUserNamespace(): Promise<{ code: number; subordinateIds: boolean }> {
  const uid = process.geteuid?.() ?? 0;
  const subordinateIds = await hasSubordinateIds(safeUserName(), uid);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    [USERNS_ENV]: subordinateIds ? "subids" : "single",
    // Keep the caller's cache and temp dirs: inside, uid 0 must not switch to root's paths.
    HOME: process.env.HOME ?? userInfo().homedir,
  };
  if (!env.TMPDIR && env.XDG_RUNTIME_DIR) env.TMPDIR = env.XDG_RUNTIME_DIR;
  const mountProc = await freshProcAllowed();
  if (!mountProc) env[USERNS_PROC_ENV] = "host";
  const child = spawn(
    "unshare",
    [
      ...unshareArgs(subordinateIds, mountProc),
      "--",
      process.execPath,
      ...process.execArgv,
      ...process.argv.slice(1),
    ],
    { stdio: "inherit", env, detached: true },
  );
  const forward = (signal: NodeJS.Signals) => {
    for (const pid of childrenOf(child.pid)) {
      try {
        process.kill(pid, signal);
      } catch {
        // Already gone.
      }
    }
  };
  process.on("SIGINT", forward);
  process.on("SIGTERM", forward);
  try {
    const code = await new Promise<number>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (c, s) => resolve(c ?? (s === "SIGINT" ? 130 : 1)));
    });
    return { code, subordinateIds };
  } finally {
    process.off("SIGINT", forward);
    process.off("SIGTERM", forward);
  }
}

function safeUserName(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}

/** Direct children of `pid`, from /proc (the namespace's pid 1, seen from here). */
function childrenOf(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** The mode line `--progress` shows: which of issue 16's modes this patch runs in. */
export function describePatchMode(env: NodeJS.ProcessEnv = process.env): string {
  if (ownersRecorded()) return NO_NAMESPACES_MODE_LINE;
  if (!inUserNamespace()) return "mode: root (overlayfs and runc as root)";
  const ids =
    env[USERNS_ENV] === "single"
      ? "a single-id mapping: no range for you in /etc/subuid"
      : "ids mapped from your subordinate ranges";
  return `mode: user-namespace (${ids})`;
}
