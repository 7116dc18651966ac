import type { SkipReason, UpdatePlan } from "./plan.ts";

export interface FormatPlanOptions {
  /** Also list every skipped finding (default: only a count per reason). */
  showSkipped?: boolean;
}

/**
 * Plain-text rendering of a plan for `suture report`: a header naming the report and OS, one
 * row per package (`name  installed → fixed  IDs`), and a summary line. No colours, no terminal
 * width assumptions; ends with a newline.
 */
export function formatPlanTable(plan: UpdatePlan, options: FormatPlanOptions = {}): string {
  const lines: string[] = [];
  const os = plan.os ? `${plan.os.family} ${plan.os.version}`.trim() : "OS unknown";
  const platform = [plan.arch, plan.variant].filter(Boolean).join("/");
  lines.push(
    printable(
      `${plan.source.file} (${plan.source.format}): ${os}${platform ? `, ${platform}` : ""}${plan.os?.eosl ? ", end of support" : ""}`,
    ),
  );
  lines.push("");
  if (plan.updates.length) {
    lines.push(
      ...table(
        ["PACKAGE", "INSTALLED", "", "FIXED", "VULNERABILITIES"],
        plan.updates.map((u) => [
          u.name,
          u.installedVersion || "?",
          "→",
          u.fixedVersion,
          u.vulnerabilities.join(", "),
        ]),
      ),
    );
  } else {
    lines.push("No OS package updates to make.");
  }
  if (options.showSkipped && plan.skipped.length) {
    lines.push("", "Skipped:");
    lines.push(
      ...table(
        ["PACKAGE", "INSTALLED", "VULNERABILITY", "REASON", "FIXED"],
        plan.skipped.map((s) => [
          s.name,
          s.installedVersion,
          s.vulnerabilityId,
          s.reason,
          s.fixedVersion ?? "",
        ]),
      ),
    );
  }
  lines.push("", summaryLine(plan));
  return `${lines.join("\n")}\n`;
}

/** `N packages to update (M vulnerabilities); K findings skipped (no-fix 3, …)`. */
export function summaryLine(plan: UpdatePlan): string {
  const ids = new Set(plan.updates.flatMap((u) => u.vulnerabilities));
  const pkgs = plan.updates.length;
  let s = `${pkgs} ${pkgs === 1 ? "package" : "packages"} to update (${ids.size} ${ids.size === 1 ? "vulnerability" : "vulnerabilities"})`;
  if (plan.skipped.length) {
    const counts = new Map<SkipReason, number>();
    for (const k of plan.skipped) counts.set(k.reason, (counts.get(k.reason) ?? 0) + 1);
    const parts = [...counts].sort(([a], [b]) => (a < b ? -1 : 1)).map(([r, n]) => `${r} ${n}`);
    s += `; ${plan.skipped.length} ${plan.skipped.length === 1 ? "finding" : "findings"} skipped (${parts.join(", ")})`;
  }
  return `${s}; ${plan.findings} ${plan.findings === 1 ? "finding" : "findings"} in the report`;
}

/** The plan as `suture report --format json` prints it: the UpdatePlan itself, 2-space indented. */
export function formatPlanJson(plan: UpdatePlan): string {
  return `${JSON.stringify(plan, null, 2)}\n`;
}

/**
 * Control characters (newlines, escapes, NUL), line and paragraph separators and bidirectional
 * overrides: text a report carries unchecked (language packages, vulnerability IDs, the OS name)
 * must not be able to add lines to the table or rearrange how it reads on a terminal.
 */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** `text`, or JSON-quoted (escapes visible) when it holds anything UNPRINTABLE. */
export function printable(text: string): string {
  return UNPRINTABLE.test(text) ? JSON.stringify(text) : text;
}

/** Left-aligned columns two spaces apart (the last one unpadded), header first: one string a line. */
export function table(header: string[], rows: string[][]): string[] {
  const cells = rows.map((r) => r.map(printable));
  // A loop, not Math.max(...column): a report may list more rows than a call takes arguments.
  const widths = header.map((h) => h.length);
  for (const r of cells) {
    for (const [i, c] of r.entries()) widths[i] = Math.max(widths[i] ?? 0, [...c].length);
  }
  const line = (row: string[]) =>
    row
      .map((c, i) => (i === row.length - 1 ? c : c + " ".repeat(widths[i]! - [...c].length)))
      .join("  ")
      .trimEnd();
  return [line(header), ...cells.map(line)];
}
