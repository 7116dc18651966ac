import type { DistroInfo } from "../../../distro/detect.ts";
import { formatRpmEvr } from "../../../distro/rpm/header.ts";
import { isRpmPublicKey } from "../../../distro/rpm/installed.ts";
import { compareRpmVersions } from "../../../distro/rpm/version.ts";
import { engineOnDemand, type PackageFix, type PackageManager, type UpdatedPackageFile } from "../engine.ts";
import { rpmSandboxUnavailable } from "./sandbox-tool.ts";

/**
 * RHEL/UBI, Rocky, Alma, Oracle, CentOS, Fedora, Amazon Linux, Azure Linux and SUSE images: any
 * image with an rpm database or Azure Linux's rpm manifest. `DistroInfo.installed` holds
 * `[epoch:]version-release` (epoch left out when 0, as Trivy reports it), which is what
 * compareRpmVersions orders. The native engine is the default: it needs nothing in the image, so
 * it also patches images with no package manager and no shell (UBI micro, Azure Linux distroless).
 */
export const rpmPackageManager: PackageManager = {
  name: "rpm",
  serves: "RHEL, Fedora, Amazon Linux, Azure Linux and SUSE images (rpm)",
  handles: (distro) => distro.packageDb === "rpm",
  compareVersions: compareRpmVersions,
  // Loaded when an rpm image is patched (see engineOnDemand).
  native: engineOnDemand(
    { kind: "native", description: "updating rpm packages with suture's rpm engine", plans: true },
    async () => (await import("./native/native.ts")).nativeRpmEngine,
  ),
  sandbox: engineOnDemand(
    {
      kind: "sandbox",
      description: "updating packages with the image's dnf/yum/microdnf/tdnf/zypper (runc)",
      plans: false,
    },
    async () => (await import("./sandbox.ts")).rpmSandboxEngine,
  ),
  sandboxUnavailable: rpmSandboxUnavailable,
  // rpm -V compares every file's mtime with the header's: files an upgrade only touched must
  // reach the layer with their new times.
  verifiesFileTimes: true,
  readFixes: readRpmFixes,
};

/**
 * The CVEs each updated package's %changelog names in entries newer than the installed package's
 * newest one (its header as the image's database held it before the patch).
 */
async function readRpmFixes(
  updated: readonly UpdatedPackageFile[],
  { distro, signal }: { distro: DistroInfo; signal?: AbortSignal },
): Promise<PackageFix[]> {
  const [{ rpmChangelog, rpmCvesSince }, { openRpm }] = await Promise.all([
    import("../../../distro/rpm/changelog.ts"),
    import("../../../distro/rpm/package.ts"),
  ]);
  const installed = new Map<string, ReturnType<typeof rpmChangelog>>();
  for (const pkg of distro.rpm?.packages ?? []) {
    if (isRpmPublicKey(pkg) || !pkg.header) continue;
    // The installed version the update replaced: the one `from` names (a name installed twice is rare).
    installed.set(`${pkg.nevra.name} ${formatRpmEvr(pkg.nevra)}`, rpmChangelog(pkg.header));
  }
  const fixes: PackageFix[] = [];
  for (const u of updated) {
    signal?.throwIfAborted();
    if (u.from === undefined) continue;
    const before = installed.get(`${u.name} ${u.from}`);
    if (!before) continue;
    const pkg = await openRpm(u.file);
    // The file is the one installed only if its own header says so.
    if (pkg.nevra.name !== u.name || formatRpmEvr(pkg.nevra) !== u.to) continue;
    fixes.push({
      name: u.name,
      from: u.from,
      to: u.to,
      vulnerabilities: rpmCvesSince(rpmChangelog(pkg.header), before),
      source: "rpm-changelog",
    });
  }
  return fixes;
}
