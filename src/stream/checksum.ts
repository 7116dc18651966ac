import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { SutureError } from "../errors/errors.ts";
import { VerifyingStream } from "./verifying-stream.ts";

/** A size and SHA-256 (lower-case hex) taken from signed metadata. */
export interface ExpectedChecksum {
  size: number;
  sha256: string;
}

/**
 * The verifying stream for content a signed index lists: fails as soon as more than
 * `expected.size` bytes arrive, and at EOF when the size or SHA-256 differ. Errors are
 * SutureError UNTRUSTED (not retryable) naming `what` and `fix`.
 */
export class ChecksumStream extends VerifyingStream {
  constructor(expected: ExpectedChecksum, what: string, fix: string) {
    if (!/^[0-9a-f]{64}$/.test(expected.sha256)) {
      throw new SutureError("UNTRUSTED", `no valid SHA256 is known for ${what}: ${fix}`);
    }
    super(expected, {
      tooLarge: (size) =>
        new SutureError(
          "UNTRUSTED",
          `${what} is larger than the ${size} bytes the signed index lists: ${fix}`,
        ),
      sizeMismatch: (actual) => checksumError({ size: actual, sha256: "" }, expected, what, fix)!,
      digestMismatch: (actual) =>
        checksumError({ size: expected.size, sha256: actual }, expected, what, fix)!,
    });
  }
}

/** The error for `actual` differing from `expected`, or undefined when they match. */
export function checksumError(
  actual: ExpectedChecksum,
  expected: ExpectedChecksum,
  what: string,
  fix: string,
): SutureError | undefined {
  if (actual.size !== expected.size) {
    return new SutureError(
      "UNTRUSTED",
      `${what} is ${actual.size} bytes but the signed index lists ${expected.size}: ${fix}`,
    );
  }
  if (actual.sha256 !== expected.sha256.toLowerCase()) {
    return new SutureError(
      "UNTRUSTED",
      `${what} has SHA256 ${actual.sha256} but the signed index lists ${expected.sha256}: ${fix}`,
    );
  }
  return undefined;
}

/** Size and SHA-256 of a local file, streamed. */
export async function fileChecksum(path: string): Promise<ExpectedChecksum> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    size += (chunk as Buffer).length;
    hash.update(chunk as Buffer);
  }
  return { size, sha256: hash.digest("hex") };
}

export function bytesChecksum(bytes: Uint8Array): ExpectedChecksum {
  return { size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
}
