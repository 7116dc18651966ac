import type { PatchResult, PlatformResult } from "../patch/patch.ts";

/**
 * The job summary (Markdown, GITHUB_STEP_SUMMARY) of one patch: where the image went, then per
 * platform what was updated and which of the report's vulnerabilities that fixed. Names, versions
 * and IDs come from the image and the report, so every one is shown as inline code with what
 * could end the cell, the code span or the line taken out.
 */
export function patchSummary(input: {
  source: string;
  result: PatchResult;
  /** `repo@digest` of what was written, when something was. */
  patchedImage?: string;
  /** `repo:tag` it was written under. */
  patchedReference?: string;
  pushed: boolean;
  vexFile?: string;
  sbomFile?: string;
}): string {
  const { result } = input;
  const out: string[] = [];
  out.push(`## suture: ${code(input.source)}`, "");
  if (result.status === "up-to-date") {
    out.push(
      "Nothing to patch: every package the report names (or, without a report, every package) is up to date. Nothing was written.",
    );
  } else if (input.patchedImage) {
    out.push(
      `${input.pushed ? "Pushed" : "Wrote"} ${code(input.patchedReference ?? input.patchedImage)}${input.patchedReference && input.patchedReference !== input.patchedImage ? ` as ${code(input.patchedImage)}` : ""}.`,
    );
  }
  const mode = result.platforms.some((p) => p.plan) ? "report" : "update-all";
  out.push(
    "",
    mode === "report"
      ? "Mode: report (the packages the scanner found fixes for)."
      : "Mode: update-all (no report: every package with a newer version in the image's verified repositories; the CVEs each update fixes are not known without a report).",
    "",
    "| Platform | Status | Packages updated | CVEs fixed |",
    "| --- | --- | ---: | ---: |",
  );
  for (const p of result.platforms) {
    const status = p.reason ? `${p.status}: ${cell(p.reason)}` : p.status;
    out.push(
      `| ${code(p.platform)} | ${status} | ${p.changed.length} | ${p.plan ? fixedCves(p).size : "–"} |`,
    );
  }
  for (const p of result.platforms) {
    if (p.changed.length === 0 && p.failed.length === 0) continue;
    out.push("", `### ${code(p.platform)}`, "");
    if (p.changed.length) {
      out.push("| Package | From | To | Fixes |", "| --- | --- | --- | --- |");
      const vulns = vulnerabilitiesByPackage(p);
      for (const c of p.changed)
        out.push(
          `| ${code(c.name)} | ${c.from ? code(c.from) : "(new)"} | ${code(c.to)} | ${(vulns.get(c.name) ?? []).map(code).join(" ")} |`,
        );
    }
    if (p.failed.length) {
      out.push("", "Not updated:", "");
      for (const f of p.failed) out.push(`- ${code(f.name)}: ${cell(f.reason)}`);
    }
  }
  if (result.droppedAttestations.length)
    out.push(
      "",
      `Dropped ${result.droppedAttestations.length} attestation manifest(s): they describe the images that were replaced.`,
    );
  if (input.vexFile || input.sbomFile) {
    out.push("");
    if (input.vexFile) out.push(`- VEX: ${code(input.vexFile)}`);
    if (input.sbomFile) out.push(`- SBOM: ${code(input.sbomFile)}`);
  }
  return `${out.join("\n")}\n`;
}

/** Report vulnerabilities of the packages that reached their fixed version, by package. */
function vulnerabilitiesByPackage(p: PlatformResult): Map<string, string[]> {
  const failed = new Set(p.failed.map((f) => f.name));
  const changed = new Set(p.changed.map((c) => c.name));
  const out = new Map<string, string[]>();
  for (const u of p.plan?.updates ?? [])
    if (changed.has(u.name) && !failed.has(u.name)) out.set(u.name, u.vulnerabilities);
  return out;
}

function fixedCves(p: PlatformResult): Set<string> {
  return new Set([...vulnerabilitiesByPackage(p).values()].flat());
}

const MAX_SHOWN = 200;

/** Inline code that stays one table cell: no backticks or line breaks, pipes escaped (GFM). */
function code(text: string): string {
  const flat = text.slice(0, MAX_SHOWN).replace(/[`\r\n]/g, " ");
  return `\`${flat.replace(/\|/g, "\\|")}\``;
}

/** Plain text in a cell: Markdown and HTML specials escaped, one line. */
function cell(text: string): string {
  return text
    .slice(0, MAX_SHOWN * 2)
    .replace(/[\r\n]+/g, " ")
    .replace(/[\\`*_[\]<>|#!~]/g, (c) => `\\${c}`);
}
