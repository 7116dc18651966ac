import assert from "node:assert/strict";
import { test } from "node:test";
import { parseOsRelease } from "../distro/os-release.ts";
import { isSutureError } from "../errors/errors.ts";
import { checkReportMatchesImage, type ImageIdentity } from "./image-match.ts";
import { assemblePlan, splitFixedVersions } from "./plan.ts";
import { readReport } from "./read.ts";

const golden = (name: string) =>
  new URL(`../../../shared/fixtures/trivy-golden/${name}.json`, import.meta.url).pathname;

const bookworm: ImageIdentity = {
  name: "oci:lab:latest",
  osRelease: parseOsRelease(
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n',
  ),
  installed: new Map([
    ["libssl3", "3.0.11-1~deb12u2"],
    ["libexpat1", "2.5.0-1"],
  ]),
  architecture: "amd64",
};

function plan(
  os: { family: string; version: string } | undefined,
  arch?: string,
  installed = "3.0.11-1~deb12u2",
) {
  return assemblePlan(
    { source: { format: "trivy", file: "r.json" }, ...(os ? { os } : {}), ...(arch ? { arch } : {}) },
    [
      {
        name: "libssl3",
        installedVersion: installed,
        fixedVersions: splitFixedVersions("3.0.15-1~deb12u1"),
        vulnerabilityId: "CVE-2024-1",
        type: "debian",
        packageType: "deb",
      },
    ],
    [],
  );
}

const refused = (pattern: RegExp) => (e: unknown) => {
  assert.ok(isSutureError(e, "INVALID_REPORT"), String(e));
  assert.match(e.message, pattern);
  assert.doesNotMatch(e.message, /\n/);
  return true;
};

test("real reports of other distributions and releases are refused, naming both sides", async () => {
  const buster = await readReport(golden("debian-buster"));
  assert.throws(
    () => checkReportMatchesImage(buster, bookworm),
    refused(
      /is for debian 10\.1, image oci:lab:latest is debian 12: scan oci:lab:latest and pass that report/,
    ),
  );
  const alpine = await readReport(golden("alpine-310"));
  assert.throws(
    () => checkReportMatchesImage(alpine, bookworm),
    refused(/is for alpine 3\.10\.2, image .* is debian 12/),
  );
  // A bookworm report against a trixie image.
  const trixie = {
    ...bookworm,
    osRelease: parseOsRelease("ID=debian\nVERSION_ID=13\nVERSION_CODENAME=trixie\n"),
  };
  assert.throws(
    () => checkReportMatchesImage(plan({ family: "debian", version: "12.8" }), trixie),
    refused(/is for debian 12\.8, image .* is debian 13/),
  );
  assert.throws(
    () => checkReportMatchesImage(plan({ family: "debian", version: "12" }, "arm64"), bookworm),
    refused(/is for linux\/arm64, image .* is linux\/amd64/),
  );
});

test("releases match at the granularity scanners write them; no OS in the report is not a mismatch", () => {
  for (const version of ["12", "12.5", "bookworm", ""])
    assert.deepEqual(checkReportMatchesImage(plan({ family: "debian", version }, "amd64"), bookworm), []);
  assert.deepEqual(checkReportMatchesImage(plan(undefined), bookworm), []);
  const testing = { ...bookworm, osRelease: parseOsRelease("ID=debian\nVERSION_CODENAME=trixie\n") };
  assert.deepEqual(checkReportMatchesImage(plan({ family: "debian", version: "trixie/sid" }), testing), []);
  const alpine = { ...bookworm, osRelease: parseOsRelease("ID=alpine\nVERSION_ID=3.10.9\n") };
  assert.deepEqual(checkReportMatchesImage(plan({ family: "alpine", version: "3.10.2" }), alpine), []);
  assert.throws(
    () => checkReportMatchesImage(plan({ family: "alpine", version: "3.9.4" }), alpine),
    refused(/alpine 3\.9\.4, image .* is alpine 3\.10\.9/),
  );
  const centos = { ...bookworm, osRelease: parseOsRelease('ID="centos"\nVERSION_ID="7"\n') };
  assert.deepEqual(checkReportMatchesImage(plan({ family: "centos", version: "7.9.2009" }), centos), []);
  const ubuntu = { ...bookworm, osRelease: parseOsRelease("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=22.04\n") };
  assert.throws(
    () => checkReportMatchesImage(plan({ family: "ubuntu", version: "20.04" }), ubuntu),
    refused(/ubuntu 20\.04, image .* is ubuntu 22\.04/),
  );
});

