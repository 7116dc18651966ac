import { createHash } from "node:crypto";
import { type Readable, Transform, type TransformCallback } from "node:stream";
import { SutureError } from "../errors/errors.ts";
import type { Descriptor } from "../oci/manifest.ts";
import { VerifyingStream } from "../stream/verifying-stream.ts";

export function sha256Digest(bytes: Uint8Array | string): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** `sha256:abc…` → `abc…`; refuses anything but sha256 (the only algorithm we compute). */
export function digestHex(digest: string): string {
  const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
  if (!m)
    throw new SutureError(
      "DIGEST_MISMATCH",
      `unsupported or malformed digest "${digest}": only sha256 is supported`,
    );
  return m[1]!;
}

/** Check bytes already in memory against a descriptor (manifests, configs). */
export function verifyBytes(
  bytes: Uint8Array,
  expected: Pick<Descriptor, "digest" | "size">,
  what: string,
): void {
  if (expected.size !== undefined && expected.size >= 0 && bytes.length !== expected.size) {
    throw new SutureError(
      "DIGEST_MISMATCH",
      `${what} is ${bytes.length} bytes, expected ${expected.size}: the source served different content than its manifest names`,
    );
  }
  const actual = sha256Digest(bytes);
  if (actual !== expected.digest) {
    throw new SutureError(
      "DIGEST_MISMATCH",
      `${what} has digest ${actual}, expected ${expected.digest}: the source served corrupted or tampered content`,
    );
  }
}

/**
 * The verifying stream for content a descriptor names: DIGEST_MISMATCH as soon as more bytes
 * arrive than it names, and at EOF when the digest or size differ.
 */
export class DescriptorVerifyingStream extends VerifyingStream {
  constructor(expected: Pick<Descriptor, "digest" | "size">, what: string) {
    super(
      { sha256: digestHex(expected.digest), size: expected.size },
      {
        tooLarge: (size) =>
          new SutureError(
            "DIGEST_MISMATCH",
            `${what} is larger than the ${size} bytes its descriptor names: the source sent more than its manifest says, so suture stopped reading it`,
          ),
        sizeMismatch: (actual, size) =>
          new SutureError("DIGEST_MISMATCH", `${what} is ${actual} bytes, expected ${size}`),
        digestMismatch: (actual) =>
          new SutureError(
            "DIGEST_MISMATCH",
            `${what} has digest sha256:${actual}, expected ${expected.digest}: the source served corrupted or tampered content`,
          ),
      },
    );
  }
}

/**
 * The verifier a sink puts behind a blob it stores, or none when `input` already is a source's
 * verifying stream for the same digest and size. That stream fails with DIGEST_MISMATCH before
 * its end (more bytes than named) or at it (wrong digest or size), which fails the sink's pipeline
 * before anything is placed, so hashing the same bytes a second time proves nothing more: copying
 * the big lab image's 0.72 GiB of layers into an OCI layout hashed every byte twice.
 */
export function sinkVerifiers(input: Readable, expected: Pick<Descriptor, "digest" | "size">, what: string) {
  if (input instanceof VerifyingStream) {
    const has = input.expectation;
    if (
      (has.algorithm ?? "sha256") === "sha256" &&
      has.sha256 === digestHex(expected.digest) &&
      has.size === expected.size &&
      expected.size >= 0
    )
      return [];
  }
  return [new DescriptorVerifyingStream(expected, what)];
}

/** Hashes and counts a stream without checking it: for content we produce ourselves. */
export class DigestingStream extends Transform {
  readonly #hash = createHash("sha256");
  size = 0;
  #digest?: string;

  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.size += chunk.length;
    this.#hash.update(chunk);
    callback(null, chunk);
  }

  /** Available once the stream has ended. */
  get digest(): string {
    this.#digest ??= `sha256:${this.#hash.digest("hex")}`;
    return this.#digest;
  }
}
