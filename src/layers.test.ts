import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { test } from "node:test";

// The layering of docs/architecture.md, enforced: a module may import its own layer and the ones
// below it, never one above, and no transport imports another transport's folder. Tests are left
// out: they drive whatever layer they test.

const SRC = import.meta.dirname;
const DOC = join(SRC, "../docs/architecture.md");

/**
 * Imports that break the rule today and are too big to fix in passing; each says why and where it
 * should go. Keep this list short: a new entry needs the same justification.
 */
const KNOWN: Record<string, string> = {
  // The daemon saves and loads images as docker-archive tarballs: the format's reader and writer
  // belong below both transports (a shared docker-archive module), not in transports/archive/.
  "transports/daemon/daemon.ts -> transports/archive/archive-source.ts": "docker-archive format",
  "transports/daemon/daemon.ts -> transports/archive/archive-writer.ts": "docker-archive format",
};

/** Top-level folders of src/ by rank, read from the layer diagram (higher may import lower). */
function layerRanks(): Map<string, number> {
  const doc = readFileSync(DOC, "utf8");
  const section = doc.slice(doc.indexOf("## Layers of the code"));
  const block = /```\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block, "docs/architecture.md has a layer diagram under '## Layers of the code'");
  // Each layer line starts with its folders, one space apart (`report/ vex/`); the description
  // follows after a wider gap; indented lines continue the line above.
  const layers = block
    .split("\n")
    .flatMap((line) => /^[a-z][a-z0-9-]*\/(?: [a-z][a-z0-9-]*\/)*/.exec(line) ?? [])
    .map((folders) => folders.split(" ").map((f) => f.slice(0, -1)));
  const ranks = new Map<string, number>();
  layers.forEach((folders, i) => {
    for (const f of folders) ranks.set(f, layers.length - i);
  });
  return ranks;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") ? [p] : [];
  });
}

/** Relative specifiers of a module's static and dynamic imports and re-exports. */
function importsOf(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:\bfrom|\bimport)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g)) out.push(m[1]!);
  return out;
}

test("the layer diagram names every top-level folder of src/", () => {
  const ranks = layerRanks();
  const folders = readdirSync(SRC, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
  const missing = folders.filter((f) => !ranks.has(f));
  assert.deepEqual(
    missing,
    [],
    "add these folders to the diagram in docs/architecture.md, where they belong",
  );
});

test("no module imports a layer above its own, or another transport's folder", () => {
  const ranks = layerRanks();
  const violations: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const from = relative(SRC, file).split(sep).join("/");
    const fromTop = from.split("/")[0]!;
    for (const spec of importsOf(readFileSync(file, "utf8"))) {
      const target = relative(SRC, resolve(dirname(file), spec))
        .split(sep)
        .join("/");
      if (target.startsWith("..")) continue;
      const toTop = target.split("/")[0]!;
      const edge = `${from} -> ${target}`;
      if (KNOWN[edge]) continue;
      const fromRank = ranks.get(fromTop);
      const toRank = ranks.get(toTop);
      if (fromRank !== undefined && toRank !== undefined && toRank > fromRank)
        violations.push(`${edge}: ${toTop}/ is above ${fromTop}/`);
      // transports/index.ts dispatches to every transport; the transports themselves are peers.
      const [, fromTransport, fromRest] = /^transports\/([^/]+)(\/.*)?$/.exec(from) ?? [];
      const [, toTransport, toRest] = /^transports\/([^/]+)(\/.*)?$/.exec(target) ?? [];
      if (fromRest && toRest && fromTransport !== toTransport)
        violations.push(`${edge}: transports/${fromTransport} must not import transports/${toTransport}`);
    }
  }
  assert.deepEqual(violations, []);
});

test("the rule is checked: an upward and a sideways import would be reported", () => {
  const ranks = layerRanks();
  // The diagram's own order, as the rule reads it.
  assert.ok(ranks.get("cli")! > ranks.get("patch")!);
  assert.ok(ranks.get("distro")! > ranks.get("archive")!);
  assert.ok(ranks.get("report")! > ranks.get("distro")!, "distro/ may not import report/");
  assert.equal(ranks.get("report"), ranks.get("vex"), "report/ and vex/ are one layer");
  assert.equal(ranks.get("errors"), ranks.get("progress"));
  assert.deepEqual(
    importsOf(`import { a } from "../report/x.ts";\nexport { b } from "./y.ts";\nawait import("../z.ts");`),
    ["../report/x.ts", "./y.ts", "../z.ts"],
  );
});
