import assert from "node:assert/strict";
import { createHash, createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { isSutureError } from "../errors/errors.ts";
import {
  IN_TOTO_PAYLOAD_TYPE,
  loadSigningKey,
  pae,
  parseEnvelope,
  signEnvelope,
  signingKeyFromPem,
  verifyEnvelope,
} from "./dsse.ts";

// A fixed ECDSA P-256 test key (PKCS#8, as `openssl genpkey -algorithm EC` writes it).
const FIXED_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgp0AVSQqOKtXrAH0D
zLMOHebiytRF++NwNUbWzRVgT9yhRANCAAQP6w6hu6nZCly/YvPnFY/bObMRIkBE
v06+Tc+SXD6/jcnEn68apQ0D77dqF9MmBemlBY/Tpz20TY+7QFRA+9s5
-----END PRIVATE KEY-----
`;

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), "suture-dsse-"));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

test("PAE is the DSSE protocol's encoding: the specification's example, empty and multi-byte bodies", () => {
  // protocol.md's worked example, byte for byte.
  assert.equal(
    pae("http://example.com/HelloWorld", Buffer.from("hello world")).toString("latin1"),
    "DSSEv1 29 http://example.com/HelloWorld 11 hello world",
  );
  assert.equal(pae("", new Uint8Array()).toString("latin1"), "DSSEv1 0  0 ");
  // Lengths count bytes, not characters: "ಠ" is three bytes in UTF-8.
  assert.deepEqual(
    pae("http://example.com/HelloWorld", Buffer.from("ಠ", "utf8")),
    Buffer.concat([Buffer.from("DSSEv1 29 http://example.com/HelloWorld 3 "), Buffer.from("ಠ", "utf8")]),
  );
  assert.equal(
    pae(IN_TOTO_PAYLOAD_TYPE, Buffer.from("{}")).toString("latin1"),
    "DSSEv1 28 application/vnd.in-toto+json 2 {}",
  );
});

/** A P-256 public key from decimal coordinates (the form the vector below gives them in). */
function p256FromDecimal(x: string, y: string) {
  const b64u = (n: string) =>
    Buffer.from(BigInt(n).toString(16).padStart(64, "0"), "hex").toString("base64url");
  return createPublicKey({ key: { kty: "EC", crv: "P-256", x: b64u(x), y: b64u(y) }, format: "jwk" });
}

test("an envelope from secure-systems-lab's DSSE test vectors (ECDSA P-256, RFC 6979) verifies, and fails once altered", () => {
  // go-securesystemslib dsse/sign_test.go TestEcdsaSign: the protocol example signed with a fixed
  // key; the signature is raw r||s.
  const key = p256FromDecimal(
    "46950820868899156662930047687818585632848591499744589407958293238635476079160",
    "5640078356564379163099075877009565129882514886557779369047442380624545832820",
  );
  const envelope = parseEnvelope(
    JSON.stringify({
      payload: "aGVsbG8gd29ybGQ=",
      payloadType: "http://example.com/HelloWorld",
      signatures: [
        {
          keyid: "test key 123",
          sig: "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA==",
        },
      ],
    }),
    "vector",
  );
  assert.equal(verifyEnvelope(envelope, key, { dsaEncoding: "ieee-p1363" }).toString(), "hello world");
  const otherPayload = { ...envelope, payload: Buffer.from("hello world!").toString("base64") };
  assert.throws(
    () => verifyEnvelope(otherPayload, key, { dsaEncoding: "ieee-p1363" }),
    (e) => isSutureError(e, "UNTRUSTED"),
  );
  // The type is authenticated too: the same body under another type does not verify.
  const otherType = { ...envelope, payloadType: "http://example.com/HelloWorlD" };
  assert.throws(
    () => verifyEnvelope(otherType, key, { dsaEncoding: "ieee-p1363" }),
    (e) => isSutureError(e, "UNTRUSTED"),
  );
});

test("signEnvelope writes what an independent verifier over a hand-built PAE accepts (DER signature, keyid of the public key)", () => {
  const key = signingKeyFromPem(FIXED_KEY, "fixed");
  const statement = Buffer.from(JSON.stringify({ _type: "https://in-toto.io/Statement/v1", subject: [] }));
  const env = signEnvelope(statement, IN_TOTO_PAYLOAD_TYPE, key);
  assert.equal(env.payloadType, "application/vnd.in-toto+json");
  assert.deepEqual(Buffer.from(env.payload, "base64"), statement);
  assert.equal(env.signatures.length, 1);
  // Independent check: the PAE spelled out here, node:crypto over it with the public key alone.
  const signed = Buffer.concat([
    Buffer.from(`DSSEv1 28 application/vnd.in-toto+json ${statement.length} `),
    statement,
  ]);
  const publicKey = createPublicKey(key.publicKeyPem);
  const sig = Buffer.from(env.signatures[0]!.sig, "base64");
  assert.equal(sig[0], 0x30, "an ASN.1 DER SEQUENCE, as sigstore's ECDSA verifier reads");
  assert.ok(verify("sha256", signed, publicKey, sig));
  assert.equal(
    env.signatures[0]!.keyid,
    createHash("sha256")
      .update(publicKey.export({ type: "spki", format: "der" }))
      .digest("hex"),
  );
  assert.deepEqual(verifyEnvelope(env, publicKey), statement);
  // Another key does not verify it.
  const other = signingKeyFromPem(
    generateKeyPairSync("ec", { namedCurve: "prime256v1" })
      .privateKey.export({ type: "pkcs8", format: "pem" })
      .toString(),
    "other",
  );
  assert.throws(
    () => verifyEnvelope(env, other.publicKey),
    (e) => isSutureError(e, "UNTRUSTED"),
  );
});

test("loadSigningKey takes PKCS#8 and SEC1 P-256 PEM keys and refuses others with a one-line usage error", async () => {
  const pkcs8 = join(work, "key.pem");
  await writeFile(pkcs8, FIXED_KEY);
  const loaded = await loadSigningKey(pkcs8);
  assert.equal(loaded.keyid, signingKeyFromPem(FIXED_KEY, "x").keyid);
  const sec1 = join(work, "sec1.pem");
  await writeFile(
    sec1,
    generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({
      type: "sec1",
      format: "pem",
    }),
  );
  await loadSigningKey(sec1);

  const cases: [string, string, RegExp][] = [
    [
      "cosign.key",
      "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
      /encrypted key \(ENCRYPTED SIGSTORE PRIVATE KEY\).*unencrypted PKCS#8/,
    ],
    ["garbage.pem", "not a key at all\n", /is not a PEM private key/],
    [
      "broken.pem",
      "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
      /is not a usable private key/,
    ],
    [
      "ed25519.pem",
      generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
      /is a ed25519 key; cosign-style signatures need ECDSA P-256/,
    ],
    [
      "p384.pem",
      generateKeyPairSync("ec", { namedCurve: "secp384r1" })
        .privateKey.export({ type: "pkcs8", format: "pem" })
        .toString(),
      /is a ec secp384r1 key/,
    ],
  ];
  for (const [name, content, message] of cases) {
    const file = join(work, name);
    await writeFile(file, content);
    await assert.rejects(loadSigningKey(file), (e: Error) => {
      assert.ok(isSutureError(e, "USAGE"), `${name}: ${e.message}`);
      assert.match(e.message, message);
      assert.doesNotMatch(e.message, /\n/);
      return true;
    });
  }
  await assert.rejects(loadSigningKey(join(work, "missing.pem")), (e: Error) => {
    assert.ok(isSutureError(e, "USAGE"));
    assert.match(e.message, /cannot read --sign-key .*missing\.pem \(ENOENT\)/);
    return true;
  });
});
