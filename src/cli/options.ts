import type { Command } from "commander";
import type { Platform } from "../oci/manifest.ts";
import { parsePlatform } from "../oci/platform.ts";
import type { TransportOptions } from "../transports/index.ts";
import { createRenderer, parseProgressMode } from "./progress-render.ts";

/** Options every command that touches images shares. */
export function addTransportOptions(cmd: Command): Command {
  return cmd
    .option("--insecure", "allow plain HTTP and unverified TLS for non-loopback registries")
    .option(
      "--docker-config <dir>",
      "directory holding config.json credentials (default $DOCKER_CONFIG or ~/.docker)",
    )
    .option("--progress <mode>", "auto | plain | tty | json | quiet", "auto");
}

export interface CommonFlags {
  insecure?: boolean;
  dockerConfig?: string;
  progress?: string;
  platform?: string;
}

export function transportOptionsFrom(flags: CommonFlags): TransportOptions & { finish(): void } {
  const renderer = createRenderer(parseProgressMode(flags.progress));
  return {
    insecure: flags.insecure,
    dockerConfig: flags.dockerConfig,
    progress: renderer,
    finish: renderer.finish,
  };
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
