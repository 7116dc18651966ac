import { type Command, Option } from "@commander-js/extra-typings";
import packageJson from "../../../package.json" with { type: "json" };
import { SutureError } from "../../errors/errors.ts";
import type { Compression } from "../../oci/media-types.ts";
import { parsePlatform } from "../../oci/platform.ts";
import type { EngineChoice } from "../../patch/engines/engine.ts";
import { type PlatformResult, patchImage } from "../../patch/patch.ts";
import { parseReportSizeLimit } from "../../report/limits.ts";
import { formatPlanTable, table } from "../../report/render.ts";
import { runSandboxCleanups } from "../../sandbox/cleanup.ts";
import { reexecOrSettleMode } from "../../sandbox/no-namespaces.ts";
import { SBOM_FORMATS } from "../../sbom/sbom.ts";
import { abortReasonOr, cancelOnSignals } from "../cancel.ts";
import { ExitCode } from "../exit.ts";
import { addTransportOptions, parseDuration, parseMirrors, transportOptionsFrom } from "../options.ts";
import { runBulkFromPatch } from "./bulk.ts";
import { MAX_REPORT_SIZE_HELP } from "./report.ts";

/** `--engine`: what `auto` means, per package manager, is decided where the patch picks its engine. */
const ENGINE_CHOICES = ["auto", "native", "sandbox"] as const satisfies readonly EngineChoice[];

