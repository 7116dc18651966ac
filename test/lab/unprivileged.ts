/**
 * What the tests of the modes without root share (test/e2e/cli-patch-rootless, -no-namespaces,
 * serve-rootless): the lab's unprivileged user (test/lab/podman.ts) with a home of its own in a
 * work dir, a loopback registry, suture run as root or as that user, and the top layer of a result.
 */
import { execFile } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { topLayerListing } from "./layer-listing.ts";
import { ensureRootlessUser, ROOTLESS_USER } from "./podman.ts";
import { type LabRegistry, startRegistry } from "./registry.ts";

const run = promisify(execFile);
export const SUTURE_BIN = join(import.meta.dirname, "../../bin/suture");

export interface UnprivilegedLab {
  /** Root's scratch dir (mode 755): layouts, reports, root mode's cache. */
  work: string;
  /** The user's home inside `work`, owned by the user: its cache and files. */
  userHome: string;
  user: { name: string; uid: number; gid: number };
  registry: LabRegistry;
  /** The user's environment: its own home, CI set, the proxies; `extra` on top. */
  userEnv(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
  /** runuser's arguments running `suture args…` as the user with `userEnv(extra)` (runuser drops the caller's environment). */
  userArgs(args: string[], extra?: NodeJS.ProcessEnv): string[];
  asUser(args: string[], extra?: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string }>;
  /** suture as root; a patch gets root mode's own cache dir in `work`. */
  asRoot(args: string[]): Promise<{ stdout: string; stderr: string }>;
  /** Copy a lab image into the registry as `repo:1`; returns its `docker://` reference. */
  pushLab(reference: string, repo: string): Promise<string>;
  /** The top layer of `reference`, entry by entry (layer-listing.ts), copied as root into `work`. */
  topLayer(reference: string, name: string, contentIgnored?: (path: string) => boolean): Promise<string[]>;
  close(): Promise<void>;
}

/**
 * Set the lab up. `pathFirst`: a directory put first on the user's PATH (e.g. an `unshare` that
 * always fails, as in a default-seccomp pod).
 */
export async function startUnprivilegedLab(options: {
  prefix: string;
  pathFirst?: string;
}): Promise<UnprivilegedLab> {
  await ensureRootlessUser();
  const work = await mkdtemp(join(tmpdir(), options.prefix));
  await chmod(work, 0o755);
  const userHome = join(work, "home");
  await mkdir(userHome);
  const uid = Number((await run("id", ["-u", ROOTLESS_USER])).stdout.trim());
  const gid = Number((await run("id", ["-g", ROOTLESS_USER])).stdout.trim());
  await chown(userHome, uid, gid);
  const registry = await startRegistry();
  const userEnv = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    PATH: options.pathFirst ? `${options.pathFirst}:${process.env.PATH}` : process.env.PATH,
    HOME: userHome,
    CI: "true",
    http_proxy: process.env.http_proxy,
    HTTP_PROXY: process.env.HTTP_PROXY,
    no_proxy: process.env.no_proxy,
    NO_PROXY: process.env.NO_PROXY,
    ...extra,
  });
  const userArgs = (args: string[], extra: NodeJS.ProcessEnv = {}): string[] => {
    const env = Object.entries(userEnv(extra))
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${v}`);
    return ["-u", ROOTLESS_USER, "--", "env", ...env, SUTURE_BIN, ...args];
  };
  const asRoot = (args: string[]) =>
    run(SUTURE_BIN, args[0] === "patch" ? [...args, "--cache-dir", join(work, "root-cache")] : args, {
      env: { ...process.env, CI: "true" },
      maxBuffer: 64 * 1024 * 1024,
    });
  return {
    work,
    userHome,
    user: { name: ROOTLESS_USER, uid, gid },
    registry,
    userEnv,
    userArgs,
    asRoot,
    asUser: (args, extra = {}) =>
      run("runuser", userArgs(args, extra), {
        env: userEnv(extra),
        cwd: userHome,
        maxBuffer: 64 * 1024 * 1024,
      }),
    async pushLab(reference, repo) {
      const ref = `docker://${registry.host}/${repo}:1`;
      await asRoot(["copy", reference, ref]);
      return ref;
    },
    async topLayer(reference, name, contentIgnored) {
      const layout = join(work, `layout-${name}`);
      await asRoot(["copy", reference, `oci:${layout}:x`]);
      return topLayerListing(layout, contentIgnored);
    },
    async close() {
      await registry.stop();
      // The user's files may belong to its subordinate ids (user-namespace mode): removed as the
      // user, in its namespace; what is left (no-namespaces mode: the user's own) root removes.
      await run("runuser", [
        "-u",
        ROOTLESS_USER,
        "--",
        "unshare",
        "--map-auto",
        "--map-root-user",
        "rm",
        "-rf",
        userHome,
      ]).catch(() => {});
      await rm(work, { recursive: true, force: true });
    },
  };
}
