import { spawn } from "node:child_process";
import { statSync } from "node:fs";
import { delimiter, join } from "node:path";
import { describeCause, SutureError } from "../errors/errors.ts";
import { parseUpdateManifest } from "./copa-manifest.ts";
import { checkJsonNesting, DEFAULT_MAX_REPORT_BYTES, reportTooLargeError } from "./limits.ts";
import type { UpdatePlan } from "./plan.ts";

/** copa's rule for `--scanner NAME`: the plugin binary is `copa-NAME`. */
export const PLUGIN_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_-]*$/;

export interface RunPluginOptions {
  /** Environment for the plugin, including the PATH it is looked up in (default: process.env). */
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  /** Kill the plugin after this long (default 5 minutes). */
  timeoutMs?: number;
  /**
   * The largest report suture reads (default DEFAULT_MAX_REPORT_BYTES, `--max-report-size`): a
   * report file, or a plugin's output, where the plugin is killed once it prints more.
   */
  maxReportBytes?: number;
}

const STDERR_TAIL_BYTES = 2048;

/**
 * Run copa's scanner-plugin protocol: execute `copa-NAME REPORT` from PATH (the report path is
 * the only argument, no shell; one starting with `-` is passed as `./-…` so the plugin cannot
 * take it for an option) and read its stdout as a copa UpdateManifest (v1alpha1/v1alpha2).
 * Unlike copa, stderr is not mixed into the JSON (a plugin may log there); it is quoted, last
 * lines first, in every error. Errors: USAGE for a bad name or a plugin that is not on PATH or
 * not executable; INVALID_REPORT for a non-zero exit, output that is not JSON or not a manifest;
 * TIMEOUT / CANCELLED when it runs too long or the signal aborts.
 */
export async function runScannerPlugin(
  name: string,
  reportFile: string,
  options: RunPluginOptions = {},
): Promise<UpdatePlan> {
  if (!PLUGIN_NAME_PATTERN.test(name)) {
    throw new SutureError(
      "USAGE",
      `invalid scanner ${JSON.stringify(name)}: use trivy, grype, native, or a plugin name matching ${PLUGIN_NAME_PATTERN.source}`,
    );
  }
  const command = `copa-${name}`;
  const { stdout, stderr } = await execPlugin(command, reportFile, options);
  const tail = stderrTail(stderr);
  const text = stdout.toString("utf8").trim();
  let doc: unknown;
  try {
    if (text === "") throw new Error("no output");
    checkJsonNesting(stdout, `the output of ${command}`);
    doc = JSON.parse(text);
  } catch (e) {
    if (e instanceof SutureError) throw new SutureError(e.code, `${e.message}${tail}`, { cause: e });
    const start = text.slice(0, 80).replace(/\s+/g, " ");
    throw new SutureError(
      "INVALID_REPORT",
      `${command} did not print a JSON UpdateManifest (${describeCause(e)}${start ? `; output starts ${JSON.stringify(start)}` : ""})${tail}`,
      { cause: e },
    );
  }
  try {
    return parseUpdateManifest(doc, reportFile, `plugin:${name}`);
  } catch (e) {
    if (e instanceof SutureError && tail) throw new SutureError(e.code, `${e.message}${tail}`, { cause: e });
    throw e;
  }
}

function stderrTail(stderr: Buffer): string {
  const text = stderr.toString("utf8").trim();
  if (!text) return "";
  const lines = text.split("\n").slice(-5).join(" | ");
  return `; plugin stderr: ${lines.length > 600 ? `…${lines.slice(-600)}` : lines}`;
}

function execPlugin(
  command: string,
  reportFile: string,
  options: RunPluginOptions,
): Promise<{ stdout: Buffer; stderr: Buffer }> {
  const timeoutMs = options.timeoutMs ?? 5 * 60_000;
  const maxOutput = options.maxReportBytes ?? DEFAULT_MAX_REPORT_BYTES;
  // copa's protocol fixes argv to exactly the report path, so there is no room for `--`; a path
  // that starts with `-` is made relative-explicit instead, which names the same file.
  const operand = reportFile.startsWith("-") ? `./${reportFile}` : reportFile;
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(new SutureError("CANCELLED", `${command} was not started: the operation was cancelled`));
      return;
    }
    const child = spawn(command, [operand], {
      env: options.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so stopping it also stops whatever it started (a scanner it runs).
      detached: true,
    });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = Buffer.alloc(0);
    let failure: SutureError | undefined;
    const stop = (e: SutureError) => {
      failure ??= e;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL"); // the group is gone already; make sure the plugin itself is
      }
    };
    const timer = setTimeout(
      () =>
        stop(
          new SutureError(
            "TIMEOUT",
            `${command} ran longer than ${Math.round(timeoutMs / 1000)}s; it was killed`,
          ),
        ),
      timeoutMs,
    );
    const onAbort = () => stop(new SutureError("CANCELLED", `${command} was cancelled`));
    options.signal?.addEventListener("abort", onAbort, { once: true });
    child.stdout.on("data", (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > maxOutput) {
        stop(reportTooLargeError(`the output of ${command}`, undefined, maxOutput));
        child.stdout.destroy(); // read nothing more
        return;
      }
      out.push(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      // Only the tail is ever shown, so keep a bounded window.
      err = Buffer.concat([err, chunk]);
      if (err.length > STDERR_TAIL_BYTES * 4) err = err.subarray(err.length - STDERR_TAIL_BYTES * 2);
    });
    const finish = () => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    };
    child.on("error", (e: NodeJS.ErrnoException) => {
      finish();
      // execvp says EACCES when any PATH directory could not be searched, even if no directory
      // holds the plugin: only a file that is there makes it "not executable".
      if (
        e.code === "ENOENT" ||
        (e.code === "EACCES" && !onPath(command, (options.env ?? process.env).PATH))
      ) {
        reject(
          new SutureError(
            "USAGE",
            `scanner plugin ${command} was not found on PATH; install it there, or use --scanner trivy, grype or native`,
            { cause: e },
          ),
        );
      } else if (e.code === "EACCES") {
        reject(
          new SutureError("USAGE", `scanner plugin ${command} is not executable; chmod +x it`, { cause: e }),
        );
      } else {
        reject(
          new SutureError("INVALID_REPORT", `could not run scanner plugin ${command}: ${e.message}`, {
            cause: e,
          }),
        );
      }
    });
    child.on("exit", () => {
      // A killed plugin's own children may keep the pipes open; do not wait for them.
      if (!failure) return;
      child.stdout.destroy();
      child.stderr.destroy();
      finish();
      reject(failure);
    });
    child.on("close", (code, signal) => {
      finish();
      if (failure) return reject(failure);
      if (code !== 0) {
        const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
        return reject(
          new SutureError("INVALID_REPORT", `scanner plugin ${command} ${how}${stderrTail(err)}`),
        );
      }
      resolve({ stdout: Buffer.concat(out), stderr: err });
    });
  });
}

/** Whether some directory of `path` (a PATH value) holds a file named `command`. */
function onPath(command: string, path = ""): boolean {
  return path.split(delimiter).some((dir) => {
    try {
      return dir !== "" && statSync(join(dir, command)).isFile();
    } catch {
      return false;
    }
  });
}
