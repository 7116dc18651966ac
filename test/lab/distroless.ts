import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, chown, mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { openDeb } from "../../src/distro/dpkg/deb.ts";
import { downloadPackages } from "../../src/distro/dpkg/fetch-debs.ts";
import { newestCandidate } from "../../src/distro/dpkg/packages-index.ts";
import { openRepository } from "../../src/distro/dpkg/repository.ts";
import { createHttpFetch, type HttpFetch } from "../../src/http/fetch.ts";
import { regenerateCaBundle } from "../../src/patch/engines/dpkg/native/script-effects.ts";
import { parseKeyring } from "../../src/trust/keyring.ts";
import { archiveMirror } from "./archive-mirror.ts";
import { labCacheDir } from "./images.ts";
import { layoutWriter } from "./oci-layout.ts";

const run = promisify(execFile);

/**
 * A Google-distroless-like image (gcr.io/distroless/base-debian12 style) built from bookworm main
 * only, so bookworm-security has real fixes for it: the packages' files unpacked with dpkg-deb, a
 * `/var/lib/dpkg/status.d/<package>` stanza and `<package>.md5sums` per package (no status file,
 * no info dir), root and nonroot (65532) users, the CA bundle generated, and no shell, dpkg or apt.
 * One layer, amd64, cached in the lab cache by the package list and builder version.
 */
export const DISTROLESS_PACKAGES = [
  "base-files",
  "netbase",
  "tzdata",
  "ca-certificates",
  "libc6",
  "libgcc-s1",
  "libgomp1",
  "libssl3",
] as const;
const BUILDER = "distroless-1";
const EPOCH = 1767225600;

export interface DistrolessLab {
  layoutDir: string;
  reference: string;
  /** Package → version as built. */
  packages: Map<string, string>;
}

export async function distrolessLabImage(): Promise<DistrolessLab> {
  const key = createHash("sha256")
    .update(`${BUILDER}\n${DISTROLESS_PACKAGES.join(",")}`)
    .digest("hex")
    .slice(0, 16);
  const entry = join(labCacheDir(), `bookwormDistroless-${key}`);
  const layoutDir = join(entry, "oci");
  if (!existsSync(join(entry, "packages.json"))) await build(entry);
  const packages = new Map<string, string>(
    Object.entries(JSON.parse(await readFile(join(entry, "packages.json"), "utf8"))),
  );
  return { layoutDir, reference: `oci:${layoutDir}:latest`, packages };
}

