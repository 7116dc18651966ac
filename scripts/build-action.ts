/**
 * Build the GitHub Action's committed bundle (`npm run build:action`): src/action/main.ts and
 * everything it imports as one ES module for the runner's Node 24, plus the one native binding it
 * loads by path. A runner does not install dependencies, so what action.yml names must be whole.
 *
 *   node scripts/build-action.ts [--outdir DIR]   (default dist/action)
 *
 * test/integration/action-bundle.test.ts rebuilds into a temporary directory and compares bytes
 * with the committed files, so the bundle cannot drift from the sources.
 */
import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { build } from "esbuild";
import { bundleOptions } from "./bundle.ts";

const repo = resolve(import.meta.dirname, "..");
const { values } = parseArgs({ options: { outdir: { type: "string" } } });
const outdir = resolve(values.outdir ?? join(repo, "dist", "action"));

await mkdir(outdir, { recursive: true });
// Only what this build writes stays: a file left from an older build would ship unnoticed.
for (const name of await readdir(outdir)) await rm(join(outdir, name), { recursive: true, force: true });

await build({
  ...(await bundleOptions(repo, "src/action/main.ts", join(outdir, "index.mjs"))),
  minify: true,
  // The native bindings cannot be bundled: xattr is shipped beside the bundle and loaded by path,
  // lzma is left out (the host's xz does that work). Why, in each substitute's comment.
  alias: {
    "@napi-rs/xattr": "./src/action/native/xattr.ts",
    "@napi-rs/lzma": "./src/action/native/lzma.ts",
  },
});

await copyFile(
  join(repo, "node_modules", "@napi-rs", "xattr-linux-x64-gnu", "xattr.linux-x64-gnu.node"),
  join(outdir, "xattr.linux-x64-gnu.node"),
);
