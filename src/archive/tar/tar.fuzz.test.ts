import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, test } from "node:test";
import { gzipSync, zstdCompressSync } from "node:zlib";
import fc from "fast-check";
import {
  applyMutation,
  assertNoUnhandledRejections,
  fuzzParameters,
  mutationArb,
  parsesOrFailsCleanlyAsync,
} from "../../../test/fuzz/fuzz.ts";
import { fixChecksum, rawHeader, withData } from "../../../test/lab/tar.ts";
import { SutureError } from "../../errors/errors.ts";
import { readAll } from "../../image/image.ts";
import { decompressAuto, sniffCompression } from "../compression.ts";
import { extractTar } from "./extract.ts";
import { TarIndex } from "./random-access.ts";
import { readTar } from "./read.ts";
import { encodePaxRecords, encodeTarHeader, TAR_END, type TarWriteEntry, tarPadding } from "./write.ts";

// Property: whatever bytes a layer or .deb member holds, the tar readers either yield entries or
// fail with INVALID_ARCHIVE / UNSAFE_LAYER in one line; they never crash, hang or write outside
// their root. Seeds are real archives from our writer plus hand-made GNU and PAX headers.

const BLOCK = 512;

function entry(e: Omit<TarWriteEntry, "uid" | "gid" | "mtime" | "mode"> & { content?: string }): Buffer {
  const content = Buffer.from(e.content ?? "");
  const header = encodeTarHeader({
    uid: 0,
    gid: 0,
    mtime: 1700000000,
    mode: 0o644,
    size: content.length,
    ...e,
  });
  return e.type === "file" ? withData(header, content) : header;
}

function paxHeader(flag: "x" | "g", records: [string, string][]): Buffer {
  const data = encodePaxRecords(new Map(records.map(([k, v]) => [k, Buffer.from(v)])));
  return withData(rawHeader(`PaxHeaders/${flag}`, flag, data.length), data);
}

const longName = `usr/share/doc/${"very-long-directory-name/".repeat(6)}copyright`;
const SEEDS: Buffer[] = [
  Buffer.concat([
    entry({ path: "etc", type: "directory" }),
    entry({ path: "etc/os-release", type: "file", content: "ID=debian\nVERSION_ID=12\n" }),
    entry({ path: "etc/link", type: "symlink", linkname: "os-release" }),
    entry({ path: "etc/hard", type: "hardlink", linkname: "etc/os-release" }),
    entry({ path: longName, type: "file", content: "long\n" }),
    entry({
      path: "usr/bin/ping",
      type: "file",
      content: "\x7fELF",
      xattrs: new Map([["security.capability", Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0])]]),
    }),
    entry({ path: "dev/null", type: "char", devmajor: 1, devminor: 3 }),
    entry({ path: "etc/.wh.removed", type: "file" }),
    entry({ path: "var/.wh..wh..opq", type: "file" }),
    TAR_END,
  ]),
  Buffer.concat([
    // GNU long name and long link, then a PAX header with records our writer never writes.
    withData(rawHeader("././@LongLink", "L", longName.length + 1, true), Buffer.from(`${longName}\0`)),
    rawHeader("short", "0", 0, true),
    withData(rawHeader("././@LongLink", "K", 12, true), Buffer.from("target-name\0")),
    rawHeader("sym", "2", 0, true),
    paxHeader("x", [
      ["path", "pax/name"],
      ["mtime", "1700000000.5"],
      ["uid", "100000"],
      ["LIBARCHIVE.xattr.user.test%3Dx", "dmFsdWU="],
    ]),
    withData(rawHeader("ignored", "0", 3), Buffer.from("abc")),
    paxHeader("g", [["comment", "hi"]]),
    rawHeader("dir/", "5", 0),
    TAR_END,
  ]),
];
/** Header fields a mutation may target, with values that probe their decoding. */
const FIELDS = [
  { at: 0, width: 100 }, // name
  { at: 100, width: 8 }, // mode
  { at: 108, width: 8 }, // uid
  { at: 124, width: 12 }, // size
  { at: 136, width: 12 }, // mtime
  { at: 156, width: 1 }, // typeflag
  { at: 157, width: 100 }, // linkname
  { at: 257, width: 8 }, // magic + version
  { at: 329, width: 8 }, // devmajor
  { at: 345, width: 155 }, // prefix
] as const;
const FIELD_VALUES = [
  "77777777777\0",
  "99999999999\0",
  "\x80\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff",
  "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
  "\x80\x7f\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
  "        ",
  "-1",
  "../../../../etc/passwd\0",
  "/etc/shadow\0",
  "a\nb\0",
  "x",
  "g",
  "L",
  "K",
  "S",
  "V",
  "1",
  "2",
  "3",
  "5",
  "\0",
  "ustar\0",
  "ustar  \0",
  "\0\0\0\0\0\0\0\0",
].map((s) => Buffer.from(s, "latin1"));

type TarMutation =
  | { kind: "bytes"; mutation: import("../../../test/fuzz/fuzz.ts").Mutation; fixChecksums: boolean }
  | { kind: "field"; block: number; field: number; value: number; fixChecksums: boolean }
  | { kind: "pax"; record: string };

