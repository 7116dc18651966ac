/**
 * What scripts/build-cli.ts writes into the CLI's bundle (esbuild `define`); undefined when suture
 * runs from its sources. Code that finds files next to its own source (import.meta.url) asks
 * here, since in the bundle its module is dist/cli/suture.mjs.
 */
declare const SUTURE_BUNDLE_CODE_FINGERPRINT: string | undefined;

export const bundled: { codeFingerprint: string } | undefined =
  typeof SUTURE_BUNDLE_CODE_FINGERPRINT === "string"
    ? { codeFingerprint: SUTURE_BUNDLE_CODE_FINGERPRINT }
    : undefined;
