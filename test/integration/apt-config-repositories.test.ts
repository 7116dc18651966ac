/**
 * The image's apt configuration where it decides what is trusted, against the real Debian archive:
 * `Acquire::Check-Valid-Until` and a source's `check-valid-until` (a clock past bookworm-security's
 * real Valid-Until stands in for an archived release), and `Acquire::AllowInsecureRepositories`,
 * which suture refuses unless the user says otherwise.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openRepository } from "../../src/distro/dpkg/repository.ts";
import { fileAccessFromRoot, parseDeb822Sources } from "../../src/distro/dpkg/sources.ts";
import { isSutureError } from "../../src/errors/errors.ts";
import { openImageRepositories } from "../../src/patch/engines/dpkg/native/repositories.ts";
import { imageKeyringProvider } from "../../src/trust/keyring.ts";
import { useArchiveMirror } from "../lab/archive-mirror.ts";
import { requiring } from "../lab/requirements.ts";

const { before, test } = await requiring("loopback");

async function tempDir(t: { after(fn: () => Promise<void>): void }, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

// The Debian archive through the lab's recording mirror (test/lab/archive-mirror.ts).
before(useArchiveMirror);

const security = (extra = "") =>
  parseDeb822Sources(
    `Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
${extra}`,
  )[0]!;

test("Check-Valid-Until: an expired Release is UNTRUSTED unless apt.conf or the source turns the check off", async (t) => {
  const cacheDir = await tempDir(t, "suture-validuntil-");
  const keyring = await imageKeyringProvider(fileAccessFromRoot("/"))(security());
  const fresh = await openRepository(security(), { arch: "amd64", cacheDir, keyring });
  assert.ok(fresh.release.validUntil, "bookworm-security carries Valid-Until");
  // A day past it: what an archived release or a snapshot mirror looks like to apt.
  const now = new Date(fresh.release.validUntil.getTime() + 24 * 3600_000);
  await assert.rejects(
    openRepository(security(), { arch: "amd64", cacheDir, keyring, now }),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /Valid-Until/.test(e.message),
  );
  const global = await openRepository(security(), {
    arch: "amd64",
    cacheDir,
    keyring,
    now,
    checkValidUntil: false,
  });
  assert.ok(global.indexes.length > 0);
  const perSource = await openRepository(security("Check-Valid-Until: no\n"), {
    arch: "amd64",
    cacheDir,
    keyring,
    now,
  });
  assert.ok(perSource.indexes.length > 0);
  // The source's own setting wins over apt.conf's, as in apt.
  await assert.rejects(
    openRepository(security("Check-Valid-Until: yes\n"), {
      arch: "amd64",
      cacheDir,
      keyring,
      now,
      checkValidUntil: false,
    }),
    (e: unknown) => isSutureError(e, "UNTRUSTED"),
  );
});

test("Acquire::AllowInsecureRepositories in the image is refused in one UNTRUSTED line before anything is fetched", async (t) => {
  const root = await tempDir(t, "suture-insecure-root-");
  const cacheDir = await tempDir(t, "suture-insecure-cache-");
  await mkdir(join(root, "etc/apt/apt.conf.d"), { recursive: true });
  await mkdir(join(root, "etc/apt/sources.list.d"), { recursive: true });
  await writeFile(
    join(root, "etc/apt/apt.conf.d/99insecure"),
    'Acquire::AllowInsecureRepositories "true";\n',
  );
  await writeFile(
    join(root, "etc/apt/sources.list.d/local.list"),
    "deb http://127.0.0.1:9/unsigned ./\n", // nothing listens there: a fetch would fail differently
  );
  await assert.rejects(
    openImageRepositories(fileAccessFromRoot(root), undefined, { arch: "amd64", cacheDir }),
    (e: unknown) =>
      isSutureError(e, "UNTRUSTED") &&
      /AllowInsecureRepositories/.test(e.message) &&
      /--allow-insecure-repositories/.test(e.message) &&
      !e.message.includes("\n"),
  );
  // With the flag, the refusal is lifted and the (unreachable) source is tried.
  await assert.rejects(
    openImageRepositories(fileAccessFromRoot(root), undefined, {
      arch: "amd64",
      cacheDir,
      allowInsecureRepositories: true,
      signal: AbortSignal.timeout(60_000),
    }),
    (e: unknown) => isSutureError(e) && e.code !== "UNTRUSTED",
  );
});