const PAX_RECORDS = [
  "size=99999999999999999999",
  "size=-5",
  "size=1e3",
  "size=NaN",
  "path=../../escape",
  "path=/abs",
  "linkpath=../../../etc",
  "mtime=-1",
  "uid=1e400",
  "GNU.sparse.map=0,1",
  "LIBARCHIVE.xattr.%E0%A4%A=eA==",
  "LIBARCHIVE.xattr.%=eA==",
  "SCHILY.xattr.trusted.overlay.opaque=y",
  "path=a\nb",
  "noequals",
  "=novalue",
];

const tarMutationArb: fc.Arbitrary<TarMutation> = fc.oneof(
  fc.record({ kind: fc.constant("bytes" as const), mutation: mutationArb, fixChecksums: fc.boolean() }),
  fc.record({
    kind: fc.constant("field" as const),
    block: fc.nat(),
    field: fc.nat({ max: FIELDS.length - 1 }),
    value: fc.nat({ max: FIELD_VALUES.length - 1 }),
    fixChecksums: fc.constant(true),
  }),
  fc.record({ kind: fc.constant("pax" as const), record: fc.constantFrom(...PAX_RECORDS) }),
);

function looksLikeHeader(block: Buffer): boolean {
  return block.subarray(257, 262).toString("latin1") === "ustar";
}

function mutateTar(seed: Buffer, mutations: TarMutation[]): Buffer {
  let out: Buffer = Buffer.from(seed);
  for (const m of mutations) {
    if (m.kind === "bytes") out = applyMutation(out, m.mutation);
    else if (m.kind === "field") {
      const headers: number[] = [];
      for (let off = 0; off + BLOCK <= out.length; off += BLOCK)
        if (looksLikeHeader(out.subarray(off, off + BLOCK))) headers.push(off);
      if (!headers.length) continue;
      const off = headers[m.block % headers.length]!;
      const f = FIELDS[m.field]!;
      const value = FIELD_VALUES[m.value]!;
      out.fill(0, off + f.at, off + f.at + f.width);
      value.copy(out, off + f.at, 0, Math.min(value.length, f.width));
    } else {
      // A PAX header carrying one hostile record, in front of the first entry.
      const [key, ...value] = m.record.split("=");
      out = Buffer.concat([paxHeader("x", [[key!, value.join("=")]]), out]);
    }
    if ("fixChecksums" in m && m.fixChecksums) {
      for (let off = 0; off + BLOCK <= out.length; off += BLOCK) {
        const block = out.subarray(off, off + BLOCK);
        if (looksLikeHeader(block)) fixChecksum(block);
      }
    }
  }
  return out;
}

const hostileTar: fc.Arbitrary<Buffer> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .tuple(fc.constantFrom(...SEEDS), fc.array(tarMutationArb, { minLength: 1, maxLength: 4 }))
      .map(([seed, ms]) => mutateTar(seed, ms)),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)) },
);

/** Read every entry and every body, in uneven chunks (splits fall inside headers too). */
async function readEverything(bytes: Buffer, chunk: number): Promise<number> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunk) pieces.push(bytes.subarray(i, i + chunk));
  let entries = 0;
  for await (const e of readTar(pieces)) {
    entries++;
    assert.equal(typeof e.header.path, "string");
    assert.ok(Number.isSafeInteger(e.header.size) && e.header.size >= 0);
    let got = 0;
    for await (const c of e.body) got += c.length;
    if (e.header.type === "file") assert.equal(got, e.header.size);
  }
  return entries;
}

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), "suture-tar-fuzz-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

test("the seeds are valid archives (so mutations start from real structure)", async () => {
  for (const seed of SEEDS) assert.ok((await readEverything(seed, 4096)) >= 4);
  for (const seed of SEEDS) {
    const path = join(work, "seed.tar");
    writeFileSync(path, seed);
    const index = await TarIndex.open(path);
    assert.ok(index.entries.size >= 4);
    await index.close();
  }
});

test("readTar: mutated and random archives yield entries or fail with one-line INVALID_ARCHIVE", async () => {
  await fc.assert(
    fc.asyncProperty(
      hostileTar,
      fc.oneof(fc.integer({ min: 7, max: 600 }), fc.constant(65536)),
      async (bytes, chunk) => {
        await parsesOrFailsCleanlyAsync(["INVALID_ARCHIVE"], () => readEverything(bytes, chunk));
        await assertNoUnhandledRejections();
      },
    ),
    fuzzParameters(200),
  );
});

test("TarIndex: mutated archives on disk index or fail cleanly, and never index an unsafe name", async () => {
  let n = 0;
  await fc.assert(
    fc.asyncProperty(hostileTar, async (bytes) => {
      const path = join(work, `index-${n++}.tar`);
      writeFileSync(path, bytes);
      const index = await parsesOrFailsCleanlyAsync(["INVALID_ARCHIVE"], () => TarIndex.open(path));
      if (index) {
        try {
          for (const [name, e] of index.entries) {
            assert.ok(!name.startsWith("/") && !name.split("/").includes(".."), name);
            assert.ok(e.offset + e.size <= bytes.length);
            await parsesOrFailsCleanlyAsync(["INVALID_ARCHIVE"], async () => {
              const resolved = index.resolve(name);
              if (resolved) await index.readFile(resolved);
            });
          }
        } finally {
          await index.close();
        }
      }
      rmSync(path);
    }),
    fuzzParameters(120),
  );
});

