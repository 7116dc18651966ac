import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { requiring } from "../../../test/lab/requirements.ts";
import { buildRpm } from "../../../test/lab/rpm.ts";
import { type RpmChangelogEntry, rpmChangelog, rpmCvesSince } from "./changelog.ts";
import { readSqlitePackages } from "./database/sqlite.ts";
import { parseRpmHeader, RpmTag } from "./header.ts";
import { openRpm } from "./package.ts";

const { after, test } = await requiring("tool:rpmbuild", "tool:rpm");

const run = promisify(execFile);
const work = mkdtempSync(join(tmpdir(), "suture-rpm-changelog-"));
after(() => rmSync(work, { recursive: true, force: true }));
const MARINER = join(import.meta.dirname, "../../../../shared/fixtures/rpmdb/cbl-mariner-2.0/rpmdb.sqlite");

/** A package whose %changelog is `entries` (newest first, as a spec lists them). */
function withChangelog(release: string, entries: string[]) {
  return buildRpm(work, {
    name: "libfoo",
    version: "1.0",
    release,
    files: [{ path: "/usr/share/libfoo/data", content: release }],
    sections: ["%changelog", ...entries],
  });
}

const R1 = [
  "* Mon Jan 06 2025 Jane Packager <jane@example.org> - 1.0-1",
  "- Initial build; fixes CVE-2024-0001",
];
const R2 = [
  "* Tue Mar 04 2025 Jane Packager <jane@example.org> - 1.0-2",
  "- Backport fixes for CVE-2025-0003 and CVE-2025-0002",
  "- Resolves: RHEL-1234 (not a CVE)",
  "",
  ...R1,
];

test("the %changelog of a package as rpm -q --changelog lists it, and the CVEs newer than the installed package's", async () => {
  const old = await withChangelog("1", R1);
  const updated = await withChangelog("2", R2);
  const entries = rpmChangelog((await openRpm(updated)).header);
  // rpm's own reading of the same tags.
  const { stdout } = await run("rpm", ["-qp", "--qf", "[%{CHANGELOGTIME}\t%{CHANGELOGNAME}\n]", updated]);
  assert.deepEqual(
    entries.map((e) => `${e.time}\t${e.name}`),
    stdout.trim().split("\n"),
  );
  assert.match(entries[0]!.text, /CVE-2025-0003/);
  const installed = rpmChangelog((await openRpm(old)).header);
  assert.deepEqual(rpmCvesSince(entries, installed), ["CVE-2025-0002", "CVE-2025-0003"]);
  // The same package again brings nothing; a package new to the image fixes nothing in it.
  assert.deepEqual(rpmCvesSince(entries, entries), []);
  assert.deepEqual(rpmCvesSince(entries, []), []);
});

test("two uploads on one day: the entry the installed package does not have counts", () => {
  const day = 1_741_046_400;
  const installed: RpmChangelogEntry[] = [{ time: day, name: "J <j@x> - 1.0-2", text: "- CVE-2025-0002" }];
  const updated: RpmChangelogEntry[] = [
    { time: day, name: "J <j@x> - 1.0-3", text: "- CVE-2025-0004" },
    ...installed,
    { time: day - 86_400, name: "J <j@x> - 1.0-1", text: "- CVE-2024-0001" },
  ];
  assert.deepEqual(rpmCvesSince(updated, installed), ["CVE-2025-0004"]);
});

test("installed headers of a real rpm database (CBL-Mariner 2.0) carry their changelogs", async (t) => {
  if (!existsSync(MARINER)) return t.skip("../shared not present");
  const bytes = await readFile(MARINER);
  let withEntries = 0;
  for (const record of readSqlitePackages(bytes, undefined, "rpmdb")) {
    const header = parseRpmHeader(record.blob, "rpmdb");
    const entries = rpmChangelog(header);
    if (entries.length === 0) continue;
    withEntries++;
    if (header.string(RpmTag.NAME) === "openssl-libs") {
      const { stdout } = await run("rpm", [
        "-q",
        "--dbpath",
        join(MARINER, ".."),
        "--qf",
        "[%{CHANGELOGTIME}\n]",
        "openssl-libs",
      ]);
      assert.deepEqual(
        entries.map((e) => String(e.time)),
        stdout.trim().split("\n"),
      );
    }
  }
  assert.ok(withEntries > 10, `${withEntries} packages with changelogs`);
});
