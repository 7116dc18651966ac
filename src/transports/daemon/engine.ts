import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { homedir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { describeCause, SutureError } from "../../errors/errors.ts";
import type { TransportOptions } from "../index.ts";

export const DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock";
/** Newest Engine API version suture has been written against; older servers are spoken to in theirs. */
export const MAX_API_VERSION = "1.47";
/** Oldest Engine API with everything used here (image save/load by name, /_ping headers). */
export const MIN_API_VERSION = "1.24";
const ERROR_BODY_LIMIT = 64 * 1024;

/** Where the Docker (or Podman-compatible) Engine API listens. */
export interface EngineEndpoint {
  /** As given (`unix:///run/docker.sock`, `tcp://127.0.0.1:2375`), for messages. */
  readonly host: string;
  readonly socketPath?: string;
  readonly hostname?: string;
  readonly port?: number;
  readonly tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; verify: boolean };
}

/**
 * The endpoint from TransportOptions.dockerHost, else $DOCKER_HOST, else the default socket.
 * `tcp://` uses TLS when $DOCKER_TLS_VERIFY or $DOCKER_TLS is set (certificates from
 * $DOCKER_CERT_PATH, default ~/.docker), as the docker CLI does.
 */
export function resolveEngineEndpoint(options: Pick<TransportOptions, "dockerHost"> = {}): EngineEndpoint {
  const host = options.dockerHost || process.env.DOCKER_HOST || DEFAULT_DOCKER_HOST;
  if (host.startsWith("unix://")) {
    const socketPath = host.slice("unix://".length);
    if (!socketPath) throw badHost(host);
    return { host, socketPath };
  }
  if (host.startsWith("tcp://") || host.startsWith("http://") || host.startsWith("https://")) {
    let url: URL;
    try {
      url = new URL(host.replace(/^tcp:/, "http:"));
    } catch {
      throw badHost(host);
    }
    const tlsEnv = process.env.DOCKER_TLS_VERIFY || process.env.DOCKER_TLS;
    const useTls = host.startsWith("https://") || Boolean(tlsEnv);
    const port = url.port ? Number(url.port) : useTls ? 2376 : 2375;
    if (!useTls) return { host, hostname: url.hostname, port };
    const certDir = process.env.DOCKER_CERT_PATH || join(homedir(), ".docker");
    const read = (f: string) => {
      try {
        return readFileSync(join(certDir, f));
      } catch {
        return undefined;
      }
    };
    return {
      host,
      hostname: url.hostname,
      port,
      tls: {
        ca: read("ca.pem"),
        cert: read("cert.pem"),
        key: read("key.pem"),
        verify: Boolean(process.env.DOCKER_TLS_VERIFY),
      },
    };
  }
  throw badHost(host);
}

function badHost(host: string): SutureError {
  return new SutureError(
    "USAGE",
    `unsupported DOCKER_HOST "${host}": use unix:///path/to/docker.sock or tcp://HOST:PORT`,
  );
}

