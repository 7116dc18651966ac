/**
 * Issue 11: with the image's apt configuration in play (backports, pins, holds, apt.conf), an
 * update-all patch by suture's deb engine installs exactly the package versions the image's own apt
 * (`apt-get upgrade`, sandbox engine) installs. Each lab image is bookwormMinbase plus one small
 * layer of configuration; both engines patch it and the dpkg databases of the two results are
 * compared, then what the configuration is for is checked in the native result.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { parseDpkgStatus } from "../../src/distro/dpkg/status.ts";
import { type LabRecipeName, labImage } from "../lab/images.ts";

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-config-differential-"));
});
after(() => rm(work, { recursive: true, force: true }));

interface Patched {
  /** name → "version status" of every package in the result's dpkg database. */
  packages: Map<string, string>;
  stderr: string;
}

async function patchWith(recipe: LabRecipeName, engine: "native" | "sandbox"): Promise<Patched> {
  const lab = await labImage(recipe);
  const out = join(work, `${recipe}-${engine}`);
  const { stderr } = await run(
    suture,
    [
      "patch",
      "-i",
      lab.reference,
      "-t",
      engine,
      "--oci-dir",
      out,
      "--engine",
      engine,
      // Shared by both engines of all images: indexes and .debs are fetched once.
      "--cache-dir",
      join(work, "cache"),
    ],
    { env: { ...process.env, CI: "true" }, maxBuffer: 64 * 1024 * 1024 },
  );
  const rootfs = join(work, `${recipe}-${engine}-rootfs`);
  await run("umoci", ["raw", "unpack", "--image", `${out}:${engine}`, rootfs]);
  const status = parseDpkgStatus(await readFile(join(rootfs, "var/lib/dpkg/status"), "utf8"));
  await rm(rootfs, { recursive: true, force: true });
  return { packages: new Map(status.map((p) => [p.name, `${p.version} ${p.status}`])), stderr };
}

/** Both engines patch the image; their package databases must agree. Returns both and the original. */
async function differential(recipe: LabRecipeName) {
  const lab = await labImage(recipe);
  const sandbox = await patchWith(recipe, "sandbox");
  const native = await patchWith(recipe, "native");
  const differences: string[] = [];
  for (const name of new Set([...sandbox.packages.keys(), ...native.packages.keys()])) {
    const a = sandbox.packages.get(name);
    const b = native.packages.get(name);
    if (a !== b) differences.push(`${name}: apt ${a ?? "absent"} / native ${b ?? "absent"}`);
  }
  assert.deepEqual(differences, [], `the engines installed different versions:\n${differences.join("\n")}`);
  const changed = [...native.packages].filter(([n, v]) => lab.packages.get(n) !== v.split(" ")[0]);
  assert.ok(changed.length > 0, "the update really upgraded something");
  return { lab, sandbox, native };
}

const version = (p: Patched, name: string) => p.packages.get(name)?.split(" ")[0];

test("bookworm-backports enabled: nothing moves to a ~bpo version (NotAutomatic + ButAutomaticUpgrades = 100)", async () => {
  const { native } = await differential("bookwormBackports");
  const backported = [...native.packages].filter(([, v]) => /~bpo/.test(v));
  assert.deepEqual(backported, [], "no backport installed");
});

test("pins and a hold: tzdata stays at its 1001 pin, liblzma5 never comes from bookworm-security, apt stays held", async () => {
  const { native } = await differential("bookwormPinned");
  // The versions before patching, from the parent image (the lab lists only packages in state "install").
  const base = (await labImage("bookwormMinbase")).packages;
  assert.equal(version(native, "tzdata"), base.get("tzdata"));
  assert.equal(version(native, "liblzma5"), base.get("liblzma5"));
  assert.equal(version(native, "apt"), base.get("apt"));
  assert.equal(
    version(native, "libapt-pkg6.0"),
    base.get("libapt-pkg6.0"),
    "kept back: it recommends the newer apt",
  );
  assert.match(native.packages.get("apt") ?? "", / hold ok installed$/, "the hold survives");
});

test('Acquire::Check-Valid-Until "false": the native engine accepts the image, as its apt does', async () => {
  await differential("bookwormNoValidUntil");
});
