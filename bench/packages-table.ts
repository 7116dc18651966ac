/**
 * The Packages name table's cold build (distro/dpkg/packages-cache.ts) over a real decompressed
 * index: the main thread's CPU time of one `buildPackagesCache`, in a fresh process each time (a
 * patch builds each table once, before the JIT has warmed up), fed in 64 KiB pieces as the xz
 * pipe gives them. With `--baseline DIR` (another checkout), runs alternate between the two and
 * the medians and their ratio are printed.
 *
 *   node bench/packages-table.ts --plain CACHE/apt-native/indexes/<sha256>.plain [--baseline DIR] [--reps 7]
 *
 * A cold patch leaves the `.plain` files in its cache directory (`find CACHE -name '*.plain'`).
 */
import { spawnSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    plain: { type: "string" },
    baseline: { type: "string" },
    reps: { type: "string", default: "7" },
    /** Internal: measure once with the module at this path and print JSON. */
    module: { type: "string" },
  },
});
if (!args.plain) throw new Error("--plain FILE is required (a decompressed Packages index)");

if (args.module) {
  const { buildPackagesCache } = (await import(
    args.module
  )) as typeof import("../src/distro/dpkg/packages-cache.ts");
  const bytes = readFileSync(args.plain);
  async function* pieces(): AsyncGenerator<Buffer> {
    for (let at = 0; at < bytes.length; at += 64 * 1024) yield bytes.subarray(at, at + 64 * 1024);
  }
  const out = join(tmpdir(), `suture-packages-table-${process.pid}`);
  rmSync(out, { force: true });
  const before = process.threadCpuUsage();
  const started = performance.now();
  const built = await buildPackagesCache(pieces(), out, { key: "0".repeat(64), hash: false });
  const cpu = process.threadCpuUsage(before);
  rmSync(out, { force: true });
  console.log(
    JSON.stringify({
      mainCpuMs: (cpu.user + cpu.system) / 1000,
      wallMs: performance.now() - started,
      tableBytes: built.table.length,
    }),
  );
} else {
  const trees = [resolve(import.meta.dirname, ".."), ...(args.baseline ? [resolve(args.baseline)] : [])];
  const runs = new Map<string, { mainCpuMs: number; tableBytes: number }[]>(trees.map((t) => [t, []]));
  for (let rep = 0; rep < Number(args.reps); rep++) {
    for (const tree of trees) {
      const r = spawnSync(
        process.execPath,
        [
          "--max-semi-space-size=2",
          import.meta.filename,
          "--plain",
          args.plain,
          "--module",
          join(tree, "src/distro/dpkg/packages-cache.ts"),
        ],
        { encoding: "utf8" },
      );
      if (r.status !== 0) throw new Error(`${tree}: ${r.stderr}`);
      runs.get(tree)!.push(JSON.parse(r.stdout));
    }
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const medians = trees.map((t) => median(runs.get(t)!.map((r) => r.mainCpuMs)));
  for (const [i, tree] of trees.entries()) {
    const all = runs.get(tree)!;
    console.log(
      `${i === 0 ? "this tree" : "baseline "} main-thread CPU median ${medians[i]!.toFixed(0)} ms (${all.map((r) => r.mainCpuMs.toFixed(0)).join(" ")}), table ${all[0]!.tableBytes} bytes  ${tree}`,
    );
  }
  if (medians.length === 2) console.log(`ratio this/baseline ${(medians[0]! / medians[1]!).toFixed(2)}`);
}
