/**
 * VEX without a scanner report (issue 18 part 4): update-all on the nginx lab image with `-o`
 * writes OpenVEX `fixed` statements whose CVEs are exactly those the updated packages' Debian
 * changelogs name between the installed and the new version. The test reads the changelogs on its
 * own: the .debs the archive served (the mirror's recording), taken apart with `dpkg-deb
 * --fsys-tarfile` and `tar`, the entries chosen by `dpkg-parsechangelog --since/--to`.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { archiveRecordDir, useArchiveMirror } from "../lab/archive-mirror.ts";
import { labImage } from "../lab/images.ts";
import { validateOpenVex } from "../lab/openvex-schema.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring(
  "root",
  "tool:mmdebstrap",
  "tool:umoci",
  "tool:dpkg-deb",
  "tool:dpkg-parsechangelog",
);

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const run = promisify(execFile);
const suture = join(import.meta.dirname, "../../bin/suture");
const schema = join(import.meta.dirname, "../../../shared/fixtures/openvex/openvex_json_schema.json");
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-vex-changelog-"));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

interface Update {
  name: string;
  from: string;
  to: string;
}

/** `updated NAME FROM → TO` lines of the CLI's output (new packages, `(new)`, claim nothing). */
function updatesIn(stdout: string): Update[] {
  return [...stdout.matchAll(/^updated (\S+) (\S+) → (\S+)$/gm)]
    .filter((m) => m[2] !== "(new)")
    .map((m) => ({ name: m[1]!, from: m[2]!, to: m[3]! }));
}

/** Every .deb the archive mirror recorded, by file name. */
async function recordedDebs(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const root = archiveRecordDir();
  for (const rel of await readdir(root, { recursive: true })) {
    if (rel.endsWith(".deb")) out.set(rel.slice(rel.lastIndexOf("/") + 1), join(root, rel));
  }
  return out;
}

/** The .deb of `name` at `version` (pool file names drop the epoch), any architecture. */
function debOf(debs: Map<string, string>, name: string, version: string): string {
  const v = version.replace(/^\d+:/, "");
  for (const arch of ["amd64", "all"]) {
    const file = debs.get(`${name}_${v}_${arch}.deb`);
    if (file) return file;
  }
  assert.fail(`the archive recording has no .deb of ${name} ${version}`);
}

/**
 * The changelog(s) of a .deb as files under `dir`: changelog.Debian.gz (following a doc directory
 * that is a symlink to a sibling package's, whose .deb is then read), plus a binNMU's
 * changelog.Debian.<arch>.gz; a native package's (no Debian revision) changelog.gz (policy 12.7).
 */
