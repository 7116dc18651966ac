import {
  createMessage,
  type KeyID,
  type PublicKey,
  readCleartextMessage,
  readSignature,
  type Signature,
  type VerifyMessageResult,
  verify,
} from "openpgp";
import { describeCause, quoteUntrusted, SutureError } from "../errors/errors.ts";
import type { Keyring } from "./keyring.ts";

/** A key whose signature was accepted. */
export interface Signer {
  /** Primary key fingerprint, lower-case hex. */
  fingerprint: string;
  /** The (sub)key id that made the signature, lower-case hex. */
  keyId: string;
  userIds: string[];
  created?: Date;
}

export interface VerifyOptions {
  /** The instant keys must be valid at (default: now). Tests pass a fixed clock. */
  now?: Date;
  /** What is being verified, for messages: "http://deb.debian.org/debian/dists/bookworm/InRelease". */
  what: string;
  /** Signatures dated up to this far after `now` are accepted (clock skew; default 10 min). */
  clockSkewMs?: number;
  /**
   * The remedy when only keys outside the keyring signed (default: apt's, Signed-By); rpm
   * repositories name theirs with gpgkey=.
   */
  unknownKeyFix?: string;
}

export interface VerifiedText {
  /** The signed text only: whatever surrounded the signed block is never returned. */
  text: string;
  signers: Signer[];
}

const BEGIN_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE = "-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE = "-----END PGP SIGNATURE-----";

/**
 * Verify a clear-signed document (apt's InRelease) and return only its signed text. Policy, as
 * apt with gpgv: at least one signature must be good and made by a key in `keyring` that is
 * neither expired nor revoked at `now`; any signature by a keyring key that does not verify
 * fails the whole file; signatures by keys outside the keyring are ignored. The file must be
 * exactly one signed block (nothing before it, only whitespace after it), so data outside the
 * signature can never be mistaken for signed content. Throws SutureError UNTRUSTED.
 */
export async function verifyClearsigned(
  data: Uint8Array | string,
  keyring: Keyring,
  options: VerifyOptions,
): Promise<VerifiedText> {
  const text = typeof data === "string" ? data : Buffer.from(data).toString("utf8");
  checkClearsignedShape(text, options.what);
  let message: Awaited<ReturnType<typeof readCleartextMessage>>;
  try {
    message = await readCleartextMessage({ cleartextMessage: text });
  } catch (e) {
    throw untrusted(`${options.what} is not a valid clear-signed file (${describeCause(e)})`, e);
  }
  const signers = await checkSignatures(
    message.getSigningKeyIDs().length,
    (date) => verify({ message, verificationKeys: [...keyring.keys], date }),
    keyring,
    options,
  );
  return { text: message.getText(), signers };
}

/**
 * Verify a detached signature (apt's Release + Release.gpg) over `data`, with the same policy as
 * verifyClearsigned. `signature` may be armored or binary.
 */
export async function verifyDetached(
  data: Uint8Array,
  signature: Uint8Array,
  keyring: Keyring,
  options: VerifyOptions,
): Promise<Signer[]> {
  let sig: Signature;
  try {
    const head = Buffer.from(signature.subarray(0, 64)).toString("latin1").trimStart();
    sig = head.startsWith("-----BEGIN PGP")
      ? await readSignature({ armoredSignature: Buffer.from(signature).toString("utf8") })
      : await readSignature({ binarySignature: signature });
  } catch (e) {
    throw untrusted(`the detached signature for ${options.what} is unreadable (${describeCause(e)})`, e);
  }
  const message = await createMessage({ binary: data });
  return checkSignatures(
    sig.getSigningKeyIDs().length,
    (date) => verify({ message, signature: sig, verificationKeys: [...keyring.keys], date }),
    keyring,
    options,
  );
}

/**
 * The text of a clear-signed file WITHOUT checking its signature: only for sources the image
 * itself marks `trusted=yes`, where apt does the same. Throws UNTRUSTED when it is not clear-signed.
 */
export async function unverifiedClearsignedText(data: Uint8Array | string): Promise<string> {
  const text = typeof data === "string" ? data : Buffer.from(data).toString("utf8");
  try {
    return (await readCleartextMessage({ cleartextMessage: text })).getText();
  } catch (e) {
    throw untrusted(`not a clear-signed file (${describeCause(e)})`, e);
  }
}

function checkClearsignedShape(text: string, what: string): void {
  const lines = text.split("\n").map((l) => l.replace(/\r$/, ""));
  const first = lines.findIndex((l) => l.trim() !== "");
  const count = (marker: string) => lines.filter((l) => l === marker).length;
  const end = lines.lastIndexOf(END_SIGNATURE);
  const trailing = end < 0 ? [] : lines.slice(end + 1).filter((l) => l.trim() !== "");
  if (
    first < 0 ||
    lines[first] !== BEGIN_SIGNED ||
    count(BEGIN_SIGNED) !== 1 ||
    count(BEGIN_SIGNATURE) !== 1 ||
    count(END_SIGNATURE) !== 1 ||
    trailing.length
  ) {
    throw untrusted(
      `${what} is not exactly one clear-signed block (unsigned, or data outside the signature): the server sent an unsigned or manipulated file`,
    );
  }
}

type Verdict =
  | { kind: "good"; signer: Signer }
  | { kind: "unknown"; keyId: string }
  | { kind: "bad"; keyId: string; key: PublicKey; reason: string }
  | { kind: "expired" | "revoked"; keyId: string; key: PublicKey; reason: string };