export function registerPatch(program: Command): void {
  addTransportOptions(
    program
      .command("patch")
      .description(
        "patch an image's OS packages and add exactly one layer: suture's native engine where it can serve the image's package manager (every dpkg and apk image), else the image's own package manager in runc",
      )
      .option("-i, --image <image>", "image to patch (any transport); required unless --config")
      .option("--config <file>", "bulk mode, as copa: patch what a PatchConfig YAML names (see suture bulk)")
      .option(
        "-r, --report <file>",
        "vulnerability report; without one, every package with a newer version is updated",
      )
      .option("-t, --tag <tag>", "patched tag, or a full reference repo:tag")
      .option("--tag-suffix <suffix>", "suffix for the default tag <source tag>-<suffix>", "patched")
      .option("-s, --scanner <name>", "auto | trivy | grype | native | NAME (copa-NAME plugin)", "auto")
      .option("--max-report-size <size>", MAX_REPORT_SIZE_HELP)
      .option("-p, --push", "push the patched image to the registry")
      .option("--oci-dir <dir>", "write the patched image to an OCI layout directory")
      .option("--archive <file>", "write the patched image as a docker-archive tarball")
      .addOption(new Option("-f, --format <format>", "VEX format").choices(["openvex"]).default("openvex"))
      .option("-o, --output <file>", "write an OpenVEX document of what was fixed")
      .option(
        "--sbom <file>",
        "write the patched image's SBOM (its packages, updated ones with their old versions)",
      )
      .option(
        "--attach",
        "attach the VEX, the SBOM and an in-toto provenance statement to the patched image as OCI referrers (--push or --oci-dir)",
      )
      .option(
        "--sign-key <file>",
        "with --attach: sign the attached documents as DSSE envelopes with this ECDSA P-256 PEM key (unencrypted PKCS#8), as cosign verify-attestation --key checks",
      )
      .addOption(
        new Option("--sbom-format <format>", "SBOM format for --sbom")
          .choices(SBOM_FORMATS)
          .default("cyclonedx"),
      )
      .option(
        "--ignore-errors",
        "finish even if some packages cannot be patched (they are left out of the VEX)",
      )
      .option(
        "--exit-on-eol",
        "fail (END_OF_LIFE) before any work when the image's release is past all its support, by suture's EOL table (see suture eol); without it, a warning",
      )
      .option(
        "--eol-api-url <url>",
        "copa's EOL API: accepted and ignored here (patch judges EOL offline; suture eol --update --eol-api-url refreshes the table)",
      )
      .option(
        "--ignore-report-image",
        "use a report that names another image (by its config digest) than the one patched",
      )
      .option("--timeout <duration>", "give up after this long", "5m")
      .option("--dry-run", "print the packages that would be updated and write nothing")
      .addOption(
        new Option(
          "--plan-format <format>",
          "how --dry-run prints its plan (-f/--format is copa's VEX format)",
        )
          .choices(["table", "json"])
          .default("table"),
      )
      .option(
        "--platform <list>",
        "platforms of an index to patch, comma-separated (default: every linux platform; the daemon and docker-archive get the host's); a single-platform image must be the one named",
      )
      .option("--cache-dir <dir>", "layer and package cache (default $XDG_CACHE_HOME/suture)")
      .addOption(
        new Option("--compression <c>", "compression of the patch layer")
          .choices(["gzip", "zstd", "uncompressed"])
          .default("gzip"),
      )
      .option(
        "--mirror <from=to>",
        "fetch packages for repository FROM (an apt source or apk repository URL, or one under FROM/) from mirror TO (repeatable); signatures are still checked",
        (value: string, previous: string[] = []) => [...previous, value],
      )
      .addOption(
        new Option(
          "--engine <engine>",
          "what applies the updates. auto: per package manager, suture's native engine where it can serve (every dpkg and apk image), else the sandbox engine (the image's own package manager in runc); native or sandbox: that one",
        )
          .choices(ENGINE_CHOICES)
          .default("auto"),
      )
      .option(
        "--keyring <file>",
        "extra key to trust (repeatable): an OpenPGP keyring, e.g. for images without apt sources (default: the host's /usr/share/keyrings), or an apk RSA public key NAME.rsa.pub",
        (value: string, previous: string[] = []) => [...previous, value],
      )
      .option(
        "-a, --addr <address>",
        "copa's BuildKit address: accepted and ignored (suture needs no BuildKit)",
      )
      .option("--loglevel <level>", "copa's log level: accepted and ignored (see --progress)")
      .option(
        "--allow-insecure-repositories",
        "accept unsigned repositories when the image's apt.conf allows them (Acquire::AllowInsecureRepositories); refused otherwise",
      ),
  ).action(async (flags) => {
    // Not root: the whole patch runs again as root of a user namespace (issue 16, mode 2).
    // …unless it cannot create one, or SUTURE_PATCH_MODE=no-namespaces forces mode 3 (no namespaces).
    const reran = await reexecOrSettleMode();
    if (reran !== undefined) {
      process.exitCode = reran;
      return;
    }
    if (flags.config !== undefined) return runBulkFromPatch(flags.config, flags);
    if (flags.image === undefined)
      throw new SutureError(
        "USAGE",
        "required option '-i, --image <image>' not specified (or --config CONFIG for bulk mode)",
      );
    const compression: Compression = flags.compression === "uncompressed" ? "none" : flags.compression;
    const options = transportOptionsFrom(flags);
    // copa scripts pass BuildKit and logging flags; they keep working, with a note that they do nothing.
    for (const [flag, value] of [
      ["--addr", flags.addr],
      ["--loglevel", flags.loglevel],
    ] as const) {
      if (value !== undefined)
        options.progress?.({
          type: "info",
          message: `${flag} ${value} is ignored: suture runs without BuildKit${flag === "--loglevel" ? " (use --progress for detail)" : ""}`,
        });
    }
    if (flags.eolApiUrl !== undefined)
      options.progress?.({
        type: "info",
        message: `--eol-api-url ${flags.eolApiUrl} is ignored: patch judges EOL by suture's table; refresh it with suture eol --update --eol-api-url URL`,
      });
    const timeoutMs = parseDuration(flags.timeout);
    const controller = new AbortController();
    const timer = setTimeout(
      () =>
        controller.abort(new SutureError("TIMEOUT", `patching took longer than --timeout ${flags.timeout}`)),
      timeoutMs,
    );
    const releaseSignals = cancelOnSignals(controller, "container, mounts, temp dirs");
    try {
      const result = await patchImage({
        image: flags.image,
        report: flags.report,
        scanner: flags.scanner,
        maxReportBytes: flags.maxReportSize ? parseReportSizeLimit(flags.maxReportSize) : undefined,
        tag: flags.tag,
        tagSuffix: flags.tagSuffix,
        push: flags.push,
        ociDir: flags.ociDir,
        archive: flags.archive,
        vexFile: flags.output,
        sbomFile: flags.sbom,
        sbomFormat: flags.sbomFormat,
        attach: flags.attach,
        signKeyFile: flags.signKey,
        toolVersion: packageJson.version,
        ignoreErrors: flags.ignoreErrors,
        ignoreReportImage: flags.ignoreReportImage,
        exitOnEol: flags.exitOnEol,
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
        engine: flags.engine,
        keyringFiles: flags.keyring,
        allowInsecureRepositories: flags.allowInsecureRepositories,
        transport: options,
        progress: options.progress,
        signal: controller.signal,
      });
      options.finish();
      const multi = result.platforms.length > 1;
      if (result.status === "dry-run") {
        process.stdout.write(
          flags.planFormat === "json"
            ? dryRunJson(result.platforms)
            : dryRunTable(flags.image, result.platforms),
        );
        return;
      }
      for (const p of result.replacedPatchLayers)
        process.stdout.write(
          `replaced the previous suture patch layer${multi ? ` of ${p}` : ""}: versions below are relative to the original image\n`,
        );
      if (multi) process.stdout.write(platformTable(result.platforms));
      else {
        for (const c of result.changed)
          process.stdout.write(`updated ${c.name} ${c.from ?? "(new)"} → ${c.to}\n`);
        for (const f of result.failed) process.stdout.write(`failed  ${f.name}: ${f.reason}\n`);
      }
      for (const d of result.droppedAttestations)
        process.stdout.write(`dropped attestation ${d}: it describes an image that was patched\n`);
      if (result.attached) {
        for (const a of result.attached.artifacts)
          process.stdout.write(
            `attached ${a.signed ? "signed " : ""}${a.artifactType}${a.predicateType ? ` (${a.predicateType})` : ""} ${a.digest}\n`,
          );
        if (result.attached.referrersTag)
          process.stdout.write(`referrers listed under tag ${result.attached.referrersTag}\n`);
        if (result.attached.cosignTag)
          process.stdout.write(`cosign attestations under tag ${result.attached.cosignTag}\n`);
      }
      if (result.status === "up-to-date") {
        process.stdout.write(`${flags.image} is up to date: nothing to patch, nothing written\n`);
      } else {
        process.stdout.write(`patched ${result.target} ${result.digest}\n`);
      }
      // --ignore-errors: packages left out are said above and kept out of the VEX (exit 0, as copa);
      // a whole platform that failed still makes the exit code say so.
      if (result.platforms.some((p) => p.status === "failed")) process.exitCode = ExitCode.partial;
    } catch (e) {
      throw abortReasonOr(controller.signal, e);
    } finally {
      clearTimeout(timer);
      releaseSignals();
      await runSandboxCleanups();
    }
  });
}