export interface EngineRequest {
  method: "GET" | "POST" | "HEAD" | "DELETE";
  /** API path without the version prefix, e.g. `/images/load`. */
  path: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Readable;
  /** Time allowed to connect and receive response headers. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** `1.41` → comparable number pair; unknown text sorts lowest. */
function versionParts(v: string): [number, number] {
  const m = /^(\d+)\.(\d+)$/.exec(v.trim());
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

export function compareApiVersions(a: string, b: string): number {
  const [am, an] = versionParts(a);
  const [bm, bn] = versionParts(b);
  return am !== bm ? am - bm : an - bn;
}

/**
 * A client of one Docker Engine API endpoint, speaking the server's API version capped at
 * MAX_API_VERSION (found from `/_ping`'s API-Version header, or `/version`).
 */
export class EngineClient {
  readonly endpoint: EngineEndpoint;
  readonly apiVersion: string;

  private constructor(endpoint: EngineEndpoint, apiVersion: string) {
    this.endpoint = endpoint;
    this.apiVersion = apiVersion;
  }

  /** Reach the daemon and agree on an API version; DAEMON error naming the socket when unreachable. */
  static async connect(
    options: Pick<TransportOptions, "dockerHost" | "signal"> = {},
    timeoutMs = 10_000,
  ): Promise<EngineClient> {
    const endpoint = resolveEngineEndpoint(options);
    const ping = await send(endpoint, { method: "GET", path: "/_ping", timeoutMs, signal: options.signal });
    let server = headerValue(ping.headers["api-version"]);
    await drain(ping);
    if (ping.statusCode !== 200) {
      throw new SutureError(
        "DAEMON",
        `the Docker daemon at ${endpoint.host} answered /_ping with HTTP ${ping.statusCode}: check DOCKER_HOST points at a Docker or Podman API socket`,
      );
    }
    if (!server) {
      const res = await send(endpoint, {
        method: "GET",
        path: "/version",
        timeoutMs,
        signal: options.signal,
      });
      const body = await readBody(res, ERROR_BODY_LIMIT);
      try {
        server = (JSON.parse(body.toString("utf8")) as { ApiVersion?: string }).ApiVersion;
      } catch {
        server = undefined;
      }
    }
    if (!server) {
      throw new SutureError("DAEMON", `the daemon at ${endpoint.host} does not report its API version`);
    }
    if (compareApiVersions(server, MIN_API_VERSION) < 0) {
      throw new SutureError(
        "DAEMON",
        `the Docker daemon at ${endpoint.host} speaks API ${server}, older than ${MIN_API_VERSION}: upgrade Docker`,
      );
    }
    const version = compareApiVersions(server, MAX_API_VERSION) > 0 ? MAX_API_VERSION : server;
    return new EngineClient(endpoint, version);
  }

  /** Send a versioned request; the caller reads or drains the response. */
  request(req: EngineRequest): Promise<http.IncomingMessage> {
    return send(this.endpoint, { ...req, path: `/v${this.apiVersion}${req.path}` });
  }

  /**
   * Turn a non-2xx response into a SutureError carrying the daemon's message (`{"message": …}`),
   * read up to a cap. 404 becomes NOT_FOUND with `notFound` as the message when given.
   */
  async failure(res: http.IncomingMessage, what: string, notFound?: string): Promise<SutureError> {
    const body = await readBody(res, ERROR_BODY_LIMIT).catch(() => Buffer.alloc(0));
    let message = body.toString("utf8").trim();
    try {
      const parsed = JSON.parse(message) as { message?: string };
      if (parsed.message) message = parsed.message;
    } catch {
      // Not JSON: keep the text.
    }
    if (res.statusCode === 404 && notFound) return new SutureError("NOT_FOUND", notFound);
    return new SutureError(
      res.statusCode === 404 ? "NOT_FOUND" : "DAEMON",
      `${what} failed: the Docker daemon at ${this.endpoint.host} answered HTTP ${res.statusCode}: ${message.split("\n")[0] || "(no message)"}`,
    );
  }
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function unreachable(endpoint: EngineEndpoint, e: unknown): SutureError {
  const code = (e as NodeJS.ErrnoException).code;
  const fix =
    code === "EACCES"
      ? "run as root or as a member of the docker group, or set DOCKER_HOST to a socket you may use"
      : "is dockerd running? start it, or set DOCKER_HOST to its socket (unix:///path or tcp://host:port)";
  return new SutureError(
    "DAEMON",
    `cannot reach the Docker daemon at ${endpoint.host} (${describeCause(e)}): ${fix}`,
    { cause: e, retryable: code === "ECONNREFUSED" || code === "ECONNRESET" },
  );
}

/** One HTTP request to the endpoint; resolves with the response once its headers arrived. */
function send(endpoint: EngineEndpoint, req: EngineRequest): Promise<http.IncomingMessage> {
  const query = req.query ? `?${new URLSearchParams(req.query).toString()}` : "";
  const headers: Record<string, string> = { ...req.headers };
  if (req.body) headers["Transfer-Encoding"] = "chunked";
  const common = { method: req.method, path: `${req.path}${query}`, headers };
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (e: unknown) => {
      if (settled) return;
      settled = true;
      reject(e instanceof SutureError ? e : unreachable(endpoint, e));
    };
    let request: http.ClientRequest;
    if (endpoint.socketPath) {
      request = http.request({ ...common, socketPath: endpoint.socketPath, host: "docker" });
    } else if (endpoint.tls) {
      request = https.request({
        ...common,
        hostname: endpoint.hostname,
        port: endpoint.port,
        ca: endpoint.tls.ca,
        cert: endpoint.tls.cert,
        key: endpoint.tls.key,
        rejectUnauthorized: endpoint.tls.verify,
      });
    } else {
      request = http.request({ ...common, hostname: endpoint.hostname, port: endpoint.port });
    }
    const timer = req.timeoutMs
      ? setTimeout(() => {
          request.destroy(
            new SutureError(
              "DAEMON",
              `the Docker daemon at ${endpoint.host} did not answer ${req.path} within ${Math.round(req.timeoutMs! / 1000)}s: is it running and healthy?`,
              { retryable: true },
            ),
          );
        }, req.timeoutMs)
      : undefined;
    const onAbort = () =>
      request.destroy(new SutureError("CANCELLED", `request to the Docker daemon was cancelled`));
    req.signal?.addEventListener("abort", onAbort, { once: true });
    request.on("response", (res) => {
      if (timer) clearTimeout(timer);
      req.signal?.removeEventListener("abort", onAbort);
      settled = true;
      resolve(res);
    });
    request.on("error", (e) => {
      if (timer) clearTimeout(timer);
      req.signal?.removeEventListener("abort", onAbort);
      fail(e);
    });
    if (req.body) {
      req.body.on("error", (e) => request.destroy(e));
      req.body.pipe(request);
    } else {
      request.end();
    }
  });
}

/** Read a response body up to `limit` bytes (the rest is discarded). */
export async function readBody(res: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res) {
    const c = chunk as Buffer;
    if (total < limit) chunks.push(c.subarray(0, limit - total));
    total += c.length;
  }
  return Buffer.concat(chunks);
}

export async function drain(res: Readable): Promise<void> {
  for await (const _ of res) {
    // discard
  }
}