test("installed versions that differ from the image's give one warning naming them", () => {
  const warnings = checkReportMatchesImage(
    plan({ family: "debian", version: "12" }, "amd64", "3.0.9-1"),
    bookworm,
  );
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /libssl3 3\.0\.9-1 in the report, 3\.0\.11-1~deb12u2 installed/);
});

const grypeFixture = new URL("../../../shared/fixtures/grype/json-image.json", import.meta.url).pathname;
// The config digest Trivy's golden alpine-310 report names (Metadata.ImageID).
const ALPINE_310_CONFIG = "sha256:961769676411f082461f9ef46626dd7a2d1e2b2a38e6a44364bcbecf51e66dd4";
const OTHER_CONFIG = `sha256:${"ab".repeat(32)}`;
const OTHER_MANIFEST = `sha256:${"cd".repeat(32)}`;

const alpine310 = (digests: ImageIdentity["digests"], repository?: string): ImageIdentity => ({
  name: "oci:alpine:3.10",
  osRelease: parseOsRelease("ID=alpine\nVERSION_ID=3.10.2\n"),
  architecture: "amd64",
  digests,
  ...(repository ? { repository } : {}),
});

test("reports name the image they were made for: Trivy's ImageID and RepoDigests, Grype's imageID and manifestDigest", async () => {
  const trivy = await readReport(golden("alpine-310"));
  assert.deepEqual(trivy.image, {
    configDigest: ALPINE_310_CONFIG,
    name: "testdata/fixtures/images/alpine-310.tar.gz",
  });
  const grype = await readReport(grypeFixture);
  assert.deepEqual(grype.image, {
    configDigest: "sha256:ab5608d634db2716a297adbfa6a5dd5d8f8f5a7d0cab73649ea7fbb8c8da544f",
    manifestDigests: ["sha256:ca738abb87a8d58f112d3400ebb079b61ceae7dc290beb34bda735be4b1941d5"],
    name: "user-input",
  });
});

test("a report naming another image's config is refused in one line naming both and the escape flag", async () => {
  const report = await readReport(golden("alpine-310"));
  // The image it was made for, however it was read (a conversion to OCI changes only the manifest digest).
  assert.deepEqual(
    checkReportMatchesImage(report, alpine310({ config: ALPINE_310_CONFIG, manifest: OTHER_MANIFEST })),
    [],
  );
  const other = alpine310({ config: OTHER_CONFIG, manifest: OTHER_MANIFEST });
  assert.throws(
    () => checkReportMatchesImage(report, other),
    refused(
      new RegExp(
        `^report .*alpine-310\\.json was made for image ${ALPINE_310_CONFIG} \\(config\\), not for oci:alpine:3\\.10 \\(config ${OTHER_CONFIG}\\): scan oci:alpine:3\\.10 and pass that report, or pass --ignore-report-image to use it anyway$`,
      ),
    ),
  );
  const [warning, ...rest] = checkReportMatchesImage(report, other, { ignoreReportImage: true });
  assert.deepEqual(rest, []);
  assert.match(
    warning!,
    /was made for image sha256:9617.* \(config\).*: used anyway \(--ignore-report-image\)$/,
  );
  // The Docker daemon's image ID (the index digest with the containerd image store), which Trivy
  // reports as ImageID when it read the daemon, names the image too.
  assert.deepEqual(
    checkReportMatchesImage(
      report,
      alpine310({ config: OTHER_CONFIG, manifest: OTHER_MANIFEST, aliases: [ALPINE_310_CONFIG] }),
    ),
    [],
  );
  // A manifest digest confirms (the report was made from this very manifest), it never refuses.
  const grype = await readReport(grypeFixture);
  const centos = {
    name: "docker://registry.example/app:1",
    osRelease: parseOsRelease('ID="centos"\nVERSION_ID="8"\n'),
    architecture: "amd64",
  };
  const grypeManifest = grype.image!.manifestDigests![0]!;
  assert.deepEqual(
    checkReportMatchesImage(grype, { ...centos, digests: { config: OTHER_CONFIG, manifest: grypeManifest } }),
    [],
  );
  assert.throws(
    () =>
      checkReportMatchesImage(grype, {
        ...centos,
        digests: { config: OTHER_CONFIG, manifest: OTHER_MANIFEST },
      }),
    refused(/was made for image sha256:ab5608d6.* \(config\), not for docker:\/\/registry\.example\/app:1/),
  );
});

