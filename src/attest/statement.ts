import { digestHex } from "../image/digest.ts";

/** in-toto Statement v1 (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md). */
export const IN_TOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1";

/**
 * suture's own predicate: what one patch did (see PatchPredicate). Versioned in the URI: a
 * change that is not a pure addition of fields gets a new one.
 */
export const PATCH_PREDICATE_TYPE = "https://suture.dev/patch/v1";

/**
 * Predicate types the VEX and the SBOM are wrapped in when they are signed: the ones
 * `cosign attest --type openvex|cyclonedx|spdxjson` writes, so `cosign verify-attestation --type`
 * finds them.
 */
export const OPENVEX_PREDICATE_TYPE = "https://openvex.dev/ns";
export const CYCLONEDX_PREDICATE_TYPE = "https://cyclonedx.org/bom";
export const SPDX_PREDICATE_TYPE = "https://spdx.dev/Document";

export interface StatementSubject {
  /** A name for the artifact: the image reference without tag or digest (`host/repo`), as cosign writes it. */
  name: string;
  digest: { sha256: string };
}

export interface InTotoStatement<P = unknown> {
  _type: typeof IN_TOTO_STATEMENT_TYPE;
  subject: StatementSubject[];
  predicateType: string;
  predicate: P;
}

/** A subject for an OCI manifest digest (`sha256:…`). */
export function manifestSubject(name: string, digest: string): StatementSubject {
  return { name, digest: { sha256: digestHex(digest) } };
}

export function statement<P>(
  subject: StatementSubject[],
  predicateType: string,
  predicate: P,
): InTotoStatement<P> {
  return { _type: IN_TOTO_STATEMENT_TYPE, subject, predicateType, predicate };
}

/** One package the patch changed, with what it was built from. */
export interface PatchedPackage {
  name: string;
  /** Absent: the patch installed it (a new dependency). */
  from?: string;
  to: string;
  /** The source package it was built from (deb Source, apk origin, rpm SOURCERPM), from the patched image's database. */
  source?: { name: string; version: string };
  /** The package's purl after and before the patch (the purl names the distribution it comes from). */
  purl?: string;
  previousPurl?: string;
}

/** One patched platform image. */
export interface PatchedPlatform {
  platform: string;
  /** The platform manifest that was patched, and the one written. */
  sourceDigest: string;
  digest: string;
  /** The one layer suture added. */
  patchLayer: { mediaType: string; digest: string; size: number; diffID?: string };
  engine?: string;
  packages: PatchedPackage[];
  /** The vulnerabilities the report asked to fix that this patch fixed (empty in update-all mode). */
  vulnerabilities: string[];
}

/**
 * The predicate of `https://suture.dev/patch/v1`. One statement describes one `suture patch`
 * run: for an index, its subjects are the written index and every patched platform manifest, and
 * `platforms` has one entry per patched platform (one document a policy reads whole, rather than
 * one per platform that must be matched up).
 */
export interface PatchPredicate {
  tool: { name: "suture"; version: string };
  source: { name: string; digest: string };
  result: { name: string; digest: string };
  /** Attestation manifests of the source index left out: they describe images that were replaced. */
  droppedAttestations: string[];
  platforms: PatchedPlatform[];
}
