import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { minirootfs, readRootfsFiles } from "../../../../../test/lab/alpine-rootfs.ts";
import { parseInstalledDb } from "../../../../distro/apk/installed-db.ts";
import { parseScriptsTar, parseTriggersDb, serializeScriptsTar, serializeTriggersDb } from "./scripts.ts";

const APK_REAL = join(import.meta.dirname, "../../../../../../shared/fixtures/apk-real/db");

/** A real apk database: installed, scripts.tar, triggers. */
async function realDbs(): Promise<[string, Map<string, Buffer>][]> {
  const out: [string, Map<string, Buffer>][] = [];
  out.push([
    "apk-real",
    new Map(
      ["installed", "scripts.tar", "triggers"].map((f) => [
        `lib/apk/db/${f}`,
        readFileSync(join(APK_REAL, f)),
      ]),
    ),
  ]);
  for (const release of ["3.20.3", "20240923"] as const)
    out.push([
      release,
      await readRootfsFiles(minirootfs(release, "x86_64"), (p) => p.startsWith("lib/apk/db/")),
    ]);
  return out;
}

test("scripts.tar and triggers of real images are written back byte for byte", async () => {
  for (const [name, files] of await realDbs()) {
    const installed = parseInstalledDb(files.get("lib/apk/db/installed")!.toString("utf8"));
    const scriptsTar = files.get("lib/apk/db/scripts.tar")!;
    const scripts = await parseScriptsTar(scriptsTar);
    assert.ok(scripts.size >= 2, name);
    // The image's apk wrote its members in installation order (busybox first); that order is the
    // members' own here.
    const order = [...scripts.keys()];
    const owners = order.map((checksum) => {
      const pkg = installed.find((p) => p.info.checksum === checksum)!;
      return {
        name: pkg.info.name,
        version: pkg.info.version,
        checksum,
        ...(pkg.info.buildTime === undefined ? {} : { buildTime: pkg.info.buildTime }),
        scripts: scripts.get(checksum)!,
      };
    });
    const written = serializeScriptsTar(owners);
    // apk-tools 2.14 (the minirootfs) dates members by the package's build time; the older apk
    // that wrote the apk-real fixture dated them when it wrote them. Same names, same scripts.
    if (name === "apk-real") assert.deepEqual(await parseScriptsTar(written), scripts);
    else assert.ok(written.equals(scriptsTar), name);
    const triggers = files.get("lib/apk/db/triggers")!.toString("utf8");
    assert.equal(serializeTriggersDb(parseTriggersDb(triggers)), triggers, name);
  }
});

test("scripts.tar members that name no script or no checksum are skipped, as apk skips them", async () => {
  const tar = serializeScriptsTar([
    {
      name: "a",
      version: "1-r0",
      checksum: "Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
      scripts: new Map([[".post-install", Buffer.from("x")]]),
    },
  ]);
  const renamed = Buffer.from(tar);
  renamed.write(".notascript\0", "a-1-r0.Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA=".length, "latin1");
  // The header checksum no longer matches: the reader refuses it as a damaged database.
  await assert.rejects(parseScriptsTar(renamed), /scripts\.tar cannot be read/);
  const parsed = await parseScriptsTar(tar);
  assert.deepEqual([...parsed.keys()], ["Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA="]);
});