test("a patched image answers to the config it had before suture patched it, when that was recorded", async () => {
  const report = await readReport(golden("alpine-310"));
  const patched = { config: OTHER_CONFIG, manifest: OTHER_MANIFEST };
  assert.deepEqual(
    checkReportMatchesImage(report, alpine310({ ...patched, original: ALPINE_310_CONFIG })),
    [],
  );
  // The report of the patched image itself.
  assert.deepEqual(
    checkReportMatchesImage(
      report,
      alpine310({ config: ALPINE_310_CONFIG, manifest: OTHER_MANIFEST, original: OTHER_CONFIG }),
    ),
    [],
  );
  assert.throws(
    () => checkReportMatchesImage(report, alpine310({ ...patched, original: `sha256:${"ef".repeat(32)}` })),
    refused(/\(config sha256:abab.*, before suture patched it sha256:efef.*\): scan/),
  );
  // Patched by a suture that did not record it: the report may be of the unpatched image; not checked.
  const unknown = checkReportMatchesImage(report, alpine310({ ...patched, original: null }));
  assert.equal(unknown.length, 1);
  assert.match(unknown[0]!, /may be the report of the image before suture patched it.*not checked$/);
});

test("names only warn, and only when the repositories clearly differ; no digest or name, no check", async () => {
  const trivy = await readReport(golden("alpine-310"));
  const byName = (name: string) => ({ ...trivy, image: { name } });
  const image = alpine310({ config: OTHER_CONFIG, manifest: OTHER_MANIFEST }, "library/alpine");
  for (const name of [
    "alpine:3.10",
    "mirror.example:5000/dockerhub/library/alpine@sha256:" + "12".repeat(32),
    "docker://alpine",
    "testdata/fixtures/images/alpine-310.tar.gz",
    "oci:/var/cache/layout:latest",
    "./alpine",
  ]) {
    assert.deepEqual(checkReportMatchesImage(byName(name), image), [], name);
  }
  const [warning] = checkReportMatchesImage(byName("ghcr.io/acme/redis:7\n"), image);
  assert.match(
    warning!,
    /names the image "ghcr\.io\/acme\/redis:7\\n", and oci:alpine:3\.10 is another repository \(alpine\): check/,
  );
  // A layout or archive source has no repository to compare with.
  assert.deepEqual(
    checkReportMatchesImage(byName("redis"), alpine310({ config: OTHER_CONFIG, manifest: OTHER_MANIFEST })),
    [],
  );
  // Reports that name no image (copa manifests, hand-made reports) are not checked.
  assert.deepEqual(checkReportMatchesImage({ ...trivy, image: undefined }, image), []);
});

