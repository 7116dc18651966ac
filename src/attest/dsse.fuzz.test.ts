import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { test } from "node:test";
import fc from "fast-check";
import {
  fuzzParameters,
  hostileText,
  PARSE_BUDGET_MS,
  parsesOrFailsCleanly,
  withinBudget,
} from "../../test/fuzz/fuzz.ts";
import {
  IN_TOTO_PAYLOAD_TYPE,
  parseEnvelope,
  signEnvelope,
  signingKeyFromPem,
  verifyEnvelope,
} from "./dsse.ts";

// Property: a mutated DSSE envelope (as pulled back from a registry) parses and verifies to exactly
// the signed payload, or fails with one line of INVALID_MANIFEST (not an envelope) or UNTRUSTED
// (no signature verifies); never another error, within a time budget. Seed: an envelope signed
// with a fresh P-256 key. Mutated key PEM text is a usage error, one line.

const key = signingKeyFromPem(
  generateKeyPairSync("ec", { namedCurve: "prime256v1" })
    .privateKey.export({ type: "pkcs8", format: "pem" })
    .toString(),
  "fuzz",
);
const payload = Buffer.from(JSON.stringify({ _type: "https://in-toto.io/Statement/v1", subject: [] }));
const seed = JSON.stringify(signEnvelope(payload, IN_TOTO_PAYLOAD_TYPE, key));

test("a hostile envelope verifies to the signed payload or fails with one line of INVALID_MANIFEST or UNTRUSTED", () => {
  fc.assert(
    fc.property(hostileText([seed]), (text) => {
      const verified = withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["INVALID_MANIFEST", "UNTRUSTED"], () =>
          verifyEnvelope(parseEnvelope(text, "envelope"), key.publicKey),
        ),
      );
      // A mutation may keep the signed bytes (whitespace, another key order): then it is the payload.
      if (verified) assert.deepEqual(verified, payload);
    }),
    fuzzParameters(200),
  );
});

test("a hostile --sign-key PEM is a usable P-256 key or one line of USAGE", () => {
  const pem = key.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  fc.assert(
    fc.property(hostileText([pem]), (text) => {
      withinBudget(PARSE_BUDGET_MS, () =>
        parsesOrFailsCleanly(["USAGE"], () => signingKeyFromPem(text, "k")),
      );
    }),
    fuzzParameters(200),
  );
});
