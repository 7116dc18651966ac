import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * For `assert.rejects(run(suture, …), oneLineError(/cause/))`: the CLI failed with a non-zero exit
 * (or exactly `code`) and printed exactly one `error:` line matching `pattern`.
 */
export function oneLineError(
  pattern: RegExp,
  code?: number,
): (e: { code: number; stderr: string }) => boolean {
  return (e) => {
    if (code === undefined) assert.notEqual(e.code, 0);
    else assert.equal(e.code, code, e.stderr);
    const errors = e.stderr.split("\n").filter((l) => l.startsWith("error:"));
    assert.equal(errors.length, 1, e.stderr);
    assert.match(errors[0]!, pattern);
    return true;
  };
}

/** bin/suture of this checkout. */
export const SUTURE = join(import.meta.dirname, "../../bin/suture");

/**
 * `suture patch -i REFERENCE [-r REPORT] --engine ENGINE` into the OCI layout `out`, tagged with
 * the engine's name, as the engine-differential tests patch one image with each engine.
 */
export function patchIntoOciDir(options: {
  reference: string;
  engine: "native" | "sandbox";
  out: string;
  cacheDir: string;
  report?: string;
  extraArgs?: readonly string[];
}): Promise<{ stdout: string; stderr: string }> {
  const { reference, engine, out, cacheDir, report, extraArgs = [] } = options;
  return run(
    SUTURE,
    [
      "patch",
      "-i",
      reference,
      ...(report ? ["-r", report] : []),
      "-t",
      engine,
      "--oci-dir",
      out,
      "--engine",
      engine,
      "--cache-dir",
      cacheDir,
      ...extraArgs,
    ],
    { env: { ...process.env, CI: "true" }, maxBuffer: 64 * 1024 * 1024 },
  );
}
