/**
 * bookworm-security's current builds of named packages, verified and downloaded as the native
 * engine does (signed index, SHA-256): the packages the hook and unpacker tests install over a
 * lab image with the image's own dpkg and with suture's code, to compare the two.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { downloadPackages } from "../../src/distro/dpkg/fetch-debs.ts";
import { newestCandidate } from "../../src/distro/dpkg/packages-index.ts";
import { openRepository } from "../../src/distro/dpkg/repository.ts";
import { parseKeyring } from "../../src/trust/keyring.ts";
import type { LabImage } from "./images.ts";

/** Each of `names` from bookworm-security (amd64), asserted newer than what `lab` has installed. */
export async function newerSecurityDebs(
  names: readonly string[],
  lab: Pick<LabImage, "packages">,
  cacheDir: string,
): Promise<{ name: string; version: string; path: string }[]> {
  const keyring = await parseKeyring(
    await readFile("/usr/share/keyrings/debian-archive-keyring.gpg"),
    "debian-archive-keyring.gpg",
  );
  const security = await openRepository(
    { uri: "http://security.debian.org/debian-security", suite: "bookworm-security", components: ["main"] },
    { arch: "amd64", cacheDir, keyring },
  );
  const entries = names.map((name) => {
    const e = newestCandidate([security], name, "amd64");
    assert.ok(e, `bookworm-security has ${name}`);
    assert.notEqual(
      e.version,
      lab.packages.get(name),
      `bookworm-security has a newer ${name} than the lab image`,
    );
    return e;
  });
  const paths = await downloadPackages(entries, { cacheDir });
  return entries.map((e, i) => ({ name: e.package, version: e.version, path: paths[i]! }));
}
