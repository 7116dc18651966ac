import assert from "node:assert/strict";
import { test } from "node:test";
import { generateKey } from "openpgp";
import { isSutureError } from "../errors/errors.ts";
import { imageKeyringProvider, type KeyFileAccess } from "./keyring.ts";

function files(entries: Record<string, Uint8Array>): KeyFileAccess {
  const map = new Map(Object.entries(entries));
  return {
    readFile: async (p) => map.get(p),
    listDir: async (dir) =>
      [...map.keys()]
        .filter((p) => p.startsWith(`${dir}/`))
        .map((p) => p.slice(dir.length + 1))
        .sort(),
  };
}

async function key(name: string) {
  return (await generateKey({ userIDs: [{ name }], format: "object" })).publicKey;
}

const fps = (ring: { keys: readonly { getFingerprint(): string }[] }) =>
  ring.keys.map((k) => k.getFingerprint());

test("Signed-By path is read from the image; without Signed-By, trusted.gpg and trusted.gpg.d/*.gpg|*.asc", async () => {
  const [repo, legacy, dotD, asc] = await Promise.all([key("repo"), key("legacy"), key("dotd"), key("asc")]);
  const provider = imageKeyringProvider(
    files({
      "/usr/share/keyrings/repo.gpg": repo.write(),
      "/etc/apt/trusted.gpg": legacy.write(),
      "/etc/apt/trusted.gpg.d/debian.gpg": dotD.write(),
      "/etc/apt/trusted.gpg.d/extra.asc": new TextEncoder().encode(asc.armor()),
      "/etc/apt/trusted.gpg.d/README": new TextEncoder().encode("ignored"),
    }),
  );
  assert.deepEqual(fps(await provider({ signedBy: { path: "/usr/share/keyrings/repo.gpg" } })), [
    repo.getFingerprint(),
  ]);
  assert.deepEqual(fps(await provider({})), [
    legacy.getFingerprint(),
    dotD.getFingerprint(),
    asc.getFingerprint(),
  ]);
  // Fingerprints select from the default set.
  assert.deepEqual(
    fps(await provider({ signedBy: { paths: [], fingerprints: [dotD.getFingerprint().toUpperCase()] } })),
    [dotD.getFingerprint()],
  );
});

test("a Signed-By keyring missing from the image comes from the fallback (distroless), else UNTRUSTED", async () => {
  const repo = await key("debian");
  const path = "/usr/share/keyrings/debian-archive-keyring.gpg";
  const withFallback = imageKeyringProvider(files({}), { fallback: files({ [path]: repo.write() }) });
  const ring = await withFallback({ signedBy: { path } });
  assert.deepEqual(fps(ring), [repo.getFingerprint()]);
  assert.match(ring.sources[0]!, /host fallback/);

  const strict = imageKeyringProvider(files({}));
  await assert.rejects(
    strict({ signedBy: { path }, uri: "http://deb.debian.org/debian", suite: "bookworm" }),
    (e: unknown) =>
      isSutureError(e, "UNTRUSTED") && /debian-archive-keyring\.gpg .*not in the image/.test(e.message),
  );
  await assert.rejects(
    strict({}),
    (e: unknown) => isSutureError(e, "UNTRUSTED") && /no trusted keys/.test(e.message),
  );
});
