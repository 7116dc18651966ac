import { type Command, Option } from "@commander-js/extra-typings";
import { SutureError } from "../../errors/errors.ts";
import { formatBytes } from "../../image/limits.ts";
import { DEFAULT_MAX_REPORT_BYTES, parseReportSizeLimit } from "../../report/limits.ts";
import { BUILTIN_SCANNERS, readReport } from "../../report/read.ts";
import { formatPlanJson, formatPlanTable } from "../../report/render.ts";

/** Help text of `--max-report-size`, shared by `report` and `patch`. */
export const MAX_REPORT_SIZE_HELP = `refuse reports (and plugin output) larger than this, e.g. 128MiB (default ${formatBytes(DEFAULT_MAX_REPORT_BYTES)})`;

export function registerReport(program: Command): void {
  program
    .command("report")
    .description("show the update plan suture derives from a scanner report (for debugging a report)")
    .argument(
      "<file>",
      "Trivy JSON, Grype JSON or a copa UpdateManifest (a name starting with - goes after --)",
    )
    .option(
      "-s, --scanner <name>",
      "auto | trivy | grype | native | NAME (runs the copa-NAME plugin)",
      "auto",
    )
    .addOption(new Option("--format <format>", "output format").choices(["table", "json"]).default("table"))
    .option("--show-skipped", "list every skipped finding, not only counts")
    .option("--max-report-size <size>", MAX_REPORT_SIZE_HELP)
    .action(async (file, flags) => {
      const maxReportBytes = flags.maxReportSize ? parseReportSizeLimit(flags.maxReportSize) : undefined;
      // A plugin runs in its own process group (so it can be stopped with what it started), which
      // a terminal's ^C does not reach: pass the interrupt on. A built-in reader keeps ^C's
      // default effect.
      const controller = new AbortController();
      const onSignal = () => controller.abort();
      const plugin = !(BUILTIN_SCANNERS as readonly string[]).includes(flags.scanner);
      if (plugin) {
        process.once("SIGINT", onSignal);
        process.once("SIGTERM", onSignal);
      }
      try {
        const plan = await readReport(file, {
          scanner: flags.scanner,
          signal: controller.signal,
          ...(maxReportBytes ? { maxReportBytes } : {}),
        });
        process.stdout.write(
          flags.format === "json"
            ? formatPlanJson(plan)
            : formatPlanTable(plan, { showSkipped: flags.showSkipped }),
        );
      } catch (e) {
        throw controller.signal.aborted ? new SutureError("CANCELLED", "interrupted") : e;
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
    });
}
