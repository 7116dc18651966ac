import { type ErrorCode, redact } from "../../errors/errors.ts";
import { describeNetworkFailure, HttpError } from "../../http/errors.ts";

/** Error bodies are read up to this many bytes: enough for any distribution error document. */
export const ERROR_BODY_CAP = 64 * 1024;

/**
 * A registry failure: an HttpError (status, the server's `Retry-After`) that also carries the
 * distribution-spec error codes from the body.
 */
export class RegistryError extends HttpError {
  readonly registryCodes: readonly string[];

  constructor(
    code: ErrorCode,
    message: string,
    options: {
      cause?: unknown;
      retryable?: boolean;
      status?: number;
      registryCodes?: string[];
      retryAfterMs?: number;
    } = {},
  ) {
    super(code, message, options);
    this.registryCodes = options.registryCodes ?? [];
  }
}

/** One entry of a distribution-spec error body: `{"errors":[{"code","message","detail"}]}`. */
export interface DistributionError {
  code: string;
  message: string;
}

/** Parse a distribution error body; anything else yields an empty list (never throws). */
export function parseErrorBody(text: string): DistributionError[] {
  try {
    const doc = JSON.parse(text) as { errors?: unknown; details?: unknown };
    if (!doc || !Array.isArray(doc.errors)) return [];
    return doc.errors
      .filter((e): e is Record<string, unknown> => !!e && typeof e === "object")
      .map((e) => ({
        code: typeof e.code === "string" ? e.code : "UNKNOWN",
        message: typeof e.message === "string" ? e.message : "",
      }));
  } catch {
    return [];
  }
}

/** What was being done, for messages: `127.0.0.1:5000 (pull library/x)`. */
export interface ErrorContext {
  /** Registry as the user named it (`docker.io`, `127.0.0.1:5000`). */
  registry: string;
  /** `pull REPO` / `push REPO` / `mount …` / `list tags of REPO`. */
  operation: string;
  /** The object addressed, for 404s: `manifest library/x:latest`, `blob sha256:…`. */
  object?: string;
  /** Whether credentials (or a token obtained with them) were sent. */
  authenticated: boolean;
  /** Where the credentials came from, to say which ones were rejected. */
  credentialSource?: string;
}

const statusText: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Payload Too Large",
  416: "Range Not Satisfiable",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** Statuses a repeat of the same request can cure. */
export function isRetryableStatus(status: number): boolean {
  return (
    status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504
  );
}

/** Map an HTTP error answer to a RegistryError whose message names the registry, the operation and a fix. */
export function errorFromResponse(
  status: number,
  bodyText: string,
  ctx: ErrorContext,
  retryAfterMs?: number,
): RegistryError {
  const errors = parseErrorBody(bodyText);
  const codes = errors.map((e) => e.code);
  let detail = errors
    .map((e) => (e.message ? `${e.code} ${e.message}` : e.code))
    .join("; ")
    .slice(0, 300);
  if (!detail && bodyText.trim() && !/^\s*</.test(bodyText))
    detail = bodyText.trim().split("\n")[0]!.slice(0, 200);
  // The registry's own words may span lines (a JSON message with "\n", a body ending in "\r"):
  // fold them onto the one line of our message.
  detail = detail.replace(/\s+/g, " ").trim();
  const said = detail ? ` [registry: ${redact(detail)}]` : "";
  const where = `${ctx.registry} (${ctx.operation})`;
  const base = { status, registryCodes: codes, retryAfterMs };

  if (status === 401) {
    if (!ctx.authenticated) {
      return new RegistryError(
        "UNAUTHORIZED",
        `${ctx.registry} requires authentication (${ctx.operation}): run docker login ${ctx.registry}${said}`,
        base,
      );
    }
    const from = ctx.credentialSource ? ` (credentials from ${ctx.credentialSource})` : "";
    return new RegistryError(
      "UNAUTHORIZED",
      `authentication failed for ${where}: check docker login / credentials${from}${said}`,
      base,
    );
  }
  if (status === 403) {
    return new RegistryError(
      "DENIED",
      `access denied by ${where}: the account is not allowed to do this; check the repository name and its permissions${said}`,
      base,
    );
  }
  if (status === 404) {
    const what = ctx.object ?? describeUnknown(codes);
    return new RegistryError(
      "NOT_FOUND",
      `${what} not found on ${where}: check the repository name, tag or digest${said}`,
      base,
    );
  }
  if (codes.includes("DIGEST_INVALID") || codes.includes("SIZE_INVALID")) {
    return new RegistryError(
      "DIGEST_MISMATCH",
      `${where} rejected ${ctx.object ?? "the upload"}: the bytes sent do not match its digest or size${said}`,
      base,
    );
  }
  if (codes.includes("MANIFEST_BLOB_UNKNOWN") || codes.includes("BLOB_UNKNOWN")) {
    return new RegistryError(
      "REGISTRY",
      `${where} rejected ${ctx.object ?? "the manifest"}: it references blobs the repository does not have; push the blobs first${said}`,
      base,
    );
  }
  if (status === 429) {
    return new RegistryError(
      "REGISTRY",
      `${ctx.registry} is rate limiting requests (${ctx.operation}): wait and retry, or log in for a higher limit${said}`,
      { ...base, retryable: true },
    );
  }
  const text = `HTTP ${status}${statusText[status] ? ` ${statusText[status]}` : ""}`;
  if (isRetryableStatus(status)) {
    return new RegistryError(
      "REGISTRY",
      `${where} failed with ${text}: the registry is having trouble; retry later${said}`,
      { ...base, retryable: true },
    );
  }
  if (status === 405 || codes.includes("UNSUPPORTED")) {
    return new RegistryError(
      "REGISTRY",
      `${where} does not support this request (${text}): the registry may be read-only or a mirror${said}`,
      base,
    );
  }
  return new RegistryError("REGISTRY", `${where} answered ${text}: unexpected registry error${said}`, base);
}

function describeUnknown(codes: string[]): string {
  if (codes.includes("MANIFEST_UNKNOWN")) return "manifest";
  if (codes.includes("BLOB_UNKNOWN")) return "blob";
  if (codes.includes("NAME_UNKNOWN")) return "repository";
  return "resource";
}

/** The error of a capped read (`readCapped`) of a registry answer that is larger than allowed. */
export function answerTooLarge(what: string, cap: number): (announced?: number) => RegistryError {
  return (announced) =>
    new RegistryError(
      "REGISTRY",
      announced !== undefined
        ? `${what} is ${announced} bytes, more than the ${cap} allowed`
        : `${what} is more than the ${cap} bytes allowed`,
    );
}

/** Map a transport failure (no HTTP answer) to a NETWORK RegistryError. */
export function errorFromNetwork(
  e: unknown,
  ctx: Pick<ErrorContext, "registry" | "operation">,
): RegistryError {
  const failure = describeNetworkFailure(e);
  const where = `${ctx.registry} (${ctx.operation})`;
  if (failure.dns) {
    return new RegistryError(
      "NETWORK",
      `cannot resolve ${where}: ${failure.detail}: check the registry address`,
      { cause: e },
    );
  }
  if (failure.tls) {
    return new RegistryError(
      "NETWORK",
      `TLS connection to ${where} failed: ${failure.detail}: fix the registry's certificate, or allow it as an insecure registry if you trust the network`,
      { cause: e },
    );
  }
  return new RegistryError(
    "NETWORK",
    `cannot reach ${where}: ${failure.detail}: is the registry running? check the address`,
    { cause: e, retryable: failure.transient },
  );
}
