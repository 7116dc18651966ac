import { formatBytes, SutureError } from "../../errors/errors.ts";
import { listDirInRoot, readFileInRoot } from "../../fs/in-root.ts";
import { type Keyring, mergeKeyrings, parseKeyring } from "../../trust/keyring.ts";
import { type Signer, verifyDetached } from "../../trust/signature.ts";
import { type RpmHeader, RpmSigTag, RpmTag } from "./header.ts";
import { type RpmPackage, readRange } from "./package.ts";

/**
 * OpenPGP signatures of .rpm packages, checked with openpgp.js against a keyring (trust/), and
 * the keys an rpm image trusts. (repomd.xml's detached signature is repomd.ts's.)
 */

/** Header+payload signatures need the whole file in memory; only old packages have nothing else. */
const MAX_WHOLE_FILE_SIGNATURE_BYTES = 1024 * 1024 * 1024;

/** Where rpm distributions keep their vendors' public keys (what gpgkey= lines point at). */
export const RPM_GPG_DIR = "/etc/pki/rpm-gpg";

const UNKNOWN_KEY_FIX =
  "the image trusts no key that signed it; add the vendor's key to the image (gpgkey=, /etc/pki/rpm-gpg) or pass it with --keyring";

export interface VerifyRpmOptions {
  /** The instant keys must be valid at (default now). */
  now?: Date;
  /**
   * Also check a header+payload signature the package carries beside its header signature, as
   * `rpm -K` does (reads the whole file into memory; the header signature and the payload digest
   * already vouch for every byte, so the default leaves it).
   */
  everySignature?: boolean;
}

/**
 * Verify the package's OpenPGP signature against `keyring`, as `rpm -K` with the signature
 * required: the header signature (RSA or DSA tag: RSA and EdDSA keys alike) when there is one;
 * the legacy header+payload signature (PGP or GPG tag) when there is no header signature or the
 * header carries no payload digest to vouch for the payload. Unsigned, signed by a key outside
 * the keyring, or badly signed: UNTRUSTED. Returns the keys that signed.
 */
export async function verifyRpmSignature(
  pkg: RpmPackage,
  keyring: Keyring,
  options: VerifyRpmOptions = {},
): Promise<Signer[]> {
  const what = pkg.path;
  const verify = {
    what,
    unknownKeyFix: UNKNOWN_KEY_FIX,
    ...(options.now ? { now: options.now } : {}),
  };
  const headerSignature =
    pkg.signatureHeader.binary(RpmSigTag.RSA) ?? pkg.signatureHeader.binary(RpmSigTag.DSA);
  const wholeSignature =
    pkg.signatureHeader.binary(RpmSigTag.PGP) ?? pkg.signatureHeader.binary(RpmSigTag.GPG);
  if (!headerSignature && !wholeSignature) {
    throw new SutureError(
      "UNTRUSTED",
      `${what} is not signed, and packages are installed only with a verified signature: use the vendor's signed package`,
    );
  }
  if (!keyring.keys.length) {
    throw new SutureError(
      "UNTRUSTED",
      `no keys to check ${what}'s signature with: add the vendor's key to the image (gpgkey=, /etc/pki/rpm-gpg) or pass it with --keyring`,
    );
  }
  const signers: Signer[] = [];
  if (headerSignature) {
    const headerBytes = await readRange(
      pkg.path,
      pkg.headerOffset,
      pkg.payloadOffset - pkg.headerOffset,
      what,
    );
    signers.push(...(await verifyDetached(headerBytes, headerSignature, keyring, verify)));
    if (pkg.payloadDigest && !(options.everySignature && wholeSignature)) return signers;
  }
  if (!wholeSignature) {
    throw new SutureError(
      "UNTRUSTED",
      `${what} is signed over its header only and its header has no payload digest, so nothing vouches for its files: use a package built with rpm 4.14 or later, or one signed over header and payload`,
    );
  }
  const length = pkg.fileSize - pkg.headerOffset;
  if (length > MAX_WHOLE_FILE_SIGNATURE_BYTES) {
    throw new SutureError(
      "TOO_LARGE",
      `${what} is signed over header and payload only, and at ${formatBytes(length)} it is larger than the ${formatBytes(MAX_WHOLE_FILE_SIGNATURE_BYTES)} suture checks such signatures on`,
    );
  }
  const whole = await readRange(pkg.path, pkg.headerOffset, length, what);
  signers.push(...(await verifyDetached(whole, wholeSignature, keyring, verify)));
  return signers;
}

/**
 * Every public key under `/etc/pki/rpm-gpg` in the image, read through the in-root resolver:
 * the keys an image trusts beyond its repositories' gpgkey= lines. Files that are not OpenPGP
 * keys (READMEs, keyboxes) are skipped and named in `skipped`.
 */
export async function readRpmGpgDir(
  root: string,
  dir = RPM_GPG_DIR,
): Promise<{ keyring: Keyring; skipped: string[] }> {
  const rings: Keyring[] = [];
  const skipped: string[] = [];
  for (const name of await listDirInRoot(root, dir)) {
    const path = `${dir}/${name}`;
    const bytes = await readFileInRoot(root, path);
    if (!bytes) continue;
    try {
      rings.push(await parseKeyring(bytes, path));
    } catch {
      skipped.push(path);
    }
  }
  return { keyring: mergeKeyrings(rings), skipped };
}

/**
 * The keys imported into an rpm database (`rpm --import`, or dnf importing a gpgkey= on first
 * use): the PUBKEYS of its `gpg-pubkey` headers. rpm itself checks packages against these.
 * `source` names the database in messages; keys that do not parse are skipped and named.
 */
export async function rpmdbKeyring(
  headers: Iterable<RpmHeader>,
  source: string,
): Promise<{ keyring: Keyring; skipped: string[] }> {
  const rings: Keyring[] = [];
  const skipped: string[] = [];
  for (const header of headers) {
    if (header.string(RpmTag.NAME) !== "gpg-pubkey") continue;
    const label = `${source} gpg-pubkey-${header.string(RpmTag.VERSION) ?? "?"}-${header.string(RpmTag.RELEASE) ?? "?"}`;
    for (const base64 of header.stringArray(RpmTag.PUBKEYS)) {
      try {
        rings.push(await parseKeyring(Buffer.from(base64.replace(/\s+/g, ""), "base64"), label));
      } catch {
        skipped.push(label);
      }
    }
  }
  return { keyring: mergeKeyrings(rings), skipped };
}
