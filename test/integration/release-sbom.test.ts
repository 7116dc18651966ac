/**
 * The release SBOM (scripts/sbom.sh): a CycloneDX document of suture's own runtime dependencies,
 * naming each one at the version the lockfile installs, with no development tool in it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
const repo = join(import.meta.dirname, "../..");

test("scripts/sbom.sh lists every runtime dependency at its locked version, and no dev tool", async () => {
  const work = await mkdtemp(join(tmpdir(), "suture-sbom-"));
  try {
    const out = join(work, "suture.cdx.json");
    await run("bash", [join(repo, "scripts/sbom.sh"), out]);
    const bom = JSON.parse(await readFile(out, "utf8"));
    assert.equal(bom.bomFormat, "CycloneDX");
    const pkg = JSON.parse(await readFile(join(repo, "package.json"), "utf8"));
    const lock = JSON.parse(await readFile(join(repo, "package-lock.json"), "utf8"));
    const components = new Map<string, string>(
      bom.components.map((c: { name: string; group?: string; version: string }) => [
        c.group ? `${c.group}/${c.name}` : c.name,
        c.version,
      ]),
    );
    for (const name of Object.keys(pkg.dependencies)) {
      assert.equal(components.get(name), lock.packages[`node_modules/${name}`].version, name);
    }
    for (const name of Object.keys(pkg.devDependencies)) {
      assert.ok(!components.has(name), `${name} is a development tool and must not be in the SBOM`);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});
