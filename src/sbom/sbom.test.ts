import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { PackageURL } from "packageurl-js";
import { minirootfs, readRootfsFiles } from "../../test/lab/alpine-rootfs.ts";
import { validateCycloneDx, validateSpdx } from "../../test/lab/sbom-schema.ts";
import { detectFromFiles } from "../distro/detect.ts";
import { isSutureError } from "../errors/errors.ts";
import { inventoryFromFiles, packagePurl, sbomWants } from "./inventory.ts";
import { osIdentity } from "./os-identity.ts";
import { buildSbom, type SbomFormat, type SbomImage, sbomTimestamp, withPrevious } from "./sbom.ts";

const SHARED = join(import.meta.dirname, "../../../shared/fixtures");
const GOLDEN = join(SHARED, "trivy-golden");
const DIGEST = `sha256:${"a".repeat(64)}`;
const AMD64 = { os: "linux", architecture: "amd64" };
const T = new Date("2026-01-02T03:04:05Z");

function assertValid(doc: unknown, format: SbomFormat): void {
  const v = format === "spdx" ? validateSpdx(doc) : validateCycloneDx(doc);
  assert.ok(v.valid, `${format} document invalid:\n${v.errors.slice(0, 10).join("\n")}`);
}

function files(entries: Record<string, string | Buffer>): Map<string, Buffer> {
  return new Map(Object.entries(entries).map(([p, c]) => [p, Buffer.isBuffer(c) ? c : Buffer.from(c)]));
}

function statusOf(pkgs: { name: string; version: string; arch: string; source?: string }[]): string {
  return pkgs
    .map(
      (p) =>
        `Package: ${p.name}\nStatus: install ok installed\n${p.source ? `Source: ${p.source}\n` : ""}Architecture: ${p.arch}\nVersion: ${p.version}\nMaintainer: x <x@example.org>\nDescription: x\n`,
    )
    .join("\n");
}

interface GoldenFinding {
  name: string;
  purl: string;
}

function goldenFindings(file: string): GoldenFinding[] {
  const doc = JSON.parse(readFileSync(join(GOLDEN, file), "utf8")) as {
    Results: { Vulnerabilities?: { PkgName: string; PkgIdentifier: { PURL: string } }[] }[];
  };
  const out = new Map<string, GoldenFinding>();
  for (const r of doc.Results)
    for (const v of r.Vulnerabilities ?? [])
      out.set(v.PkgIdentifier.PURL, { name: v.PkgName, purl: v.PkgIdentifier.PURL });
  return [...out.values()];
}

const BOOKWORM_OS =
  'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n';

test("deb purls equal Trivy's for the same packages (release from /etc/debian_version, not VERSION_ID)", () => {
  for (const [file, osRelease, extra] of [
    ["debian-buster.json", 'ID=debian\nVERSION_ID="10"\n', { "/etc/debian_version": "10.1\n" }],
    ["ubuntu-1804.json", 'ID=ubuntu\nVERSION_ID="18.04"\n', {}],
  ] as const) {
    const golden = goldenFindings(file);
    assert.ok(golden.length > 0);
    const pkgs = golden.map((g) => {
      const p = PackageURL.fromString(g.purl);
      return { name: g.name, version: p.version!, arch: p.qualifiers!.arch! };
    });
    const inv = inventoryFromFiles(
      files({ "/etc/os-release": osRelease, ...extra, "/var/lib/dpkg/status": statusOf(pkgs) }),
      { name: "img", digest: DIGEST, platform: AMD64 },
    );
    assert.deepEqual(inv.packages.map((p) => p.purl).sort(), golden.map((g) => g.purl).sort(), file);
  }
});

