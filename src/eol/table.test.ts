import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseOsRelease } from "../distro/os-release.ts";
import { isSutureError } from "../errors/errors.ts";
import { bundledEolTable, EOL_PRODUCTS, eolCacheFile, eolState, loadEolTable } from "./table.ts";

const table = bundledEolTable();
const DAY = new Date("2026-12-01T12:00:00Z");
const os = (text: string) => parseOsRelease(text);

test("the bundled table covers every product suture matches, with its source and date", () => {
  for (const p of EOL_PRODUCTS) assert.ok(table.products[p]?.releases.length, p);
  assert.match(table.source, /2026-12-01/);
  assert.equal(table.asOf, "2026-12-01");
});

test("Debian: bullseye past its LTS is end of life with the archive hint, bookworm is in LTS, trixie supported", () => {
  const bullseye = eolState(os('ID=debian\nVERSION_ID="11"\nVERSION_CODENAME=bullseye\n'), table, DAY);
  assert.equal(bullseye.status, "eol");
  assert.equal(bullseye.label, "Debian 11 (bullseye)");
  assert.equal(bullseye.archiveMirror, "http://deb.debian.org/debian=http://archive.debian.org/debian");
  assert.match(
    bullseye.message,
    /end of life since 2026-08-31.*--mirror http:\/\/deb\.debian\.org\/debian=http:\/\/archive\.debian\.org\/debian/,
  );
  assert.doesNotMatch(bullseye.message, /\n/);

  const bookworm = eolState(os('ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'), table, DAY);
  assert.equal(bookworm.status, "extended");
  assert.equal(bookworm.until, "2028-06-30");
  assert.match(bookworm.message, /past its security support \(ended 2026-06-10\), in LTS until 2028-06-30/);

  assert.equal(eolState(os("ID=debian\nVERSION_ID=13\n"), table, DAY).status, "supported");
});

test("a phase ends on its date, as endoflife.date's eolFrom says", () => {
  const bullseye = os("ID=debian\nVERSION_ID=11\n");
  assert.equal(eolState(bullseye, table, new Date("2026-08-30T23:59:59Z")).status, "extended");
  assert.equal(eolState(bullseye, table, new Date("2026-08-31T00:00:00Z")).status, "eol");
});

test("releases are matched by VERSION_ID, its major.minor, its major, then by codename", () => {
  const cases: [string, string | undefined, string | undefined][] = [
    ["ID=debian\nVERSION_CODENAME=trixie\n", "debian", "13"], // testing: no VERSION_ID
    ['ID=ubuntu\nVERSION_ID="22.04"\n', "ubuntu", "22.04"],
    ["ID=alpine\nVERSION_ID=3.20.3\n", "alpine", "3.20"],
    ['ID="rhel"\nVERSION_ID="9.4"\n', "rhel", "9"],
    ['ID="rocky"\nVERSION_ID="8.10"\n', "rocky-linux", "8"],
    ['ID="almalinux"\nVERSION_ID="9.5"\n', "almalinux", "9"],
    ['NAME="CentOS Stream"\nID="centos"\nVERSION_ID="9"\n', "centos-stream", "9"],
    ['NAME="CentOS Linux"\nID="centos"\nVERSION_ID="7"\n', "centos", "7"],
    ['ID="ol"\nVERSION_ID="8.9"\n', "oracle-linux", "8"],
    ["ID=fedora\nVERSION_ID=41\n", "fedora", "41"],
    ['ID="amzn"\nVERSION_ID="2023"\n', "amazon-linux", "2023"],
    ['ID="amzn"\nVERSION_ID="2"\n', "amazon-linux", "2"],
    ["ID=azurelinux\nVERSION_ID=3.0\n", "azure-linux", "3.0"],
    ['ID=mariner\nVERSION_ID="2.0"\n', "cbl-mariner", "2.0"],
    ['ID="sles"\nVERSION_ID="15.6"\n', "sles", "15.6"],
    ['ID="opensuse-leap"\nVERSION_ID="15.6"\n', "opensuse", "15.6"],
  ];
  for (const [text, product, release] of cases) {
    const state = eolState(os(text), table, DAY);
    assert.equal(state.product, product, text);
    assert.equal(state.release, release, text);
    assert.notEqual(state.status, "unknown", text);
  }
});

test("what the table does not know is unknown, never end of life", () => {
  const wolfi = eolState(os('ID=wolfi\nVERSION_ID="20230201"\nPRETTY_NAME="Wolfi"\n'), table, DAY);
  assert.equal(wolfi.status, "unknown");
  assert.match(wolfi.message, /Wolfi is not in suture's EOL table/);
  const future = eolState(os('ID=debian\nVERSION_ID="15"\nPRETTY_NAME="Debian 15"\n'), table, DAY);
  assert.equal(future.status, "unknown");
  assert.match(future.message, /run suture eol --update/);
  assert.equal(eolState(undefined, table, DAY).status, "unknown");
});

test("a release with no announced end stays supported; Amazon Linux 2 ended in 2026-06", () => {
  assert.equal(eolState(os("ID=azurelinux\nVERSION_ID=3.0\n"), table, DAY).status, "supported");
  const al2 = eolState(os('ID="amzn"\nVERSION_ID="2"\n'), table, DAY);
  assert.equal(al2.status, "eol");
  assert.equal(al2.archiveMirror, undefined);
});

test("an updated table in the cache dir replaces the bundled products it holds; a damaged one is refused naming the fix", async () => {
  const dir = await mkdtemp(join(tmpdir(), "suture-eol-"));
  try {
    assert.deepEqual(await loadEolTable(dir), table);
    const file = eolCacheFile(dir);
    await mkdir(join(dir, "eol"));
    const debian = {
      ...table.products.debian!,
      releases: [{ name: "11", codename: "bullseye", eol: "2024-08-14", extended: "2027-08-31" }],
    };
    await writeFile(file, JSON.stringify({ source: "test", asOf: "2026-12-02", products: { debian } }));
    const updated = await loadEolTable(dir);
    assert.equal(updated.asOf, "2026-12-02");
    assert.deepEqual(updated.products.ubuntu, table.products.ubuntu);
    assert.equal(eolState(os("ID=debian\nVERSION_ID=11\n"), updated, DAY).status, "extended");

    await writeFile(file, "{not json");
    await assert.rejects(loadEolTable(dir), (e) => {
      assert.ok(isSutureError(e, "IO"));
      assert.match(e.message, /is not an EOL table suture wrote: remove it .* or run suture eol --update/);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
