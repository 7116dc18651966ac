import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { cachedDataPieces, type DebDataCache, debDataEntryPath } from "./deb-data-cache.ts";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "suture-deb-data-"));
});
after(() => rm(dir, { recursive: true, force: true }));

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

/** A decoder over fixed pieces that counts how often it ran. */
function decoder(pieces: Buffer[]) {
  const counter = { runs: 0 };
  const decode = async function* () {
    counter.runs++;
    for (const p of pieces) yield p;
  };
  return { decode, counter };
}

async function readAllPieces(cache: DebDataCache, decode: () => AsyncGenerator<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const p of cachedDataPieces(cache, decode)) out.push(p);
  return Buffer.concat(out);
}

const content = [Buffer.alloc(3 * 1024 * 1024 + 17, 7), Buffer.from("tail of the tar")];
const whole = Buffer.concat(content);

test("a second read of the same package comes from the entry, byte for byte, without decoding", async () => {
  const cache = { dir: join(dir, "hit"), debSha256: sha("hit") };
  const first = decoder(content);
  assert.deepEqual(await readAllPieces(cache, first.decode), whole);
  assert.equal(first.counter.runs, 1);
  const second = decoder([Buffer.from("must not be read")]);
  assert.deepEqual(await readAllPieces(cache, second.decode), whole);
  assert.equal(second.counter.runs, 0);
  // Nothing but the entry is left in the dir (no temporaries).
  assert.deepEqual(await readdir(cache.dir), [`${cache.debSha256}.tar`]);
});

for (const [what, damage] of [
  [
    "whose content has a byte changed",
    async (path: string) => {
      const bytes = await readFile(path);
      bytes[bytes.length - 5] ^= 0x20;
      await writeFile(path, bytes);
    },
  ],
  ["that was cut short", async (path: string) => truncate(path, 200_000)],
  ["whose header was overwritten", async (path: string) => writeFile(path, "not an entry")],
] as const) {
  test(`an entry ${what} is not used: the package is decoded again and the entry rewritten`, async () => {
    const cache = { dir: join(dir, what.replace(/\W+/g, "-")), debSha256: sha(what) };
    await readAllPieces(cache, decoder(content).decode);
    const path = debDataEntryPath(cache);
    await damage(path);
    const damaged: string[] = [];
    const again = decoder(content);
    const read = await readAllPieces(
      { ...cache, onDamaged: (p, why) => damaged.push(`${p}: ${why}`) },
      again.decode,
    );
    assert.deepEqual(read, whole);
    assert.equal(again.counter.runs, 1);
    assert.equal(damaged.length, 1);
    assert.ok(damaged[0]!.startsWith(path));
    // The rewritten entry proves: the next read does not decode.
    const third = decoder([]);
    assert.deepEqual(await readAllPieces(cache, third.decode), whole);
    assert.equal(third.counter.runs, 0);
  });
}

test("a consumer that stops early, or a decoder that fails, leaves no entry", async () => {
  const cache = { dir: join(dir, "early"), debSha256: sha("early") };
  for await (const _ of cachedDataPieces(cache, decoder(content).decode)) break;
  assert.deepEqual(await readdir(cache.dir), []);
  const failing = async function* () {
    yield Buffer.from("part");
    throw new Error("xz: corrupt input");
  };
  await assert.rejects(readAllPieces(cache, failing), /corrupt input/);
  assert.deepEqual(await readdir(cache.dir), []);
});

test("a cache dir that cannot be written costs a decode, not the read", async () => {
  const blocker = join(dir, "blocker");
  await writeFile(blocker, "a file where the cache dir would be");
  const cache = { dir: join(blocker, "decoded"), debSha256: sha("unwritable") };
  assert.deepEqual(await readAllPieces(cache, decoder(content).decode), whole);
  assert.ok((await stat(blocker)).isFile());
});

test("the key must be a SHA-256: nothing else names an entry", () => {
  assert.throws(() => debDataEntryPath({ dir, debSha256: "../../etc/passwd" }), { code: "INTERNAL" });
});
