import type { PatchEngine } from "../engine.ts";

/**
 * PLACEHOLDER until wt-rpmsandbox's branch lands: the image's own dnf/yum/microdnf/tdnf/zypper in
 * runc. Its owner's file replaces this one whole.
 */
export const rpmSandboxEngine: PatchEngine = {
  kind: "sandbox",
  description: "updating packages with the image's own package manager (runc)",
  apply: () => {
    throw new Error("not merged yet");
  },
};
