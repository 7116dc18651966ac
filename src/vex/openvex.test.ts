import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { PackageURL } from "packageurl-js";
import { validateOpenVex } from "../../test/lab/openvex-schema.ts";
import { isSutureError } from "../errors/errors.ts";
import { assemblePlan, filterPlanByInstalled, splitFixedVersions, type UpdatePlan } from "../report/plan.ts";
import { readReport } from "../report/read.ts";
import { buildOpenVex, canonicalJson, subcomponentPurl, type VexSubject, writeOpenVex } from "./openvex.ts";
import { formatPurl, ociPurl } from "./purl.ts";
import { OpenVexDocumentSchema } from "./schema.ts";

const FIXTURES = join(import.meta.dirname, "../../../shared/fixtures");
const SCHEMA = join(FIXTURES, "openvex/openvex_json_schema.json");
const haveShared = existsSync(SCHEMA);
const NO_SHARED = "skipped: ../shared not present";
const scratch = mkdtempSync(join(tmpdir(), "suture-vex-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

const DIGEST_A = `sha256:${"a1".repeat(32)}`;
const DIGEST_B = `sha256:${"b2".repeat(32)}`;
const INDEX = `sha256:${"c3".repeat(32)}`;
const WHEN = new Date("2025-01-02T03:04:05.678Z");

/** A plan as a copa manifest (no scanner purls) of one package format's image turns into. */
function manifestPlan(
  os: { family: string; version: string },
  packageType: "deb" | "apk",
  platform: { arch: string; variant?: string },
  rows: [name: string, installed: string, fixed: string, id: string][],
): UpdatePlan {
  return assemblePlan(
    {
      source: { format: "copa-v1alpha2", file: "r.json" },
      os,
      arch: platform.arch,
      ...(platform.variant ? { variant: platform.variant } : {}),
    },
    rows.map(([name, installed, fixed, id]) => ({
      name,
      installedVersion: installed,
      fixedVersions: splitFixedVersions(fixed),
      vulnerabilityId: id,
      type: os.family,
      packageType,
    })),
    [],
  );
}

function debianPlan(arch = "amd64", variant?: string): UpdatePlan {
  return manifestPlan({ family: "debian", version: "12" }, "deb", { arch, variant }, [
    ["openssl", "3.0.11-1~deb12u2", "3.0.13-1~deb12u1", "CVE-2024-0727"],
    ["libssl3", "3.0.11-1~deb12u2", "3.0.13-1~deb12u1", "CVE-2024-0727"],
    ["libssl3", "3.0.11-1~deb12u2", "3.0.11-1~deb12u3", "GHSA-2c2c-xxxx-xxxx"],
    ["zlib1g", "1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1", "CVE-2023-45853"],
    ["perl", "5.36.0-7", "5.36.0-7+deb12u1", "DSA-5580-1"],
  ]);
}

const all = (plan: UpdatePlan) => new Set(plan.updates.map((u) => u.name));

/** The platforms of a patched index (plan, manifest digest, architecture), all fixed, each also in the index. */
function indexSubjects(repository: string, platforms: [UpdatePlan, string, string][]): VexSubject[] {
  const index = { digest: INDEX, repository };
  return platforms.map(([plan, digest, architecture]) => ({
    plan,
    patched: all(plan),
    products: [{ digest, repository, architecture }, index],
  }));
}

function assertSchemaValid(doc: unknown): void {
  const r = validateOpenVex(doc, SCHEMA);
  assert.deepEqual(r.errors, []);
  assert.equal(r.valid, true);
}

test("an OpenVEX 0.2.0 document with one fixed statement per vulnerability", (t) => {
  const plan = debianPlan();
  const doc = buildOpenVex(
    [{ plan, patched: all(plan), products: [{ digest: DIGEST_A, repository: "docker.io/library/nginx" }] }],
    {
      timestamp: WHEN,
      author: "Jane Doe",
    },
  )!;
  assert.equal(doc["@context"], "https://openvex.dev/ns/v0.2.0");
  assert.equal(doc.author, "Jane Doe");
  assert.equal(doc.timestamp, "2025-01-02T03:04:05.678Z");
  assert.equal(doc.version, 1);
  assert.equal(doc.tooling, "suture");
  const { "@id": id, ...content } = doc;
  assert.equal(
    id,
    `https://openvex.dev/docs/public/vex-${createHash("sha256").update(canonicalJson(content)).digest("hex")}`,
  );
  assert.deepEqual(
    doc.statements.map((s) => s.vulnerability),
    [
      { "@id": "https://nvd.nist.gov/vuln/detail/CVE-2024-0727", name: "CVE-2024-0727" },
      { "@id": "https://github.com/advisories/GHSA-2c2c-xxxx-xxxx", name: "GHSA-2c2c-xxxx-xxxx" },
      { name: "DSA-5580-1" },
      { "@id": "https://nvd.nist.gov/vuln/detail/CVE-2023-45853", name: "CVE-2023-45853" },
    ],
  );
  assert.ok(doc.statements.every((s) => s.status === "fixed"));
  const product = "pkg:oci/nginx@sha256:" + "a1".repeat(32) + "?repository_url=docker.io%2Flibrary%2Fnginx";
  assert.deepEqual(doc.statements[0]!.products, [
    {
      "@id": product,
      subcomponents: [
        { "@id": "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12" },
        { "@id": "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12" },
      ],
    },
  ]);
  // Epochs are part of the version; a colon is never percent-encoded in a purl (ECMA-427).
  assert.deepEqual(doc.statements[3]!.products[0]!.subcomponents, [
    { "@id": "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12" },
  ]);
  assert.deepEqual(OpenVexDocumentSchema.parse(doc), doc);
  if (!haveShared) return t.skip(NO_SHARED);
  assertSchemaValid(doc);
});

test("author from SUTURE_VEX_AUTHOR, else suture; the @id follows the content", () => {
  const plan = debianPlan();
  const subjects = [
    { plan, patched: all(plan), products: [{ digest: DIGEST_A, repository: "r.example/app" }] },
  ];
  const saved = process.env.SUTURE_VEX_AUTHOR;
  try {
    delete process.env.SUTURE_VEX_AUTHOR;
    assert.equal(buildOpenVex(subjects, { timestamp: WHEN })!.author, "suture");
    process.env.SUTURE_VEX_AUTHOR = "Security Team <sec@example.com>";
    assert.equal(buildOpenVex(subjects, { timestamp: WHEN })!.author, "Security Team <sec@example.com>");
  } finally {
    if (saved === undefined) delete process.env.SUTURE_VEX_AUTHOR;
    else process.env.SUTURE_VEX_AUTHOR = saved;
  }
  const a = buildOpenVex(subjects, { timestamp: WHEN, author: "x" })!;
  assert.equal(buildOpenVex(subjects, { timestamp: WHEN, author: "x" })!["@id"], a["@id"]);
  assert.notEqual(
    buildOpenVex(subjects, { timestamp: new Date(WHEN.getTime() + 1), author: "x" })!["@id"],
    a["@id"],
  );
});

test("failed packages claim nothing; no claims means no document", (t) => {
  const plan = debianPlan();
  const products = [{ digest: DIGEST_A, repository: "docker.io/library/debian" }];
  // openssl failed: CVE-2024-0727 is still claimed for libssl3 only; perl failed: DSA gone.
  const doc = buildOpenVex([{ plan, patched: new Set(["libssl3", "zlib1g"]), products }], {
    timestamp: WHEN,
  })!;
  assert.deepEqual(
    doc.statements.map((s) => s.vulnerability.name),
    ["CVE-2024-0727", "GHSA-2c2c-xxxx-xxxx", "CVE-2023-45853"],
  );
  assert.deepEqual(
    doc.statements[0]!.products[0]!.subcomponents!.map((s) => s["@id"]),
    ["pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12"],
  );
  assert.equal(buildOpenVex([{ plan, patched: new Set(), products }]), null);
  assert.equal(buildOpenVex([{ plan, patched: new Set(["not-in-plan"]), products }]), null);
  assert.equal(buildOpenVex([]), null);
  if (!haveShared) return t.skip(NO_SHARED);
  assertSchemaValid(doc);
});

test("multi-platform: per-platform products plus the index, with native arch names", (t) => {
  const amd64 = debianPlan("amd64");
  const armv7 = debianPlan("arm", "v7");
  // The arm image had no perl update.
  armv7.updates = armv7.updates.filter((u) => u.name !== "perl");
  const subjects = indexSubjects("ghcr.io/acme/web", [
    [amd64, DIGEST_A, "amd64"],
    [armv7, DIGEST_B, "arm"],
  ]);
  const doc = buildOpenVex(subjects, { timestamp: WHEN })!;
  const cve = doc.statements.find((s) => s.vulnerability.name === "CVE-2023-45853")!;
  assert.deepEqual(
    cve.products.map((p) => [p["@id"], p.subcomponents!.map((s) => s["@id"])]),
    [
      [
        `pkg:oci/web@sha256:${"a1".repeat(32)}?arch=amd64&repository_url=ghcr.io%2Facme%2Fweb`,
        ["pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12"],
      ],
      [
        `pkg:oci/web@sha256:${"c3".repeat(32)}?repository_url=ghcr.io%2Facme%2Fweb`,
        [
          "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12",
          "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=armhf&distro=debian-12",
        ],
      ],
      [
        `pkg:oci/web@sha256:${"b2".repeat(32)}?arch=arm&repository_url=ghcr.io%2Facme%2Fweb`,
        ["pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=armhf&distro=debian-12"],
      ],
    ],
  );
  const dsa = doc.statements.find((s) => s.vulnerability.name === "DSA-5580-1")!;
  assert.equal(dsa.products.length, 2, "perl was fixed on amd64 only: its platform and the index");
  if (!haveShared) return t.skip(NO_SHARED);
  assertSchemaValid(doc);
});

test("real reports (deb, apk, rpm, Grype) give schema-valid documents with the scanner's purls", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  const product = [{ digest: DIGEST_A, repository: "registry.example.com:5000/team/app" }];
  const expectations: [string, string][] = [
    ["trivy-golden/debian-buster.json", "pkg:deb/debian/libidn2-0@2.0.5-1?arch=amd64&distro=debian-10.1"],
    ["trivy-golden/alpine-39.json", "pkg:apk/alpine/libssl1.1@1.1.1b-r1?arch=x86_64&distro=3.9.4"],
    [
      "trivy-golden/centos-7.json",
      "pkg:rpm/centos/openssl-libs@1.0.2k-16.el7?arch=x86_64&distro=centos-7.6.1810&epoch=1",
    ],
    [
      "trivy-golden/amazon-2.json",
      "pkg:rpm/amazon/curl@7.61.1-9.amzn2.0.1?arch=x86_64&distro=amazon-2%20%28Karoo%29",
    ],
    [
      "trivy-golden/opensuse-leap-151.json",
      "pkg:rpm/opensuse/libopenssl1_1@1.1.0i-lp151.8.3.1?arch=x86_64&distro=opensuse-leap-15.1",
    ],
    ["grype/json-image.json", "pkg:rpm/centos/package-1@1.1.1?distro=centos-8.0"],
    // No purl in this report: built from the plan, with apk's name for amd64.
    [
      "copa-reports/report-trivy_node_valid.json",
      "pkg:apk/alpine/protobuf-c@1.3.3-r1?arch=x86_64&distro=alpine-3.16.0",
    ],
  ];
  for (const [file, subcomponent] of expectations) {
    const plan = await readReport(join(FIXTURES, file));
    const doc = buildOpenVex([{ plan, patched: all(plan), products: product }], { timestamp: WHEN });
    assert.ok(doc, file);
    const ids = doc.statements.flatMap((s) =>
      s.products.flatMap((p) => p.subcomponents!.map((c) => c["@id"])),
    );
    assert.ok(ids.includes(subcomponent), `${file}: ${subcomponent} not in ${ids.join(" ")}`);
    assert.equal(
      doc.statements[0]!.products[0]!["@id"],
      `pkg:oci/app@sha256:${"a1".repeat(32)}?repository_url=registry.example.com:5000%2Fteam%2Fapp`,
    );
    assertSchemaValid(doc);
  }
  // After filtering by what is installed, the purl carries the image's version, not the report's.
  const plan = filterPlanByInstalled(
    await readReport(join(FIXTURES, "trivy-golden/debian-buster.json")),
    new Map([["libidn2-0", "2.0.5-1+b1"]]),
  );
  const doc = buildOpenVex([{ plan, patched: all(plan), products: product }], { timestamp: WHEN })!;
  assert.equal(
    doc.statements[0]!.products[0]!.subcomponents![0]!["@id"],
    "pkg:deb/debian/libidn2-0@2.0.5-1%2Bb1?arch=amd64&distro=debian-10.1",
  );
  assertSchemaValid(doc);
});

test("the official schema rejects copa's shape (copa#1651) and the runtime schema agrees", (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  const plan = debianPlan();
  const good = buildOpenVex(
    [{ plan, patched: all(plan), products: [{ digest: DIGEST_A, repository: "docker.io/library/nginx" }] }],
    {
      timestamp: WHEN,
    },
  )!;
  type Loose = Record<string, unknown>;
  type MutableDoc = Loose & {
    statements: (Loose & { vulnerability: Loose; products: (Loose & { subcomponents: unknown[] })[] })[];
  };
  const mutations: [string, (d: MutableDoc) => void][] = [
    [
      "copa's vulnerability without name",
      (d) => (d.statements[0].vulnerability = { "@id": "CVE-2024-0727" }),
    ],
    ["bare ID as @id", (d) => (d.statements[0].vulnerability["@id"] = "CVE-2024-0727")],
    ["no statements", (d) => (d.statements = [])],
    ["unknown status", (d) => (d.statements[0].status = "patched")],
    ["extra property", (d) => (d.statements[0].patchedBy = "suture")],
    ["timestamp without zone", (d) => (d.timestamp = "2025-01-02T03:04:05")],
    ["version 0", (d) => (d.version = 0)],
    [
      "duplicate subcomponents",
      (d) => d.statements[0].products[0].subcomponents.push(d.statements[0].products[0].subcomponents[0]),
    ],
    ["missing author", (d) => delete d.author],
    ["product id with a space", (d) => (d.statements[0].products[0]["@id"] = "pkg:oci/a b")],
  ];
  for (const [what, mutate] of mutations) {
    const doc = structuredClone(good) as unknown as MutableDoc;
    mutate(doc);
    assert.equal(validateOpenVex(doc, SCHEMA).valid, false, `official schema accepts ${what}`);
    assert.equal(OpenVexDocumentSchema.safeParse(doc).success, false, `runtime schema accepts ${what}`);
  }
});

test("purls follow the purl spec's canonical form", () => {
  assert.equal(
    ociPurl({
      repository: "docker.io/library/Debian",
      digest: "sha256:244fd47e07d10",
      architecture: "amd64",
    }),
    "pkg:oci/debian@sha256:244fd47e07d10?arch=amd64&repository_url=docker.io%2Flibrary%2FDebian",
  );
  assert.equal(
    formatPurl({
      type: "deb",
      namespace: "debian",
      name: "curl",
      version: "7.50.3-1",
      qualifiers: { distro: "jessie", arch: "i386", empty: "" },
    }),
    "pkg:deb/debian/curl@7.50.3-1?arch=i386&distro=jessie",
  );
  assert.equal(
    formatPurl({ type: "rpm", namespace: "fedora", name: "c++ lib", version: "1.0+git" }),
    "pkg:rpm/fedora/c%2B%2B%20lib@1.0%2Bgit",
  );
  // The purl specification's own test vectors (purl-spec tests/types/deb-test.json, oci-test.json):
  // a colon is never encoded, `+` always is, and `/` inside a qualifier value is data.
  assert.equal(
    formatPurl({
      type: "deb",
      namespace: "debian",
      name: "attr",
      version: "1:2.4.47-2+b1",
      qualifiers: { arch: "amd64" },
    }),
    "pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64",
  );
  assert.equal(
    formatPurl({
      type: "oci",
      name: "static",
      version: "sha256:244fd47e07d10",
      qualifiers: { repository_url: "gcr.io/distroless/static", tag: "latest" },
    }),
    "pkg:oci/static@sha256:244fd47e07d10?repository_url=gcr.io%2Fdistroless%2Fstatic&tag=latest",
  );
  // Everything outside letters, digits and `.-_~` is percent-encoded, `%` included; deb names
  // are lower-cased (the deb type is case-insensitive); the result parses back to the same parts.
  const odd = formatPurl({
    type: "deb",
    namespace: "debian",
    name: "Odd!(pkg)*'",
    version: "1.0%7E",
    qualifiers: { distro: "debian-12 (local)", repository_url: "mirror.example:8080/debian" },
  });
  assert.equal(
    odd,
    "pkg:deb/debian/odd%21%28pkg%29%2A%27@1.0%257E?distro=debian-12%20%28local%29&repository_url=mirror.example:8080%2Fdebian",
  );
  const parsed = PackageURL.fromString(odd);
  assert.deepEqual(
    [parsed.name, parsed.version, { ...parsed.qualifiers }],
    ["odd!(pkg)*'", "1.0%7E", { distro: "debian-12 (local)", repository_url: "mirror.example:8080/debian" }],
  );
  // A scanner's purl is used as it is only when it parses and is of the package's type.
  const plan = debianPlan();
  const openssl = plan.updates.find((u) => u.name === "openssl")!;
  const built = "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12";
  assert.equal(subcomponentPurl(plan, openssl), built);
  for (const [purl, expected] of [
    ["pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12.4", undefined],
    ["pkg:npm/openssl@3.0.11", built],
    ["pkg:deb", built],
    ["deb:debian/openssl@3.0.11", built],
    ["pkg:deb/debian/openssl@3.0.11 1", built],
  ] as const)
    assert.equal(subcomponentPurl(plan, { ...openssl, purl }), expected ?? purl, purl);
  assert.throws(
    () => formatPurl({ type: "deb", namespace: "debian", name: "" }),
    (e) => isSutureError(e, "INTERNAL"),
  );
  assert.throws(
    () => ociPurl({ repository: "x/y", digest: "latest" }),
    (e) => isSutureError(e, "INTERNAL"),
  );
});

test("writeOpenVex: atomic replace, mode 0644, no temporary files left", async () => {
  const plan = debianPlan();
  const doc = buildOpenVex(
    [{ plan, patched: all(plan), products: [{ digest: DIGEST_A, repository: "docker.io/library/nginx" }] }],
    {
      timestamp: WHEN,
    },
  )!;
  const dir = mkdtempSync(join(scratch, "out-"));
  const path = join(dir, "vex.json");
  writeFileSync(path, "old contents", { mode: 0o600 });
  const oldUmask = process.umask(0o077);
  try {
    await writeOpenVex(path, doc);
  } finally {
    process.umask(oldUmask);
  }
  assert.deepEqual(JSON.parse(readFileSync(path, "utf8")), doc);
  assert.ok(readFileSync(path, "utf8").endsWith("}\n"));
  assert.equal(statSync(path).mode & 0o777, 0o644);
  assert.deepEqual(readdirSync(dir), ["vex.json"]);
  await assert.rejects(
    writeOpenVex(join(dir, "no-such-dir", "vex.json"), doc),
    (e) => isSutureError(e, "IO") && /cannot write VEX document/.test(e.message),
  );
  assert.deepEqual(readdirSync(dir), ["vex.json"]);
});

function apkPlan(family: string, version: string, arch: string, variant?: string): UpdatePlan {
  return manifestPlan({ family, version }, "apk", { arch, variant }, [
    ["musl", "1.2.5-r0", "1.2.5-r3", "CVE-2025-26519"],
    ["musl-utils", "1.2.5-r0", "1.2.5-r3", "CVE-2025-26519"],
    ["libcrypto3", "3.3.2-r0", "3.3.2-r1", "CVE-2024-9143"],
    ["busybox", "1.36.1_git20240101-r29", "1.36.1_git20240101-r32", "CVE-2023-42363"],
  ]);
}

test("apk purls: pkg:apk/<family>/NAME@VERSION with apk's arch names and distro=<family>-<release>", (t) => {
  const wolfi = apkPlan("wolfi", "20230201", "amd64");
  const doc = buildOpenVex(
    [
      ...indexSubjects("ghcr.io/acme/alpine-app", [
        [apkPlan("alpine", "3.20.3", "amd64"), DIGEST_A, "amd64"],
        [apkPlan("alpine", "3.20.3", "arm64", "v8"), DIGEST_B, "arm64"],
      ]),
      { plan: wolfi, patched: all(wolfi), products: [{ digest: DIGEST_A, repository: "cgr.dev/acme/app" }] },
    ],
    { timestamp: WHEN },
  )!;
  const musl = doc.statements.find((s) => s.vulnerability.name === "CVE-2025-26519")!;
  const onIndex = musl.products.find((p) => p["@id"].includes("c3c3"))!;
  assert.deepEqual(
    onIndex.subcomponents!.map((s) => s["@id"]),
    [
      "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.3",
      "pkg:apk/alpine/musl-utils@1.2.5-r0?arch=x86_64&distro=alpine-3.20.3",
      "pkg:apk/alpine/musl@1.2.5-r0?arch=aarch64&distro=alpine-3.20.3",
      "pkg:apk/alpine/musl-utils@1.2.5-r0?arch=aarch64&distro=alpine-3.20.3",
    ],
  );
  const busybox = doc.statements.find((s) => s.vulnerability.name === "CVE-2023-42363")!;
  assert.ok(
    busybox.products.some((p) =>
      p.subcomponents!.some(
        (s) => s["@id"] === "pkg:apk/wolfi/busybox@1.36.1_git20240101-r29?arch=x86_64&distro=wolfi-20230201",
      ),
    ),
  );
  // What a purl reader makes of one: apk type, the family as namespace, apk's arch.
  const parsed = PackageURL.fromString(onIndex.subcomponents![2]!["@id"]);
  assert.deepEqual(
    [parsed.type, parsed.namespace, parsed.name, parsed.version, { ...parsed.qualifiers }],
    ["apk", "alpine", "musl", "1.2.5-r0", { arch: "aarch64", distro: "alpine-3.20.3" }],
  );
  if (!haveShared) return t.skip(NO_SHARED);
  assertSchemaValid(doc);
});

test("an Alpine Trivy report filtered by the image's versions: the scanner's purl gives way to one at the installed version", async (t) => {
  if (!haveShared) return t.skip(NO_SHARED);
  const report = await readReport(join(FIXTURES, "trivy-golden/alpine-310.json"));
  const plan = filterPlanByInstalled(
    report,
    new Map([
      ["libcrypto1.1", "1.1.1c-r1"],
      ["libssl1.1", "1.1.1c-r0"],
    ]),
  );
  const doc = buildOpenVex(
    [{ plan, patched: all(plan), products: [{ digest: DIGEST_A, repository: "docker.io/library/alpine" }] }],
    { timestamp: WHEN },
  )!;
  const ids = new Set(
    doc.statements.flatMap((s) => s.products.flatMap((p) => p.subcomponents!.map((c) => c["@id"]))),
  );
  assert.deepEqual([...ids].sort(), [
    "pkg:apk/alpine/libcrypto1.1@1.1.1c-r1?arch=x86_64&distro=alpine-3.10.2",
    // Unchanged: Trivy's own purl, so the statement matches Trivy's finding exactly.
    "pkg:apk/alpine/libssl1.1@1.1.1c-r0?arch=x86_64&distro=3.10.2",
  ]);
  assertSchemaValid(doc);
});

test("update-all's statements note where their IDs were read (status_notes), valid against the official schema", (t) => {
  const plan = debianPlan();
  const doc = buildOpenVex(
    [
      {
        plan,
        patched: all(plan),
        products: [{ digest: DIGEST_A, repository: "example.com/app", architecture: "amd64" }],
        sources: new Map([
          ["openssl", "debian-changelog"],
          ["libssl3", "debian-changelog"],
          ["zlib1g", "debian-changelog"],
          ["perl", "debian-changelog"],
        ]),
      },
    ],
    { timestamp: WHEN },
  )!;
  assert.ok(doc.statements.length > 0);
  for (const s of doc.statements) assert.match(s.status_notes ?? "", /^debian-changelog: /);
  // Without sources (a scanner report) statements carry no notes, as before.
  const fromReport = buildOpenVex(
    [{ plan, patched: all(plan), products: [{ digest: DIGEST_A, repository: "example.com/app" }] }],
    { timestamp: WHEN },
  )!;
  for (const s of fromReport.statements) assert.equal(s.status_notes, undefined);
  if (!haveShared) return t.skip(NO_SHARED);
  const v = validateOpenVex(doc, SCHEMA);
  assert.ok(v.valid, v.errors.join("\n"));
});
