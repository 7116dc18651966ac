import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import {
  buildPackagesCache,
  openPackagesCache,
  type PackagesCacheFiles,
  packagesCacheFiles,
  StanzaSplitter,
} from "./packages-cache.ts";
import {
  makePackagesIndex,
  type PackageEntry,
  type PackagesIndex,
  parsePackagesIndex,
  parseRelations,
} from "./packages-index.ts";

const H = (c: string) => c.repeat(64);
const KEY = H("7");
const REPO = "http://deb.example/debian";
const META = {
  uri: REPO,
  suite: "bookworm",
  component: "main",
  arch: "amd64",
  url: `${REPO}/x`,
  sha256: H("0"),
};

function stanza(fields: Record<string, string>): string {
  const all: Record<string, string> = { Architecture: "amd64", Size: "100", SHA256: H("a"), ...fields };
  if (!all.Filename) all.Filename = `pool/main/x/${all.Package}_${all.Version}_${all.Architecture}.deb`;
  return Object.entries(all)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n");
}

// Several versions and architectures of one name, far apart in the file; Provides with and without
// versions; a stanza without a checksum; CRLF blank lines; the last stanza has no trailing newline.
const TEXT = [
  stanza({ Package: "libssl3", Version: "3.0.11-1~deb12u2", SHA256: H("1") }),
  stanza({ Package: "mawk", Version: "1.3.4-1", Provides: "awk" }),
  stanza({ Package: "postfix", Version: "3.7.9-0", Provides: "mail-transport-agent, default-mta (= 3.7)" }),
  stanza({ Package: "no-checksum", Version: "1", SHA256: "" }),
  stanza({ Package: "libssl3", Version: "3.0.11-1~deb12u2", Architecture: "arm64", SHA256: H("2") }),
  `${stanza({ Package: "gawk", Version: "1:5.2.1-2", Provides: "awk" })}\r\n\r\n`,
  stanza({ Package: "exim4-daemon-light", Version: "4.96-15", Provides: "mail-transport-agent" }),
  stanza({ Package: "libssl3", Version: "3.0.15-1~deb12u1", SHA256: H("3") }),
  stanza({
    Package: "tzdata",
    Version: "2024a-0+deb12u1",
    Architecture: "all",
    Description: "time zone\n data",
  }),
].join("\n\n");