async function changelogFiles(
  debs: Map<string, string>,
  updates: readonly Update[],
  u: Update,
  dir: string,
): Promise<string[]> {
  const deb = debOf(debs, u.name, u.to);
  const listing = (await run("dpkg-deb", ["--contents", deb], { maxBuffer: 64 << 20 })).stdout;
  const docLink = new RegExp(
    `^l\\S+ \\S+ +\\d+ \\S+ \\S+ \\./usr/share/doc/${escapeRegExp(u.name)} -> (\\S+)$`,
    "m",
  ).exec(listing);
  if (docLink) {
    const sibling = updates.find((o) => o.name === docLink[1]);
    return sibling ? changelogFiles(debs, updates, sibling, dir) : [];
  }
  const files: string[] = [];
  const native = !u.to.includes("-");
  for (const m of listing.matchAll(
    /^-\S+ .*\.\/(usr\/share\/doc\/[^/\s]+\/changelog(?:\.Debian(?:\.[a-z0-9-]+)?)?\.gz)$/gm,
  )) {
    if (!native && !m[1]!.includes("changelog.Debian")) continue;
    if (!m[1]!.startsWith(`usr/share/doc/${u.name}/`)) continue;
    const out = join(dir, `${u.name}-${files.length}.changelog`);
    await run("sh", [
      "-c",
      `dpkg-deb --fsys-tarfile "$1" | tar -xO "./$2" | gzip -dc > "$3"`,
      "-",
      deb,
      m[1]!,
      out,
    ]);
    files.push(out);
  }
  return files;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The CVE IDs dpkg-parsechangelog's entries after `from` up to `to` mention. */
async function cvesFromChangelogs(files: readonly string[], from: string, to: string): Promise<string[]> {
  const ids = new Set<string>();
  for (const file of files) {
    const { stdout } = await run(
      "dpkg-parsechangelog",
      ["-l", file, "--since", from, "--to", to, "--show-field", "Changes"],
      { maxBuffer: 64 << 20 },
    ).catch((e: { stdout?: string; stderr?: string }) => {
      // dpkg-parsechangelog fails when no entry is in the range (e.g. a binNMU log older than `from`).
      if (/no entries|found no/i.test(e.stderr ?? "")) return { stdout: "" };
      throw e;
    });
    for (const m of stdout.matchAll(/\bCVE-\d{4}-\d{4,7}\b/g)) ids.add(m[0]);
  }
  return [...ids].sort();
}

/** Package name → CVE IDs, as the VEX's statements claim them (subcomponent purls carry the name). */
function cvesInVex(doc: {
  statements: { vulnerability: { name: string }; products: { subcomponents?: { "@id": string }[] }[] }[];
}): Map<string, string[]> {
  const out = new Map<string, Set<string>>();
  for (const s of doc.statements) {
    for (const p of s.products) {
      for (const sub of p.subcomponents ?? []) {
        const name = decodeURIComponent(/^pkg:deb\/[^/]+\/([^@]+)@/.exec(sub["@id"])![1]!);
        if (!out.has(name)) out.set(name, new Set());
        out.get(name)!.add(s.vulnerability.name);
      }
    }
  }
  return new Map([...out].map(([n, ids]) => [n, [...ids].sort()]));
}

for (const engine of ["native", "sandbox"] as const) {
  test(`update-all with -o (${engine} engine) writes the CVEs of the updated packages' Debian changelogs`, async () => {
    const lab = await labImage("bookwormNginx");
    const vexFile = join(work, `${engine}.vex.json`);
    const patch = (out: string, vex: string) =>
      run(
        suture,
        [
          "patch",
          "-i",
          lab.reference,
          "-t",
          engine,
          "--oci-dir",
          join(work, out),
          "--engine",
          engine,
          "--cache-dir",
          join(work, `cache-${engine}`),
          "-o",
          vex,
          // Two cores shared with other work: the default 5m is tight for 26 packages and their scripts.
          "--timeout",
          "30m",
        ],
        { env: { ...process.env, CI: "true" }, maxBuffer: 64 << 20 },
      );
    const { stdout } = await patch(`out-${engine}`, vexFile);
    const updates = updatesIn(stdout);
    assert.ok(updates.length > 0, stdout);
    assert.ok(existsSync(vexFile), `${vexFile} written:\n${stdout}`);
    const doc = JSON.parse(await readFile(vexFile, "utf8"));
    if (existsSync(schema)) {
      const v = validateOpenVex(doc, schema);
      assert.ok(v.valid, v.errors.join("\n"));
    }
    for (const s of doc.statements) {
      assert.equal(s.status, "fixed");
      assert.match(s.status_notes, /^debian-changelog: /);
    }

    const debs = await recordedDebs();
    const dir = await mkdtemp(join(work, "changelogs-"));
    const expected = new Map<string, string[]>();
    for (const u of updates) {
      const ids = await cvesFromChangelogs(await changelogFiles(debs, updates, u, dir), u.from, u.to);
      if (ids.length) expected.set(u.name, ids);
    }
    assert.ok(expected.size > 0, "bookworm's updates of the nginx lab image fix CVEs their changelogs name");
    const claimed = cvesInVex(doc);
    assert.deepEqual(
      Object.fromEntries([...claimed].sort(([a], [b]) => a.localeCompare(b))),
      Object.fromEntries([...expected].sort(([a], [b]) => a.localeCompare(b))),
    );
    if (engine === "native") {
      // A second patch of the same base reuses the layer (result-cache.ts) and still says what it fixes.
      const again = join(work, "again.vex.json");
      const second = await patch("out-again", again);
      assert.match(second.stderr, /reusing the patch layer/);
      // (The patched manifest's digest differs: its history has the time of each patch.)
      const againDoc = JSON.parse(await readFile(again, "utf8"));
      assert.deepEqual(cvesInVex(againDoc), claimed);
      assert.deepEqual(
        againDoc.statements.map((s: { status_notes: string }) => s.status_notes),
        doc.statements.map((s: { status_notes: string }) => s.status_notes),
      );
    }
    // The subcomponents name the installed (vulnerable) versions, as a scanner's findings do.
    for (const s of doc.statements)
      for (const p of s.products)
        for (const sub of p.subcomponents ?? []) {
          const [, name, version] = /^pkg:deb\/debian\/([^@]+)@([^?]+)\?/.exec(sub["@id"])!;
          const u = updates.find((x) => x.name === decodeURIComponent(name!));
          assert.equal(decodeURIComponent(version!), u?.from, sub["@id"]);
        }
  });
}
