import { spawnSync } from "node:child_process";
import type { Env } from "./runner-io.ts";

/** Set on the re-run under sudo, so that a sudo that does not make us root cannot loop. */
const ELEVATED = "SUTURE_ACTION_ELEVATED";

export type Elevation =
  | { kind: "run" }
  | { kind: "sudo"; command: string; args: string[]; env: NodeJS.ProcessEnv }
  | { kind: "refuse"; message: string };

/**
 * How the Action gets root: already root (a self-hosted runner as root, a job container) runs
 * as it is; otherwise `sudo -n` (never a password prompt: a job has no terminal) re-runs this same
 * script with the same Node and the whole environment. `-E` keeps the inputs and runner files; the
 * Docker config directory is named explicitly since sudo may reset HOME, and docker/login-action
 * wrote the credentials under the job user's home.
 */
export function elevation(
  env: Env,
  uid: number | undefined,
  canSudo: () => boolean = sudoWithoutPassword,
  script: string = process.argv[1] ?? "",
  node: string = process.execPath,
  home: string | undefined = env.HOME,
): Elevation {
  if (uid === undefined || uid === 0) return { kind: "run" };
  if (env[ELEVATED] === "1" || !canSudo())
    return {
      kind: "refuse",
      message: `suture needs root to patch (it extracts layers with their owners, mounts overlayfs and runs runc) and runs as uid ${uid} without passwordless sudo: use a GitHub-hosted runner, a self-hosted runner whose user may sudo without a password, or a job container run as root with --privileged`,
    };
  const dockerConfig = env.DOCKER_CONFIG ?? (home ? `${home}/.docker` : undefined);
  return {
    kind: "sudo",
    command: "sudo",
    args: ["-n", "-E", node, script],
    env: {
      ...(env as NodeJS.ProcessEnv),
      [ELEVATED]: "1",
      ...(dockerConfig ? { DOCKER_CONFIG: dockerConfig } : {}),
    },
  };
}

function sudoWithoutPassword(): boolean {
  const r = spawnSync("sudo", ["-n", "true"], { stdio: "ignore", timeout: 10_000 });
  return r.status === 0;
}
