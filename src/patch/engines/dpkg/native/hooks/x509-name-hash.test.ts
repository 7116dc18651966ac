import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { canonicalName, DerError, subjectNameHash } from "./x509-name-hash.ts";

// Hand-built DER, so each canonicalisation rule is seen on its own.
const tlv = (tag: number, content: Buffer) => Buffer.concat([Buffer.from([tag, content.length]), content]);
const CN = Buffer.from([0x06, 0x03, 0x55, 0x04, 0x03]);
const O = Buffer.from([0x06, 0x03, 0x55, 0x04, 0x0a]);
const atv = (type: Buffer, tag: number, value: Buffer) => tlv(0x30, Buffer.concat([type, tlv(tag, value)]));
const name = (...rdns: Buffer[][]) =>
  tlv(0x30, Buffer.concat(rdns.map((atvs) => tlv(0x31, Buffer.concat(atvs)))));

test("text values become lower-cased UTF8Strings with whitespace trimmed and runs of it collapsed", () => {
  const canon = canonicalName(name([atv(CN, 0x13, Buffer.from(" \t Hello \n\r  World  "))]));
  assert.deepEqual(canon, tlv(0x31, atv(CN, 0x0c, Buffer.from("hello world"))));
});

test("BMPString and T61String are converted to UTF-8; non-ASCII bytes are kept as they are", () => {
  const bmp = Buffer.from([0x00, 0x4b, 0x00, 0xf6, 0x00, 0x4c, 0x00, 0x4e]); // "KöLN"
  assert.deepEqual(canonicalName(name([atv(O, 0x1e, bmp)])), tlv(0x31, atv(O, 0x0c, Buffer.from("köln"))));
  assert.deepEqual(
    canonicalName(name([atv(O, 0x14, Buffer.from([0x4d, 0xfc, 0x4e]))])), // Latin-1 "MüN"
    tlv(0x31, atv(O, 0x0c, Buffer.from("mün"))),
  );
});

test("the RDNs are concatenated without the Name's SEQUENCE; a multi-valued RDN is sorted as DER sorts a SET", () => {
  const b = atv(O, 0x0c, Buffer.from("b"));
  const a = atv(CN, 0x0c, Buffer.from("a"));
  assert.deepEqual(
    canonicalName(name([b, a], [atv(CN, 0x0c, Buffer.from("x"))])),
    Buffer.concat([tlv(0x31, Buffer.concat([a, b])), tlv(0x31, atv(CN, 0x0c, Buffer.from("x")))]),
  );
});

test("types outside the canonical set are kept byte for byte", () => {
  const numeric = atv(CN, 0x12, Buffer.from(" 12 34 "));
  assert.deepEqual(canonicalName(name([numeric])), tlv(0x31, numeric));
});

test("the hash is the first four bytes of the SHA-1, little-endian; an empty name hashes the empty string", () => {
  const sha = createHash("sha1").update(Buffer.alloc(0)).digest();
  assert.equal(subjectNameHash(name()), sha.readUInt32LE(0).toString(16).padStart(8, "0"));
});

test("malformed DER is refused, not guessed at", () => {
  assert.throws(() => canonicalName(Buffer.from([0x30, 0x05, 0x31])), DerError);
  assert.throws(() => canonicalName(tlv(0x31, Buffer.alloc(0))), DerError);
});