test("rpm purls equal Trivy's: namespace, distro from each family's release file, epoch as a qualifier", () => {
  const cases: [string, Record<string, string>][] = [
    [
      "centos-7.json",
      {
        "/etc/os-release": 'ID="centos"\nVERSION_ID="7"\n',
        "/etc/centos-release": "CentOS Linux release 7.6.1810 (Core)\n",
      },
    ],
    [
      "rockylinux-8.json",
      {
        "/etc/os-release": 'ID="rocky"\nVERSION_ID="8.5"\n',
        "/etc/rocky-release": "Rocky Linux release 8.5 (Green Obsidian)\n",
      },
    ],
    [
      "almalinux-8.json",
      {
        "/etc/os-release": 'ID="almalinux"\nVERSION_ID="8.5"\n',
        "/etc/almalinux-release": "AlmaLinux release 8.5 (Arctic Sphynx)\n",
      },
    ],
    [
      "oraclelinux-8.json",
      {
        "/etc/os-release": 'ID="ol"\nVERSION_ID="8.0"\n',
        "/etc/oracle-release": "Oracle Linux Server release 8.0\n",
      },
    ],
    [
      "ubi-7.json",
      {
        "/etc/os-release": 'ID="rhel"\nVERSION_ID="7.7"\n',
        "/etc/redhat-release": "Red Hat Enterprise Linux Server release 7.7 (Maipo)\n",
      },
    ],
    [
      "amazon-2.json",
      {
        "/etc/os-release": 'ID="amzn"\nVERSION_ID="2"\n',
        "/etc/system-release": "Amazon Linux release 2 (Karoo)\n",
      },
    ],
    [
      "amazon-1.json",
      {
        "/etc/os-release": 'ID="amzn"\nVERSION_ID="2018.03"\n',
        "/etc/system-release": "Amazon Linux AMI release 2018.03\n",
      },
    ],
    ["mariner-1.0.json", { "/etc/os-release": 'ID=mariner\nVERSION_ID="1.0"\n' }],
    ["photon-30.json", { "/etc/os-release": 'ID=photon\nVERSION_ID="3.0"\n' }],
    ["opensuse-leap-151.json", { "/etc/os-release": 'ID="opensuse-leap"\nVERSION_ID="15.1"\n' }],
    ["opensuse-tumbleweed.json", { "/etc/os-release": 'ID="opensuse-tumbleweed"\nVERSION_ID="20240607"\n' }],
  ];
  for (const [file, release] of cases) {
    const f = files(release);
    const os = osIdentity(detectFromFiles(f), f);
    const golden = goldenFindings(file);
    assert.ok(golden.length > 0, file);
    for (const g of golden) {
      const p = PackageURL.fromString(g.purl);
      const epoch = p.qualifiers?.epoch ? Number(p.qualifiers.epoch) : undefined;
      const ours = packagePurl(
        {
          format: "rpm",
          name: g.name,
          version: epoch ? `${epoch}:${p.version}` : p.version!,
          arch: p.qualifiers!.arch!,
          ...(epoch ? { epoch } : {}),
        },
        os,
      );
      assert.equal(ours, g.purl, file);
    }
  }
});

async function alpineInventory(arch: "x86_64" | "aarch64"): Promise<SbomImage> {
  const raw = await readRootfsFiles(minirootfs("3.20.3", arch), (p) => sbomWants(`/${p}`));
  const f = new Map([...raw].map(([p, c]) => [`/${p}`, c]));
  return inventoryFromFiles(f, {
    name: "docker.io/library/alpine:3.20.3",
    repository: "docker.io/library/alpine",
    digest: arch === "x86_64" ? DIGEST : `sha256:${"b".repeat(64)}`,
    platform: { os: "linux", architecture: arch === "x86_64" ? "amd64" : "arm64" },
  });
}

test("Alpine 3.20.3: every installed package, apk purls as Trivy writes them, licenses from L:, origins as sources", async () => {
  const inv = await alpineInventory("x86_64");
  const db = (await readRootfsFiles(minirootfs("3.20.3", "x86_64"), (p) => p === "lib/apk/db/installed"))
    .get("lib/apk/db/installed")!
    .toString();
  const names = [...db.matchAll(/^P:(.+)$/gm)].map((m) => m[1]).sort();
  assert.deepEqual(inv.packages.map((p) => p.name).sort(), names);
  assert.deepEqual(inv.os, { family: "alpine", release: "3.20.3", prettyName: "Alpine Linux v3.20" });
  const musl = inv.packages.find((p) => p.name === "musl")!;
  assert.equal(musl.purl, `pkg:apk/alpine/musl@${musl.version}?arch=x86_64&distro=3.20.3`);
  assert.equal(musl.license, "MIT");
  const ssl = inv.packages.find((p) => p.name === "libssl3")!;
  assert.equal(ssl.source?.name, "openssl");
  for (const format of ["cyclonedx", "spdx"] as const) {
    const doc = buildSbom(format, { images: [inv] }, { toolVersion: "1.2.3", timestamp: T });
    assertValid(doc, format);
  }
  const cdx = buildSbom("cyclonedx", { images: [inv] }, { toolVersion: "1.2.3", timestamp: T }) as {
    metadata: { component: Record<string, unknown> };
    components: { type: string; purl?: string; licenses?: unknown }[];
  };
  assert.equal(cdx.metadata.component.type, "container");
  assert.equal(cdx.metadata.component.name, "docker.io/library/alpine:3.20.3");
  assert.equal(cdx.metadata.component.version, DIGEST);
  assert.equal(cdx.components.filter((c) => c.type === "library").length, names.length);
  assert.equal(cdx.components.filter((c) => c.type === "operating-system").length, 1);
  assert.deepEqual(cdx.components.find((c) => c.purl === musl.purl)?.licenses, [
    { license: { name: "MIT" } },
  ]);
});

