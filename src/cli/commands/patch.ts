import type { Command } from "commander";
import { SutureError } from "../../errors/errors.ts";
import type { Compression } from "../../oci/media-types.ts";
import { parsePlatform } from "../../oci/platform.ts";
import { type PlatformResult, patchImage } from "../../patch/patch.ts";
import type { EngineChoice } from "../../patch/platform.ts";
import { runSandboxCleanups } from "../../sandbox/cleanup.ts";
import { ExitCode } from "../exit.ts";
import { addTransportOptions, type CommonFlags, transportOptionsFrom } from "../options.ts";

interface PatchFlags extends CommonFlags {
  image: string;
  report?: string;
  tag?: string;
  tagSuffix: string;
  scanner: string;
  push?: boolean;
  ociDir?: string;
  archive?: string;
  format: string;
  output?: string;
  ignoreErrors?: boolean;
  timeout: string;
  dryRun?: boolean;
  cacheDir?: string;
  compression: string;
  mirror?: string[];
  engine: string;
  keyring?: string;
  allowInsecureRepositories?: boolean;
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

function parseEngine(value: string): EngineChoice {
  if (value === "auto" || value === "native" || value === "sandbox") return value;
  throw new SutureError("USAGE", `unknown --engine "${value}": use auto, native or sandbox`);
}

/** `--mirror http://deb.debian.org/debian=http://mirror.local/debian`, repeatable. */
export function parseMirrors(values: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    const from = v.slice(0, eq).trim();
    const to = v.slice(eq + 1).trim();
    if (eq <= 0 || !/^https?:\/\//.test(from) || !/^https?:\/\//.test(to)) {
      throw new SutureError(
        "USAGE",
        `invalid --mirror "${v}": use FROM=TO with http(s) URIs, e.g. http://deb.debian.org/debian=http://mirror.local/debian`,
      );
    }
    out[from] = to;
  }
  return out;
}