async function scratch(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "suture-packages-cache-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function* pieces(bytes: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

/** Build the cache of `text` into `dir` in pieces of `size` bytes, write its table, open it. */
async function cached(dir: string, text: string | Buffer, size = 1 << 20) {
  const files = packagesCacheFiles(dir, KEY);
  await rm(files.plain, { force: true });
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const built = await buildPackagesCache(pieces(bytes, size), files.plain, { key: KEY, hash: true });
  await writeFile(files.table, built.table);
  const index = await open(files);
  assert.ok(index, "a table just built opens");
  return { files, built, index };
}

const open = (files: PackagesCacheFiles) =>
  openPackagesCache(files, { ...META, key: KEY }, { repoUri: REPO });

function summary(index: PackagesIndex, name: string, by: "byName" | "byProvides" = "byName") {
  return index[by]
    .get(name)
    ?.map((e) => `${e.package} ${e.version} ${e.architecture} ${e.sha256.slice(0, 1)}`);
}

test("the cached index answers as the parsed text does: every version of a name in index order, Provides, the last stanza without a newline", async (t) => {
  const dir = await scratch(t);
  const { index, built } = await cached(dir, TEXT);
  const memory = makePackagesIndex(META, parsePackagesIndex(TEXT, { repoUri: REPO }));
  assert.equal(built.size, Buffer.byteLength(TEXT));
  assert.deepEqual(summary(index, "libssl3"), [
    "libssl3 3.0.11-1~deb12u2 amd64 1",
    "libssl3 3.0.11-1~deb12u2 arm64 2",
    "libssl3 3.0.15-1~deb12u1 amd64 3",
  ]);
  assert.deepEqual(summary(index, "awk", "byProvides"), ["mawk 1.3.4-1 amd64 a", "gawk 1:5.2.1-2 amd64 a"]);
  assert.deepEqual(summary(index, "mail-transport-agent", "byProvides"), [
    "postfix 3.7.9-0 amd64 a",
    "exim4-daemon-light 4.96-15 amd64 a",
  ]);
  assert.deepEqual(summary(index, "default-mta", "byProvides"), ["postfix 3.7.9-0 amd64 a"]);
  // The last stanza, which ends the file without a newline, is whole (its continuation line too).
  const [tz] = index.byName.get("tzdata")!;
  assert.equal(tz!.paragraph, memory.byName.get("tzdata")![0]!.paragraph);
  assert.match(tz!.paragraph, /\n data\nFilename: \S+_all\.deb$/);
  for (const name of ["no-checksum", "awk", "nothing", "libssl", "libssl33", ""]) {
    assert.equal(index.byName.get(name), undefined, name);
    assert.equal(index.byName.has(name), false, name);
  }
  assert.equal(index.byProvides.get("libssl3"), undefined, "a real name is not a virtual one");
  // Whole-index listing, as the in-memory index gives it (grouped by name instead of file order).
  const key = (e: { package: string; version: string; architecture: string }) =>
    `${e.package} ${e.version} ${e.architecture}`;
  assert.deepEqual(index.entries.map(key).sort(), memory.entries.map(key).sort());
  for (const e of memory.entries)
    assert.deepEqual(
      index.byName.get(e.package)?.find((x) => key(x) === key(e)),
      e,
    );
});

test("any split of the input into pieces gives the same stanzas and the same table", async (t) => {
  const dir = await scratch(t);
  const reference = (await cached(dir, TEXT)).built.table;
  for (const size of [1, 2, 3, 5, 64, 333, 1000]) {
    const { built, index } = await cached(dir, TEXT, size);
    assert.ok(built.table.equals(reference), `pieces of ${size} bytes`);
    assert.equal(index.byName.get("libssl3")?.length, 3);
    index.release?.();
  }
  // The splitter alone, on the edge cases of its rule (blank lines before, between and after).
  for (const text of [
    "\n\nA: 1\n\n\n\nB: 2\n",
    "A: 1\n\nB: 2",
    "A: 1\n\n",
    "\r\n\r\nA: 1\r\n\r\nB: 2\r\n",
    "A\n",
  ]) {
    for (const size of [1, 2, 3, 100]) {
      const got: string[] = [];
      const s = new StanzaSplitter("t", (b, offset) => {
        assert.equal(text.slice(offset, offset + b.length), b.toString(), "the offset points at the stanza");
        got.push(b.toString());
      });
      for (let i = 0; i < text.length; i += size) s.push(Buffer.from(text.slice(i, i + size)));
      s.end();
      assert.deepEqual(got, parsePackagesIndexStanzas(text), `${JSON.stringify(text)} in pieces of ${size}`);
    }
  }
});

/** The stanzas parsePackagesIndex's loop takes from a whole text (the rule the splitter keeps). */
function parsePackagesIndexStanzas(text: string): string[] {
  const out: string[] = [];
  let pos = 0;
  while (pos < text.length) {
    while (pos < text.length && (text[pos] === "\n" || text[pos] === "\r")) pos++;
    if (pos >= text.length) break;
    let end = text.indexOf("\n\n", pos);
    if (end < 0) end = text.length;
    out.push(text.slice(pos, end));
    pos = end + 2;
  }
  return out;
}

test("a truncated, garbled or foreign table, or a plain file of another size, is not used (the caller derives both again)", async (t) => {
  const dir = await scratch(t);
  const { files, built, index } = await cached(dir, TEXT);
  index.release?.();
  const table = built.table;
  const damaged: [string, Buffer][] = [
    ["cut short", table.subarray(0, table.length - 1)],
    ["empty", Buffer.alloc(0)],
    ["a flipped byte", Buffer.from(table).fill(table[100]! ^ 0x40, 100, 101)],
    ["another format", Buffer.concat([Buffer.from("SUTPKGT0"), table.subarray(8)])],
  ];
  for (const [what, bytes] of damaged) {
    await writeFile(files.table, bytes);
    assert.equal(await open(files), undefined, what);
  }
  await writeFile(files.table, table);
  assert.equal(
    await openPackagesCache(files, { ...META, key: H("8") }, { repoUri: REPO }),
    undefined,
    "a table built for another verified hash",
  );
  await rm(files.table);
  assert.equal(await open(files), undefined, "no table");
  await writeFile(files.table, table);
  await truncate(files.plain, Buffer.byteLength(TEXT) - 10);
  assert.equal(await open(files), undefined, "plain file cut short");
  await rm(files.plain);
  assert.equal(await open(files), undefined, "no plain file");
});

test("a stanza damaged on disk after the table checked out is a clear IO error, never a wrong entry; the table goes", async (t) => {
  const dir = await scratch(t);
  const { files } = await cached(dir, TEXT);
  // Same size, one version changed: the table still opens, the damaged stanza does not parse.
  const plain = await readFile(files.plain);
  const at = plain.indexOf("3.0.15-1~deb12u1");
  plain.write("9", at, "latin1");
  await writeFile(files.plain, plain);
  const index = (await open(files))!;
  assert.ok(index, "sizes agree: the table opens");
  assert.equal(index.byName.get("mawk")?.[0]?.version, "1.3.4-1", "undamaged stanzas still read");
  assert.throws(
    () => index.byName.get("libssl3"),
    (e: unknown) =>
      isSutureError(e, "IO") &&
      /is damaged at byte \d+: its table was removed .* run the command again$/.test(e.message) &&
      !e.message.includes("\n"),
  );
  assert.deepEqual(await readdir(dir), [`${KEY}.plain`], "the table is removed");
  assert.equal(await open(files), undefined, "the next run derives it again");
});

test("a released index keeps what it gave and refuses new reads", async (t) => {
  const dir = await scratch(t);
  const { index } = await cached(dir, TEXT);
  const [mawk] = index.byName.get("mawk")!;
  index.release?.();
  assert.equal(index.byName.get("mawk")?.[0], mawk);
  assert.throws(
    () => index.byName.get("tzdata"),
    (e: unknown) => isSutureError(e, "INTERNAL"),
  );
  index.release?.(); // twice is harmless
});

test("an index without a single Package field is refused; an empty index is an empty table", async (t) => {
  const dir = await scratch(t);
  const files = packagesCacheFiles(dir, KEY);
  await assert.rejects(
    buildPackagesCache(pieces(Buffer.from("Origin: x\n\nLabel: y\n"), 4), files.plain, {
      key: KEY,
      hash: false,
    }),
    (e: unknown) =>
      isSutureError(e, "INVALID_MANIFEST") && /has 2 stanzas but none with a Package field/.test(e.message),
  );
  const empty = await cached(dir, "");
  assert.equal(empty.index.byName.get("x"), undefined);
  assert.deepEqual(empty.index.entries, []);
  assert.equal(
    empty.built.checksum?.sha256,
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
});

test("the table holds no JS object per package: a 60,000-stanza index's table stays small", async (t) => {
  const dir = await scratch(t);
  const many: string[] = [];
  for (let i = 0; i < 60_000; i++)
    many.push(stanza({ Package: `pkg${i}`, Version: "1.0", Provides: i % 10 ? "" : `virtual${i % 7}` }));
  const { built, index } = await cached(dir, Buffer.from(many.join("\n\n")), 65536);
  // 12 bytes per stanza, 8 per name and its text: ~1.7 MB for 60,000 (the text itself is 8.6 MB).
  assert.ok(built.table.length < 2e6, `${built.table.length} bytes`);
  assert.equal(index.byName.get("pkg59999")?.[0]?.version, "1.0");
  const providers = many.filter((s) => s.includes("Provides: virtual3\n")).length;
  assert.ok(providers > 800);
  assert.equal(index.byProvides.get("virtual3")?.length, providers);
});

test("Provides is found as the entry's own reader reads it: any case, continuation lines, a later duplicate, look-alike lines", async (t) => {
  const dir = await scratch(t);
  const text = [
    `${stanza({ Package: "pa", Version: "1" })}\nPROVIDES : va1,\n va2 (= 1)`,
    // A description line that looks like the field is no field: nothing is provided.
    `${stanza({ Package: "pb", Version: "1", Description: "x\n provides: vb" })}`,
    // The later duplicate wins, as paragraphOf reads it; a colon-less line does not end a field.
    `${stanza({ Package: "pc", Version: "1", Provides: "vc-old" })}\nprovides: vc1,\nnot-a-field\n vc2`,
  ].join("\n\n");
  const { index } = await cached(dir, text);
  const memory = makePackagesIndex(META, parsePackagesIndex(text, { repoUri: REPO }));
  for (const virtual of ["va1", "va2", "vb", "vc-old", "vc1", "vc2"]) {
    assert.deepEqual(
      index.byProvides.get(virtual)?.map((e) => e.package),
      memory.byProvides.get(virtual)?.map((e) => e.package),
      virtual,
    );
  }
  assert.deepEqual(
    ["va1", "va2", "vb", "vc-old", "vc1", "vc2"].map((v) => index.byProvides.has(v)),
    [true, true, false, false, true, true],
  );
});

test("the byte scan's edges answer as the parsed text does: Provides on the last line, CRLF, in a continuation line, plain and not-so-plain lists, non-ASCII names, a stanza larger than the pieces", async (t) => {
  const dir = await scratch(t);
  const long = `x\n${" line of a long description\n".repeat(12_000)} end`;
  const texts = [
    // The last stanza's last line is Provides, without a newline; then with one.
    `${stanza({ Package: "pa", Version: "1" })}\n\n${stanza({ Package: "pb", Version: "1" })}\nProvides: vb (= 1), vb2`,
    `${stanza({ Package: "pa", Version: "1" })}\nProvides: va\n`,
    // CRLF line ends within stanzas, Provides included (a blank line is still `\n\n`).
    [
      stanza({ Package: "pa", Version: "1", Provides: "va, vb (= 2)" }),
      stanza({ Package: "pb", Version: "1", Provides: "vb" }),
    ]
      .map((s) => `${s.replaceAll("\n", "\r\n")}\r`)
      .join("\n\n"),
    // "Provides:" starting a continuation line (after its blank) is part of the description.
    stanza({ Package: "pa", Version: "1", Description: "x\n Provides: vd\n provides: vd2" }),
    stanza({ Package: "pa", Version: "1", Description: "x\n\tProvides: vd" }),
    // Lists the byte reader leaves to the full one: qualifiers, alternatives, other operators,
    // a trailing comma, an empty list, tabs, a malformed entry (the in-memory index refuses it).
    ...[
      "va:any, vb",
      "va | vb",
      "va (>= 1), vb (<< 2)",
      "va, vb,",
      "",
      "\tva\t,\tvb (\t= 1\t)\t",
      "va (= 1) vb",
      "va [amd64], vb <!nocheck>",
    ].map((provides) => stanza({ Package: "pa", Version: "1", Provides: provides })),
    // The field name in another case, spaced before its colon, or the field continued on the next line.
    `${stanza({ Package: "pa", Version: "1" })}\nPROVIDES: va\n\n${stanza({ Package: "pb", Version: "1" })}\nProvides : vb`,
    `${stanza({ Package: "pa", Version: "1" })}\nProvides: va,\n vb\n\n${stanza({ Package: "pb", Version: "1" })}\nProvides: vb\n#comment\n vc`,
    // A stanza much larger than the pieces and than a write batch.
    `${stanza({ Package: "pa", Version: "1", Description: long })}\n\n${stanza({ Package: "pb", Version: "1", Provides: "vb" })}`,
  ];
  for (const text of texts) {
    const entries = parsePackagesIndex(text, { repoUri: REPO });
    // A malformed Provides makes the in-memory index refuse the whole list; the table indexes
    // nothing for that entry alone.
    const provided = new Map<string, PackageEntry[]>();
    for (const e of entries) {
      let names: string[] = [];
      try {
        names = [...new Set(parseRelations(e.provides).flatMap((g) => g.map((r) => r.name)))];
      } catch {}
      for (const name of names) provided.set(name, [...(provided.get(name) ?? []), e]);
    }
    for (const size of [7, 64 * 1024]) {
      const { index } = await cached(dir, text, size);
      const what = `${JSON.stringify(text.slice(-80))} in pieces of ${size}`;
      for (const e of entries)
        assert.deepEqual(
          index.byName.get(e.package),
          entries.filter((x) => x.package === e.package),
          `${e.package}: ${what}`,
        );
      for (const name of ["va", "vb", "vb2", "vc", "vd", "vd2"])
        assert.deepEqual(
          index.byProvides.get(name)?.map((x) => x.package),
          provided.get(name)?.map((x) => x.package),
          `${name}: ${what}`,
        );
      index.release?.();
    }
  }
  // Names outside ASCII (refused when their entry is read) sort as lookups compare them, JS
  // strings' UTF-16 order, not UTF-8's: every name is found, Unicode blanks around it trimmed.
  const wide = [
    "zz",
    "\u00e9t\u00e9",
    "bb",
    "\u{1f600}",
    "\uff21",
    "\u00a0\u00e9t\u00e9\u3000",
    "aa",
    "\ufb01",
    "cc",
  ];
  const { index } = await cached(
    dir,
    wide.map((name, i) => stanza({ Package: name, Version: `${i}` })).join("\n\n"),
  );
  for (const name of ["aa", "bb", "cc", "zz"]) assert.equal(index.byName.get(name)?.length, 1, name);
  for (const name of ["\u00e9t\u00e9", "\u{1f600}", "\uff21", "\ufb01"])
    assert.throws(
      () => index.byName.get(name),
      (e: unknown) => isSutureError(e, "UNTRUSTED") && e.message.includes("Debian Policy"),
      name,
    );
});
