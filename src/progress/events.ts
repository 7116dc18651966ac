/**
 * Typed progress events. The library emits them through a ProgressSink and never prints;
 * the CLI decides how to render them (TTY, plain lines, JSON).
 */
export type ProgressEvent = ProgressEventBody & {
  /** Which platform of a multi-platform image the event is about (`linux/arm64`). */
  platform?: string;
};

type ProgressEventBody =
  | { type: "step"; step: string; message: string }
  | { type: "step-done"; step: string; message?: string; elapsedMs: number }
  | {
      type: "blob";
      action: "download" | "upload" | "skip" | "mount" | "exists";
      digest: string;
      bytes: number;
      total: number;
    }
  | { type: "warning"; message: string }
  | { type: "info"; message: string }
  | {
      /** A program maintainer scripts called, done natively (or, when it could not be, for real). */
      type: "hook";
      package: string;
      hook: string;
      calls: number;
      ran: "native" | "script";
      detail: string;
      elapsedMs: number;
    }
  | {
      type: "package";
      name: string;
      from?: string;
      to: string;
      status: "planned" | "updated" | "failed" | "skipped";
      detail?: string;
    }
  | { type: "command-output"; stream: "stdout" | "stderr"; line: string };

export type ProgressSink = (event: ProgressEvent) => void;

export const silentProgress: ProgressSink = () => {};

/** Run `fn` as a named step, emitting step and step-done events around it. */
export async function withStep<T>(
  progress: ProgressSink,
  step: string,
  message: string,
  fn: () => Promise<T>,
): Promise<T> {
  const started = performance.now();
  progress({ type: "step", step, message });
  const result = await fn();
  progress({ type: "step-done", step, elapsedMs: Math.round(performance.now() - started) });
  return result;
}
