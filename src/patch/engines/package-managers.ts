import { apkPackageManager } from "./apk/apk.ts";
import { dpkgPackageManager } from "./dpkg/dpkg.ts";
import type { PackageManager } from "./engine.ts";
import { rpmPackageManager } from "./rpm/rpm.ts";

/**
 * Every package manager suture patches with, in the order images are matched against them. A new
 * one is a folder beside dpkg/ exporting a PackageManager (see docs/architecture.md), added here.
 */
export const PACKAGE_MANAGERS: readonly PackageManager[] = [
  dpkgPackageManager,
  apkPackageManager,
  rpmPackageManager,
];
