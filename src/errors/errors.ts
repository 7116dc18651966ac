/**
 * Every error suture raises is a SutureError with a stable `code` (callers and the CLI switch on
 * it), a one-line message that names the cause and the fix, and the underlying `cause`.
 * Each code below is documented where it is defined; add new codes here, never ad hoc strings.
 */
export type ErrorCode =
  /** A reference, transport prefix or platform string could not be parsed. */
  | "INVALID_REFERENCE"
  /** A manifest, index, config or other JSON document is not of the expected shape. */
  | "INVALID_MANIFEST"
  /** The requested image, tag, manifest or blob does not exist at the source. */
  | "NOT_FOUND"
  /** Bytes did not match the digest or size they were addressed by. */
  | "DIGEST_MISMATCH"
  /** Registry or daemon rejected our credentials, or none were found where required. */
  | "UNAUTHORIZED"
  /** Authenticated, but not allowed to perform the operation. */
  | "DENIED"
  /** Host unreachable, connection reset, DNS failure, TLS failure. */
  | "NETWORK"
  /** The registry answered with an error we cannot recover from. */
  | "REGISTRY"
  /** The Docker/Podman engine API failed or is unreachable. */
  | "DAEMON"
  /** A layer archive is malformed or tries to escape the root (`..`, absolute links). */
  | "UNSAFE_LAYER"
  /** A tar/ar/compression stream is malformed or of an unknown format. */
  | "INVALID_ARCHIVE"
  /** A vulnerability report is malformed or of an unknown format. */
  | "INVALID_REPORT"
  /** A package version string is not valid for its package manager (dpkg, apk, rpm). */
  | "INVALID_VERSION"
  /** The image's OS or package manager is not supported (yet). */
  | "UNSUPPORTED_OS"
  /** The image's release is past every phase of its support, and `--exit-on-eol` asked to stop there. */
  | "END_OF_LIFE"
  /** A requested platform is absent or not supported. */
  | "UNSUPPORTED_PLATFORM"
  /** A repository signature, checksum or validity check failed. */
  | "UNTRUSTED"
  /** The package manager failed inside the sandbox, or a package did not reach its target version. */
  | "PATCH_FAILED"
  /**
   * A package's maintainer scripts or triggers would have to run, with no native equivalent, and
   * the patch mode cannot run the image's code (no-namespaces mode).
   */
  | "NEEDS_RUNTIME"
  /** The OCI runtime, overlay mount or other sandbox plumbing failed. */
  | "SANDBOX"
  /** The operation ran past --timeout or was interrupted. */
  | "TIMEOUT"
  | "CANCELLED"
  /** A blob, manifest or image is larger than suture accepts (--max-blob-size, layer count). */
  | "TOO_LARGE"
  /** Command-line usage error. */
  | "USAGE"
  /** A local file or directory could not be read or written. */
  | "IO"
  /** A bug: an invariant did not hold. */
  | "INTERNAL";

export interface SutureErrorOptions {
  cause?: unknown;
  /** Whether repeating the same operation later may succeed (e.g. 503, connection reset). */
  retryable?: boolean;
}

export class SutureError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: SutureErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "SutureError";
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

export function isSutureError(e: unknown, code?: ErrorCode): e is SutureError {
  return e instanceof SutureError && (code === undefined || e.code === code);
}

/** Wrap a foreign error (fs, network) so it carries a code; SutureErrors pass through unchanged. */
export function asSutureError(e: unknown, code: ErrorCode, message: string): SutureError {
  if (e instanceof SutureError) return e;
  return new SutureError(code, `${message}: ${describeCause(e)}`, { cause: e });
}

/**
 * The shortest useful description of an unknown thrown value, on one line: foreign messages
 * quote their input (an fs error names a path from an archive, JSON.parse shows the text around
 * its error), and a line break there would break the one-line message it is embedded in.
 */
export function describeCause(e: unknown): string {
  let text = String(e);
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    text = code && !e.message.includes(code) ? `${code}: ${e.message}` : e.message;
  }
  return text.replace(/\r?\n|\r/g, "\\n");
}

/**
 * A value from an image, archive, report or server, JSON-quoted (so a newline or control
 * character cannot break the one-line message or forge a second line) and cut short (so it
 * cannot flood it).
 */
export function quoteUntrusted(value: string, max = 200): string {
  return JSON.stringify(value.length > max ? `${value.slice(0, max)}…` : value);
}

/** 17179869184 → `16 GiB`, 1536 → `1.5 KiB`, 100 → `100 bytes`: sizes in one-line messages. */
export function formatBytes(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return n === 1 ? "1 byte" : `${n} bytes`;
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}

/** Remove credentials from URLs and header-like text before it reaches an error or a log. */
export function redact(text: string): string {
  return text
    .replace(/([a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/gi, "$1***@")
    .replace(/((?:access_)?token|password|secret|Bearer|Basic)([=: ]+)[A-Za-z0-9._~+/=-]{6,}/gi, "$1$2***");
}
