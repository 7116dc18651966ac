import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { lstat, mkdtemp, readdir, readFile, rm, rmdir, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, posix } from "node:path";
import { StringDecoder } from "node:string_decoder";
import { describeCause, isSutureError, SutureError } from "../errors/errors.ts";
import { hostPathOf, MOUNT_POLICY, walkInRoot } from "../fs/in-root.ts";
import type { ProgressSink } from "../progress/events.ts";
import { registerCleanup } from "./cleanup.ts";
import { execTool, findOnPath, firstLine } from "./exec.ts";
import { inUserNamespace, procIsBorrowed } from "./userns.ts";

/**
 * Docker's default capability set: what apt and dpkg need (chown, setuid to _apt, setgroups,
 * mknod for packages that ship devices) and nothing more. Never CAP_SYS_RESOURCE: hosts that
 * run suture inside a container often lack it, and runc then refuses to start.
 */
export const DEFAULT_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
] as const;

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** An extra mount in the container (OCI runtime-spec `mounts` entry). */
export interface SandboxMount {
  destination: string;
  /** Host path for binds; a label for tmpfs and the like. */
  source: string;
  /** "bind" (default) or a filesystem type such as "tmpfs". */
  type?: string;
  /** Mount options; binds get "rbind" added. Add "ro" for read-only. */
  options?: string[];
}

export interface RunInSandboxOptions {
  /** The container's root filesystem (normally an overlay's merged dir). Written to by the command. */
  rootfs: string;
  args: string[];
  /** Complete environment, `KEY=VALUE`; PATH and HOME are added when missing. */
  env?: string[];
  /** Working directory inside the container (default "/"); should exist in the rootfs. */
  cwd?: string;
  /** Kill the command after this long and reject with TIMEOUT. */
  timeoutMs?: number;
  /** Abort kills the command and rejects with CANCELLED. */
  signal?: AbortSignal;
  /** Each output line (without the newline), as it arrives. */
  onOutput?: (line: string, stream: "stdout" | "stderr") => void;
  /** Receives each line as a `command-output` event. */
  progress?: ProgressSink;
  /** "runc" (default), "crun", or a path to either. */
  runtime?: string;
  /** Mounts added after the defaults (/proc, /dev, /sys, /tmp, resolv.conf). */
  mounts?: SandboxMount[];
  /** Written to the command's stdin; by default stdin is /dev/null. */
  input?: string | Buffer;
  /** How much of each stream the result keeps (the end of it). Default 1 MiB. */
  maxOutputBytes?: number;
  /** Host file mounted read-only as /etc/resolv.conf (default /etc/resolv.conf). */
  resolvConf?: string;
  hostname?: string;
  /** Where the temporary bundle directory is made (default the OS temp dir). */
  bundleParent?: string;
}

export interface RunResult {
  /** The command's exit status; 128+N when it was ended by signal N. */
  exitCode: number;
  /** The last `maxOutputBytes` of standard output. */
  stdout: string;
  stderr: string;
  /** Whether stdout or stderr lost its beginning to the size cap. */
  truncated: boolean;
  durationMs: number;
}

/** Locate the OCI runtime binary; SANDBOX error with the install command when absent. */
export async function findRuntime(runtime = "runc"): Promise<string> {
  const found = await findOnPath(runtime);
  if (!found) {
    const pkg = runtime.split("/").pop() ?? runtime;
    throw new SutureError("SANDBOX", `${pkg} not found: apt-get install ${pkg === "crun" ? "crun" : "runc"}`);
  }
  return found;
}

/** Merge environment lists: a later `KEY=…` replaces an earlier one, order of first appearance kept. */
export function mergeEnv(...lists: (readonly string[] | undefined | null)[]): string[] {
  const map = new Map<string, string>();
  for (const list of lists) {
    for (const kv of list ?? []) {
      const eq = kv.indexOf("=");
      const key = eq === -1 ? kv : kv.slice(0, eq);
      map.set(key, eq === -1 ? `${kv}=` : kv);
    }
  }
  return [...map.values()];
}

