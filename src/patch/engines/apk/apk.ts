import { compareApkVersions } from "../../../distro/apk/version.ts";
import type { PackageManager } from "../engine.ts";
import { nativeApkEngine } from "./native/native.ts";
import { apkSandboxEngine } from "./sandbox.ts";

/**
 * Alpine, Wolfi and Chainguard images, and any image with apk's database
 * (`/lib/apk/db/installed`). The native engine is the default: it needs nothing in the image, so it
 * also patches images with no shell and no apk (Chainguard static, distroless apk images).
 */
export const apkPackageManager: PackageManager = {
  name: "apk",
  serves: "Alpine, Wolfi and Chainguard images (apk)",
  handles: (distro) => distro.packageDb === "apk",
  compareVersions: compareApkVersions,
  native: nativeApkEngine,
  sandbox: apkSandboxEngine,
  sandboxUnavailable: (distro, os) =>
    distro.packageManager === "apk" ? undefined : `needs apk in the image, and ${os} has none`,
};
