import type { z } from "zod";
import { describeCause, SutureError } from "../errors/errors.ts";
import { checkJsonNesting } from "./limits.ts";

/** `$.Results[0].Vulnerabilities[3].PkgName`: where in a JSON document a value sits. */
export function jsonPath(path: readonly PropertyKey[]): string {
  let out = "$";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else if (typeof key === "string" && /^[A-Za-z_$@][\w$@-]*$/.test(key)) out += `.${key}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

/**
 * Validate `value` against `schema`, or throw INVALID_REPORT naming the file, what it was
 * expected to be, and the JSON path and problem of the first bad field.
 */
export function parseWith<T extends z.ZodType>(
  schema: T,
  value: unknown,
  file: string,
  what: string,
): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const more = r.error.issues.length > 1 ? ` (and ${r.error.issues.length - 1} more problems)` : "";
  throw new SutureError(
    "INVALID_REPORT",
    `${file} is not a valid ${what}: ${jsonPath(issue.path)}: ${issue.message}${more}`,
    { cause: r.error },
  );
}

/**
 * Parse report bytes as JSON, recognising the non-JSON files people pass by mistake (image
 * tarballs, compressed files) so the error says what the file is.
 */
export function parseReportJson(bytes: Buffer, file: string): unknown {
  if (bytes.length >= 262 && bytes.subarray(257, 262).toString("latin1") === "ustar") {
    throw new SutureError(
      "INVALID_REPORT",
      `${file} is a tar archive (an image export?), not a scanner report; pass the JSON a scanner wrote, e.g. trivy image --format json -o report.json IMAGE`,
    );
  }
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    throw new SutureError(
      "INVALID_REPORT",
      `${file} is gzip-compressed; decompress it and pass the JSON report`,
    );
  }
  const text = bytes.toString("utf8").replace(/^\uFEFF/, "");
  if (text.trim() === "")
    throw new SutureError("INVALID_REPORT", `${file} is empty; pass a scanner's JSON report`);
  checkJsonNesting(bytes, file);
  try {
    return JSON.parse(text);
  } catch (e) {
    // describeCause keeps it one line: V8 quotes the text around the error, newlines included.
    throw new SutureError(
      "INVALID_REPORT",
      `${file} is not JSON (${describeCause(e)}); pass a scanner's JSON report (trivy --format json, grype -o json, or a copa UpdateManifest)`,
      { cause: e },
    );
  }
}
