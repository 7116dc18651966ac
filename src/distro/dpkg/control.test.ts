import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { parseOsRelease } from "../os-release.ts";
import { field, paragraphOf, parseControl, parseFields } from "./control.ts";
import { installedFromStatus } from "./database.ts";

test("control paragraphs with continuation lines", () => {
  const ps = parseControl(
    "Package: a\nDescription: short\n long line\n .\n more\n\nPackage: b\nversion: 1\n",
  );
  assert.equal(ps.length, 2);
  assert.equal(field(ps[0]!, "description"), "short\nlong line\n.\nmore");
  assert.equal(field(ps[1]!, "Version"), "1");
});

test("one reader, two views: fields as written for rewriting, a trimmed lookup for reading", () => {
  const stanza =
    "Package: libfoo\n# a comment\nconffiles:\n /etc/foo.conf 0123\n /etc/bar.conf 4567\nVersion:  1.0-1  \nversion: 2.0\n";
  const fields = parseFields(stanza);
  assert.deepEqual(fields, [
    { name: "Package", value: "libfoo" },
    { name: "conffiles", value: "\n /etc/foo.conf 0123\n /etc/bar.conf 4567" },
    { name: "Version", value: "1.0-1  " },
    { name: "version", value: "2.0" },
  ]);
  // The lookup: names case-insensitive (a later duplicate wins), values trimmed, continuations
  // without their leading blank; the same whether read from the fields or from the text.
  const lookup = paragraphOf(fields);
  assert.equal(field(lookup, "Conffiles"), "\n/etc/foo.conf 0123\n/etc/bar.conf 4567");
  assert.equal(field(lookup, "VERSION"), "2.0");
  assert.deepEqual(parseControl(stanza.replaceAll("\n", "\r\n")), [lookup]);
});

test("dpkg status: only installed packages count", () => {
  const text = [
    "Package: keep\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: amd64\nSource: keep-src (1.0-0)",
    "Package: gone\nStatus: deinstall ok config-files\nVersion: 2",
  ].join("\n\n");
  const pkgs = installedFromStatus(text);
  assert.deepEqual(
    pkgs.map((p) => [p.name, p.version, p.source]),
    [["keep", "1.0-1", "keep-src"]],
  );
});

test("the host's real dpkg status parses", () => {
  const pkgs = installedFromStatus(readFileSync("/var/lib/dpkg/status", "utf8"));
  assert.ok(pkgs.length > 50);
  assert.ok(pkgs.some((p) => p.name === "dpkg"));
});

test("os-release quoting", () => {
  const r = parseOsRelease(
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID_LIKE="rhel fedora"\n',
  );
  assert.equal(r.id, "debian");
  assert.equal(r.versionId, "12");
  assert.equal(r.versionCodename, "bookworm");
  assert.deepEqual(r.idLike, ["rhel", "fedora"]);
});
