import { createHash, createPrivateKey, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { z } from "zod";
import { SutureError } from "../errors/errors.ts";
import { readFileCapped } from "../fs/read-capped.ts";
import { parseJson } from "../oci/manifest.ts";

/** The payload type of an in-toto statement in a DSSE envelope (what cosign verifies). */
export const IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json";

/** DSSE v1: `{payloadType, payload (base64), signatures: [{keyid, sig (base64)}]}`. */
export const DsseEnvelopeSchema = z.looseObject({
  payloadType: z.string(),
  payload: z.string(),
  signatures: z.array(z.looseObject({ keyid: z.string().optional(), sig: z.string() })),
});
export type DsseEnvelope = z.infer<typeof DsseEnvelopeSchema>;

/**
 * DSSE's pre-authentication encoding: what is signed is never the payload alone but
 * `"DSSEv1" SP len(type) SP type SP len(body) SP body`, lengths in bytes as ASCII decimal, so
 * a signature over one payload type can never be replayed as another.
 */
export function pae(payloadType: string, body: Uint8Array): Buffer {
  const type = Buffer.from(payloadType, "utf8");
  return Buffer.concat([
    Buffer.from(`DSSEv1 ${type.length} `, "ascii"),
    type,
    Buffer.from(` ${body.length} `, "ascii"),
    body,
  ]);
}

/** An ECDSA P-256 key pair loaded from `--sign-key`, with the keyid its envelopes carry. */
export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** SHA-256 (hex) of the public key's DER SubjectPublicKeyInfo: stable, and derivable from the .pub file. */
  readonly keyid: string;
  /** The public key as PEM, what `cosign verify-attestation --key` takes. */
  readonly publicKeyPem: string;
}

/** A PEM key file is a few hundred bytes; anything near this is not one. */
const MAX_KEY_FILE = 64 * 1024;

/**
 * Load a signing key: an unencrypted ECDSA P-256 private key in PEM (PKCS#8 `PRIVATE KEY`, or
 * SEC1 `EC PRIVATE KEY` as `openssl ecparam -genkey` writes). cosign's own
 * `ENCRYPTED SIGSTORE PRIVATE KEY` (scrypt + secretbox) and encrypted PKCS#8 are refused with how
 * to produce a usable key; the key is checked before any work, so a bad one writes nothing.
 */
export async function loadSigningKey(file: string): Promise<SigningKey> {
  const bytes = await readFileCapped(file, {
    limit: MAX_KEY_FILE,
    what: `--sign-key ${file}`,
    regularOnly: true,
    tooLarge: () => new SutureError("USAGE", `--sign-key ${file} is too large to be a PEM private key`),
  }).catch((e: unknown) => {
    if (e instanceof SutureError) throw e;
    throw new SutureError(
      "USAGE",
      `cannot read --sign-key ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): give the path of a PEM private key`,
      { cause: e },
    );
  });
  return signingKeyFromPem(bytes.toString("utf8"), file);
}

export function signingKeyFromPem(pem: string, name: string): SigningKey {
  const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(pem)?.[1];
  const howTo =
    "make one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem` (cosign takes it with `cosign import-key-pair --key key.pem`)";
  if (!label) {
    throw new SutureError("USAGE", `--sign-key ${name} is not a PEM private key: ${howTo}`);
  }
  if (label.startsWith("ENCRYPTED")) {
    throw new SutureError(
      "USAGE",
      `--sign-key ${name} is an encrypted key (${label}), which suture does not decrypt: give an unencrypted PKCS#8 P-256 key; ${howTo}`,
    );
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: "pem" });
  } catch (e) {
    throw new SutureError(
      "USAGE",
      `--sign-key ${name} is not a usable private key (${(e as Error).message.split("\n")[0]}): ${howTo}`,
      { cause: e },
    );
  }
  const curve = privateKey.asymmetricKeyDetails?.namedCurve;
  if (privateKey.asymmetricKeyType !== "ec" || curve !== "prime256v1") {
    throw new SutureError(
      "USAGE",
      `--sign-key ${name} is a ${privateKey.asymmetricKeyType}${curve ? ` ${curve}` : ""} key; cosign-style signatures need ECDSA P-256: ${howTo}`,
    );
  }
  const publicKey = createPublicKey(privateKey);
  const der = publicKey.export({ type: "spki", format: "der" });
  return {
    privateKey,
    publicKey,
    keyid: createHash("sha256").update(der).digest("hex"),
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

/**
 * Sign a payload as a DSSE envelope: ECDSA P-256 over SHA-256 of the PAE, the signature ASN.1 DER
 * (what sigstore's ECDSA verifier, and so cosign, expects), base64 in standard encoding.
 */
export function signEnvelope(payload: Uint8Array, payloadType: string, key: SigningKey): DsseEnvelope {
  const sig = sign("sha256", pae(payloadType, payload), key.privateKey);
  return {
    payloadType,
    payload: Buffer.from(payload).toString("base64"),
    signatures: [{ keyid: key.keyid, sig: sig.toString("base64") }],
  };
}

/** Parse an envelope's bytes (a layer pulled back from a registry, say). */
export function parseEnvelope(bytes: Uint8Array | string, what: string): DsseEnvelope {
  return parseJson(DsseEnvelopeSchema, bytes, what);
}

/**
 * Verify an envelope against a public key: some signature must verify over the PAE of its type and
 * decoded payload. Returns the payload; throws UNTRUSTED otherwise. `dsaEncoding` is `der` for
 * cosign-style signatures, `ieee-p1363` for raw r||s ones.
 */
export function verifyEnvelope(
  envelope: DsseEnvelope,
  publicKey: KeyObject,
  options: { dsaEncoding?: "der" | "ieee-p1363" } = {},
): Buffer {
  const payload = Buffer.from(envelope.payload, "base64");
  const signed = pae(envelope.payloadType, payload);
  for (const s of envelope.signatures) {
    const sig = Buffer.from(s.sig, "base64");
    let ok = false;
    try {
      ok = verify("sha256", signed, { key: publicKey, dsaEncoding: options.dsaEncoding ?? "der" }, sig);
    } catch {
      ok = false;
    }
    if (ok) return payload;
  }
  throw new SutureError(
    "UNTRUSTED",
    `no signature of the ${envelope.payloadType} envelope verifies with the given key: it was altered or signed with another key`,
  );
}