const RPMDB = join(SHARED, "rpmdb");

test("rpm databases (sqlite, ndb): every package but gpg-pubkey, LICENSE, source rpm, epoch qualifier; valid documents", () => {
  const mariner = inventoryFromFiles(
    files({
      "/etc/os-release": 'ID=mariner\nVERSION_ID="2.0"\nPRETTY_NAME="CBL-Mariner/Linux"\n',
      "/var/lib/rpm/rpmdb.sqlite": readFileSync(join(RPMDB, "cbl-mariner-2.0/rpmdb.sqlite")),
    }),
    { name: "mcr.microsoft.com/cbl-mariner/base/core:2.0", digest: DIGEST, platform: AMD64 },
  );
  assert.equal(mariner.packages.length, 129);
  const glibc = mariner.packages.find((p) => p.name === "glibc")!;
  assert.equal(glibc.purl, "pkg:rpm/cbl-mariner/glibc@2.34-2.cm2?arch=x86_64&distro=cbl-mariner-2.0");
  assert.equal(glibc.source?.name, "glibc");
  assert.equal(glibc.source?.release, "2.cm2");
  assert.ok(glibc.license && /GPL/.test(glibc.license), glibc.license);
  const ca = mariner.packages.find((p) => p.name === "ca-certificates-base")!;
  assert.equal(ca.version, "1:2.0.0-1.cm2");
  assert.equal(
    ca.purl,
    "pkg:rpm/cbl-mariner/ca-certificates-base@2.0.0-1.cm2?arch=noarch&distro=cbl-mariner-2.0&epoch=1",
  );

  const sle = inventoryFromFiles(
    files({
      "/etc/os-release": 'ID="sles"\nVERSION_ID="15.4"\n',
      "/usr/lib/sysimage/rpm/Packages.db": readFileSync(join(RPMDB, "sle15-bci/Packages.db")),
    }),
    { name: "registry.suse.com/bci/bci-micro:15.4", digest: DIGEST, platform: AMD64 },
  );
  assert.equal(sle.packages.length, 35);
  assert.match(
    sle.packages.find((p) => p.name === "bash")!.purl,
    /^pkg:rpm\/sles\/bash@4\.4-19\.6\.1\?arch=x86_64&distro=sles-15\.4$/,
  );
  for (const inv of [mariner, sle])
    for (const format of ["cyclonedx", "spdx"] as const)
      assertValid(buildSbom(format, { images: [inv] }, { toolVersion: "1.2.3", timestamp: T }), format);
});

