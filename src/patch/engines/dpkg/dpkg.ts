import { debChangelogFixes, readDebChangelogs, type UpdatedDeb } from "../../../distro/dpkg/changelog.ts";
import { openDeb } from "../../../distro/dpkg/deb.ts";
import { compareDebVersions } from "../../../distro/dpkg/version.ts";
import { engineOnDemand, type PackageFix, type PackageManager, type UpdatedPackageFile } from "../engine.ts";
import { nativeDebEngine } from "./native/native.ts";

/**
 * Debian and Ubuntu images, classic (`/var/lib/dpkg/status`) or distroless (`status.d`). The native
 * engine is the default: it produced the same trees and package databases as the image's own apt
 * on the lab images (test/e2e/engine-differential.test.ts) and needs no apt in the image.
 */
export const dpkgPackageManager: PackageManager = {
  name: "dpkg",
  serves: "Debian and Ubuntu images (dpkg)",
  handles: (distro) => distro.packageDb === "dpkg" || distro.packageDb === "dpkg-status.d",
  compareVersions: compareDebVersions,
  native: nativeDebEngine,
  // Loaded when asked for (--engine sandbox): the native engine is the default (see engineOnDemand).
  sandbox: engineOnDemand(
    { kind: "sandbox", description: "updating packages with the image's apt (runc)", plans: false },
    async () => (await import("./sandbox.ts")).aptSandboxEngine,
  ),
  sandboxUnavailable: (distro, os) =>
    distro.packageManager === "apt" ? undefined : `needs apt in the image, and ${os} has none`,
  readFixes: readDebFixes,
};

/**
 * The CVEs each updated package's changelog.Debian lists between the installed and the new
 * version, read from the verified .debs one after another (each data archive is streamed once).
 */
async function readDebFixes(
  updated: readonly UpdatedPackageFile[],
  { signal }: { signal?: AbortSignal },
): Promise<PackageFix[]> {
  const debs: UpdatedDeb[] = [];
  for (const u of updated) {
    signal?.throwIfAborted();
    const deb = await openDeb(u.file);
    try {
      // The file is the one installed only if its own control says so (the sandbox engine's files
      // are named by apt's file names).
      if (deb.name !== u.name || deb.version !== u.to) continue;
      debs.push({ name: u.name, from: u.from, to: u.to, changelogs: await readDebChangelogs(deb) });
    } finally {
      await deb.close();
    }
  }
  const fixes = debChangelogFixes(debs);
  return debs.flatMap((d) => {
    const ids = fixes.get(d.name);
    return ids
      ? [{ name: d.name, from: d.from, to: d.to, vulnerabilities: ids, source: "debian-changelog" as const }]
      : [];
  });
}
