import { compareDebVersions } from "../../../distro/dpkg/version.ts";
import type { PackageManager } from "../engine.ts";
import { nativeDebEngine } from "./native/native.ts";
import { aptSandboxEngine } from "./sandbox.ts";

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
  sandbox: aptSandboxEngine,
  sandboxUnavailable: (distro, os) =>
    distro.packageManager === "apt" ? undefined : `needs apt in the image, and ${os} has none`,
};
