/**
 * Where the native engine gets packages from, against the real Debian archive: an image without apt
 * sources (distroless) falls back to its release's official suites, trusted with the host's archive
 * keyring or a --keyring file; mirrors are used but never trusted more than the keys.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKey } from "openpgp";
import { newestCandidate } from "../../src/distro/dpkg/packages-index.ts";
import { fileAccessFromRoot } from "../../src/distro/dpkg/sources.ts";
import { parseOsRelease } from "../../src/distro/os-release.ts";
import { isSutureError } from "../../src/errors/errors.ts";
import { openImageRepositories } from "../../src/patch/engines/dpkg/native/repositories.ts";
import { startArchiveMirror, useArchiveMirror } from "../lab/archive-mirror.ts";
import { requiring } from "../lab/requirements.ts";

const { after, before, test } = await requiring("loopback");

const OS_RELEASE = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
`;

let work: string;
let root: string;
before(async () => {
  // The official suites through the lab's recording mirror (as a proxy; --mirror cases start their own).
  await useArchiveMirror();
  work = await mkdtemp(join(tmpdir(), "suture-native-repos-"));
  root = join(work, "root");
  await mkdir(join(root, "etc"), { recursive: true });
  await writeFile(join(root, "etc/os-release"), OS_RELEASE);
});
after(() => rm(work, { recursive: true, force: true }));

test("an image without apt sources gets its release's official suites, verified with the archive keyring", async () => {
  const { sources, repositories, imageSources } = await openImageRepositories(
    fileAccessFromRoot(root),
    parseOsRelease(OS_RELEASE),
    {
      arch: "amd64",
      cacheDir: join(work, "cache"),
    },
  );
  assert.equal(imageSources, false);
  assert.deepEqual(
    sources.map((s) => `${s.uri} ${s.suite}`),
    [
      "http://deb.debian.org/debian bookworm",
      "http://deb.debian.org/debian bookworm-updates",
      "http://deb.debian.org/debian-security bookworm-security",
    ],
  );
  for (const r of repositories)
    assert.ok(r.signers.length > 0, `${r.source.suite} was signed by a trusted key`);
  const libssl = newestCandidate(repositories, "libssl3", "amd64");
  assert.equal(libssl?.repoUri, "http://deb.debian.org/debian-security");
});

test("a --keyring that did not sign the archive is refused with the fix; a mirror is used, not trusted", async () => {
  const { publicKey } = await generateKey({ userIDs: [{ name: "not debian" }], format: "armored" });
  const wrong = join(work, "wrong.asc");
  await writeFile(wrong, publicKey);
  await assert.rejects(
    openImageRepositories(fileAccessFromRoot(root), parseOsRelease(OS_RELEASE), {
      arch: "amd64",
      cacheDir: join(work, "c2"),
      keyringFiles: [wrong],
    }),
    (e: unknown) => isSutureError(e) && e.code === "UNTRUSTED",
  );

  const mirror = await startArchiveMirror({
    // A mirror that serves a rewritten InRelease: the signature no longer matches.
    alter: (path, body) =>
      path.endsWith("/bookworm-updates/InRelease")
        ? Buffer.from(body.toString().replace("bookworm-updates", "bookworm-updatez"))
        : undefined,
  });
  try {
    const mirrors = {
      "http://deb.debian.org/debian": `${mirror.url}/debian`,
      "http://deb.debian.org/debian-security": `${mirror.url}/debian-security`,
    };
    await assert.rejects(
      openImageRepositories(fileAccessFromRoot(root), parseOsRelease(OS_RELEASE), {
        arch: "amd64",
        cacheDir: join(work, "c3"),
        mirrors,
      }),
      (e: unknown) => {
        assert.ok(isSutureError(e) && e.code === "UNTRUSTED", String(e));
        assert.match((e as Error).message, /bookworm-updates/);
        return true;
      },
    );
    assert.ok(mirror.requests.some((r) => r.path.startsWith("/debian-security/dists/bookworm-security/")));
  } finally {
    await mirror.stop();
  }
});
