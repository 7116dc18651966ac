import { Command, CommanderError } from "@commander-js/extra-typings";
import packageJson from "../../package.json" with { type: "json" };
import { SutureError } from "../errors/errors.ts";
import { registerBulk } from "./commands/bulk.ts";
import { registerCopy } from "./commands/copy.ts";
import { registerDoctor } from "./commands/doctor.ts";
import { registerEol } from "./commands/eol.ts";
import { registerInspect } from "./commands/inspect.ts";
import { registerPatch } from "./commands/patch.ts";
import { registerReport } from "./commands/report.ts";
import { registerSbom } from "./commands/sbom.ts";
import { registerServe } from "./commands/serve.ts";
import { registerWorker } from "./commands/worker.ts";
import { ExitCode, exitCodeFor, formatError } from "./exit.ts";

export function buildProgram(): Command {
  const program = new Command("suture")
    .description("Patch OS-package vulnerabilities in container images, daemonless.")
    .version(packageJson.version, "-v, --version")
    .showHelpAfterError("(run suture help <command> for usage)")
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .exitOverride();
  program.addHelpText(
    "after",
    `
Image references (like skopeo):
  docker://REF or REF        a registry (REF: [registry/]repo[:tag][@digest]; default docker.io)
  oci:DIR[:TAG]              an OCI image layout directory
  docker-archive:FILE[:REF]  a docker save tarball
  docker-daemon:REF          the local Docker engine (DOCKER_HOST; Podman's socket if no Docker)
  podman:REF                 Podman's API service (CONTAINER_HOST, or its rootful/rootless socket)`,
  );
  registerInspect(program);
  registerCopy(program);
  registerReport(program);
  registerPatch(program);
  registerBulk(program);
  registerSbom(program);
  registerEol(program);
  registerDoctor(program);
  registerServe(program);
  registerWorker(program);
  return program;
}

/** Run the CLI; returns the process exit code. Never throws. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : ExitCode.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (
        e.code === "commander.helpDisplayed" ||
        e.code === "commander.version" ||
        e.code === "commander.help"
      )
        return ExitCode.ok;
      return e.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    process.stderr.write(`${formatError(e)}\n`);
    if (process.env.SUTURE_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n${causeChain(e)}`);
    return exitCodeFor(e);
  }
}

function causeChain(e: Error): string {
  let out = "";
  let c: unknown = e.cause;
  while (c) {
    out += `caused by: ${c instanceof Error ? (c.stack ?? c.message) : String(c)}\n`;
    c = c instanceof Error ? c.cause : undefined;
  }
  return out;
}

export function usageError(message: string): SutureError {
  return new SutureError("USAGE", message);
}
