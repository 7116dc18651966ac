import assert from "node:assert/strict";
import { test } from "node:test";
import {
  createCleartextMessage,
  createMessage,
  generateKey,
  type PrivateKey,
  revokeKey,
  type SecretKeyPacket,
  sign,
} from "openpgp";
import { isSutureError } from "../errors/errors.ts";
import { keyringOf, parseKeyring, selectKeys } from "./keyring.ts";
import { unverifiedClearsignedText, verifyClearsigned, verifyDetached } from "./signature.ts";

const RELEASE =
  "Origin: Test\nSuite: stable\nSHA256:\n " + "a".repeat(64) + " 10 main/binary-amd64/Packages\n";

async function newKey(name: string, extra: { date?: Date; keyExpirationTime?: number } = {}) {
  return generateKey({
    userIDs: [{ name, email: `${name.toLowerCase()}@example.org` }],
    format: "object",
    ...extra,
  });
}

async function clearsign(text: string, keys: PrivateKey[], date?: Date): Promise<string> {
  return sign({ message: await createCleartextMessage({ text }), signingKeys: keys, date });
}

const untrusted = (pattern: RegExp) => (e: unknown) => {
  assert.ok(isSutureError(e, "UNTRUSTED"), `expected UNTRUSTED, got ${String(e)}`);
  assert.match(e.message, pattern);
  return true;
};

test("a good clear signature yields exactly the signed text and the signer", async () => {
  const archive = await newKey("Archive");
  const other = await newKey("Other");
  const signed = await clearsign(RELEASE, [archive.privateKey]);
  const ring = keyringOf([other.publicKey, archive.publicKey], ["test"]);
  const got = await verifyClearsigned(signed, ring, { what: "InRelease" });
  assert.equal(got.text, RELEASE);
  assert.equal(got.signers.length, 1);
  assert.equal(got.signers[0]!.fingerprint, archive.publicKey.getFingerprint());
  assert.deepEqual(got.signers[0]!.userIds, ["Archive <archive@example.org>"]);
});

test("a signature by an unknown key alongside a trusted good one is ignored, as gpgv/apt do", async () => {
  const archive = await newKey("Archive");
  const stranger = await newKey("Stranger");
  const signed = await clearsign(RELEASE, [stranger.privateKey, archive.privateKey]);
  const got = await verifyClearsigned(signed, keyringOf([archive.publicKey], ["t"]), { what: "InRelease" });
  assert.equal(got.signers.length, 1);
});

test("altered signed text is a bad signature", async () => {
  const archive = await newKey("Archive");
  const signed = await clearsign(RELEASE, [archive.privateKey]);
  const tampered = signed.replace("Suite: stable", "Suite: stablf");
  await assert.rejects(
    verifyClearsigned(tampered, keyringOf([archive.publicKey], ["t"]), { what: "dists/x/InRelease" }),
    untrusted(/dists\/x\/InRelease has a bad signature by trusted key .*altered/),
  );
});

test("only unknown signers: refused, naming the key ids and the keyring", async () => {
  const archive = await newKey("Archive");
  const stranger = await newKey("Stranger");
  const signed = await clearsign(RELEASE, [stranger.privateKey]);
  await assert.rejects(
    verifyClearsigned(signed, keyringOf([archive.publicKey], ["/usr/share/keyrings/x.gpg"]), {
      what: "InRelease",
    }),
    untrusted(
      new RegExp(
        `signed by unknown key (${stranger.publicKey
          .getKeys()
          .map((k) => k.getKeyID().toHex())
          .join("|")}), .*x\\.gpg`,
      ),
    ),
  );
});

test("a key that has expired since signing, or was revoked, no longer counts", async () => {
  const past = new Date(Date.now() - 10 * 86400_000);
  const expiring = await newKey("Old", { date: past, keyExpirationTime: 86400 });
  const signed = await clearsign(RELEASE, [expiring.privateKey], new Date(past.getTime() + 3600_000));
  await assert.rejects(
    verifyClearsigned(signed, keyringOf([expiring.publicKey], ["t"]), { what: "InRelease" }),
    untrusted(/signed only by expired key .*Old/),
  );
  // At a time when the key was still valid the same file verifies.
  const then = new Date(past.getTime() + 7200_000);
  assert.equal(
    (await verifyClearsigned(signed, keyringOf([expiring.publicKey], ["t"]), { what: "x", now: then })).text,
    RELEASE,
  );

  const archive = await newKey("Revoked");
  const good = await clearsign(RELEASE, [archive.privateKey]);
  const { publicKey: revoked } = await revokeKey({ key: archive.privateKey, format: "object" });
  await assert.rejects(
    verifyClearsigned(good, keyringOf([revoked], ["t"]), { what: "InRelease" }),
    untrusted(/signed only by revoked key/),
  );
});

