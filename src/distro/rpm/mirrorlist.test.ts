import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../../errors/errors.ts";
import { parseMetalink, parseMirrorlist } from "./mirrorlist.ts";

test("a mirrorlist: its http(s) base URLs in order, comments skipped; anything else refused in one line", () => {
  assert.deepEqual(
    parseMirrorlist(
      "# mirrors for BaseOS 9 x86_64\nhttps://a.example/rocky/9/BaseOS/x86_64/os/\n\nhttp://b.example/BaseOS\n",
      "m",
    ),
    ["https://a.example/rocky/9/BaseOS/x86_64/os", "http://b.example/BaseOS"],
  );
  assert.throws(
    () => parseMirrorlist("file:///etc/passwd\n", "the mirrorlist of repository x"),
    (e) => isSutureError(e, "UNTRUSTED") && /file:\/\/\/etc\/passwd.*not an http\(s\) URL/.test(e.message),
  );
  assert.throws(
    () => parseMirrorlist("# none\n", "m"),
    (e) => isSutureError(e, "NOT_FOUND"),
  );
});

test("a metalink: repomd.xml's mirrors by preference (rsync and other files ignored) and the hashes it may have", () => {
  const sha = "a".repeat(64);
  const old = "b".repeat(64);
  const xml = `<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/" xmlns:mm0="http://fedorahosted.org/mirrormanager">
 <files>
  <file name="other.xml"><resources><url protocol="https" preference="100">https://z.example/other.xml</url></resources></file>
  <file name="repomd.xml">
   <mm0:alternates><mm0:alternate><verification><hash type="sha256">${old}</hash></verification></mm0:alternate></mm0:alternates>
   <verification><hash type="md5">0123</hash><hash type="sha256">${sha.toUpperCase()}</hash></verification>
   <resources maxconnections="1">
    <url protocol="https" type="https" location="DE" preference="90">https://b.example/fedora/40/x86_64/os/repodata/repomd.xml</url>
    <url protocol="rsync" type="rsync" location="US" preference="99">rsync://r.example/fedora/40/repodata/repomd.xml</url>
    <url protocol="https" type="https" location="US" preference="100">https://a.example/fedora/40/x86_64/os/repodata/repomd.xml</url>
   </resources>
  </file>
 </files>
</metalink>`;
  const m = parseMetalink(xml, "metalink");
  assert.deepEqual(m.baseUrls, [
    "https://a.example/fedora/40/x86_64/os",
    "https://b.example/fedora/40/x86_64/os",
  ]);
  assert.deepEqual(m.hashes.map((h) => h.value).sort(), [sha, old].sort());
  assert.throws(
    () => parseMetalink('<!DOCTYPE x [<!ENTITY a "b">]><metalink/>', "metalink"),
    (e) => isSutureError(e, "UNTRUSTED") && !e.message.includes("\n"),
  );
  assert.throws(
    () => parseMetalink("<metalink><files>", "metalink"),
    (e) => isSutureError(e),
  );
  assert.throws(
    () => parseMetalink("<metalink/>", "metalink"),
    (e) => isSutureError(e, "NOT_FOUND"),
  );
});