test("a patched image: new versions listed, each with its old version and purl (CycloneDX pedigree, SPDX annotation)", () => {
  const before = inventoryFromFiles(
    files({
      "/etc/os-release": BOOKWORM_OS,
      "/etc/debian_version": "12.5\n",
      "/var/lib/dpkg/status": statusOf([
        { name: "bsdutils", version: "1:2.38.1-5+b1", arch: "amd64", source: "util-linux (2.38.1-5)" },
        { name: "libssl3", version: "3.0.15-1~deb12u1", arch: "amd64", source: "openssl" },
        { name: "tzdata", version: "2024a-0+deb12u1", arch: "all" },
      ]),
    }),
    {
      name: "registry.example/app:1-patched",
      repository: "registry.example/app",
      digest: DIGEST,
      platform: AMD64,
    },
  );
  const bsd = before.packages.find((p) => p.name === "bsdutils")!;
  assert.equal(bsd.purl, "pkg:deb/debian/bsdutils@2.38.1-5%2Bb1?arch=amd64&distro=debian-12.5&epoch=1");
  assert.deepEqual(bsd.source, { name: "util-linux", version: "2.38.1-5" });
  const patched = withPrevious(before, [
    { name: "libssl3", from: "3.0.11-1~deb12u2", to: "3.0.15-1~deb12u1" },
    { name: "bsdutils", from: "1:2.38.1-5", to: "1:2.38.1-5+b1" },
    { name: "libnew", to: "1.0" },
  ]);
  const ssl = patched.packages.find((p) => p.name === "libssl3")!;
  assert.deepEqual(ssl.previous, {
    version: "3.0.11-1~deb12u2",
    purl: "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12.5",
  });
  assert.equal(
    patched.packages.find((p) => p.name === "bsdutils")!.previous?.purl,
    "pkg:deb/debian/bsdutils@2.38.1-5?arch=amd64&distro=debian-12.5&epoch=1",
  );
  assert.equal(patched.packages.find((p) => p.name === "tzdata")!.previous, undefined);

  const cdx = buildSbom("cyclonedx", { images: [patched] }, { toolVersion: "1.2.3", timestamp: T }) as {
    components: {
      name: string;
      version?: string;
      pedigree?: { ancestors: { version: string; purl: string }[] };
    }[];
  };
  assertValid(cdx, "cyclonedx");
  const c = cdx.components.find((x) => x.name === "libssl3")!;
  assert.equal(c.version, "3.0.15-1~deb12u1");
  assert.deepEqual(
    c.pedigree?.ancestors.map((a) => [a.version, a.purl]),
    [["3.0.11-1~deb12u2", ssl.previous!.purl]],
  );
  assert.equal(cdx.components.find((x) => x.name === "tzdata")!.pedigree, undefined);

  const spdx = buildSbom("spdx", { images: [patched] }, { toolVersion: "1.2.3", timestamp: T }) as {
    packages: { name: string; versionInfo?: string; annotations?: { comment: string }[] }[];
    relationships: { relationshipType: string }[];
  };
  assertValid(spdx, "spdx");
  const s = spdx.packages.find((x) => x.name === "libssl3")!;
  assert.equal(s.versionInfo, "3.0.15-1~deb12u1");
  assert.match(
    s.annotations![0]!.comment,
    /updated from 3\.0\.11-1~deb12u2 \(pkg:deb\/debian\/libssl3@3\.0\.11-1~deb12u2/,
  );
  assert.equal(spdx.relationships[0]!.relationshipType, "DESCRIBES");
});

test("an index: one document, the index and each platform image, packages shared across platforms listed once", async () => {
  const images = [await alpineInventory("x86_64"), await alpineInventory("aarch64")];
  const index = {
    name: "docker.io/library/alpine:3.20.3",
    repository: "docker.io/library/alpine",
    digest: `sha256:${"c".repeat(64)}`,
  };
  for (const format of ["cyclonedx", "spdx"] as const) {
    const doc = buildSbom(format, { images, index }, { toolVersion: "1.2.3", timestamp: T });
    assertValid(doc, format);
  }
  const cdx = buildSbom("cyclonedx", { images, index }, { toolVersion: "1.2.3", timestamp: T }) as {
    metadata: { component: { version: string; "bom-ref": string } };
    components: { type: string; "bom-ref": string }[];
    dependencies: { ref: string; dependsOn: string[] }[];
  };
  assert.equal(cdx.metadata.component.version, index.digest);
  const containers = cdx.components.filter((c) => c.type === "container");
  assert.equal(containers.length, 2);
  const refs = cdx.components.map((c) => c["bom-ref"]);
  assert.equal(new Set(refs).size, refs.length, "bom-refs are unique");
  const rootDeps = cdx.dependencies.find((d) => d.ref === cdx.metadata.component["bom-ref"])!;
  assert.deepEqual(rootDeps.dependsOn.sort(), containers.map((c) => c["bom-ref"]).sort());
});

test("deterministic: the same image and SOURCE_DATE_EPOCH give the same bytes; another time another serial", () => {
  const inv = inventoryFromFiles(
    files({
      "/etc/os-release": BOOKWORM_OS,
      "/var/lib/dpkg/status": statusOf([{ name: "base-files", version: "12.4", arch: "all" }]),
    }),
    { name: "x", digest: DIGEST, platform: AMD64 },
  );
  const at = sbomTimestamp({ SOURCE_DATE_EPOCH: "1700000000" });
  assert.equal(at.toISOString(), "2023-11-14T22:13:20.000Z");
  for (const format of ["cyclonedx", "spdx"] as const) {
    const a = JSON.stringify(buildSbom(format, { images: [inv] }, { toolVersion: "1", timestamp: at }));
    const b = JSON.stringify(buildSbom(format, { images: [inv] }, { toolVersion: "1", timestamp: at }));
    const c = JSON.stringify(buildSbom(format, { images: [inv] }, { toolVersion: "1", timestamp: T }));
    assert.equal(a, b);
    assert.notEqual(a, c);
  }
  assert.throws(
    () => sbomTimestamp({ SOURCE_DATE_EPOCH: "yesterday" }),
    (e: unknown) => isSutureError(e) && e.code === "USAGE" && !e.message.includes("\n"),
  );
});

test("a hostile package name in the database is one INVALID_MANIFEST line, no document", () => {
  assert.throws(
    () =>
      inventoryFromFiles(
        files({
          "/etc/os-release": BOOKWORM_OS,
          "/lib/apk/db/installed": "P:evil\u001b[2J\nV:1.0-r0\nA:x86_64\n\n",
        }),
        { name: "x", digest: DIGEST, platform: AMD64 },
      ),
    (e: unknown) => isSutureError(e) && e.code === "INVALID_MANIFEST" && !e.message.includes("\n"),
  );
});

test("the fixtures this file reads are there", () => {
  assert.ok(readdirSync(GOLDEN).includes("debian-buster.json"));
});
