/**
 * What the tests of the modes without root share (test/e2e/cli-patch-rootless, -no-namespaces,
 * serve-rootless): the lab's unprivileged user (test/lab/podman.ts) with a home of its own in a
 * work dir, a loopback registry, suture run as root or as that user, and the top layer of a result.
 */
import { execFile, spawn } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { topLayerListing } from "./layer-listing.ts";
import { ensureRootlessUser, ROOTLESS_USER } from "./podman.ts";
import { type LabRegistry, startRegistry } from "./registry.ts";

const run = promisify(execFile);
export const SUTURE_BIN = join(import.meta.dirname, "../../bin/suture");

/**
 * What a run left in `dir` (its TMPDIR): every entry but Node's compile cache, which Node keeps
 * there on purpose (bin/suture's entry turns it on) and is not a leftover of the run.
 */
export async function leftIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name !== "node-compile-cache");
}

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
  /**
   * `patch -i src <flags> --push` once as the user (to `<repo>:user`, `--progress plain`, with
   * `extra` in its environment) and once as root (to `<repo>:root`); both top layers, entry by
   * entry (`contentIgnored` as for topLayer), and the user's progress output.
   */
  patchAsUserAndRoot(
    src: string,
    repo: string,
    flags: string[],
    options?: { extra?: NodeJS.ProcessEnv; contentIgnored?: (path: string) => boolean },
  ): Promise<{ userStderr: string; user: string[]; root: string[] }>;
  /**
   * `patch -i src --push -t target --progress plain` as the user, with its own cache dir in the
   * user's home and a private TMPDIR, interrupted with SIGINT (to suture itself, as a terminal's ^C
   * would reach it) once its stderr matches `when`. Returns its exit code and output, where it
   * worked, and the user's processes that name either dir (this run's own: the user is shared).
   */
  interruptedPatch(options: {
    src: string;
    target: string;
    when: RegExp;
    extra?: NodeJS.ProcessEnv;
  }): Promise<{ code: number | null; stderr: string; cache: string; tmp: string; processesLeft: string }>;
  /** Run `suture args…` as the user where it must fail: its exit code and its stderr's lines. */
  refusedAsUser(args: string[], extra?: NodeJS.ProcessEnv): Promise<{ code: number; lines: string[] }>;
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
  const asUser = (args: string[], extra: NodeJS.ProcessEnv = {}) =>
    run("runuser", userArgs(args, extra), {
      env: userEnv(extra),
      cwd: userHome,
      maxBuffer: 64 * 1024 * 1024,
    });
  const topLayer = async (reference: string, name: string, contentIgnored?: (path: string) => boolean) => {
    const layout = join(work, `layout-${name}`);
    await asRoot(["copy", reference, `oci:${layout}:x`]);
    return topLayerListing(layout, contentIgnored);
  };
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
    topLayer,
    async patchAsUserAndRoot(src, repo, flags, options = {}) {
      const target = (who: string) => `${registry.host}/${repo}:${who}`;
      const base = ["patch", "-i", src, ...flags, "--push", "-t"];
      const userRun = await asUser([...base, target("user"), "--progress", "plain"], options.extra);
      await asRoot([...base, target("root")]);
      const name = repo.replaceAll("/", "-");
      return {
        userStderr: userRun.stderr,
        user: await topLayer(`docker://${target("user")}`, `${name}-user`, options.contentIgnored),
        root: await topLayer(`docker://${target("root")}`, `${name}-root`, options.contentIgnored),
      };
    },
    async interruptedPatch({ src, target, when, extra = {} }) {
      const cache = join(userHome, "int-cache");
      // A temp dir of the user's own: the lab's user is shared by test files running at the same
      // time, so /tmp holds their work too.
      const tmp = join(work, "tmp-interrupted");
      await mkdir(tmp, { mode: 0o700 });
      await chown(tmp, uid, gid);
      const env = { ...extra, TMPDIR: tmp };
      const args = ["patch", "-i", src, "--push", "-t", target, "--cache-dir", cache, "--progress", "plain"];
      const child = spawn("runuser", userArgs(args, env), {
        env: userEnv(env),
        cwd: userHome,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (d) => {
        stderr += d;
      });
      await new Promise<void>((resolve, reject) => {
        const t = setInterval(() => {
          if (when.test(stderr)) {
            clearInterval(t);
            resolve();
          }
        }, 50);
        child.once("exit", () => {
          clearInterval(t);
          reject(new Error(`suture exited before the interrupt: ${stderr}`));
        });
      });
      // runuser's one child is the process env(1) became: suture.
      const cli = (await readFile(`/proc/${child.pid}/task/${child.pid}/children`, "utf8"))
        .trim()
        .split(/\s+/);
      if (cli.length !== 1) throw new Error(`runuser has ${cli.length} children, expected suture alone`);
      process.kill(Number(cli[0]), "SIGINT");
      const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
      const { stdout: ps } = await run("ps", ["-u", ROOTLESS_USER, "-o", "pid=,args="]).catch((e) => ({
        stdout: String(e.stdout ?? ""),
      }));
      const processesLeft = ps
        .split("\n")
        .filter((l) => l.includes(cache) || l.includes(tmp))
        .join("\n");
      return { code, stderr, cache, tmp, processesLeft };
    },
    async refusedAsUser(args, extra = {}) {
      const failed = await asUser(args, extra).then(
        () => {
          throw new Error(`suture ${args.join(" ")} was not refused`);
        },
        (e: { code: number; stderr: string }) => e,
      );
      return { code: failed.code, lines: failed.stderr.trim().split("\n") };
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