/** An apk image as detection describes it (Alpine's 3.10.2 packages the golden report names). */
const alpineImage = (osRelease: string | undefined): ImageIdentity => ({
  name: "oci:alpine:3.10",
  ...(osRelease === undefined ? {} : { osRelease: parseOsRelease(osRelease) }),
  packageDb: "apk",
  installed: new Map([
    ["libcrypto1.1", "1.1.1c-r0"],
    ["libssl1.1", "1.1.1c-r0"],
  ]),
  architecture: "amd64",
});

test("an Alpine report on an Alpine image of its release passes; on Debian, or another Alpine release, it is refused", async () => {
  const report = await readReport(golden("alpine-310"));
  assert.deepEqual(checkReportMatchesImage(report, alpineImage("ID=alpine\nVERSION_ID=3.10.2\n")), []);
  // A derivative that says it is like Alpine, of the same release.
  assert.deepEqual(
    checkReportMatchesImage(report, alpineImage("ID=myalpine\nID_LIKE=alpine\nVERSION_ID=3.10.5\n")),
    [],
  );
  assert.throws(
    () => checkReportMatchesImage(report, alpineImage("ID=alpine\nVERSION_ID=3.20.3\n")),
    refused(/is for alpine 3\.10\.2, image oci:alpine:3\.10 is alpine 3\.20\.3/),
  );
  assert.throws(
    () => checkReportMatchesImage(report, { ...bookworm, packageDb: "dpkg" }),
    refused(/is for alpine 3\.10\.2, image oci:lab:latest is debian 12/),
  );
});

test("an image with no os-release: the report's packages must be of its package format", async () => {
  // Alpine's distroless report (no os-release needed to patch by it) on a distroless apk image.
  const distroless = await readReport(golden("alpine-distroless"));
  assert.deepEqual(
    checkReportMatchesImage(distroless, { ...alpineImage(undefined), installed: new Map() }),
    [],
  );
  const buster = await readReport(golden("debian-buster"));
  assert.throws(
    () => checkReportMatchesImage(buster, alpineImage(undefined)),
    refused(
      /^report .*debian-buster\.json lists deb packages \(\S+\), image oci:alpine:3\.10 has apk packages \(apk database\): scan oci:alpine:3\.10 and pass that report$/,
    ),
  );
  const alpine = await readReport(golden("alpine-39"));
  assert.throws(
    () =>
      checkReportMatchesImage(alpine, {
        name: "oci:static:1",
        packageDb: "dpkg-status.d",
        architecture: "amd64",
      }),
    refused(
      /lists apk packages \(libcrypto1\.1\), image oci:static:1 has deb packages \(dpkg-status\.d database\)/,
    ),
  );
});

test("Wolfi and Chainguard are rolling: any report of the family matches, another family does not", () => {
  const apkPlan = (family: string, version: string) =>
    assemblePlan(
      { source: { format: "trivy", file: "w.json" }, os: { family, version } },
      [
        {
          name: "glibc",
          installedVersion: "2.40-r3",
          fixedVersions: ["2.40-r4"],
          vulnerabilityId: "CVE-2025-1",
          type: family,
          packageType: "apk",
        },
      ],
      [],
    );
  const wolfi = alpineImage('ID=wolfi\nNAME="Wolfi"\nVERSION_ID="20230201"\n');
  const chainguard = alpineImage('ID=chainguard\nNAME="Chainguard"\nVERSION_ID="20230214"\n');
  assert.deepEqual(checkReportMatchesImage(apkPlan("wolfi", "20230201"), wolfi), []);
  assert.deepEqual(checkReportMatchesImage(apkPlan("wolfi", "20240101"), wolfi), []);
  assert.deepEqual(checkReportMatchesImage(apkPlan("chainguard", "20230214"), chainguard), []);
  assert.throws(
    () => checkReportMatchesImage(apkPlan("wolfi", "20230201"), chainguard),
    refused(/is for wolfi 20230201, image .* is chainguard 20230214/),
  );
  assert.throws(
    () => checkReportMatchesImage(apkPlan("alpine", "3.20.3"), wolfi),
    refused(/is for alpine 3\.20\.3, image .* is wolfi 20230201/),
  );
});
