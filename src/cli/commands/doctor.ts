import { type Command, Option } from "@commander-js/extra-typings";
import type { HostDiagnosis } from "../../doctor/doctor.ts";
import { defaultCacheDir } from "../../patch/patch.ts";

export function registerDoctor(program: Command): void {
  program
    .command("doctor")
    .description("say which patch mode this host allows (root, user namespace, none) and why")
    .option("--cache-dir <dir>", "the cache directory patch would use")
    .addOption(new Option("--format <format>", "output format").choices(["text", "json"]).default("text"))
    .action(async (flags) => {
      // Loaded by this command only (every command module is imported to build the program).
      const { diagnoseHost } = await import("../../doctor/doctor.ts");
      const diagnosis = await diagnoseHost({ cacheDir: flags.cacheDir ?? defaultCacheDir() });
      process.stdout.write(
        flags.format === "json" ? `${JSON.stringify(diagnosis, null, 2)}\n` : renderDiagnosis(diagnosis),
      );
      // A script can gate on it: `suture doctor >/dev/null && suture patch …`.
      if (!diagnosis.supported) process.exitCode = 1;
    });
}

export function renderDiagnosis(d: HostDiagnosis): string {
  const lines = [
    `Mode:       ${d.mode}${d.supported ? "" : " (not supported by this build)"}`,
    `Why:        ${d.reason}`,
    "",
  ];
  const width = Math.max(...d.checks.map((c) => c.id.length));
  for (const c of d.checks) lines.push(`  ${c.ok ? "ok " : "no "} ${c.id.padEnd(width)}  ${c.detail}`);
  return `${lines.join("\n")}\n`;
}
