import assert from "node:assert/strict";
import { test } from "node:test";
import { chooseVersion, parseAptPolicy } from "./apt.ts";

// Real `LC_ALL=C apt-cache policy libssl3 nginx-light` output from a bookworm host (2026-11).
const POLICY = `libssl3:
  Installed: 3.0.19-1~deb12u2
  Candidate: 3.0.22-1~deb12u2
  Version table:
     3.0.22-1~deb12u2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
     3.0.20-1~deb12u2 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
 *** 3.0.19-1~deb12u2 100
        100 /var/lib/dpkg/status
     3.0.17-1~deb12u2 500
        500 http://deb.debian.org/debian bookworm-updates/main amd64 Packages
nginx-light:
  Installed: (none)
  Candidate: (none)
  Version table:
`;

test("apt-cache policy: installed, candidate and every version apt offers", () => {
  const p = parseAptPolicy(POLICY);
  assert.deepEqual(p.get("libssl3"), {
    installed: "3.0.19-1~deb12u2",
    candidate: "3.0.22-1~deb12u2",
    versions: ["3.0.22-1~deb12u2", "3.0.20-1~deb12u2", "3.0.19-1~deb12u2", "3.0.17-1~deb12u2"],
  });
  assert.deepEqual(p.get("nginx-light"), { installed: undefined, candidate: "(none)", versions: [] });
});

test("the newest version at or above the fix is chosen", () => {
  const p = parseAptPolicy(POLICY).get("libssl3")!;
  assert.deepEqual(chooseVersion({ name: "libssl3", fixedVersion: "3.0.20-1~deb12u1" }, p), {
    version: "3.0.22-1~deb12u2",
  });
  assert.equal(chooseVersion({ name: "libssl3", fixedVersion: "3.0.23-1" }, p), undefined);
});

test("an unasked major-version jump is refused in favour of the report's fix line (copa#1441)", () => {
  const policy = {
    installed: "1.1.1n-0+deb11u4",
    candidate: "3.0.22-1",
    versions: ["3.0.22-1", "1.1.1w-0+deb11u2"],
  };
  const choice = chooseVersion({ name: "libssl", fixedVersion: "1.1.1w-0+deb11u1" }, policy);
  assert.equal(choice?.version, "1.1.1w-0+deb11u2");
  assert.match(choice?.note ?? "", /new major version/);
  // Nothing on the fix's line: refused rather than jumping.
  assert.equal(
    chooseVersion(
      { name: "libssl", fixedVersion: "1.1.1w-0+deb11u1" },
      { ...policy, versions: ["3.0.22-1"] },
    ),
    undefined,
  );
  // The report itself asks for the new major: allowed.
  assert.equal(chooseVersion({ name: "libssl", fixedVersion: "3.0.1-1" }, policy)?.version, "3.0.22-1");
});
