import assert from "node:assert/strict";

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
