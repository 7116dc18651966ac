import assert from "node:assert/strict";
import { test } from "node:test";
import { parseSourcesList } from "../../../../distro/dpkg/sources.ts";
import { isSutureError } from "../../../../errors/errors.ts";
import { refuseSourcesMarkedTrusted } from "./repositories.ts";

test("a source marked trusted=yes is refused in one line naming it; signed sources pass", () => {
  const signed = parseSourcesList("deb http://deb.debian.org/debian bookworm main\n", "sources.list");
  refuseSourcesMarkedTrusted(signed);
  const marked = parseSourcesList(
    "deb http://deb.debian.org/debian bookworm main\ndeb [trusted=yes] http://repo.example/debian stable main\n",
    "sources.list",
  );
  assert.throws(
    () => refuseSourcesMarkedTrusted(marked),
    (e) =>
      isSutureError(e, "UNTRUSTED") &&
      !e.message.includes("\n") &&
      e.message.includes('"http://repo.example/debian"') &&
      e.message.includes("--allow-insecure-repositories"),
  );
});
