import type { DpkgDatabase } from "../../../../distro/dpkg/database.ts";
import type { InstallItem } from "./install-set.ts";

/**
 * The image paths the unpack of `install` reads, replaces or removes that the new packages do not
 * name themselves: every path the replaced versions list (`info/<pkg>.list`), their conffiles, and
 * where a diversion sends each. A sparse sandbox (sandbox/sparse-layers.ts) brings whatever it
 * left out at them in before anything is unpacked, so an obsolete file is really removed and a
 * conffile's edit is judged on its real bytes.
 */
export async function pathsReplacedBy(db: DpkgDatabase, install: readonly InstallItem[]): Promise<string[]> {
  const out = new Set<string>();
  for (const item of install) {
    if (item.from === undefined) continue;
    const old = db.find(item.entry.package, item.entry.architecture);
    if (!old) continue;
    const paths = [...((await db.fileList(old)) ?? []), ...(old.conffiles ?? []).map((c) => c.path)];
    for (const path of paths) {
      if (path === "/.") continue;
      out.add(path);
      const divertTo = db.diversionFor(path, old.name)?.divertTo;
      if (divertTo) out.add(divertTo);
    }
  }
  return [...out];
}
