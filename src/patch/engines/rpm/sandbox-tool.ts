import type { DistroInfo } from "../../../distro/detect.ts";

// Which of the image's rpm front ends the sandbox engine (sandbox.ts) runs, in a module of its own:
// the package manager (rpm.ts) asks it before the engine itself is loaded.

/** The rpm family's front ends this engine runs, as detection names them. */
export type RpmSandboxTool = "dnf" | "dnf5" | "yum" | "microdnf" | "tdnf" | "zypper";

const SANDBOX_TOOLS: readonly RpmSandboxTool[] = ["dnf", "dnf5", "yum", "microdnf", "tdnf", "zypper"];

/** The image's package manager, when this engine can run it. */
export function rpmSandboxTool(distro: Pick<DistroInfo, "packageManager">): RpmSandboxTool | undefined {
  return (SANDBOX_TOOLS as readonly string[]).includes(distro.packageManager)
    ? (distro.packageManager as RpmSandboxTool)
    : undefined;
}

/**
 * Why this engine cannot patch an rpm image, completing "--engine sandbox …" (for the package
 * manager's `sandboxUnavailable`); undefined when it can.
 */
export function rpmSandboxUnavailable(distro: DistroInfo, os: string): string | undefined {
  if (distro.rpm?.database.backend === "manifest")
    return `needs rpm and a package manager in the image, and ${os} only lists its packages in ${distro.rpm.database.path} (a distroless image)`;
  if (!rpmSandboxTool(distro))
    return `needs dnf, yum, microdnf, tdnf or zypper in the image, and ${os} has ${distro.packageManager === "rpm" ? "only rpm" : "none"}`;
  return undefined;
}