async function checkSignatures(
  signatureCount: number,
  runVerify: (date: Date) => Promise<VerifyMessageResult<unknown>>,
  keyring: Keyring,
  options: VerifyOptions,
): Promise<Signer[]> {
  const now = options.now ?? new Date();
  const what = options.what;
  if (!signatureCount) throw untrusted(`${what} carries no signature: the repository is unsigned`);
  let result: VerifyMessageResult<unknown>;
  try {
    // A signature made a moment "after" our clock (skew) must still verify; Date skew is checked
    // on the Release itself, and key validity below at `now`.
    result = await runVerify(new Date(now.getTime() + (options.clockSkewMs ?? 10 * 60_000)));
  } catch (e) {
    throw untrusted(`cannot check the signature of ${what} (${describeCause(e)})`, e);
  }
  const verdicts: Verdict[] = [];
  for (const s of result.signatures) {
    const keyId = s.keyID.toHex();
    const key = keyring.keys.find((k) => k.getKeys(s.keyID).length > 0);
    if (!key) {
      // Swallow the rejection so it is not reported as unhandled; the key is simply not trusted.
      s.verified.catch(() => {});
      verdicts.push({ kind: "unknown", keyId });
      continue;
    }
    const sig = await s.signature.catch(() => undefined);
    const created = sig?.packets[0]?.created ?? undefined;
    try {
      await s.verified;
    } catch (e) {
      const reason = describeCause(e);
      // Why it failed is decided from the signature's and the key's own data, not openpgp's wording.
      if (created && created.getTime() > now.getTime() + (options.clockSkewMs ?? 10 * 60_000)) {
        throw untrusted(
          `${what} is signed at a time after this machine's clock (${reason}): check the system clock`,
          e,
        );
      }
      verdicts.push({ kind: (await keyStateAt(key, s.keyID, created ?? now)) ?? "bad", keyId, key, reason });
      continue;
    }
    try {
      // openpgp checks the key at the signature's creation time; apt (gpgv) also refuses keys
      // that have expired or been revoked since, so check again at `now`.
      await key.getSigningKey(s.keyID, now);
    } catch (e) {
      const reason = describeCause(e);
      verdicts.push({ kind: (await keyStateAt(key, s.keyID, now)) ?? "expired", keyId, key, reason });
      continue;
    }
    verdicts.push({
      kind: "good",
      signer: {
        fingerprint: key.getFingerprint().toLowerCase(),
        keyId,
        userIds: key.getUserIDs(),
        created,
      },
    });
  }
  const bad = verdicts.find((v) => v.kind === "bad");
  if (bad && bad.kind === "bad") {
    throw untrusted(
      `${what} has a bad signature by trusted key ${describeKey(bad.key, bad.keyId)} (${bad.reason}): the file was altered after signing; do not use this mirror until it serves intact files`,
    );
  }
  const good = verdicts.flatMap((v) => (v.kind === "good" ? [v.signer] : []));
  if (good.length) return good;
  const stale = verdicts.find((v) => v.kind === "expired" || v.kind === "revoked");
  if (stale && (stale.kind === "expired" || stale.kind === "revoked")) {
    const expiry = stale.kind === "expired" ? await expiryOf(stale.key) : undefined;
    throw untrusted(
      `${what} is signed only by ${stale.kind} key ${describeKey(stale.key, stale.keyId)}${expiry ? ` (expired ${expiry.toISOString()})` : ""}: update the image's archive keyring, or check the system clock`,
    );
  }
  const ids = verdicts.map((v) => (v.kind === "unknown" ? v.keyId : "")).filter(Boolean);
  throw untrusted(
    `${what} is signed by unknown key${ids.length > 1 ? "s" : ""} ${ids.join(", ")}, none of them in the trusted keyring (${keyring.sources.join(", ") || "empty"}): ${options.unknownKeyFix ?? "add the repository's key via Signed-By, or check that the source URI is right"}`,
  );
}

/**
 * Whether `key`, or its subkey `keyID`, is revoked or expired at `date`: read from the key's own
 * revocation signatures and expiration times.
 */
async function keyStateAt(
  key: PublicKey,
  keyID: KeyID,
  date: Date,
): Promise<"expired" | "revoked" | undefined> {
  const subkey = key.getSubkeys(keyID)[0];
  // openpgp's types want a signature and key here; without them it asks about any revocation.
  const anyRevocation = undefined as never;
  if (await key.isRevoked(undefined, undefined, date)) return "revoked";
  if (subkey && (await subkey.isRevoked(anyRevocation, anyRevocation, date))) return "revoked";
  const expired = (t: Date | number | null) => t instanceof Date && t.getTime() <= date.getTime();
  if (expired(await key.getExpirationTime().catch(() => null))) return "expired";
  // A null date: the subkey's binding as signed, whenever it was made (its own expiry is the question).
  if (subkey && expired(await subkey.getExpirationTime(null as never).catch(() => null))) return "expired";
  return undefined;
}

async function expiryOf(key: PublicKey): Promise<Date | undefined> {
  try {
    const t = await key.getExpirationTime();
    return t instanceof Date ? t : undefined;
  } catch {
    return undefined;
  }
}

function describeKey(key: PublicKey, keyId: string): string {
  const uid = key.getUserIDs()[0];
  return `${key.getFingerprint().toUpperCase()}${keyId !== key.getKeyID().toHex() ? ` (subkey ${keyId})` : ""}${uid ? ` ${quoteUntrusted(uid)}` : ""}`;
}

function untrusted(message: string, cause?: unknown): SutureError {
  return new SutureError("UNTRUSTED", message, cause === undefined ? {} : { cause });
}