async function build(entry: string): Promise<void> {
  await mkdir(labCacheDir(), { recursive: true });
  const work = await mkdtemp(`${entry}.build-`);
  try {
    const keyring = await parseKeyring(
      await readFile("/usr/share/keyrings/debian-archive-keyring.gpg"),
      "debian-archive-keyring.gpg",
    );
    // Through the lab's recording mirror (as a reverse mirror: the process's environment stays as it is).
    const mirror = await archiveMirror();
    const direct = createHttpFetch();
    const fetch: HttpFetch = (url, init) =>
      direct(url.replace(/^http:\/\/deb\.debian\.org\//, `${mirror.url}/`), init);
    const repo = await openRepository(
      { uri: "http://deb.debian.org/debian", suite: "bookworm", components: ["main"] },
      { arch: "amd64", cacheDir: join(labCacheDir(), "apt-cache"), keyring, fetch },
    );
    const entries = DISTROLESS_PACKAGES.map((name) => {
      const e = newestCandidate([repo], name, "amd64");
      if (!e) throw new Error(`bookworm main has no ${name}`);
      return e;
    });
    const debs = await downloadPackages(entries, { cacheDir: join(labCacheDir(), "apt-cache"), fetch });
    const root = join(work, "rootfs");
    const statusD = join(root, "var/lib/dpkg/status.d");
    await mkdir(statusD, { recursive: true });
    const packages: Record<string, string> = {};
    for (const [i, deb] of debs.entries()) {
      await run("dpkg-deb", ["-x", deb, root]);
      const opened = await openDeb(deb);
      await writeFile(
        join(statusD, opened.name),
        opened.controlText.endsWith("\n") ? opened.controlText : `${opened.controlText}\n`,
      );
      const md5sums = opened.controlMembers.get("md5sums");
      if (md5sums) await writeFile(join(statusD, `${opened.name}.md5sums`), md5sums);
      packages[opened.name] = entries[i]!.version;
    }
    await writeFile(
      join(root, "etc/passwd"),
      "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    );
    await writeFile(join(root, "etc/group"), "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n");
    await mkdir(join(root, "home/nonroot"), { recursive: true });
    await chown(join(root, "home/nonroot"), 65532, 65532);
    await mkdir(join(root, "tmp"), { recursive: true });
    await chmod(join(root, "tmp"), 0o1777);
    await mkdir(join(root, "etc/ssl/certs"), { recursive: true });
    await writeFile(join(root, "etc/ssl/certs/ca-certificates.crt"), "");
    await regenerateCaBundle(root);

    const tar = join(work, "layer.tar");
    await run("tar", [
      "--sort=name",
      "--numeric-owner",
      `--mtime=@${EPOCH}`,
      "--clamp-mtime",
      "-C",
      root,
      "-cf",
      tar,
      ".",
    ]);
    const raw = await readFile(tar);
    const gz = gzipSync(raw, { level: 9 });
    const layout = join(work, "oci");
    const writer = await layoutWriter(layout);
    const put = (bytes: Buffer) => writer.put(bytes);
    const created = new Date(EPOCH * 1000).toISOString();
    const layer = await put(gz);
    const diffID = `sha256:${createHash("sha256").update(raw).digest("hex")}`;
    const config = await put(
      Buffer.from(
        JSON.stringify({
          architecture: "amd64",
          os: "linux",
          created,
          config: {
            Env: [
              "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin",
              "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            ],
            User: "0",
            WorkingDir: "/",
          },
          rootfs: { type: "layers", diff_ids: [diffID] },
          history: [
            {
              created,
              created_by: `suture lab: ${DISTROLESS_PACKAGES.join(" ")} from bookworm main, status.d`,
            },
          ],
        }),
      ),
    );
    const manifest = await put(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
          layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer }],
        }),
      ),
    );
    await writer.tag("application/vnd.oci.image.manifest.v1+json", manifest);
    await mkdir(entry, { recursive: true });
    await rm(join(entry, "oci"), { recursive: true, force: true });
    await rename(layout, join(entry, "oci"));
    await writeFile(join(entry, "packages.json"), JSON.stringify(packages));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The one fix the distroless tests' reports name: bookworm-security's libssl3 update. */
export const DISTROLESS_LIBSSL_CVE = "CVE-2025-9230";

/**
 * A Trivy report of the distroless lab image naming one fixed vulnerability of its libssl3, as
 * Trivy writes it; written to `file`, whose path is returned.
 */
export async function distrolessLibsslReport(lab: DistrolessLab, file: string): Promise<string> {
  await writeFile(
    file,
    JSON.stringify({
      SchemaVersion: 2,
      ArtifactName: "distroless",
      ArtifactType: "container_image",
      Metadata: { OS: { Family: "debian", Name: "12.12" }, ImageConfig: { architecture: "amd64" } },
      Results: [
        {
          Target: "distroless (debian 12.12)",
          Class: "os-pkgs",
          Type: "debian",
          Vulnerabilities: [
            {
              VulnerabilityID: DISTROLESS_LIBSSL_CVE,
              PkgName: "libssl3",
              InstalledVersion: lab.packages.get("libssl3"),
              FixedVersion: "3.0.21-1~deb12u1",
              Status: "fixed",
            },
          ],
        },
      ],
    }),
  );
  return file;
}
