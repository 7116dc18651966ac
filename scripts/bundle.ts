/**
 * What every bundle of suture shares (the GitHub Action's, `scripts/build-action.ts`; the CLI's,
 * `scripts/build-cli.ts`): ES modules for Node 24 holding the sources and their dependencies.
 */
import { join } from "node:path";
import type { BuildOptions } from "esbuild";
import { codeFingerprintOf } from "../src/patch/result-cache.ts";

export async function bundleOptions(repo: string, entry: string, outfile: string): Promise<BuildOptions> {
  return {
    absWorkingDir: repo,
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node24",
    // Licences of the bundled packages stay with the code they cover.
    legalComments: "eof",
    sourcemap: false,
    // CommonJS dependencies (undici, commander's helpers) call require() for Node's built-ins,
    // which an ES module does not have: give the bundle one.
    banner: {
      js: 'import { createRequire as __sutureCreateRequire } from "node:module"; const require = __sutureCreateRequire(import.meta.url);',
    },
    // What code that finds files beside its own source cannot find in a bundle (src/build/bundled.ts).
    define: {
      SUTURE_BUNDLE_CODE_FINGERPRINT: JSON.stringify(await codeFingerprintOf(join(repo, "src", "patch"))),
    },
    logLevel: "warning",
  };
}
