import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";

/** What a stream must turn out to be: its SHA-256 (lower-case hex) and size. */
export interface StreamExpectation {
  /**
   * Undefined: only the size is checked (an apk index signs a package's control segment, not
   * the file, so the file is checked once it is whole).
   */
  sha256?: string;
  /** Exact size in bytes; negative when unknown (then only the digest is checked). */
  size: number;
  /**
   * The hash the `sha256` field's digest is of, when it is not SHA-256: rpm-md repositories
   * (repomd.xml) also name SHA-1 and SHA-512 checksums.
   */
  algorithm?: "sha1" | "sha224" | "sha256" | "sha384" | "sha512";
}

/** The caller's errors (its code and wording: a registry blob is not a signed package index). */
export interface VerifyFailures {
  /** More bytes arrived than `size`: the stream stops there. */
  tooLarge(size: number): Error;
  /** At EOF: `actual` bytes arrived instead of `size`. */
  sizeMismatch(actual: number, size: number): Error;
  /** At EOF: the bytes hash to `actual` (hex) instead. */
  digestMismatch(actual: string): Error;
}

/**
 * The one verifying stream: a pass-through that hashes what flows through, fails as soon as more
 * bytes arrive than expected (none of the excess is passed on, so a source streaming without end
 * cannot fill a disk), and at EOF when the size or digest differ. Consumers must treat the data
 * as untrusted until the stream ends cleanly.
 */
export class VerifyingStream extends Transform {
  readonly #hash: Hash;
  readonly #expected: StreamExpectation;
  readonly #failures: VerifyFailures;
  /** Bytes seen so far. */
  bytes = 0;

  constructor(expected: StreamExpectation, failures: VerifyFailures) {
    super();
    this.#hash = createHash(expected.algorithm ?? "sha256");
    this.#expected = expected;
    this.#failures = failures;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.#expected.size >= 0 && this.bytes > this.#expected.size) {
      callback(this.#failures.tooLarge(this.#expected.size));
      return;
    }
    this.#hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.#expected.size >= 0 && this.bytes !== this.#expected.size) {
      callback(this.#failures.sizeMismatch(this.bytes, this.#expected.size));
      return;
    }
    const actual = this.#hash.digest("hex");
    const ok = this.#expected.sha256 === undefined || actual === this.#expected.sha256;
    callback(ok ? undefined : this.#failures.digestMismatch(actual));
  }
}
