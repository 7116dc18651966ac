import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { fuzzParameters, hostileText, PARSE_BUDGET_MS, withinBudget } from "../../../test/fuzz/fuzz.ts";
import { cveIdsIn } from "../changelog-ids.ts";
import { cvesBetween, parseDebChangelog } from "./changelog.ts";
import { isValidDebVersion } from "./version.ts";

// Property: a package's changelog is the packager's text (a hostile repository's, for all we know):
// parsing it and picking the entries of an upgrade never throws, stays within PARSE_BUDGET_MS, and
// yields only well-formed CVE IDs from entries with valid versions.

const CHANGELOG = `openssl (3.0.22-1~deb12u2) bookworm-security; urgency=high

  * Non-maintainer upload by the LTS Team.
  * CVE-2026-84782 ("DTLS Retransmits Handshake Messages From a Stale Buffer
    Offset")

 -- Arnaud Rebillout <arnaudr@debian.org>  Wed, 21 Oct 2026 16:54:24 +0700

openssl (3.0.20-1~deb12u2) bookworm-security; urgency=medium

  * CVE-2025-9230, CVE-2025-9231 (CMS, SM2)

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Tue, 30 Sep 2025 21:00:00 +0200
`;

test("fuzz: Debian changelogs parse, and an upgrade's CVEs come from valid entries only", () => {
  fc.assert(
    fc.property(hostileText([CHANGELOG]), (text) => {
      withinBudget(PARSE_BUDGET_MS, () => {
        const entries = parseDebChangelog(text);
        for (const e of entries) assert.ok(isValidDebVersion(e.version), e.version);
        const ids = cvesBetween(entries, "3.0.20-1~deb12u2", "3.0.22-1~deb12u2");
        for (const id of ids) assert.match(id, /^CVE-\d{4}-\d{4,7}$/);
        assert.deepEqual(cveIdsIn(ids.join(" ")), ids);
      });
    }),
    fuzzParameters(300),
  );
});
