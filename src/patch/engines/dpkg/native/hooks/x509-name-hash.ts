import { createHash } from "node:crypto";

/**
 * OpenSSL's subject-name hash (`openssl x509 -hash`, the `<hash>.0` link names `openssl rehash`
 * makes): SHA-1 over the name's canonical encoding, its first four bytes read little-endian. The
 * canonical encoding is OpenSSL's own (x509_name_canon): each RDN's SET re-encoded in DER with
 * every text value converted to a lower-cased UTF8String with its whitespace trimmed and runs of it
 * collapsed, and the SETs concatenated without the Name's outer SEQUENCE.
 */

/** One DER element: its tag byte, where its contents are, and where it ends. */
interface Element {
  tag: number;
  start: number;
  contentStart: number;
  end: number;
}

export class DerError extends Error {}

function readElement(der: Buffer, at: number, limit = der.length): Element {
  if (at + 2 > limit) throw new DerError("truncated element");
  const tag = der[at]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte tags are not used in certificates");
  let length = der[at + 1]!;
  let p = at + 2;
  if (length & 0x80) {
    const n = length & 0x7f;
    if (n === 0 || n > 4 || p + n > limit) throw new DerError("bad length");
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + der[p + i]!;
    p += n;
  }
  if (p + length > limit) throw new DerError("element runs past its parent");
  return { tag, start: at, contentStart: p, end: p + length };
}

function children(der: Buffer, parent: Element): Element[] {
  const out: Element[] = [];
  for (let p = parent.contentStart; p < parent.end; ) {
    const e = readElement(der, p, parent.end);
    out.push(e);
    p = e.end;
  }
  return out;
}

function encodeLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), encodeLength(content.length), content]);
}

/** The certificate's subject Name element (tbsCertificate's sixth field, counting the optional version). */
export function certificateSubject(der: Buffer): Buffer {
  const cert = readElement(der, 0);
  if (cert.tag !== 0x30) throw new DerError("not a certificate");
  const tbs = children(der, cert)[0];
  if (!tbs || tbs.tag !== 0x30) throw new DerError("no tbsCertificate");
  const fields = children(der, tbs);
  const offset = fields[0]?.tag === 0xa0 ? 1 : 0;
  const subject = fields[offset + 4];
  if (!subject || subject.tag !== 0x30) throw new DerError("no subject");
  return der.subarray(subject.start, subject.end);
}

// String types OpenSSL canonicalises (ASN1_MASK_CANON), with the width of one character.
const CANON_WIDTH = new Map<number, number>([
  [0x0c, 0], // UTF8String
  [0x13, 1], // PrintableString
  [0x14, 1], // T61String (read as Latin-1, as ASN1_STRING_to_UTF8 does)
  [0x16, 1], // IA5String
  [0x1a, 1], // VisibleString
  [0x1c, 4], // UniversalString
  [0x1e, 2], // BMPString
]);

function toUtf8(content: Buffer, width: number): Buffer {
  if (width === 0) return content;
  if (content.length % width) throw new DerError("string length is not a whole number of characters");
  let text = "";
  for (let i = 0; i < content.length; i += width) {
    const cp = width === 1 ? content[i]! : width === 2 ? content.readUInt16BE(i) : content.readUInt32BE(i);
    text += String.fromCodePoint(cp);
  }
  return Buffer.from(text, "utf8");
}

const isSpace = (b: number) => b === 0x20 || (b >= 0x09 && b <= 0x0d);

/** asn1_string_canon: trim, collapse inner whitespace to one space, lower-case ASCII; other bytes as they are. */
function canonText(utf8: Buffer): Buffer {
  let from = 0;
  let to = utf8.length;
  while (from < to && isSpace(utf8[from]!)) from++;
  while (to > from && isSpace(utf8[to - 1]!)) to--;
  const out: number[] = [];
  for (let i = from; i < to; ) {
    const b = utf8[i]!;
    if (b >= 0x80) {
      out.push(b);
      i++;
    } else if (isSpace(b)) {
      out.push(0x20);
      while (i < to && isSpace(utf8[i]!)) i++;
    } else {
      out.push(b >= 0x41 && b <= 0x5a ? b + 0x20 : b);
      i++;
    }
  }
  return Buffer.from(out);
}

/** DER's SET OF order, as OpenSSL's der_cmp: bytewise over the shorter, then the shorter first. */
function derOrder(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  const c = Buffer.compare(a.subarray(0, n), b.subarray(0, n));
  return c !== 0 ? c : a.length - b.length;
}

/** The canonical encoding of a DER Name (the bytes OpenSSL hashes). */
export function canonicalName(nameDer: Buffer): Buffer {
  const name = readElement(nameDer, 0);
  if (name.tag !== 0x30) throw new DerError("a Name is a SEQUENCE");
  const sets: Buffer[] = [];
  for (const rdn of children(nameDer, name)) {
    if (rdn.tag !== 0x31) throw new DerError("an RDN is a SET");
    const entries: Buffer[] = [];
    for (const atv of children(nameDer, rdn)) {
      if (atv.tag !== 0x30) throw new DerError("an attribute is a SEQUENCE");
      const [type, value, extra] = children(nameDer, atv);
      if (!type || type.tag !== 0x06 || !value || extra) throw new DerError("malformed attribute");
      const typeBytes = nameDer.subarray(type.start, type.end);
      const width = CANON_WIDTH.get(value.tag);
      const valueBytes =
        width === undefined
          ? nameDer.subarray(value.start, value.end)
          : tlv(0x0c, canonText(toUtf8(nameDer.subarray(value.contentStart, value.end), width)));
      entries.push(tlv(0x30, Buffer.concat([typeBytes, valueBytes])));
    }
    sets.push(tlv(0x31, Buffer.concat(entries.sort(derOrder))));
  }
  return Buffer.concat(sets);
}

/** `openssl x509 -hash`'s value for a DER Name, as eight lower-case hex digits. */
export function subjectNameHash(nameDer: Buffer): string {
  const md = createHash("sha1").update(canonicalName(nameDer)).digest();
  return md.readUInt32LE(0).toString(16).padStart(8, "0");
}
