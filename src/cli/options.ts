import { type Command, Option, type OptionValues } from "@commander-js/extra-typings";
import { formatBytes, SutureError } from "../errors/errors.ts";
import { DEFAULT_MAX_BLOB_SIZE, parseByteSize } from "../image/limits.ts";
import type { Platform } from "../oci/manifest.ts";
import { parsePlatform } from "../oci/platform.ts";
import type { TransportOptions } from "../transports/index.ts";
import {
  createRenderer,
  PROGRESS_CHOICES,
  type ProgressChoice,
  parseProgressChoice,
  progressMode,
} from "./progress-render.ts";

/**
 * The patch options every job of a many-image command takes (`bulk`, `serve`, `worker`): patch's,
 * minus those naming one image or its output. One definition, so the three accept the same.
 */
export function addPatchJobOptions<
  Args extends unknown[],
  Opts extends OptionValues,
  Globals extends OptionValues,
>(cmd: Command<Args, Opts, Globals>) {
  return cmd
    .option(
      "--cache-dir <dir>",
      "layer and package cache, shared by every job (default $XDG_CACHE_HOME/suture)",
    )
    .addOption(
      new Option("--compression <c>", "compression of the patch layers")
        .choices(["gzip", "zstd", "uncompressed"] as const)
        .default("gzip" as const),
    )
    .option(
      "--mirror <from=to>",
      "fetch packages for repository FROM from mirror TO (repeatable); signatures are still checked",
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .addOption(
      new Option(
        "--engine <engine>",
        "what applies the updates: auto, native or sandbox (see suture patch --help)",
      )
        .choices(["auto", "native", "sandbox"] as const)
        .default("auto" as const),
    )
    .option(
      "--keyring <file>",
      "extra key to trust (repeatable): an OpenPGP keyring or an apk RSA public key NAME.rsa.pub",
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option("--allow-insecure-repositories", "accept unsigned repositories an image's apt.conf allows");
}

/** Options every command that touches images shares (typed: the action sees their values). */
export function addTransportOptions<
  Args extends unknown[],
  Opts extends OptionValues,
  Globals extends OptionValues,
>(cmd: Command<Args, Opts, Globals>) {
  return cmd
    .option("--insecure", "allow plain HTTP and unverified TLS for non-loopback registries")
    .option(
      "--docker-config <dir>",
      "directory holding config.json credentials (default $DOCKER_CONFIG or ~/.docker)",
    )
    .option(
      "--max-blob-size <size>",
      `refuse layers whose manifest claims more than this, e.g. 32G or 500MiB (default ${formatBytes(DEFAULT_MAX_BLOB_SIZE).replace(" ", "")})`,
    )
    .addOption(
      new Option(
        "--progress <mode>",
        `how progress is shown on stderr: ${PROGRESS_CHOICES.join(", ")} (rawjson: copa's name for json; unknown: auto, as copa)`,
      )
        .argParser(parseProgressChoice)
        .default("auto" as ProgressChoice),
    );
}

export interface CommonFlags {
  insecure?: boolean;
  dockerConfig?: string;
  maxBlobSize?: string;
  progress: ProgressChoice;
  platform?: string;
}

export function transportOptionsFrom(flags: CommonFlags): TransportOptions & { finish(): void } {
  const maxBlobSize = flags.maxBlobSize === undefined ? undefined : parseMaxBlobSize(flags.maxBlobSize);
  const renderer = createRenderer(progressMode(flags.progress));
  return {
    insecure: flags.insecure,
    dockerConfig: flags.dockerConfig,
    maxBlobSize,
    progress: renderer,
    finish: renderer.finish,
  };
}

/** `--max-blob-size 32G` → bytes; units are binary (k, m, g, t; `GiB` and `GB` mean the same). */
export function parseMaxBlobSize(value: string): number {
  const bytes = parseByteSize(value);
  if (bytes === undefined) {
    throw new SutureError(
      "USAGE",
      `invalid --max-blob-size "${value}": give a size such as 32G, 500MiB or a number of bytes`,
    );
  }
  return bytes;
}

/** `linux/amd64,linux/arm64` → platforms. */
export function parsePlatformList(value: string | undefined): Platform[] | undefined {
  if (!value) return undefined;
  return value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map(parsePlatform);
}

/** `5m`, `90s`, `1h30m` → milliseconds (copa's --timeout syntax). */
export function parseDuration(text: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
    consumed += m[0].length;
  }
  if (consumed !== text.length || total <= 0)
    throw new SutureError("USAGE", `invalid --timeout "${text}": use e.g. 5m, 90s, 1h`);
  return total;
}

/**
 * An http(s) URL with a host and nothing that could end a line of an apt sources file: the
 * mirror is written into one (`URIs: …`), where a newline would add fields such as `Trusted: yes`.
 */
function isPlainHttpUrl(text: string): boolean {
  if (!/^https?:\/\/[^\s\x00-\x1f\x7f]+$/.test(text)) return false;
  try {
    return new URL(text).hostname !== "";
  } catch {
    return false;
  }
}

/** `--mirror http://deb.debian.org/debian=http://mirror.local/debian`, repeatable. */
export function parseMirrors(values: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    const from = v.slice(0, eq).trim();
    const to = v.slice(eq + 1).trim();
    if (eq <= 0 || !isPlainHttpUrl(from) || !isPlainHttpUrl(to)) {
      throw new SutureError(
        "USAGE",
        `invalid --mirror ${JSON.stringify(v)}: use FROM=TO with http(s) URIs, e.g. http://deb.debian.org/debian=http://mirror.local/debian`,
      );
    }
    out[from] = to;
  }
  return out;
}
