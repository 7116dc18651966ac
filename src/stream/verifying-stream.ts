import { createHash, type Hash } from "node:crypto";
import { PassThrough, type Readable, Transform, type TransformCallback } from "node:stream";

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

  /** What this stream checks the bytes against. */
  get expectation(): Readonly<StreamExpectation> {
    return this.#expected;
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

/** A verifier fed from an input, and a copy of what it passes for a consumer that may give up. */
export interface VerifiedCopy {
  /** The verified bytes, for the consumer (a decoder, a parser). Ends when the input ends. */
  copy: PassThrough;
  /** Settles when the verifier has seen the whole input: rejects with its error on a mismatch. */
  verified: Promise<void>;
  /**
   * For a consumer that failed part-way: run the rest of the input through the verifier (the
   * copy is no longer fed) and reject with the verifier's error if the bytes were altered, so
   * that a tampered file is reported as tampered, not as whatever it broke downstream.
   */
  settle(): Promise<void>;
}

/**
 * Pipe `input` through `verifier` and hand the consumer a copy of the bytes, so that the
 * verifier can still run to the end when the consumer stops early.
 */
export function verifyAlongside(input: Readable, verifier: VerifyingStream): VerifiedCopy {
  const verified = new Promise<void>((resolve, reject) => {
    verifier.on("end", resolve);
    verifier.on("error", reject);
  });
  verified.catch(() => {});
  const copy = new PassThrough();
  let feeding = true;
  verifier.on("data", (chunk: Buffer) => {
    if (!feeding || copy.destroyed) return;
    if (!copy.write(chunk)) {
      verifier.pause();
      copy.once("drain", () => verifier.resume());
    }
  });
  verifier.on("end", () => copy.end());
  verifier.on("error", (e) => copy.destroy(e));
  input.on("error", (e) => verifier.destroy(e));
  input.pipe(verifier);
  return {
    copy,
    verified,
    settle: async () => {
      feeding = false;
      if (verifier.destroyed) return verified;
      verifier.resume();
      return verified;
    },
  };
}
