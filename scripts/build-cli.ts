/**
 * Build the CLI's bundle (`npm run build:cli`; `npm ci` runs it as `prepare`, scripts/test.sh
 * before the tests): src/cli/program.ts and what it imports, as dist/cli/suture.mjs and the chunks
 * of what commands import only when they run (not committed). Node then starts suture from a few
 * files instead of ~400 modules: `suture --version` 0.37 -> 0.22 s with the page cache dropped (a
 * fresh CI runner), 0.17 -> 0.10 s with it warm; a layer-rebuilt library-only patch of the nginx
 * lab image, page cache dropped, 1.19-1.23 -> 1.03-1.04 s, peak RSS 181 -> 165 MB (2026-12-02).
 * src/cli/main.mjs runs the bundle only while no source is newer than it (see there), so an edited
 * checkout runs its sources until the next build.
 *
 *   node scripts/build-cli.ts [--if-possible]   (--if-possible: no esbuild, as in a production
 *                                                install, is a note and exit 0, not a failure)
 */
import { rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { placeDirectory } from "../src/fs/atomic.ts";

const repo = resolve(import.meta.dirname, "..");
const { values } = parseArgs({ options: { "if-possible": { type: "boolean" } } });

let esbuild: typeof import("esbuild");
try {
  esbuild = await import("esbuild");
} catch (e) {
  if (!values["if-possible"]) throw e;
  console.error(
    "note: esbuild is not installed; suture runs from its sources (npm run build:cli builds the bundle)",
  );
  process.exit(0);
}
const { bundleOptions } = await import("./bundle.ts");

const outdir = join(repo, "dist", "cli");
// Built beside and put in place whole (the one directory swap, fs/atomic.ts): a suture starting
// meanwhile finds the old bundle, the new one, or none (and runs from its sources), never a mix.
const staging = `${outdir}.${process.pid}.tmp`;
try {
  await rm(staging, { recursive: true, force: true });
  await esbuild.build({
    ...(await bundleOptions(repo, "src/cli/program.ts", join(staging, "suture.mjs"))),
    outfile: undefined,
    outdir: staging,
    entryNames: "suture",
    // What commands import only when they run (serve's backends, the rpm and apk engines, bulk)
    // stays in chunks of its own, loaded as before: not parsed, compiled or held by every run.
    splitting: true,
    chunkNames: "chunk-[hash]",
    outExtension: { ".js": ".mjs" },
    // Whitespace and syntax only: names stay, so a stack trace (SUTURE_DEBUG) still reads.
    minifyWhitespace: true,
    minifySyntax: true,
    // Native bindings stay in node_modules, which Node finds from dist/cli as from src.
    external: ["@napi-rs/xattr", "@napi-rs/lzma"],
  });
  await placeDirectory(staging, outdir);
} finally {
  await rm(staging, { recursive: true, force: true });
}
