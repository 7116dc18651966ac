/**
 * What scripts/bundle.ts writes into suture's bundles (esbuild `define`: the CLI's dist/cli, the
 * Action's dist/action); undefined when suture runs from its sources. Code that finds files next
 * to its own source (import.meta.url) asks here, since in a bundle its module is elsewhere.
 */
declare const SUTURE_BUNDLE_CODE_FINGERPRINT: string | undefined;

export const bundled: { codeFingerprint: string } | undefined =
  typeof SUTURE_BUNDLE_CODE_FINGERPRINT === "string"
    ? { codeFingerprint: SUTURE_BUNDLE_CODE_FINGERPRINT }
    : undefined;
