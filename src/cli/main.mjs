#!/usr/bin/env node
import { readdirSync, statSync } from "node:fs";
import module from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

// Node caches the compiled (type-stripped) modules on disk, in its default directory under the
// OS temp dir: each run then starts about 0.15 s sooner. The program is imported only after the
// cache is on, since static imports would be compiled before this line runs. This file is plain
// JavaScript so that nothing needs stripping before the cache is on: a .ts entry made every run
// load Node's TypeScript stripper (amaro, 0.1-0.3 s of CPU) for this one file, while the modules
// it imports come stripped from the cache.
module.enableCompileCache?.();

/**
 * The CLI's bundle (scripts/build-cli.ts) when it is at least as new as every source it was built
 * from: a few files to read instead of ~400 modules (`suture --version` 0.37 -> 0.22 s with a cold
 * page cache, 0.17 -> 0.10 s warm). Any newer source file or directory (an edit, a checkout, a file
 * added or removed) or a newer lockfile means the checkout changed since the build, and suture runs
 * from its sources. The check stats ~330 files: ~3 ms, ~30 ms with a cold page cache.
 * SUTURE_BUNDLE=0 runs the sources regardless.
 */
function freshBundle() {
  if (process.env.SUTURE_BUNDLE === "0") return undefined;
  const bundle = new URL("../../dist/cli/suture.mjs", import.meta.url);
  const built = statSync(bundle, { throwIfNoEntry: false })?.mtimeMs;
  if (built === undefined) return undefined;
  const root = fileURLToPath(new URL("../../", import.meta.url));
  for (const lock of ["package-lock.json", "node_modules/.package-lock.json"])
    if ((statSync(join(root, lock), { throwIfNoEntry: false })?.mtimeMs ?? 0) > built) return undefined;
  return newerSource(join(root, "src"), built) ? undefined : bundle.href;
}

/** Whether `dir`, a directory below it, or a source file in them changed after `time`. */
function newerSource(dir, time) {
  if (statSync(dir).mtimeMs > time) return true;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (newerSource(path, time)) return true;
    } else if (/\.(?:ts|mjs|json)$/.test(entry.name) && !entry.name.endsWith(".test.ts")) {
      if (statSync(path).mtimeMs > time) return true;
    }
  }
  return false;
}

const { runCli } = await import(freshBundle() ?? "./program.ts");

process.exitCode = await runCli(process.argv.slice(2));
