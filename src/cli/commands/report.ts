import type { Command } from "commander";
import { readReport } from "../../report/read.ts";
import { formatPlanJson, formatPlanTable } from "../../report/render.ts";

export function registerReport(program: Command): void {
  program
    .command("report")
    .description("show the update plan suture derives from a scanner report (for debugging a report)")
    .argument("<file>", "Trivy JSON, Grype JSON or a copa UpdateManifest")
    .option(
      "-s, --scanner <name>",
      "auto | trivy | grype | native | NAME (runs the copa-NAME plugin)",
      "auto",
    )
    .option("--format <format>", "table | json", "table")
    .option("--show-skipped", "list every skipped finding, not only counts")
    .action(async (file: string, flags: { scanner: string; format: string; showSkipped?: boolean }) => {
      const plan = await readReport(file, { scanner: flags.scanner });
      process.stdout.write(
        flags.format === "json"
          ? formatPlanJson(plan)
          : formatPlanTable(plan, { showSkipped: flags.showSkipped }),
      );
    });
}
