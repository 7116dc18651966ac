import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { link, mkdir, mkdtemp, readFile, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { isSutureError } from "../../errors/errors.ts";
import { indexedPath, TarIndex } from "./random-access.ts";

const run = promisify(execFile);

describe("TarIndex", () => {
  let work: string;
  let tree: string;
  const longName = `${"d".repeat(120)}/${"f".repeat(130)}.txt`;
  // Over 100 characters but splittable: ustar stores it with the prefix field.
  const prefixedName = `${"p".repeat(90)}/${"q".repeat(60)}.txt`;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "suture-tarindex-"));
    tree = join(work, "tree");
    await mkdir(join(tree, "sub"), { recursive: true });
    await writeFile(join(tree, "sub", "a.txt"), "alpha\n");
    await writeFile(join(tree, "big.bin"), Buffer.alloc(700_000, 7));
    await writeFile(join(tree, "empty"), "");
    await symlink("sub/a.txt", join(tree, "link"));
    await link(join(tree, "sub", "a.txt"), join(tree, "hard"));
    await mkdir(join(tree, "d".repeat(120)));
    await writeFile(join(tree, longName), "long name\n");
    await mkdir(join(tree, "p".repeat(90)));
    await writeFile(join(tree, prefixedName), "prefixed\n");
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  for (const format of ["gnu", "pax", "ustar"] as const) {
    test(`indexes a GNU tar --format=${format} archive and reads members by range`, async (t) => {
      const file = join(work, `${format}.tar`);
      const args = ["-C", tree, `--format=${format}`, "-cf", file, "."];
      if (format === "ustar") {
        // ustar cannot hold a 130-character file name: leave it out.
        args.splice(
          args.length - 1,
          1,
          "./sub",
          "./big.bin",
          "./empty",
          "./link",
          "./hard",
          `./${prefixedName}`,
        );
      }
      await run("tar", args);
      const index = await TarIndex.open(file);
      t.after(() => index.close());
      const a = index.resolve("./sub/a.txt")!;
      assert.equal(a.type, "file");
      assert.equal((await index.readFile(a)).toString(), "alpha\n");
      const big = index.resolve("big.bin")!;
      const chunks: Buffer[] = [];
      for await (const c of index.stream(big)) chunks.push(c as Buffer);
      assert.deepEqual(Buffer.concat(chunks), await readFile(join(tree, "big.bin")));
      assert.equal(index.resolve("empty")!.size, 0);
      // Links resolve to the member holding the data.
      assert.equal((await index.readFile(index.resolve("link")!)).toString(), "alpha\n");
      assert.equal(index.entries.get("link")!.type, "symlink");
      const hard = index.resolve("hard")!;
      assert.equal((await index.readFile(hard)).toString(), "alpha\n");
      assert.equal(index.entries.get("sub")!.type, "directory");
      if (format !== "ustar")
        assert.equal((await index.readFile(index.resolve(longName)!)).toString(), "long name\n");
      assert.equal((await index.readFile(index.resolve(prefixedName)!)).toString(), "prefixed\n");
      assert.equal(index.resolve("absent"), undefined);
    });
  }

  test("refuses truncated, corrupt and empty files with INVALID_ARCHIVE", async () => {
    const file = join(work, "cut.tar");
    await run("tar", ["-C", tree, "-cf", file, "big.bin"]);
    await truncate(file, 100_000);
    await assert.rejects(TarIndex.open(file), (e) => isSutureError(e, "INVALID_ARCHIVE"));

    const corrupt = join(work, "corrupt.tar");
    await run("tar", ["-C", tree, "-cf", corrupt, "sub"]);
    const bytes = await readFile(corrupt);
    bytes[10]! ^= 0x20;
    await writeFile(corrupt, bytes);
    await assert.rejects(
      TarIndex.open(corrupt),
      (e) => isSutureError(e, "INVALID_ARCHIVE") && /checksum/.test(e.message),
    );

    const empty = join(work, "empty.tar");
    await writeFile(empty, "");
    await assert.rejects(TarIndex.open(empty), (e) => isSutureError(e, "INVALID_ARCHIVE"));
    await assert.rejects(TarIndex.open(join(work, "missing.tar")), (e) => isSutureError(e, "NOT_FOUND"));
  });

  test("keys members by their normalised path and refuses absolute names and .. that climbs out", () => {
    assert.equal(indexedPath("./a//b/", "x"), "a/b");
    assert.equal(indexedPath("a/../b", "x"), "b");
    for (const bad of ["/etc/passwd", "..", "a/../../b"]) {
      assert.throws(
        () => indexedPath(bad, "x"),
        (e) => isSutureError(e, "INVALID_ARCHIVE") && e.message.startsWith("x has an entry"),
        bad,
      );
    }
  });

  test("an archive written by GNU tar with ../ members is refused when indexed", async () => {
    const file = join(work, "dotdot.tar");
    await run("tar", ["-C", join(tree, "sub"), "-cf", file, "--absolute-names", "../empty"]);
    await assert.rejects(TarIndex.open(file, "dotdot.tar"), (e) => {
      assert.ok(isSutureError(e, "INVALID_ARCHIVE"));
      assert.match(e.message, /dotdot\.tar.*\.\.\/empty/);
      return true;
    });
  });
});
