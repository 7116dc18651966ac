import assert from "node:assert/strict";
import { before, test } from "node:test";
import fc from "fast-check";
import { createCleartextMessage, createMessage, generateKey, type PrivateKey, sign } from "openpgp";
import {
  assertNoUnhandledRejections,
  fuzzParameters,
  hostileText,
  mutatedBytes,
  parsesOrFailsCleanlyAsync,
} from "../../test/fuzz/fuzz.ts";
import { type Keyring, keyringOf, parseKeyring } from "./keyring.ts";
import { unverifiedClearsignedText, verifyClearsigned, verifyDetached } from "./signature.ts";

// Property: an InRelease (or Release + Release.gpg) from a mirror is either verified — and then
// the text returned is exactly what the trusted key signed — or refused with one line of
// UNTRUSTED. openpgp's own exceptions must never escape, and nothing altered may verify.

const RELEASE = `Origin: Debian
Suite: stable
Codename: bookworm
Date: Sun, 29 Nov 2026 00:53:13 UTC
SHA256:
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 main/binary-amd64/Packages
`;

let ring: Keyring;
let armoredKey: string;
let binaryKey: Buffer;
let inRelease: string;
let detached: Buffer;
let armoredDetached: string;

before(async () => {
  const { privateKey, publicKey } = await generateKey({
    userIDs: [{ name: "Archive", email: "archive@example.org" }],
    format: "object",
  });
  ring = keyringOf([publicKey], ["test"]);
  armoredKey = publicKey.armor();
  binaryKey = Buffer.from(publicKey.write());
  const signer = privateKey as PrivateKey;
  inRelease = await sign({ message: await createCleartextMessage({ text: RELEASE }), signingKeys: signer });
  const message = await createMessage({ binary: Buffer.from(RELEASE) });
  detached = Buffer.from(await sign({ message, signingKeys: signer, detached: true, format: "binary" }));
  armoredDetached = await sign({ message, signingKeys: signer, detached: true });
});

// Keys and signatures are made at test time: verify at the real clock.
const NOW = new Date(Date.now() + 60_000);

test("the seeds verify (so mutations start from a good signature)", async () => {
  assert.equal((await verifyClearsigned(inRelease, ring, { what: "InRelease", now: NOW })).text, RELEASE);
  assert.equal(
    (await verifyDetached(Buffer.from(RELEASE), detached, ring, { what: "Release", now: NOW })).length,
    1,
  );
});

test("verifyClearsigned: mutated InRelease is refused in one line, or verifies to the signed text", async () => {
  await fc.assert(
    fc.asyncProperty(hostileText([inRelease], 3), async (text) => {
      const got = await parsesOrFailsCleanlyAsync(["UNTRUSTED"], () =>
        verifyClearsigned(text, ring, { what: "InRelease", now: NOW }),
      );
      // A mutation may survive only where it changes nothing signed (armor headers, whitespace).
      if (got) assert.equal(got.text.replace(/\s+$/, ""), RELEASE.replace(/\s+$/, ""));
      await parsesOrFailsCleanlyAsync(["UNTRUSTED"], () => unverifiedClearsignedText(text));
      await assertNoUnhandledRejections();
    }),
    fuzzParameters(200),
  );
});

test("verifyDetached: mutated signatures and data are refused in one line", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        mutatedBytes(detached, 3).map((sig) => ({ sig, data: Buffer.from(RELEASE) })),
        mutatedBytes(Buffer.from(armoredDetached), 3).map((sig) => ({ sig, data: Buffer.from(RELEASE) })),
        mutatedBytes(Buffer.from(RELEASE), 2).map((data) => ({ sig: detached, data })),
      ),
      async ({ sig, data }) => {
        const signers = await parsesOrFailsCleanlyAsync(["UNTRUSTED"], () =>
          verifyDetached(data, sig, ring, { what: "Release", now: NOW }),
        );
        if (signers) assert.equal(data.toString(), RELEASE, "altered data verified");
        await assertNoUnhandledRejections();
      },
    ),
    fuzzParameters(200),
  );
});

test("parseKeyring: an image's mutated keyring file is read or refused with one-line UNTRUSTED", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(mutatedBytes(Buffer.from(armoredKey), 3), mutatedBytes(binaryKey, 3)),
      async (bytes) => {
        const parsed = await parsesOrFailsCleanlyAsync(["UNTRUSTED"], () =>
          parseKeyring(bytes, "/usr/share/keyrings/debian-archive-keyring.gpg"),
        );
        for (const key of parsed?.keys ?? []) assert.equal(key.isPrivate(), false);
        await assertNoUnhandledRejections();
      },
    ),
    fuzzParameters(200),
  );
});
