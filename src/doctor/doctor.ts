import { constants } from "node:fs";
import { access, readFile, stat } from "node:fs/promises";
import { userInfo } from "node:os";
import { dirname, join } from "node:path";
import { execTool } from "../sandbox/exec.ts";
import { probeOverlayInUserNamespace } from "../sandbox/no-namespaces.ts";
import { daemonAvailable } from "../transports/daemon/daemon.ts";
import { describeEngine, resolveEngineEndpoint } from "../transports/daemon/engine.ts";

/**
 * `suture doctor`: what this host allows a patch to do, and why. Every fact is probed, not
 * assumed from the distribution: a namespace is created, an overlay mounted in it, a binary's
 * mode read. Nothing is left behind (the probes work in a temp dir they remove).
 */

/** How a patch can run here (issue 16): as root; in a user namespace mapped from the caller's
 * subordinate ids; or with no namespaces at all (native engines only, no foreign code). */
export type PatchMode = "root" | "user-namespace" | "no-namespaces";

export interface HostCheck {
  /** Stable key, for scripts reading `--format json`. */
  id: string;
  ok: boolean;
  /** What was found, in a few words. */
  detail: string;
}

export interface HostDiagnosis {
  /** The mode a patch uses on this host. */
  mode: PatchMode;
  /** Whether this build of suture patches in that mode (root, user-namespace with kernel overlayfs, no-namespaces). */
  supported: boolean;
  /** Why this mode, and what would enable a stronger one. */
  reason: string;
  checks: HostCheck[];
}

/** Facts the mode is decided from (separate from probing, so the decision is a table). */
export interface HostFacts {
  uid: number;
  /** CAP_SYS_ADMIN in the effective set, in the initial user namespace. */
  capSysAdmin: boolean;
  userNamespaces: boolean;
  subordinateIds: boolean;
  overlayInUserNamespace: boolean;
  fuseOverlayfs: boolean;
}

export function decideMode(f: HostFacts): Pick<HostDiagnosis, "mode" | "supported" | "reason"> {
  if (f.uid === 0 && f.capSysAdmin) {
    return { mode: "root", supported: true, reason: "root with CAP_SYS_ADMIN: overlayfs mounts and runc" };
  }
  const rootless =
    "suture patches as root, or as a user where kernel overlayfs mounts in a user namespace; run it as root (sudo), or in a container with CAP_SYS_ADMIN";
  if (f.userNamespaces && (f.overlayInUserNamespace || f.fuseOverlayfs)) {
    const ids = f.subordinateIds
      ? "mapped from your subordinate ids"
      : "with a single-id mapping (add a range to /etc/subuid and /etc/subgid for images with several owners)";
    if (f.overlayInUserNamespace) {
      return {
        mode: "user-namespace",
        supported: true,
        reason: `user namespaces and kernel overlayfs in them work here: suture patch re-runs itself in a user namespace ${ids}, runc rootless`,
      };
    }
    return {
      mode: "user-namespace",
      supported: false,
      reason: `user namespaces and fuse-overlayfs in them work here, ${ids}, but suture does not use fuse-overlayfs yet; ${rootless}`,
    };
  }
  return {
    mode: "no-namespaces",
    supported: true,
    reason:
      "no mounts and no user namespaces here (a locked-down pod: default seccomp or no CAP_SYS_ADMIN): suture patch uses the no-namespaces mode (Debian and Ubuntu images, native engine in a private working tree, owners from the layers' metadata, no code of the image run; a package that needs its maintainer scripts is refused); run it as root, or where user namespaces work, to patch everything",
  };
}

