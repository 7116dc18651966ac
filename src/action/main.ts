/**
 * The GitHub Action's entry (action.yml `runs.main`, bundled to dist/action/index.mjs): the runner
 * starts it with its own Node, the inputs in `INPUT_*` variables, no node_modules and no build.
 */
import { spawnSync } from "node:child_process";
import { chownSync } from "node:fs";
import { abortReasonOr, cancelOnSignals } from "../cli/cancel.ts";
import { ExitCode, exitCodeFor, formatError } from "../cli/exit.ts";
import { createRenderer } from "../cli/progress-render.ts";
import { runSandboxCleanups } from "../sandbox/cleanup.ts";
import { runAction } from "./run.ts";
import { errorCommand, neutraliseCommands, warningCommand } from "./runner-io.ts";
import { elevation } from "./sudo.ts";

async function main(): Promise<number> {
  // Patching needs root (layers extracted with their owners, overlayfs, runc). GitHub's hosted
  // runners run actions as an unprivileged user who may sudo without a password: re-run this
  // same file under sudo, keeping the environment (inputs, GITHUB_OUTPUT, DOCKER_CONFIG).
  const plan = elevation(process.env, process.getuid?.());
  if (plan.kind === "sudo") {
    const child = spawnSync(plan.command, plan.args, { stdio: "inherit", env: plan.env });
    if (child.error) {
      process.stdout.write(errorCommand(`cannot run sudo: ${child.error.message}`));
      return ExitCode.failure;
    }
    return child.status ?? ExitCode.failure;
  }
  if (plan.kind === "refuse") {
    process.stdout.write(errorCommand(plan.message));
    return ExitCode.failure;
  }

  const controller = new AbortController();
  const release = cancelOnSignals(controller, "container, mounts, temp dirs");
  const progress = createRenderer("plain", commandFreeStdout());
  try {
    const result = await runAction(process.env, {
      signal: controller.signal,
      progress: (event) => {
        progress(event);
        if (event.type === "warning")
          process.stdout.write(
            warningCommand(`${event.platform ? `[${event.platform}] ` : ""}${event.message}`),
          );
      },
    });
    progress.finish();
    // Files written as root under sudo belong to the user the job runs as, so later steps can
    // move or delete them.
    const owner = sudoOwner();
    if (owner)
      for (const file of [result.vexFile, result.sbomFile]) if (file) chownSync(file, owner.uid, owner.gid);
    process.stdout.write(
      result.status === "patched"
        ? `patched ${result.target} ${result.digest}\n`
        : `${result.target}: nothing to patch, nothing written\n`,
    );
    return result.platforms.some((p) => p.status === "failed") ? ExitCode.partial : ExitCode.ok;
  } catch (e) {
    progress.finish();
    const error = abortReasonOr(controller.signal, e);
    process.stdout.write(errorCommand(formatError(error).replace(/^error: /, "")));
    return exitCodeFor(error);
  } finally {
    release();
    await runSandboxCleanups();
  }
}

/**
 * stdout for progress lines. The runner reads every line starting with `::` as a workflow command,
 * and progress carries text from the image and its packages (maintainer scripts' output): such a
 * line is printed with its colons apart, so only this entry's own `::error::` lines are commands.
 */
function commandFreeStdout(): NodeJS.WriteStream {
  return {
    isTTY: false,
    write: (text: string) => process.stdout.write(neutraliseCommands(text)),
  } as unknown as NodeJS.WriteStream;
}

function sudoOwner(): { uid: number; gid: number } | undefined {
  const uid = Number(process.env.SUDO_UID);
  const gid = Number(process.env.SUDO_GID);
  return Number.isInteger(uid) && Number.isInteger(gid) && uid > 0 ? { uid, gid } : undefined;
}

process.exitCode = await main();
