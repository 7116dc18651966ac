import { type ErrorCode, isSutureError } from "../errors/errors.ts";

/** Exit codes the CLI promises (documented in the README). */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  /** Some platforms or packages failed but --ignore-errors let the rest finish. */
  partial: 3,
  timeout: 124,
  interrupted: 130,
} as const;

export function exitCodeFor(e: unknown): number {
  if (!isSutureError(e)) return ExitCode.failure;
  const byCode: Partial<Record<ErrorCode, number>> = {
    USAGE: ExitCode.usage,
    INVALID_REFERENCE: ExitCode.usage,
    TIMEOUT: ExitCode.timeout,
    CANCELLED: ExitCode.interrupted,
  };
  return byCode[e.code] ?? ExitCode.failure;
}

/** One line for the user: the message, plus the code so scripts and bug reports can name it. */
export function formatError(e: unknown): string {
  const text = isSutureError(e)
    ? `${e.message} [${e.code}]`
    : `${e instanceof Error ? e.message : String(e)} [INTERNAL]`;
  // Messages quote foreign text (JSON parser errors, tool output); keep the promise of one line.
  return `error: ${text.replace(/\s*\n\s*/g, " ")}`;
}