export async function diagnoseHost(options: { cacheDir: string }): Promise<HostDiagnosis> {
  const uid = process.getuid?.() ?? 0;
  const status = await readFile("/proc/self/status", "utf8").catch(() => "");
  const capEff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)/m.exec(status)?.[1] ?? "0"}`);
  const CAP_SYS_ADMIN = 21n;
  const initialNamespace =
    (await readFile("/proc/self/uid_map", "utf8").catch(() => "")).trim().split(/\s+/).join(" ") ===
    "0 0 4294967295";
  const capSysAdmin = ((capEff >> CAP_SYS_ADMIN) & 1n) === 1n && initialNamespace;
  const seccomp = /^Seccomp:\s*(\d)/m.exec(status)?.[1];

  const checks: HostCheck[] = [];
  const add = (id: string, ok: boolean, detail: string) => checks.push({ id, ok, detail });

  add(
    "root",
    uid === 0,
    uid === 0 ? (initialNamespace ? "uid 0" : "uid 0 inside a user namespace") : `uid ${uid}`,
  );
  add(
    "cap-sys-admin",
    capSysAdmin,
    capSysAdmin ? "in the effective set" : "not held (or not in the initial user namespace)",
  );
  add(
    "seccomp",
    seccomp !== "2",
    seccomp === "2" ? "a seccomp filter is active (e.g. a container's default profile)" : "no filter",
  );

  const maxNs = Number(
    (await readFile("/proc/sys/user/max_user_namespaces", "utf8").catch(() => "0")).trim(),
  );
  const userns =
    uid === 0
      ? await probe("unshare", ["--user", "true"])
      : await probe("unshare", ["--user", "--map-root-user", "true"]);
  add(
    "user-namespaces",
    userns.ok,
    userns.ok ? `can be created (max ${maxNs})` : `cannot be created: ${userns.why}`,
  );

  const user = safeUserName();
  const subIds = await hasSubordinateIds(user, uid);
  const newuidmap = await setuidBinary("/usr/bin/newuidmap");
  add(
    "subordinate-ids",
    subIds && newuidmap,
    `${subIds ? `/etc/subuid has ${user}` : `no /etc/subuid range for ${user}`}; newuidmap ${newuidmap ? "setuid" : "missing or not setuid (apt-get install uidmap)"}`,
  );

  const overlay = userns.ok ? await probeOverlayInUserNamespace() : { ok: false, why: "no user namespaces" };
  add(
    "overlay-in-user-namespace",
    overlay.ok,
    overlay.ok ? "kernel overlayfs mounts (userxattr)" : overlay.why,
  );
  const fuse = await which("fuse-overlayfs");
  add("fuse-overlayfs", fuse !== undefined, fuse ?? "not installed (apt-get install fuse-overlayfs)");

  const runc = await probe("runc", ["--version"]);
  add(
    "runc",
    runc.ok,
    runc.ok
      ? runc.out.split("\n")[0]!
      : "not installed (apt-get install runc): maintainer scripts and --engine sandbox need it",
  );

  const binfmt = await readFile("/proc/sys/fs/binfmt_misc/qemu-aarch64", "utf8").catch(() => "");
  add(
    "foreign-platforms",
    binfmt.startsWith("enabled") && /^flags:.*F/m.test(binfmt),
    binfmt.startsWith("enabled")
      ? `qemu-aarch64 binfmt ${/^flags:.*F/m.test(binfmt) ? "with the F flag" : "without the F flag (scripts in runc cannot find it)"}`
      : "no qemu-aarch64 binfmt: foreign platforms unpack natively but run no scripts (apt-get install qemu-user-static binfmt-support)",
  );

  const cacheWritable = await writable(options.cacheDir);
  add(
    "cache-dir",
    cacheWritable,
    `${options.cacheDir}${cacheWritable ? "" : " is not writable: pass --cache-dir or set XDG_CACHE_HOME"}`,
  );

  for (const engine of ["docker", "podman"] as const) {
    const endpoint = resolveEngineEndpoint({ daemonEngine: engine });
    const up = await daemonAvailable({ daemonEngine: engine });
    add(`${engine}-engine`, up, `${describeEngine(endpoint)}${up ? " answers" : " does not answer"}`);
  }

  const decided = decideMode({
    uid,
    capSysAdmin,
    userNamespaces: userns.ok,
    subordinateIds: subIds && newuidmap,
    overlayInUserNamespace: overlay.ok,
    fuseOverlayfs: fuse !== undefined,
  });
  return { ...decided, checks };
}

async function probe(file: string, args: string[]): Promise<{ ok: boolean; out: string; why: string }> {
  try {
    const r = await execTool(file, args);
    return {
      ok: r.code === 0,
      out: r.stdout.trim(),
      why: r.stderr.trim().split("\n")[0] || `exit ${r.code}`,
    };
  } catch (e) {
    return {
      ok: false,
      out: "",
      why: (e as NodeJS.ErrnoException).code === "ENOENT" ? `${file} not found` : String(e),
    };
  }
}

async function hasSubordinateIds(user: string | undefined, uid: number): Promise<boolean> {
  const text = await readFile("/etc/subuid", "utf8").catch(() => "");
  return text.split("\n").some((l) => {
    const [who, , count] = l.split(":");
    return (who === user || who === String(uid)) && Number(count) > 0;
  });
}

async function setuidBinary(path: string): Promise<boolean> {
  const st = await stat(path).catch(() => undefined);
  return st !== undefined && (st.mode & 0o4000) !== 0 && st.uid === 0;
}

async function which(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? "/usr/bin:/bin").split(":")) {
    const path = join(dir || ".", name);
    if (
      await access(path, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return path;
  }
  return undefined;
}

/** Whether `dir`, or the nearest existing directory above it, may be written (nothing is created). */
async function writable(dir: string): Promise<boolean> {
  for (let d = dir; ; d = dirname(d)) {
    if (
      await stat(d).then(
        (s) => s.isDirectory(),
        () => false,
      )
    ) {
      return access(d, constants.W_OK).then(
        () => true,
        () => false,
      );
    }
    if (dirname(d) === d) return false;
  }
}

function safeUserName(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}
