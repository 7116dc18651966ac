import { SutureError } from "../../../errors/errors.ts";
import type { PatchEngine } from "../engine.ts";

/** The image's own apk in runc over the overlay (being built: issue 13). */
export const apkSandboxEngine: PatchEngine = {
  kind: "sandbox",
  description: "updating packages with the image's apk (runc)",
  async apply() {
    throw new SutureError("USAGE", "suture's apk sandbox engine is not finished yet");
  },
};
