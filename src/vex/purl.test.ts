import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { PackageURL } from "packageurl-js";
import { filterPlanByInstalled } from "../report/plan.ts";
import { readReport } from "../report/read.ts";
import { subcomponentPurl } from "./openvex.ts";
import { rpmPurl } from "./purl.ts";

const GOLDEN = join(import.meta.dirname, "../../../shared/fixtures/trivy-golden");
const NO_SHARED = "skipped: ../shared not present";

test("rpm purls are Trivy's: vendor namespace, version-release, epoch and arch and distro as qualifiers", () => {
  assert.equal(
    rpmPurl({
      family: "rocky",
      osVersion: "8.5",
      name: "openssl-libs",
      evr: "1:1.1.1k-4.el8",
      arch: "x86_64",
    }),
    "pkg:rpm/rocky/openssl-libs@1.1.1k-4.el8?arch=x86_64&distro=rocky-8.5&epoch=1",
  );
  // Epoch 0 is no qualifier, as rpm leaves it out of a version.
  assert.equal(
    rpmPurl({ family: "redhat", osVersion: "9.4", name: "bash", evr: "0:5.1.8-9.el9", arch: "aarch64" }),
    "pkg:rpm/redhat/bash@5.1.8-9.el9?arch=aarch64&distro=redhat-9.4",
  );
  assert.equal(
    rpmPurl({ family: "opensuse-leap", osVersion: "15.1", name: "libopenssl1_1", evr: "1.1.0i-lp151.8.3.1" }),
    "pkg:rpm/opensuse/libopenssl1_1@1.1.0i-lp151.8.3.1?distro=opensuse-leap-15.1",
  );
  assert.equal(
    rpmPurl({ family: "sles", osVersion: "15.6", name: "glibc", evr: "2.38-150600.14.8.2", arch: "x86_64" }),
    "pkg:rpm/suse/glibc@2.38-150600.14.8.2?arch=x86_64&distro=sles-15.6",
  );
  // Spaces and `+` in what a distribution reports are encoded as the purl specification says.
  assert.equal(
    rpmPurl({ family: "amazon", osVersion: "2 (Karoo)", name: "libstdc++", evr: "7.3.1-5.amzn2.0.2" }),
    "pkg:rpm/amazon/libstdc%2B%2B@7.3.1-5.amzn2.0.2?distro=amazon-2%20%28Karoo%29",
  );
});

test("without the scanner's purl, suture's is the one Trivy wrote for the same package (every rpm golden report)", async (t) => {
  if (!existsSync(GOLDEN)) return t.skip(NO_SHARED);
  let compared = 0;
  for (const file of readdirSync(GOLDEN).filter((f) => f.endsWith(".json") && !f.includes("sarif"))) {
    const plan = await readReport(join(GOLDEN, file));
    for (const u of plan.updates) {
      if (u.packageType !== "rpm" || !u.purl) continue;
      const trivy = PackageURL.fromString(u.purl);
      // The plan knows the image's architecture, not each package's: a noarch package is the one
      // place the two may differ, so the plan is given the package's own for the comparison.
      const arch = trivy.qualifiers?.arch;
      const own = subcomponentPurl(
        { ...plan, arch: arch === "x86_64" ? "amd64" : arch },
        { ...u, purl: undefined },
      );
      if (arch !== "x86_64" && arch !== undefined) continue;
      assert.equal(own, u.purl, `${file}: ${u.name}`);
      compared++;
    }
  }
  assert.ok(compared >= 10, `compared ${compared}`);
});

test("after filtering by the image's rpm database, the purl carries the image's version and epoch", async (t) => {
  if (!existsSync(GOLDEN)) return t.skip(NO_SHARED);
  const plan = filterPlanByInstalled(
    await readReport(join(GOLDEN, "rockylinux-8.json")),
    new Map([["openssl-libs", "1:1.1.1k-4.el8_4"]]),
  );
  const u = plan.updates.find((x) => x.name === "openssl-libs")!;
  assert.equal(
    subcomponentPurl(plan, u),
    "pkg:rpm/rocky/openssl-libs@1.1.1k-4.el8_4?arch=x86_64&distro=rocky-8.5&epoch=1",
  );
});
