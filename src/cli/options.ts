import { type Command, Option, type OptionValues } from "@commander-js/extra-typings";
import { SutureError } from "../errors/errors.ts";
import { DEFAULT_MAX_BLOB_SIZE, formatBytes, parseByteSize } from "../image/limits.ts";
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
