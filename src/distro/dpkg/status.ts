import { type ControlParagraph, field, parseControl } from "./control.ts";

export interface InstalledPackage {
  name: string;
  version: string;
  architecture: string;
  /** Source package name (defaults to the binary name). */
  source: string;
  status: string;
  paragraph: ControlParagraph;
}

/**
 * Installed packages from a dpkg `status` file (or the concatenated `status.d/*` files distroless
 * images carry). Only packages whose status says "install ok installed" count: removed packages
 * with config files left ("deinstall ok config-files") are not installed.
 */
export function parseDpkgStatus(text: string): InstalledPackage[] {
  const out: InstalledPackage[] = [];
  for (const p of parseControl(text)) {
    const name = field(p, "Package");
    const version = field(p, "Version");
    const status = field(p, "Status") ?? "install ok installed"; // status.d entries omit Status
    if (!name || !version) continue;
    if (!/\binstalled$/.test(status)) continue;
    const sourceField = field(p, "Source");
    out.push({
      name,
      version,
      architecture: field(p, "Architecture") ?? "all",
      source: sourceField ? sourceField.split(" ")[0]! : name,
      status,
      paragraph: p,
    });
  }
  return out;
}
