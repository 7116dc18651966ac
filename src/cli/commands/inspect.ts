import { type Command, Option } from "@commander-js/extra-typings";
import type { InspectResult } from "../../index.ts";
import { printable } from "../../report/render.ts";
import { addTransportOptions, parsePlatformList, transportOptionsFrom } from "../options.ts";

export function registerInspect(program: Command): void {
  addTransportOptions(
    program
      .command("inspect")
      .description("show an image's platforms, layers, config, OS and package database")
      .argument("<image>", "image reference (see suture --help for transports)")
      .option("--platform <list>", "only these platforms, e.g. linux/arm64 (default: all)")
      .addOption(new Option("--format <format>", "output format").choices(["text", "json"]).default("text"))
      .option("--no-layers", "read manifests and configs only (no OS or package detection)"),
  ).action(async (image, flags) => {
    // The library surface (index.ts) is loaded by the commands that use it only: it brings bulk's
    // modules, which `suture patch` never needs (every command module is imported to build the program).
    const { inspectImage } = await import("../../index.ts");
    const { finish, ...transport } = transportOptionsFrom(flags);
    const result = await inspectImage(image, {
      ...transport,
      platforms: parsePlatformList(flags.platform),
      noLayers: !flags.layers,
    });
    finish();
    process.stdout.write(
      flags.format === "json" ? `${JSON.stringify(result, null, 2)}\n` : renderInspect(result),
    );
  });
}

export function renderInspect(r: InspectResult): string {
  const lines: string[] = [];
  lines.push(`Name:       ${r.name}`);
  lines.push(`Digest:     ${r.digest}`);
  lines.push(`MediaType:  ${r.mediaType}`);
  lines.push(`Platforms:  ${r.platforms.join(", ")}`);
  for (const img of r.images) {
    lines.push("");
    lines.push(`[${img.platform}] ${img.digest}`);
    if (img.created) lines.push(`  Created:        ${img.created}`);
    if (img.os)
      lines.push(`  OS:             ${img.os.prettyName ?? `${img.os.id} ${img.os.version ?? ""}`}`);
    lines.push(
      `  Package db:     ${img.packageDb}${img.packageCount !== undefined ? ` (${img.packageCount} packages)` : ""}`,
    );
    if (img.packageDbFile)
      lines.push(`  Package file:   ${img.packageDbFile.path} (${img.packageDbFile.format})`);
    lines.push(`  Package tool:   ${img.packageManager}`);
    if (img.eol) lines.push(`  EOL:            ${img.eol.status}: ${img.eol.message}`);
    // The image's own text: quoted when it holds what could rewrite the terminal's lines.
    if (img.packageArch) lines.push(`  Package arch:   ${printable(img.packageArch)}`);
    if (img.repositories) {
      lines.push(`  Repositories (${img.repositories.length}):`);
      for (const r of img.repositories) lines.push(`    ${printable(r)}`);
    }
    if (img.config.entrypoint?.length)
      lines.push(`  Entrypoint:     ${JSON.stringify(img.config.entrypoint)}`);
    if (img.config.cmd?.length) lines.push(`  Cmd:            ${JSON.stringify(img.config.cmd)}`);
    if (img.config.user) lines.push(`  User:           ${img.config.user}`);
    if (img.config.workingDir) lines.push(`  WorkingDir:     ${img.config.workingDir}`);
    if (img.config.exposedPorts?.length)
      lines.push(`  ExposedPorts:   ${img.config.exposedPorts.join(", ")}`);
    if (img.config.env?.length) {
      lines.push("  Env:");
      for (const e of img.config.env) lines.push(`    ${e}`);
    }
    const labels = Object.entries(img.config.labels ?? {});
    if (labels.length) {
      lines.push("  Labels:");
      for (const [k, v] of labels) lines.push(`    ${k}=${v}`);
    }
    lines.push(`  Layers (${img.layers.length}):`);
    for (const l of img.layers)
      lines.push(`    ${l.digest}  ${formatSize(l.size).padStart(10)}  ${l.mediaType}`);
    if (img.packages?.length) {
      lines.push(`  Packages (${img.packages.length}):`);
      const width = Math.max(...img.packages.map((p) => p.name.length));
      for (const p of img.packages) lines.push(`    ${p.name.padEnd(width)}  ${p.version}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

function formatSize(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
