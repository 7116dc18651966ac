import { createPublicKey, constants as cryptoConstants, type KeyObject, verify } from "node:crypto";
import { readTar } from "../../archive/tar/read.ts";
import { describeCause, quoteUntrusted, SutureError } from "../../errors/errors.ts";

/**
 * apk's v2 signatures: a tar segment whose one member `.SIGN.RSA.<key name>` (RSA PKCS#1 v1.5
 * over SHA-1) or `.SIGN.RSA256.<key name>` (over SHA-256) signs the raw compressed bytes that
 * follow it (an index's tar.gz, a package's control member). apk finds the key by file name: a
 * file named `<key name>` in /etc/apk/keys; a keyring here is the same map, name → RSA key.
 */
export interface ApkKeyring {
  readonly keys: ReadonlyMap<string, KeyObject>;
}

export type ApkSignatureAlgorithm = "sha1" | "sha256";

export interface ApkSignature {
  /** The key's file name, as apk matches it (`alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub`). */
  keyName: string;
  algorithm: ApkSignatureAlgorithm;
  signature: Buffer;
}

/** Key names are file names in /etc/apk/keys: no path separators, nothing that reads as an option. */
const KEY_NAME = /^[A-Za-z0-9_][A-Za-z0-9@._+-]*$/;
/** RSA signatures are as long as the modulus; 16 kbit keys are the largest anyone makes. */
const MAX_SIGNATURE_BYTES = 2048;

export function isValidApkKeyName(name: string): boolean {
  return name.length <= 255 && KEY_NAME.test(name) && name !== "." && name !== "..";
}

/**
 * A keyring from apk public key files (`NAME.rsa.pub`, PEM). Throws UNTRUSTED naming the file
 * when one is not an RSA public key. `source` says where the files came from, for messages.
 */
export function apkKeyring(
  files: Iterable<{ name: string; pem: Uint8Array | string }>,
  source: string,
): ApkKeyring {
  const keys = new Map<string, KeyObject>();
  for (const { name, pem } of files) {
    if (!isValidApkKeyName(name))
      throw new SutureError(
        "UNTRUSTED",
        `apk key file ${quoteUntrusted(name)} in ${source} has a name apk cannot match (letters, digits and @ . _ + - only): rename it as the key's signer names it, e.g. NAME.rsa.pub`,
      );
    let key: KeyObject;
    try {
      key = createPublicKey({ key: Buffer.from(pem), format: "pem" });
    } catch (e) {
      throw new SutureError(
        "UNTRUSTED",
        `apk key ${quoteUntrusted(name)} in ${source} is not a PEM public key (${describeCause(e)}): replace it with the repository's NAME.rsa.pub file`,
        { cause: e },
      );
    }
    if (key.asymmetricKeyType !== "rsa")
      throw new SutureError(
        "UNTRUSTED",
        `apk key ${quoteUntrusted(name)} in ${source} is a ${key.asymmetricKeyType} key, but apk v2 signatures are RSA: replace it with the repository's NAME.rsa.pub file`,
      );
    keys.set(name, key);
  }
  return { keys };
}

export function mergeApkKeyrings(rings: readonly ApkKeyring[]): ApkKeyring {
  return { keys: new Map(rings.flatMap((r) => [...r.keys])) };
}

/**
 * The signatures in a signature segment (the decompressed first gzip member), in archive order.
 * A segment whose members are not signatures yields none: the stream is then unsigned (a
 * melange package without a key starts directly with its control segment). Malformed
 * signature members are INVALID_ARCHIVE, messages starting with `what`.
 */
export async function readApkSignatures(segment: Buffer, what: string): Promise<ApkSignature[]> {
  const files: { path: string; type: string; data: Buffer }[] = [];
  let oversized: string | undefined;
  try {
    for await (const entry of readTar([segment])) {
      if (!entry.header.path.startsWith(".SIGN.")) break;
      const chunks: Buffer[] = [];
      for await (const c of entry.body) chunks.push(c);
      const data = Buffer.concat(chunks);
      if (data.length > MAX_SIGNATURE_BYTES) {
        oversized = entry.header.path;
        break;
      }
      files.push({ path: entry.header.path, type: entry.header.type, data });
    }
  } catch (e) {
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${what}: its signature segment cannot be read (${describeCause(e)})`,
      {
        cause: e,
      },
    );
  }
  if (oversized !== undefined)
    throw new SutureError(
      "INVALID_ARCHIVE",
      `${what}: signature ${quoteUntrusted(oversized)} is larger than any RSA signature`,
    );
  const out: ApkSignature[] = [];
  for (const { path, type, data } of files) {
    const m = /^\.SIGN\.(RSA|RSA256|DSA)\.(.*)$/s.exec(path);
    if (!m || type !== "file" || m[1] === "DSA") continue; // apk-tools 2 skips what it cannot check
    if (!isValidApkKeyName(m[2]!))
      throw new SutureError(
        "INVALID_ARCHIVE",
        `${what}: signature ${quoteUntrusted(path)} names no valid key file`,
      );
    out.push({ keyName: m[2]!, algorithm: m[1] === "RSA" ? "sha1" : "sha256", signature: data });
  }
  return out;
}

/** How the user makes a key trusted, for messages. */
function trustHint(keyName: string): string {
  return `add the repository's public key to the image's /etc/apk/keys or pass --keyring PATH/${keyName}`;
}

/**
 * Check `signed` (the raw bytes the signatures cover) as apk does: the first signature made by a
 * key in `keyring` must verify. Returns the key name that signed. No signature, no signature by
 * a trusted key, or a signature that does not verify: UNTRUSTED naming `what` and the key.
 */
export function verifyApkSignature(
  signatures: readonly ApkSignature[],
  signed: Uint8Array,
  keyring: ApkKeyring,
  what: string,
): string {
  if (signatures.length === 0)
    throw new SutureError(
      "UNTRUSTED",
      `${what} is not signed (no .SIGN.RSA.* or .SIGN.RSA256.* member), and apk trusts only signed indexes and packages: sign it with abuild-sign and ${trustHint("NAME.rsa.pub")}`,
    );
  const chosen = signatures.find((s) => keyring.keys.has(s.keyName));
  if (!chosen) {
    const names = signatures.map((s) => s.keyName);
    throw new SutureError(
      "UNTRUSTED",
      `${what} is signed by key ${names.map((n) => quoteUntrusted(n)).join(", ")}, which this image does not trust: ${trustHint(names[0]!)}`,
    );
  }
  let ok = false;
  try {
    ok = verify(
      chosen.algorithm,
      signed,
      { key: keyring.keys.get(chosen.keyName)!, padding: cryptoConstants.RSA_PKCS1_PADDING },
      chosen.signature,
    );
  } catch {
    ok = false; // a signature of the wrong length for the key: as bad as one that does not match
  }
  if (!ok)
    throw new SutureError(
      "UNTRUSTED",
      `${what} has a signature by key ${quoteUntrusted(chosen.keyName)} that does not verify: it was changed after it was signed; fetch it again from a trusted mirror`,
    );
  return chosen.keyName;
}
