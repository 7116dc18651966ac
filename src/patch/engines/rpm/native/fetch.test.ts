import assert from "node:assert/strict";
import { test } from "node:test";
import { isSutureError } from "../../../../errors/errors.ts";
import { repoFileUrl } from "./fetch.ts";

test("a repository file's URL stays under the repository's base URL", () => {
  assert.equal(
    repoFileUrl("https://cdn.example/rocky/9/BaseOS/x86_64/os/", "Packages/j/jq-1.6-1.el9.x86_64.rpm"),
    "https://cdn.example/rocky/9/BaseOS/x86_64/os/Packages/j/jq-1.6-1.el9.x86_64.rpm",
  );
  assert.equal(
    repoFileUrl("http://127.0.0.1:8080/lab", "repodata/repomd.xml"),
    "http://127.0.0.1:8080/lab/repodata/repomd.xml",
  );
  // The readers refuse such hrefs already; the URL check is the last word.
  for (const href of ["../../etc/passwd", "%2e%2e/%2e%2e/x", "Packages/../../../x"])
    assert.throws(
      () => repoFileUrl("https://cdn.example/repo/os", href),
      (e) => isSutureError(e, "UNTRUSTED") && /outside it/.test(e.message) && !e.message.includes("\n"),
      href,
    );
});
