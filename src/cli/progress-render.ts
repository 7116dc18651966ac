import type { ProgressEvent, ProgressSink } from "../progress/events.ts";

export type ProgressMode = "auto" | "plain" | "tty" | "json" | "quiet";

/** What `--progress` accepts: the modes, and copa's `rawjson` for json. */
export const PROGRESS_CHOICES = ["auto", "plain", "tty", "json", "quiet", "rawjson"] as const;
export type ProgressChoice = (typeof PROGRESS_CHOICES)[number];

/**
 * The `--progress` value: copa's names (rawjson is its json) and ours, case-insensitive. An
 * unknown value is a warning and `auto`, as copa treats it, not a usage error.
 */
export function parseProgressChoice(value: string): ProgressChoice {
  const v = value.toLowerCase();
  if ((PROGRESS_CHOICES as readonly string[]).includes(v)) return v as ProgressChoice;
  process.stderr.write(`warning: unknown --progress ${JSON.stringify(value)}, using auto\n`);
  return "auto";
}

export function progressMode(choice: ProgressChoice): ProgressMode {
  return choice === "rawjson" ? "json" : choice;
}

/**
 * Render library progress events on stderr (stdout stays for results). TTY mode redraws one status
 * line; plain mode prints a line per step (also when CI=true or stderr is not a terminal).
 */
export function createRenderer(
  mode: ProgressMode,
  stream: NodeJS.WriteStream = process.stderr,
): ProgressSink & { finish(): void } {
  const resolved = mode === "auto" ? (stream.isTTY && process.env.CI !== "true" ? "tty" : "plain") : mode;
  let statusLine = false;
  let finished = false;
  const blobBytes = new Map<string, { bytes: number; total: number }>();
  /** Plain mode: blobs already said done, by action and digest (uploads report progress as they go). */
  const blobsSaid = new Set<string>();
  const clear = () => {
    if (statusLine) {
      stream.write("\r\x1b[K");
      statusLine = false;
    }
  };
  const line = (text: string) => {
    clear();
    stream.write(`${text}\n`);
  };
  const sink = (event: ProgressEvent) => {
    // After finish the command prints its result: late events (a retried upload's last bytes, a
    // cleanup) must not come after it.
    if (resolved === "quiet" || finished) return;
    if (resolved === "json") {
      stream.write(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`);
      return;
    }
    // Platforms of an index are patched concurrently: say which one each line is about.
    const say = (text: string) => line(event.platform ? `[${event.platform}] ${text.trimStart()}` : text);
    switch (event.type) {
      case "step":
        say(`» ${event.message}`);
        break;
      case "step-done":
        if (resolved === "plain" || event.message)
          say(
            `  done ${event.step}${event.message ? `: ${event.message}` : ""} (${(event.elapsedMs / 1000).toFixed(1)}s)`,
          );
        break;
      case "warning":
        say(`warning: ${event.message}`);
        break;
      case "info":
        say(`  ${event.message}`);
        break;
      case "hook":
        say(
          `  hook     ${event.package} ${event.hook}: ${event.ran === "native" ? "done natively" : "ran the script"} (${event.calls} call${event.calls === 1 ? "" : "s"}${event.detail ? `; ${event.detail}` : ""}, ${(event.elapsedMs / 1000).toFixed(1)}s)`,
        );
        break;
      case "package":
        say(
          `  ${event.status.padEnd(8)} ${event.name} ${event.from ?? "?"} → ${event.to}${event.detail ? ` (${event.detail})` : ""}`,
        );
        break;
      case "blob": {
        if (resolved === "tty") {
          blobBytes.set(event.digest, { bytes: event.bytes, total: event.total });
          let done = 0;
          let total = 0;
          for (const b of blobBytes.values()) {
            done += b.bytes;
            total += b.total;
          }
          stream.write(`\r\x1b[K  ${event.action} ${event.digest.slice(7, 19)} ${mib(done)}/${mib(total)}`);
          statusLine = true;
        } else if (
          event.bytes === event.total ||
          (event.action !== "download" && event.action !== "upload")
        ) {
          const key = `${event.action} ${event.digest}`;
          if (blobsSaid.has(key)) break;
          blobsSaid.add(key);
          say(`  ${event.action} ${event.digest.slice(0, 19)} ${mib(event.total)}`);
        }
        break;
      }
      case "command-output":
        if (resolved === "tty") {
          stream.write(`\r\x1b[K  │ ${event.line.slice(0, (stream.columns ?? 100) - 6)}`);
          statusLine = true;
        } else say(`  │ ${event.line}`);
        break;
    }
  };
  return Object.assign(sink, {
    finish: () => {
      clear();
      finished = true;
    },
  });
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
