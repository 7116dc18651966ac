/**
 * `suture serve` as a test starts it: the real CLI in a child process with a rules file, a token
 * file, its own state and cache dirs, on a loopback port; plus the waits and registry reads the
 * service tests share (test/e2e/serve.test.ts, serve-dashboard.test.ts).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chown, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { SUTURE } from "./cli.ts";
import { freePort } from "./redis.ts";

export { freePort };

/** What a registry's manifest HEAD accepts, so every kind of image answers with its digest. */
export const MANIFEST_TYPES = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
].join(", ");

export interface ServeProcess {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  readonly token: string;
  readonly child: ChildProcess;
  /** What the service wrote to stderr so far (its log). */
  log(): string;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
}

/** A random bearer token (48 hex characters). */
export function newToken(): string {
  return randomBytes(24).toString("hex");
}

/**
 * Start `suture serve --rules` with `rules` (the file's YAML text) in `work`, and wait until it
 * listens. `port` lets a test point a registry's notifications at it before it starts.
 */
export async function startServe(options: {
  work: string;
  rules: string;
  port?: number;
  token?: string;
  args?: string[];
  /** Run it as this unprivileged user (runuser, a bare environment); `work` must be its own. */
  asUser?: { name: string; uid: number; gid: number };
}): Promise<ServeProcess> {
  const { work } = options;
  const port = options.port ?? (await freePort());
  const token = options.token ?? newToken();
  const rules = join(work, "rules.yaml");
  await writeFile(rules, options.rules);
  const tokenFile = join(work, "token");
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  const user = options.asUser;
  if (user) for (const f of [rules, tokenFile]) await chown(f, user.uid, user.gid);
  const command = [
    SUTURE,
    "serve",
    "--rules",
    rules,
    "--listen",
    `127.0.0.1:${port}`,
    "--token-file",
    tokenFile,
    "--state-dir",
    join(work, "state"),
    "--cache-dir",
    join(work, "cache"),
    ...(options.args ?? []),
  ];
  const child = user
    ? spawn("runuser", ["-u", user.name, "--", "env", `HOME=${work}`, ...command], {
        cwd: work,
        env: {
          PATH: process.env.PATH,
          HOME: work,
          NO_PROXY: process.env.NO_PROXY,
          no_proxy: process.env.no_proxy,
        },
        stdio: ["ignore", "pipe", "pipe"],
      })
    : spawn(command[0]!, command.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
  });
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    stderr += s;
  });
  const service: ServeProcess = {
    url: `http://127.0.0.1:${port}`,
    token,
    child,
    log: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
  await waitFor(
    "the service to listen",
    300_000,
    async () => {
      if (child.exitCode !== null) throw new Error(`suture serve exited ${child.exitCode}: ${stderr}`);
      return /listening on/.test(stdout) ? true : undefined;
    },
    service.log,
  );
  return service;
}

/** Poll `f` every half second until it gives a value; the error names `what` and ends with `log()`. */
export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  f: () => Promise<T | undefined>,
  log: () => string = () => "",
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; service log:\n${log()}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The digest a registry (plain HTTP, no auth) holds for `repository:tag`, or undefined. */
export async function manifestDigest(
  registryHost: string,
  repository: string,
  tag: string,
): Promise<string | undefined> {
  const res = await fetch(`http://${registryHost}/v2/${repository}/manifests/${tag}`, {
    method: "HEAD",
    headers: { accept: MANIFEST_TYPES },
  });
  return res.ok ? (res.headers.get("docker-content-digest") ?? undefined) : undefined;
}
