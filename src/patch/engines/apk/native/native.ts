import { SutureError } from "../../../../errors/errors.ts";
import type { PatchEngine } from "../../engine.ts";

/** suture's own apk engine (being built: issue 13). */
export const nativeApkEngine: PatchEngine = {
  kind: "native",
  description: "updating apk packages from verified repositories (native)",
  async apply() {
    throw new SutureError("USAGE", "suture's native apk engine is not finished yet: use --engine sandbox");
  },
};
