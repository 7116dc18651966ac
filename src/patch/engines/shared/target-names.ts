import { isValidPackageName, type PackageFormat, quoteUntrusted } from "../../../distro/package-syntax.ts";
import { SutureError } from "../../../errors/errors.ts";
import type { Targets } from "../engine.ts";

/**
 * Refuse a target whose name is no package name of `format` before it reaches the image's
 * package manager's command line, where it would be read as an option or a pattern.
 */
export function assertTargetNames(format: PackageFormat, targets: Targets): void {
  if (targets === "all") return;
  for (const t of targets)
    if (!isValidPackageName(format, t.name))
      throw new SutureError(
        "INVALID_REPORT",
        `the report names package ${quoteUntrusted(t.name)}, which is no ${format} package name: fix the report`,
      );
}
