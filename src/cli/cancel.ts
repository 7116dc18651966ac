import { SutureError } from "../errors/errors.ts";
import { ExitCode } from "./exit.ts";

/**
 * SIGINT/SIGTERM handling for a command that must clean up after itself (sandboxes, partial blobs,
 * temp files). The first signal aborts `controller` with a CANCELLED error, so the library unwinds
 * and removes what it created; a second one must not kill us half-way through that, so it only says
 * what is happening; a third quits at once (exit 130), leaving whatever was not cleaned yet.
 * Returns a function that removes the handlers; call it once the command is done.
 */
export function cancelOnSignals(controller: AbortController, cleaningUp: string): () => void {
  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals === 1) controller.abort(new SutureError("CANCELLED", "interrupted"));
    else if (signals === 2)
      process.stderr.write(
        `still cleaning up (${cleaningUp}); interrupt again to quit at once and leave them\n`,
      );
    else process.exit(ExitCode.interrupted);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}

/**
 * What a command reports when it failed: once its signal was aborted (interrupt, timeout), the
 * abort reason (exit 130 or 124), not the error of whichever operation the abort broke off.
 */
export function abortReasonOr(signal: AbortSignal, error: unknown): unknown {
  return signal.aborted && signal.reason ? signal.reason : error;
}
