import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { basename } from "node:path";
import { gzipSync } from "node:zlib";
import { createCleartextMessage, type PrivateKey, sign } from "openpgp";

/**
 * A small signed apt repository on 127.0.0.1, built at test time from given .debs: real
 * `Packages`/`Packages.gz` indexes (Filename, Size, SHA256 of each file), a `Release` listing their
 * sizes and SHA-256s, and an `InRelease` clearsigned with the caller's OpenPGP key — the formats
 * apt and suture read from Debian's archive. Each index stanza states the identity the caller
 * gives it (which need not be what the .deb's own control says: that is the point of some tests).
 *
 * Layout served: `/<archive>/dists/<suite>/{InRelease,Release,main/binary-<arch>/Packages[.gz]}`
 * and `/<archive>/pool/main/<file>.deb`; anything else is 404. `archive` is the path a `--mirror`
 * maps an upstream URI to (`debian`, `debian-security`).
 */
export interface LocalDeb {
  /** The .deb on disk. */
  path: string;
  /** What the index says the package is (Package, Version, Architecture). */
  package: string;
  version: string;
  architecture: string;
  /** Optional extra index fields (`Multi-Arch: same`, `Depends: …`), one per line. */
  extra?: string;
}

export interface LocalAptRepoOptions {
  /** The suites to serve, each under an archive path; every suite lists all of `debs`. */
  suites: { archive: string; suite: string }[];
  debs: LocalDeb[];
  signingKey: PrivateKey;
  /** dpkg architecture of the indexes (default amd64). */
  arch?: string;
}

export interface LocalAptRepo {
  /** `http://127.0.0.1:PORT`: `${url}/debian` is the archive `debian`. */
  url: string;
  /** Paths requested, in order. */
  requests: string[];
  stop(): Promise<void>;
}

export async function startLocalAptRepo(options: LocalAptRepoOptions): Promise<LocalAptRepo> {
  const arch = options.arch ?? "amd64";
  const files = new Map<string, Buffer>();
  const pool = new Map<string, Buffer>();
  const stanzas: string[] = [];
  for (const deb of options.debs) {
    const bytes = await readFile(deb.path);
    const filename = `pool/main/${basename(deb.path)}`;
    pool.set(filename, bytes);
    stanzas.push(
      [
        `Package: ${deb.package}`,
        `Version: ${deb.version}`,
        `Architecture: ${deb.architecture}`,
        ...(deb.extra ? [deb.extra.trimEnd()] : []),
        "Maintainer: suture test <test@example.org>",
        `Filename: ${filename}`,
        `Size: ${bytes.length}`,
        `SHA256: ${sha256(bytes)}`,
        "Description: a package served by the suture test repository",
      ].join("\n"),
    );
  }
  const packages = Buffer.from(stanzas.length ? `${stanzas.join("\n\n")}\n` : "");
  const packagesGz = gzipSync(packages);
  const now = Date.now();
  const rfc2822 = (t: number) => new Date(t).toUTCString().replace("GMT", "UTC");
  for (const { archive, suite } of options.suites) {
    const dist = `/${archive}/dists/${suite}`;
    const indexDir = `main/binary-${arch}`;
    const release = [
      "Origin: suture-test",
      "Label: suture-test",
      `Suite: ${suite}`,
      `Codename: ${suite}`,
      `Date: ${rfc2822(now - 60_000)}`,
      `Valid-Until: ${rfc2822(now + 24 * 60 * 60_000)}`,
      `Architectures: ${arch}`,
      "Components: main",
      "Description: suture test repository",
      "SHA256:",
      ` ${sha256(packages)} ${packages.length} ${indexDir}/Packages`,
      ` ${sha256(packagesGz)} ${packagesGz.length} ${indexDir}/Packages.gz`,
    ].join("\n");
    const inRelease = await sign({
      message: await createCleartextMessage({ text: `${release}\n` }),
      signingKeys: options.signingKey,
    });
    files.set(`${dist}/Release`, Buffer.from(`${release}\n`));
    files.set(`${dist}/InRelease`, Buffer.from(inRelease));
    files.set(`${dist}/${indexDir}/Packages`, packages);
    files.set(`${dist}/${indexDir}/Packages.gz`, packagesGz);
    for (const [filename, bytes] of pool) files.set(`/${archive}/${filename}`, bytes);
  }

  const requests: string[] = [];
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    requests.push(path);
    const body = files.get(path);
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-length": String(body.length), "content-type": "application/octet-stream" });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}