function ensureBasics(env: string[]): string[] {
  const keys = new Set(env.map((kv) => kv.slice(0, kv.indexOf("="))));
  const out = [...env];
  if (!keys.has("PATH")) out.push(`PATH=${DEFAULT_PATH}`);
  if (!keys.has("HOME")) out.push("HOME=/root");
  return out;
}

/** The mounts every sandbox gets, Docker-like, plus the host's resolv.conf. */
export function defaultMounts(resolvConf = "/etc/resolv.conf"): SandboxMount[] {
  return [
    // In a user namespace inside a container (masked /proc paths) no proc can be mounted: the
    // namespace's own /proc is bound instead (see procIsBorrowed).
    procIsBorrowed()
      ? {
          destination: "/proc",
          type: "bind",
          source: "/proc",
          options: ["rbind", "nosuid", "noexec", "nodev"],
        }
      : { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    {
      destination: "/dev",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
      destination: "/dev/pts",
      type: "devpts",
      source: "devpts",
      options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
      destination: "/dev/shm",
      type: "tmpfs",
      source: "shm",
      options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    // Root of a user namespace may mount sysfs only in a network namespace it owns, and the
    // sandbox shares the host's network: it gets the host's /sys bound read-only instead.
    inUserNamespace()
      ? {
          destination: "/sys",
          type: "bind",
          source: "/sys",
          options: ["rbind", "nosuid", "noexec", "nodev", "ro"],
        }
      : { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    // A tmpfs /tmp keeps scratch files of the package manager out of the upper dir.
    { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777"] },
    // The host network is shared (no netns); the host's resolver config makes names resolve too.
    {
      destination: "/etc/resolv.conf",
      type: "bind",
      source: resolvConf,
      options: ["ro", "nosuid", "nodev", "noexec"],
    },
  ];
}

/** The hard RLIMIT_NOFILE of this process: we may lower limits but, without CAP_SYS_RESOURCE, never raise. */
async function hostNofileHard(): Promise<number> {
  try {
    const text = await readFile("/proc/self/limits", "utf8");
    const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(text);
    if (m && m[2] !== "unlimited") return Number(m[2]);
    if (m) return 1048576;
  } catch {
    // not Linux /proc: fall through
  }
  return 1024;
}

export interface RuntimeSpecInput {
  rootfs: string;
  args: string[];
  env: string[];
  cwd: string;
  hostname: string;
  mounts: SandboxMount[];
  nofileHard: number;
}

/**
 * The OCI runtime config.json for one command. Namespaces pid/ipc/uts/mount only: no network
 * namespace (the package manager needs the host's network) and no user namespace (files must
 * get their real owners). User 0:0, Docker's default capabilities, no-new-privileges, devices
 * cgroup deny-all (the runtime adds null, zero, full, tty, random, urandom), no resource limits.
 */
export function buildRuntimeSpec(input: RuntimeSpecInput): Record<string, unknown> {
  const caps = [...DEFAULT_CAPABILITIES];
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: input.args,
      env: input.env,
      cwd: input.cwd,
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      // A low soft limit keeps programs that close every possible fd (apt, dpkg) fast.
      rlimits: [{ type: "RLIMIT_NOFILE", soft: Math.min(1024, input.nofileHard), hard: input.nofileHard }],
      noNewPrivileges: true,
    },
    root: { path: input.rootfs, readonly: false },
    hostname: input.hostname,
    mounts: input.mounts.map((m) => {
      const type = m.type ?? "bind";
      const options = [...(m.options ?? [])];
      if (type === "bind" && !options.includes("bind") && !options.includes("rbind"))
        options.unshift("rbind");
      return { destination: m.destination, type, source: m.source, options };
    }),
    linux: {
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }],
      resources: { devices: [{ allow: false, access: "rwm" }] },
      maskedPaths: [
        "/proc/asound",
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
      ],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
}

/**
 * Paths under `rootfs` the runtime will create as mount points for `destinations` (they do not
 * exist yet), shallowest first. Symlinks are followed the way runc does, inside the root.
 */
export async function missingMountPoints(rootfs: string, destinations: string[]): Promise<string[]> {
  const created: string[] = [];
  for (const [i, dest] of destinations.entries()) {
    // Below an earlier mount (/dev/pts in the /dev tmpfs): created there, not in the rootfs.
    if (destinations.slice(0, i).some((d) => dest.startsWith(d.endsWith("/") ? d : `${d}/`))) continue;
    let walk: ReturnType<typeof walkInRoot>;
    try {
      walk = walkInRoot(rootfs, dest, MOUNT_POLICY);
    } catch (e) {
      // A symlink loop: the runtime refuses that destination itself, creating nothing.
      if (isSutureError(e, "UNSAFE_LAYER")) continue;
      throw e;
    }
    if (walk.kind === "missing") for (const path of walk.missing) created.push(hostPathOf(rootfs, path));
  }
  return [...new Set(created)];
}

/**
 * Remove mount points the runtime created, deepest first, if still empty (an empty directory or
 * an empty regular file). They did not exist in the merged view before, so on an overlay this
 * deletes them from the upper dir without leaving whiteouts. Their parent directory stays copied
 * up (e.g. `etc/` when /etc/resolv.conf had to be created); its times are put back, so it is
 * identical to the lower one apart from overlayfs' own trusted.overlay.* xattrs.
 */
async function removeCreatedMountPoints(paths: string[], parentTimes: Map<string, bigint>): Promise<void> {
  const touched = new Set<string>();
  for (const path of [...paths].reverse()) {
    const st = await lstat(path).catch(() => undefined);
    if (!st) continue;
    touched.add(dirname(path));
    if (st.isDirectory()) {
      if ((await readdir(path)).length === 0) await rmdir(path).catch(() => {});
    } else if (st.isFile() && st.size === 0) {
      await unlink(path).catch(() => {});
    }
  }
  // Only directories the runtime really wrote into: touching another one would copy it up.
  // Node's utimes rounds to microseconds; touch(1) sets the exact nanoseconds.
  for (const [dir, ns] of parentTimes) {
    if (!touched.has(dir)) continue;
    const stamp = `@${ns / 1_000_000_000n}.${(ns % 1_000_000_000n).toString().padStart(9, "0")}`;
    await execTool("touch", ["-h", "-m", "-c", "-d", stamp, "--", dir]).catch(() => {});
  }
}

/** mtimes (ns) of the existing directories the runtime will create mount points in. */
async function parentTimesOf(created: string[]): Promise<Map<string, bigint>> {
  const times = new Map<string, bigint>();
  const set = new Set(created);
  for (const p of created) {
    const parent = dirname(p);
    if (set.has(parent) || times.has(parent)) continue;
    const st = await lstat(parent, { bigint: true }).catch(() => undefined);
    if (st?.isDirectory()) times.set(parent, st.mtimeNs);
  }
  return times;
}

/**
 * Run one command in a fresh container over `rootfs` with the OCI runtime (runc by default),
 * daemonless: `runc run --bundle DIR ID` in the foreground, stdio piped.
 *
 * - Output is split into lines, passed to `onOutput` and emitted as `command-output` events; the
 *   result keeps the tail of each stream. A non-zero exit is a result, not an error.
 * - On timeout or abort the container is killed (`runc kill ID KILL`, which ends its whole pid
 *   namespace), deleted (`runc delete --force ID`), and the call rejects with TIMEOUT/CANCELLED.
 * - The runtime failing to start the container (not the command failing) rejects with SANDBOX.
 * - The bundle directory is always removed, and mount points the runtime had to create in the
 *   rootfs (e.g. /etc/resolv.conf when the image has none) are removed again when still empty.
 *
 * Must run as root. While the command runs, a cleanup is registered (see cleanup.ts) so a signal
 * handler can kill the container.
 */
export async function runInSandbox(options: RunInSandboxOptions): Promise<RunResult> {
  options.signal?.throwIfAborted();
  const runtime = await findRuntime(options.runtime ?? "runc");
  const mounts = [...defaultMounts(options.resolvConf), ...(options.mounts ?? [])];
  const spec = buildRuntimeSpec({
    rootfs: options.rootfs,
    args: options.args,
    env: ensureBasics(options.env ?? []),
    cwd: options.cwd ?? "/",
    hostname: options.hostname ?? "suture",
    mounts,
    nofileHard: await hostNofileHard(),
  });
  const createdMountPoints = await missingMountPoints(
    options.rootfs,
    mounts.map((m) => m.destination),
  );
  const parentTimes = await parentTimesOf(createdMountPoints);
  const bundle = await mkdtemp(join(options.bundleParent ?? tmpdir(), "suture-bundle-"));
  const id = `suture-${process.pid}-${randomBytes(5).toString("hex")}`;
  const logPath = join(bundle, "runtime.log");
  let unregister: (() => void) | undefined;
  try {
    await writeFile(join(bundle, "config.json"), JSON.stringify(spec, null, 2));
    const result = await runContainer(runtime, bundle, id, logPath, options, (kill) => {
      unregister = registerCleanup(`container ${id}`, kill);
    });
    if (result.exitCode !== 0) {
      const failure = await runtimeFailure(logPath);
      if (failure) {
        throw new SutureError(
          "SANDBOX",
          `${posix.basename(runtime)} could not start \`${options.args[0]}\` in ${options.rootfs}: ${failure}`,
        );
      }
    }
    return result;
  } finally {
    unregister?.();
    await removeCreatedMountPoints(createdMountPoints, parentTimes);
    await rm(bundle, { recursive: true, force: true });
  }
}

/** runc's own error (as opposed to the command's), from its JSON log. */
async function runtimeFailure(logPath: string): Promise<string | undefined> {
  const text = await readFile(logPath, "utf8").catch(() => "");
  const errors: string[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const rec = JSON.parse(line) as { level?: string; msg?: string };
      if (rec.level === "error" || rec.level === "fatal") errors.push(rec.msg ?? line);
    } catch {
      if (/error/i.test(line)) errors.push(line.trim());
    }
  }
  return errors.at(-1);
}

/** Keeps the end of a stream, splitting complete lines out as they arrive. */
class OutputCollector {
  #decoder = new StringDecoder("utf8");
  #partial = "";
  #tail = "";
  truncated = false;
  readonly #max: number;
  readonly #emit: (line: string) => void;

  constructor(max: number, emit: (line: string) => void) {
    this.#max = max;
    this.#emit = emit;
  }

  push(chunk: Buffer): void {
    this.#add(this.#decoder.write(chunk));
  }

  end(): void {
    this.#add(this.#decoder.end());
    if (this.#partial) this.#emit(this.#partial.replace(/\r$/, ""));
    this.#partial = "";
  }

  #add(text: string): void {
    if (!text) return;
    this.#tail += text;
    if (this.#tail.length > 2 * this.#max) {
      this.#tail = this.#tail.slice(-this.#max);
      this.truncated = true;
    }
    const lines = (this.#partial + text).split("\n");
    this.#partial = lines.pop()!;
    for (const l of lines) this.#emit(l.replace(/\r$/, ""));
    // A line that never ends (a \r-only progress bar) is emitted in pieces rather than hoarded.
    if (this.#partial.length > 64 * 1024) {
      this.#emit(this.#partial);
      this.#partial = "";
    }
  }

  get tail(): string {
    if (this.#tail.length > this.#max) {
      this.truncated = true;
      return this.#tail.slice(-this.#max);
    }
    return this.#tail;
  }
}

function runContainer(
  runtime: string,
  bundle: string,
  id: string,
  logPath: string,
  options: RunInSandboxOptions,
  onStarted: (kill: () => Promise<void>) => void,
): Promise<RunResult> {
  const started = performance.now();
  const max = options.maxOutputBytes ?? 1024 * 1024;
  const emit = (stream: "stdout" | "stderr") => (line: string) => {
    options.onOutput?.(line, stream);
    options.progress?.({ type: "command-output", stream, line });
  };
  const out = new OutputCollector(max, emit("stdout"));
  const err = new OutputCollector(max, emit("stderr"));

  return new Promise<RunResult>((resolve, reject) => {
    const state = stateRootArgs(bundle);
    const child = spawn(
      runtime,
      [...state, "--log", logPath, "--log-format", "json", "run", "--bundle", bundle, id],
      {
        stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      },
    );
    let exited = false;
    let stopping: Promise<void> | undefined;
    let stopReason: SutureError | undefined;
    const exitedPromise = new Promise<void>((r) => child.once("close", () => r()));

    const stop = (reason?: SutureError): Promise<void> => {
      stopReason ??= reason;
      if (!stopping) {
        stopping = killContainer(runtime, state, id, child, exitedPromise, () => exited);
        stopping.catch(() => {}); // surfaced by `finish` below; never an unhandled rejection
      }
      return stopping;
    };
    onStarted(() => stop(new SutureError("CANCELLED", `\`${options.args.join(" ")}\` was interrupted`)));

    const timer =
      options.timeoutMs !== undefined
        ? setTimeout(() => {
            void stop(
              new SutureError(
                "TIMEOUT",
                `\`${options.args.join(" ")}\` ran longer than ${Math.round(options.timeoutMs! / 1000)} s in the sandbox: raise --timeout, or check its output for a hang`,
              ),
            );
          }, options.timeoutMs)
        : undefined;
    const onAbort = () =>
      void stop(
        new SutureError("CANCELLED", `\`${options.args.join(" ")}\` was cancelled`, {
          cause: options.signal?.reason,
        }),
      );
    options.signal?.addEventListener("abort", onAbort, { once: true });

    child.stdout!.on("data", (d: Buffer) => out.push(d));
    child.stderr!.on("data", (d: Buffer) => err.push(d));
    if (options.input !== undefined) {
      child.stdin!.on("error", () => {}); // the command may exit without reading its input
      child.stdin!.end(options.input);
    }
    child.on("error", (e) => {
      exited = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      reject(new SutureError("SANDBOX", `cannot start ${runtime}: ${describeCause(e)}`, { cause: e }));
    });
    child.on("close", (code, signal) => {
      exited = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      out.end();
      err.end();
      const finish = async () => {
        if (stopping) await stopping;
        if (stopReason) throw stopReason;
        const exitCode = code ?? 128 + (signal ? signalNumber(signal) : 0);
        return {
          exitCode,
          stdout: out.tail,
          stderr: err.tail,
          truncated: out.truncated || err.truncated,
          durationMs: Math.round(performance.now() - started),
        };
      };
      finish().then(resolve, reject);
    });
  });
}

const SIGNALS: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
function signalNumber(s: NodeJS.Signals): number {
  return SIGNALS[s] ?? 0;
}

/**
 * Kill a container and make sure nothing is left: `runc kill ID KILL` (retried while the
 * container is still being created), then SIGKILL to the runtime process if it lingers, then
 * `runc delete --force ID`.
 */
async function killContainer(
  runtime: string,
  state: string[],
  id: string,
  child: ReturnType<typeof spawn>,
  exitedPromise: Promise<void>,
  hasExited: () => boolean,
): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!hasExited() && Date.now() < deadline) {
    await execTool(runtime, [...state, "kill", id, "KILL"]).catch(() => undefined);
    await Promise.race([exitedPromise, sleep(250)]);
  }
  if (!hasExited()) {
    child.kill("SIGKILL");
    await Promise.race([exitedPromise, sleep(2000)]);
  }
  const del = await execTool(runtime, [...state, "delete", "--force", id]).catch(() => undefined);
  if (del && del.code !== 0 && !/does not exist|not found|no such/i.test(del.stderr)) {
    throw new SutureError(
      "SANDBOX",
      `cannot delete container ${id}: ${firstLine(del.stderr)}: run \`${runtime} delete --force ${id}\``,
    );
  }
}

/**
 * runc keeps container state under /run/runc, which root of a user namespace cannot write: there
 * each container keeps it in its own bundle dir (removed with it).
 */
function stateRootArgs(bundle: string): string[] {
  return inUserNamespace() ? ["--root", join(bundle, "state")] : [];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
