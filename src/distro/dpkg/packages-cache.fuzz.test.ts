import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  hostileText,
  parsesOrFailsCleanly,
  parsesOrFailsCleanlyAsync,
} from "../../../test/fuzz/fuzz.ts";
import { buildPackagesCache, openPackagesCache, packagesCacheFiles } from "./packages-cache.ts";
import {
  makePackagesIndex,
  type PackageEntry,
  type PackagesIndex,
  parsePackagesIndex,
  parseRelations,
} from "./packages-index.ts";

const H = (c: string) => c.repeat(64);
const SEED = `Package: libssl3
Source: openssl
Version: 3.0.20-1~deb12u2
Architecture: amd64
Provides: libssl (= 3), ssl-lib
Depends: libc6 (>= 2.34)
Description: Secure Sockets Layer toolkit
 shared libraries
Filename: pool/main/o/openssl/libssl3_3.0.20-1~deb12u2_amd64.deb
Size: 2036016
SHA256: ${H("8")}

Package: libssl3
Version: 3.0.22-1~deb12u2
Architecture: amd64
Provides: ssl-lib
Filename: pool/main/o/openssl/libssl3_3.0.22-1~deb12u2_amd64.deb
Size: 2036017
SHA256: ${H("9")}

Package: ca-certificates
Version: 20230311+deb12u1
Architecture: all
Filename: pool/main/c/ca-certificates/ca-certificates_20230311+deb12u1_all.deb
Size: 153600
SHA256: ${H("5")}`;

const KEY = H("1");
const META = {
  uri: "http://r",
  suite: "s",
  component: "main",
  arch: "amd64",
  url: "http://r/x",
  sha256: H("0"),
};
let dir = "";
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "suture-packages-cache-fuzz-"));
});
after(() => rm(dir, { recursive: true, force: true }));

test("the cached index answers every lookup as the in-memory parse does, for any text and any split into pieces", async () => {
  await fc.assert(
    fc.asyncProperty(hostileText([SEED]), fc.integer({ min: 1, max: 97 }), async (text, size) => {
      const files = packagesCacheFiles(dir, KEY);
      await rm(files.plain, { force: true });
      const bytes = Buffer.from(text);
      async function* pieces() {
        for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
      }
      const built = await parsesOrFailsCleanlyAsync(["INVALID_MANIFEST", "TOO_LARGE"], () =>
        buildPackagesCache(pieces(), files.plain, { key: KEY, hash: false }),
      );
      // The whole-text parse is the oracle; where it refuses the text, the cache is only held to
      // failing cleanly on the lookups that reach the refused stanzas.
      const entries = parsesOrFailsCleanly(["INVALID_MANIFEST", "UNTRUSTED"], () =>
        parsePackagesIndex(text, { repoUri: "http://r" }),
      );
      if (!built) {
        assert.ok(entries === undefined || entries.length === 0, "a text the cache refuses has no entries");
        return;
      }
      await writeFile(files.table, built.table);
      const index = (await openPackagesCache(
        files,
        { ...META, key: KEY },
        { repoUri: "http://r" },
      )) as PackagesIndex;
      assert.ok(index, "a table just built opens");
      try {
        if (!entries) {
          for (const name of ["libssl3", "ca-certificates"])
            parsesOrFailsCleanly(["UNTRUSTED", "INVALID_MANIFEST"], () => index.byName.get(name));
          return;
        }
        for (const e of entries) {
          const same: PackageEntry[] = entries.filter((x) => x.package === e.package);
          assert.deepEqual(index.byName.get(e.package), same);
        }
        // With a malformed Provides anywhere the in-memory index refuses the whole list.
        const memory = parsesOrFailsCleanly(["INVALID_MANIFEST"], () => makePackagesIndex(META, entries));
        if (!memory) return;
        for (const e of entries) {
          for (const name of parseRelations(e.provides).flatMap((g) => g.map((r) => r.name)))
            assert.deepEqual(index.byProvides.get(name), memory.byProvides.get(name), name);
        }
      } finally {
        index.release?.();
      }
    }),
    fuzzParameters(300),
  );
});
