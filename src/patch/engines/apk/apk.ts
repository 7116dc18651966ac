import { compareApkVersions } from "../../../distro/apk/version.ts";
import { engineOnDemand, type PackageManager } from "../engine.ts";

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
  // Loaded when an apk image is patched (see engineOnDemand).
  native: engineOnDemand(
    { kind: "native", description: "updating apk packages with suture's apk engine", plans: true },
    async () => (await import("./native/native.ts")).nativeApkEngine,
  ),
  sandbox: engineOnDemand(
    { kind: "sandbox", description: "updating packages with the image's apk (runc)", plans: false },
    async () => (await import("./sandbox.ts")).apkSandboxEngine,
  ),
  sandboxUnavailable: (distro, os) =>
    distro.packageManager === "apk" ? undefined : `needs apk in the image, and ${os} has none`,
};