export function registerPatch(program: Command): void {
  addTransportOptions(
    program
      .command("patch")
      .description("patch an image's OS packages with its own apt in a runc sandbox; adds exactly one layer")
      .requiredOption("-i, --image <image>", "image to patch (any transport)")
      .option(
        "-r, --report <file>",
        "vulnerability report; without one, every package with a newer version is updated",
      )
      .option("-t, --tag <tag>", "patched tag, or a full reference repo:tag")
      .option("--tag-suffix <suffix>", "suffix for the default tag <source tag>-<suffix>", "patched")
      .option("-s, --scanner <name>", "auto | trivy | grype | native | NAME (copa-NAME plugin)", "auto")
      .option("-p, --push", "push the patched image to the registry")
      .option("--oci-dir <dir>", "write the patched image to an OCI layout directory")
      .option("--archive <file>", "write the patched image as a docker-archive tarball")
      .option("-f, --format <format>", "VEX format (openvex)", "openvex")
      .option("-o, --output <file>", "write an OpenVEX document of what was fixed")
      .option(
        "--ignore-errors",
        "finish even if some packages cannot be patched (they are left out of the VEX)",
      )
      .option("--timeout <duration>", "give up after this long", "5m")
      .option("--dry-run", "print the plan and touch nothing")
      .option(
        "--platform <list>",
        "platforms of an index to patch, comma-separated (default: every linux platform; the daemon and docker-archive get the host's)",
      )
      .option("--cache-dir <dir>", "layer and package cache (default $XDG_CACHE_HOME/suture)")
      .option("--compression <c>", "gzip | zstd | uncompressed", "gzip")
      .option(
        "--mirror <from=to>",
        "fetch packages for apt source FROM from mirror TO (repeatable); signatures are still checked",
        (value: string, previous: string[] = []) => [...previous, value],
      )
      .option(
        "--engine <engine>",
        "auto | native | sandbox: suture's own deb engine, or the image's apt in runc (auto: apt when the image has it)",
        "auto",
      )
      .option(
        "--keyring <file>",
        "OpenPGP keyring to trust for images without apt sources (default: the host's /usr/share/keyrings)",
      )
      .option(
        "--allow-insecure-repositories",
        "accept unsigned repositories when the image's apt.conf allows them (Acquire::AllowInsecureRepositories); refused otherwise",
      ),
  ).action(async (flags: PatchFlags) => {
    if (flags.format !== "openvex")
      throw new SutureError("USAGE", `unsupported VEX format "${flags.format}": only openvex`);
    const compression = (flags.compression === "uncompressed" ? "none" : flags.compression) as Compression;
    if (!["gzip", "zstd", "none"].includes(compression))
      throw new SutureError("USAGE", `unknown --compression "${flags.compression}"`);
    const options = transportOptionsFrom(flags);
    const timeoutMs = parseDuration(flags.timeout);
    const controller = new AbortController();
    const timer = setTimeout(
      () =>
        controller.abort(new SutureError("TIMEOUT", `patching took longer than --timeout ${flags.timeout}`)),
      timeoutMs,
    );
    // The first signal cancels and cleans up (container, overlay mounts, temp dirs). A second one
    // must not kill us half-way through that: it only says what is happening; a third quits at once.
    let signals = 0;
    const onSignal = () => {
      signals++;
      if (signals === 1) controller.abort(new SutureError("CANCELLED", "interrupted"));
      else if (signals === 2)
        process.stderr.write(
          "still cleaning up (container, mounts, temp dirs); interrupt again to quit at once and leave them\n",
        );
      else process.exit(ExitCode.interrupted);
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    try {
      const result = await patchImage({
        image: flags.image,
        report: flags.report,
        scanner: flags.scanner,
        tag: flags.tag,
        tagSuffix: flags.tagSuffix,
        push: flags.push,
        ociDir: flags.ociDir,
        archive: flags.archive,
        vexFile: flags.output,
        ignoreErrors: flags.ignoreErrors,
        timeoutMs,
        dryRun: flags.dryRun,
        platforms: flags.platform
          ? flags.platform
              .split(",")
              .filter(Boolean)
              .map((p) => parsePlatform(p))
          : undefined,
        cacheDir: flags.cacheDir,
        compression,
        mirrors: parseMirrors(flags.mirror ?? []),
        engine: parseEngine(flags.engine),
        keyringFile: flags.keyring,
        allowInsecureRepositories: flags.allowInsecureRepositories,
        transport: options,
        progress: options.progress,
        signal: controller.signal,
      });
      options.finish();
      const multi = result.platforms.length > 1;
      if (result.status === "dry-run") {
        const plans = result.platforms
          .filter((p) => p.status === "dry-run")
          .map((p) => ({
            platform: p.platform,
            updates:
              p.plan?.updates.map((u) => ({
                name: u.name,
                installed: u.installedVersion,
                fixed: u.fixedVersion,
                vulnerabilities: u.vulnerabilities,
              })) ?? "update all",
          }));
        process.stdout.write(`${JSON.stringify(multi ? plans : plans[0]?.updates, null, 2)}\n`);
        return;
      }
      if (multi) process.stdout.write(platformTable(result.platforms));
      else {
        for (const c of result.changed)
          process.stdout.write(`updated ${c.name} ${c.from ?? "(new)"} → ${c.to}\n`);
        for (const f of result.failed) process.stdout.write(`failed  ${f.name}: ${f.reason}\n`);
      }
      for (const d of result.droppedAttestations)
        process.stdout.write(`dropped attestation ${d}: it describes an image that was patched\n`);
      if (result.status === "up-to-date") {
        process.stdout.write(`${flags.image} is up to date: nothing to patch, nothing written\n`);
      } else {
        process.stdout.write(`patched ${result.target} ${result.digest}\n`);
      }
      // --ignore-errors: packages left out are said above and kept out of the VEX (exit 0, as copa);
      // a whole platform that failed still makes the exit code say so.
      if (result.platforms.some((p) => p.status === "failed")) process.exitCode = ExitCode.partial;
    } catch (e) {
      throw controller.signal.aborted && controller.signal.reason ? controller.signal.reason : e;
    } finally {
      clearTimeout(timer);
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      await runSandboxCleanups();
    }
  });
}

/** One row per platform: what a user patching an index needs to see at a glance. */
export function platformTable(platforms: PlatformResult[]): string {
  const rows = [
    ["PLATFORM", "STATUS", "PACKAGES", "DIGEST"],
    ...platforms.map((p) => [
      p.platform,
      p.status,
      p.status === "failed" || p.status === "skipped"
        ? (p.reason ?? "")
        : `${p.changed.length} updated${p.failed.length ? `, ${p.failed.length} failed` : ""}`,
      p.digest ? p.digest.slice(0, 19) : "",
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map(
      (r) =>
        `${r
          .map((c, i) => c.padEnd(widths[i]!))
          .join("  ")
          .trimEnd()}\n`,
    )
    .join("");
}