test("extractTar: mutated layers extract or fail cleanly, and nothing lands outside the root", async () => {
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      hostileTar,
      fc.constantFrom("overlay" as const, "keep" as const),
      async (bytes, mode) => {
        const box = join(work, `x-${n++}`);
        const root = join(box, "root");
        mkdirSync(root, { recursive: true });
        // IO: the kernel may refuse what the archive asks for (a malformed security.capability).
        await parsesOrFailsCleanlyAsync(["INVALID_ARCHIVE", "UNSAFE_LAYER", "IO"], () =>
          extractTar([bytes], root, { whiteouts: mode }),
        );
        // The root's parent holds only the root: no entry escaped through `..` or a symlink.
        assert.deepEqual(readdirSync(box), ["root"]);
        assert.ok(!existsSync(join(work, "etc")) && !existsSync("/escape"));
        rmSync(box, { recursive: true, force: true });
        await assertNoUnhandledRejections();
      },
    ),
    fuzzParameters(80),
  );
});

test("compression: sniffing is total, and corrupt gzip/zstd streams fail with one-line INVALID_ARCHIVE", async () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 16 }), (head) => {
      assert.ok(["gzip", "zstd", "xz", "bzip2", "none"].includes(sniffCompression(head)));
    }),
    fuzzParameters(500),
  );
  const plain = SEEDS[0]!;
  const compressed = [gzipSync(plain), zstdCompressSync(plain)];
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...compressed),
      fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
      fc.integer({ min: 1, max: 700 }),
      async (seed, ms, chunk) => {
        const bytes = ms.reduce<Buffer>((acc, m) => applyMutation(acc, m), seed);
        const pieces: Buffer[] = [];
        for (let i = 0; i < bytes.length; i += chunk) pieces.push(bytes.subarray(i, i + chunk));
        await parsesOrFailsCleanlyAsync(["INVALID_ARCHIVE"], () =>
          readAll(decompressAuto(Readable.from(pieces)), 16 * 1024 * 1024),
        );
        await assertNoUnhandledRejections();
      },
    ),
    fuzzParameters(150),
  );
});

// Regressions: cases the properties above found, kept as plain tests.

async function failure(run: () => Promise<unknown>): Promise<SutureError> {
  try {
    await run();
  } catch (e) {
    if (e instanceof SutureError) return e;
    throw e;
  }
  assert.fail("expected a SutureError");
}

test("regression: a LIBARCHIVE.xattr name with a malformed %-escape is INVALID_ARCHIVE, not a URIError", async () => {
  const tar = Buffer.concat([
    paxHeader("x", [["LIBARCHIVE.xattr.user.%zz", "eA=="]]),
    rawHeader("f", "0", 0),
    TAR_END,
  ]);
  const e = await failure(() => readEverything(tar, 512));
  assert.equal(e.code, "INVALID_ARCHIVE");
  assert.match(e.message, /malformed percent-encoded xattr name/);
});

test("regression: a header field holding a newline gives a one-line error", async () => {
  const header = rawHeader("f", "0", 0);
  header.fill(0, 100, 108).write("a\nb", 100, "latin1"); // the mode field
  fixChecksum(header);
  const e = await failure(() => readEverything(Buffer.concat([header, TAR_END]), 512));
  assert.equal(e.message, 'tar header has a malformed mode "a\\nb"');
  const path = join(work, "newline.tar");
  const sized = rawHeader("f", "0", 0);
  sized.fill(0, 124, 136).write("0\n\n12652", 124, "latin1"); // the size field
  writeFileSync(path, Buffer.concat([fixChecksum(sized), TAR_END]));
  const indexed = await failure(() => TarIndex.open(path, "newline.tar"));
  assert.equal(indexed.message, 'newline.tar: tar header has a malformed size "0\\n\\n12652"');
});

test("regression: a symlink with an empty target is INVALID_ARCHIVE, not a bare ENOENT", async () => {
  const root = join(work, "empty-link");
  mkdirSync(root);
  const tar = Buffer.concat([rawHeader("sym", "2", 0), TAR_END]);
  const e = await failure(() => extractTar([tar], root, { whiteouts: "keep" }));
  assert.equal(e.code, "INVALID_ARCHIVE");
  assert.match(e.message, /symlink "sym" has an empty target/);
});

test("regression: a corrupt gzip stream fails with INVALID_ARCHIVE, not zlib's own error", async () => {
  const gz = gzipSync(SEEDS[0]!);
  const corrupt = Buffer.concat([gz.subarray(0, 200), Buffer.from("999999999999"), gz.subarray(212)]);
  const e = await failure(() => readAll(decompressAuto(Readable.from([corrupt])), 1 << 24));
  assert.equal(e.code, "INVALID_ARCHIVE");
  assert.match(e.message, /^cannot decompress stream: /);
});