/**
 * `--dry-run` as text: with a report, its plan restricted to what the image has, as `suture report`
 * prints it; without one, what updating every package would install, resolved against the image's
 * verified repositories.
 */
export function dryRunTable(image: string, platforms: PlatformResult[]): string {
  const out: string[] = [];
  const considered = platforms.filter((p) => p.status === "dry-run");
  for (const p of considered) {
    if (considered.length > 1) out.push(`[${p.platform}]`);
    if (p.plan) {
      out.push(formatPlanTable(p.plan));
      continue;
    }
    // Sorted by name to read like `suture report` (the engine's order is the installation order).
    const planned = [...(p.planned ?? [])].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const lines = [
      `${image} (${p.platform}): every package with a newer version in its verified repositories`,
      "",
    ];
    if (planned.length)
      lines.push(
        ...table(
          ["PACKAGE", "INSTALLED", "", "CANDIDATE", "WHY"],
          planned.map((u) => [u.name, u.from ?? "(new)", "→", u.to, u.reason === "target" ? "" : u.reason]),
        ),
      );
    else lines.push("No OS package updates to make.");
    for (const f of p.failed) lines.push(`cannot update ${f.name}: ${f.reason}`);
    lines.push("", `${planned.length} ${planned.length === 1 ? "package" : "packages"} to update`);
    out.push(`${lines.join("\n")}\n`);
  }
  return out.join("\n");
}

/**
 * `--dry-run --plan-format json`: one object per platform considered, `mode` saying whether a
 * report drove the plan; `updates` lists name, installed, fixed and (with a report) vulnerabilities.
 */
export function dryRunJson(platforms: PlatformResult[]): string {
  const plans = platforms
    .filter((p) => p.status === "dry-run")
    .map((p) => ({
      platform: p.platform,
      mode: p.plan ? "report" : "update-all",
      updates: p.plan
        ? p.plan.updates.map((u) => ({
            name: u.name,
            installed: u.installedVersion,
            fixed: u.fixedVersion,
            vulnerabilities: u.vulnerabilities,
          }))
        : (p.planned ?? []).map((u) => ({
            name: u.name,
            installed: u.from ?? null,
            fixed: u.to,
            reason: u.reason,
          })),
      ...(p.plan ? { skipped: p.plan.skipped } : {}),
      failed: p.failed,
    }));
  return `${JSON.stringify({ platforms: plans }, null, 2)}\n`;
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