test("unsigned text, or data outside the signed block, is refused", async () => {
  const archive = await newKey("Archive");
  const ring = keyringOf([archive.publicKey], ["t"]);
  const signed = await clearsign(RELEASE, [archive.privateKey]);
  await assert.rejects(
    verifyClearsigned(RELEASE, ring, { what: "InRelease" }),
    untrusted(/not exactly one clear-signed block/),
  );
  await assert.rejects(
    verifyClearsigned(`Origin: Evil\n\n${signed}`, ring, { what: "InRelease" }),
    untrusted(/not exactly one clear-signed block/),
  );
  await assert.rejects(
    verifyClearsigned(`${signed}\nSHA256:\n evil\n`, ring, { what: "InRelease" }),
    untrusted(/not exactly one clear-signed block/),
  );
  assert.equal(await unverifiedClearsignedText(signed), RELEASE);
});

test("detached signatures (Release + Release.gpg), armored or binary", async () => {
  const archive = await newKey("Archive");
  const data = new TextEncoder().encode(RELEASE);
  const message = await createMessage({ binary: data });
  const armored = await sign({ message, signingKeys: archive.privateKey, detached: true });
  const binary = await sign({ message, signingKeys: archive.privateKey, detached: true, format: "binary" });
  const ring = keyringOf([archive.publicKey], ["t"]);
  assert.equal(
    (await verifyDetached(data, new TextEncoder().encode(armored), ring, { what: "Release" })).length,
    1,
  );
  assert.equal((await verifyDetached(data, binary as Uint8Array, ring, { what: "Release" })).length, 1);
  const altered = new TextEncoder().encode(RELEASE.replace("stable", "stablf"));
  await assert.rejects(
    verifyDetached(altered, binary as Uint8Array, ring, { what: "Release" }),
    untrusted(/bad signature/),
  );
});

test("keyrings: binary concatenated keys, armored keys, fingerprint selection, garbage refused", async () => {
  const a = await newKey("A");
  const b = await newKey("B");
  const binary = Buffer.concat([a.publicKey.write(), b.publicKey.write()]);
  const ring = await parseKeyring(binary, "two.gpg");
  assert.deepEqual(
    ring.keys.map((k) => k.getFingerprint()),
    [a.publicKey.getFingerprint(), b.publicKey.getFingerprint()],
  );
  const armored = await parseKeyring(new TextEncoder().encode(b.publicKey.armor()), "b.asc");
  assert.equal(armored.keys[0]!.getFingerprint(), b.publicKey.getFingerprint());
  // A secret key file is reduced to its public part.
  const fromSecret = await parseKeyring(new TextEncoder().encode(a.privateKey.armor()), "a.asc");
  assert.equal(fromSecret.keys[0]!.isPrivate(), false);
  assert.deepEqual(
    selectKeys(ring, [b.publicKey.getFingerprint().toUpperCase()]).keys.map((k) => k.getFingerprint()),
    [b.publicKey.getFingerprint()],
  );
  await assert.rejects(
    parseKeyring(new TextEncoder().encode("not a key"), "junk.gpg"),
    untrusted(/junk\.gpg is not a readable OpenPGP keyring/),
  );
});

test("a signature dated after this machine's clock is a clock problem, not a bad signature", async () => {
  const archive = await newKey("Archive", { date: new Date(Date.now() - 86400_000) });
  const tomorrow = new Date(Date.now() + 86400_000);
  const signed = await clearsign(RELEASE, [archive.privateKey], tomorrow);
  await assert.rejects(
    verifyClearsigned(signed, keyringOf([archive.publicKey], ["t"]), { what: "InRelease" }),
    untrusted(/InRelease is signed at a time after this machine's clock .*check the system clock/),
  );
  // Within the allowed skew it verifies.
  assert.equal(
    (await verifyClearsigned(signed, keyringOf([archive.publicKey], ["t"]), { what: "x", now: tomorrow }))
      .text,
    RELEASE,
  );
});

test("a signing subkey that expired, or was revoked, is named as such (read from the key, not openpgp's wording)", async () => {
  const past = new Date(Date.now() - 10 * 86400_000);
  const expiring = await generateKey({
    userIDs: [{ name: "Sub" }],
    format: "object",
    date: past,
    subkeys: [{ sign: true, keyExpirationTime: 86400 }],
  });
  const subkeyId = expiring.publicKey.subkeys[0]!.getKeyID().toHex();
  const signed = await clearsign(RELEASE, [expiring.privateKey], new Date(past.getTime() + 3600_000));
  await assert.rejects(
    verifyClearsigned(signed, keyringOf([expiring.publicKey], ["t"]), { what: "InRelease" }),
    untrusted(new RegExp(`signed only by expired key .*\\(subkey ${subkeyId}\\)`)),
  );

  const archive = await generateKey({
    userIDs: [{ name: "Sub2" }],
    format: "object",
    subkeys: [{ sign: true }],
  });
  const good = await clearsign(RELEASE, [archive.privateKey]);
  const key = archive.privateKey;
  key.subkeys[0] = await key.subkeys[0]!.revoke(key.keyPacket as SecretKeyPacket);
  await assert.rejects(
    verifyClearsigned(good, keyringOf([key.toPublic()], ["t"]), { what: "InRelease" }),
    untrusted(/signed only by revoked key .*\(subkey /),
  );
});
