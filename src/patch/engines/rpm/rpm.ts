import { compareRpmVersions } from "../../../distro/rpm/version.ts";
import type { PackageManager } from "../engine.ts";
import { nativeRpmEngine } from "./native/native.ts";
import { rpmSandboxEngine } from "./sandbox.ts";

/** The front ends the sandbox engine runs in the image; rpm alone resolves nothing. */
const SANDBOX_TOOLS = new Set(["dnf", "dnf5", "microdnf", "yum", "tdnf", "zypper"]);

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
  sandboxUnavailable: (distro, os) =>
    SANDBOX_TOOLS.has(distro.packageManager)
      ? undefined
      : `needs dnf, yum, microdnf, tdnf or zypper in the image, and ${os} has none`,
};
