import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { EarlyLayerView } from "./early-view.ts";

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-early-view-"));
});
after(() => rm(work, { recursive: true, force: true }));

async function layerDir(name: string, files: Record<string, string | { link: string }>) {
  const dir = join(work, name);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(dir, path, ".."), { recursive: true });
    if (typeof content === "string") await writeFile(join(dir, path), content);
    else await symlink(content.link, join(dir, path));
  }
  await mkdir(dir, { recursive: true });
  return dir;
}

/** Settles within the tick or not at all: whether a read is still waiting. */
async function pending(p: Promise<unknown>): Promise<boolean> {
  const marker = Symbol();
  const r = await Promise.race([
    p.then(() => undefined),
    new Promise((ok) => setTimeout(() => ok(marker), 20)),
  ]);
  return r === marker;
}

test("a read waits until every layer has streamed past the path in tar order, then the top layer's copy wins", async () => {
  const bottom = await layerDir("b1", { "etc/apt/sources.list": "bottom", "etc/os-release": "ID=debian" });
  const top = await layerDir("t1", { "etc/apt/sources.list": "top" });
  const view = new EarlyLayerView(2);
  view.started(0, bottom);
  view.member(0, "etc/os-release");
  const read = view.readFile("/etc/apt/sources.list");
  assert.ok(await pending(read), "the top layer has not started");
  view.started(1, top);
  view.member(1, "etc/apt/sources.list");
  assert.ok(await pending(read), "the top layer is writing the file itself");
  view.member(1, "etc/apt/trusted.gpg.d");
  assert.equal(Buffer.from((await read)!).toString(), "top");
  // A directory's listing waits for the whole directory, in each layer.
  const listing = view.listDir("/etc/apt");
  assert.ok(await pending(listing), "the top layer is still inside /etc/apt");
  view.member(1, "etc/apt-other");
  view.done(0, bottom);
  assert.deepEqual(await listing, ["sources.list"]);
});

test("symlinks are followed through the layers; a closed view fails the reads still waiting", async () => {
  const bottom = await layerDir("b2", { "usr/lib/os-release": "ID=debian\n" });
  const top = await layerDir("t2", { "etc/os-release": { link: "../usr/lib/os-release" } });
  const view = new EarlyLayerView(2);
  view.done(1, top);
  view.started(0, bottom);
  view.member(0, "etc/zzz");
  const read = view.readFile("/etc/os-release");
  assert.ok(await pending(read), "the link's target is not written yet");
  view.member(0, "var");
  assert.equal(Buffer.from((await read)!).toString(), "ID=debian\n");
  const waiting = view.readFile("/var/lib/dpkg/status");
  view.close();
  await assert.rejects(waiting, /closed/);
  assert.equal(await view.readFile("/etc/absent"), undefined, "what is past every layer still reads");
});

test("a whiteout in a higher layer hides the file below", { skip: process.getuid?.() !== 0 }, async () => {
  const bottom = await layerDir("b3", { "etc/apt/sources.list": "bottom", "etc/apt/keep": "k" });
  const top = await layerDir("t3", {});
  await mkdir(join(top, "etc/apt"), { recursive: true });
  execFileSync("mknod", [join(top, "etc/apt/sources.list"), "c", "0", "0"]);
  const view = new EarlyLayerView(2);
  view.done(0, bottom);
  view.done(1, top);
  assert.equal(await view.readFile("/etc/apt/sources.list"), undefined);
  assert.deepEqual(await view.listDir("/etc/apt"), ["keep"]);
});

test("reads wait for the first wave of layers only; a layer above it counts once complete", async () => {
  const base = await layerDir("b4", { "etc/apt/sources.list": "base", "usr/share/keyrings/k.gpg": "key" });
  const app = await layerDir("a4", { "etc/apt/sources.list": "app", "usr/local/lib/big.so": "x" });
  const view = new EarlyLayerView(3, { waitFor: 1 });
  view.started(0, base);
  view.member(0, "usr/share/keyrings/k.gpg");
  const keyring = view.readFile("/usr/share/keyrings/k.gpg");
  assert.ok(await pending(keyring), "the base layer is writing the keyring");
  view.member(0, "usr/share/zoneinfo");
  // Layer 2 is streaming its /usr/local and layer 3 has not started: neither holds the read back.
  view.started(1, app);
  view.member(1, "usr/local/lib/big.so");
  assert.equal(Buffer.from((await keyring)!).toString(), "key");
  assert.equal(Buffer.from((await view.readFile("/etc/apt/sources.list"))!).toString(), "base");
  // Complete, layer 2's copy wins, as in the merged tree.
  view.done(1, app);
  assert.equal(Buffer.from((await view.readFile("/etc/apt/sources.list"))!).toString(), "app");
});

test("a layer moving into the layer cache is waited for, then read at its new dir", async () => {
  const extracting = await layerDir("m1", { "etc/os-release": "ID=debian" });
  const committed = await layerDir("m2", { "etc/os-release": "ID=debian (committed)" });
  const view = new EarlyLayerView(1);
  view.started(0, extracting);
  view.member(0, "usr");
  view.moving(0);
  const read = view.readFile("/etc/os-release");
  assert.ok(await pending(read), "the layer's dir is being renamed");
  view.done(0, committed);
  assert.equal(Buffer.from((await read)!).toString(), "ID=debian (committed)");
});
