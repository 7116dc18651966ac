import { compareRpmVersions } from "../../../distro/rpm/version.ts";
import type { PackageManager } from "../engine.ts";
import { nativeRpmEngine } from "./native/native.ts";
import { rpmSandboxEngine, rpmSandboxUnavailable } from "./sandbox.ts";

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
  native: nativeRpmEngine,
  sandbox: rpmSandboxEngine,
  sandboxUnavailable: rpmSandboxUnavailable,
  // rpm -V compares every file's mtime with the header's: files an upgrade only touched must
  // reach the layer with their new times.
  verifiesFileTimes: true,
};
