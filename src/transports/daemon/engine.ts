import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type { Dispatcher } from "undici";
import { SutureError } from "../../errors/errors.ts";
import { sharedDispatcher } from "../../http/dispatchers.ts";
import { networkError } from "../../http/errors.ts";
import { discard, type HttpResponse, header, NoResponseError, readPrefix, send } from "../../http/request.ts";
import type { DaemonEngine } from "../../ref/transport.ts";
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
  /** Which engine the user asked for (`podman:` or `docker-daemon:`), for messages and hints. */
  readonly engine: DaemonEngine;
  readonly socketPath?: string;
  readonly hostname?: string;
  readonly port?: number;
  readonly tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; verify: boolean };
}

/** Podman's API socket: rootful under /run/podman, rootless under the user's runtime dir. */
export function podmanDefaultSocket(
  uid = process.getuid?.() ?? 0,
  env: NodeJS.ProcessEnv = process.env,
): string {
  if (uid === 0) return "/run/podman/podman.sock";
  return join(env.XDG_RUNTIME_DIR || `/run/user/${uid}`, "podman", "podman.sock");
}

/**
 * The endpoint: TransportOptions.dockerHost when given; else for Podman (`podman:` references)
 * $CONTAINER_HOST, else Podman's own socket (podmanDefaultSocket); else for Docker $DOCKER_HOST,
 * else Docker's socket, or — on a host with no Docker socket but a Podman one (a laptop with only
 * Podman, a CI runner with `podman system service`) — Podman's, so `docker-daemon:` and the
 * default output work there too. `tcp://` uses TLS when $DOCKER_TLS_VERIFY or $DOCKER_TLS is set
 * (certificates from $DOCKER_CERT_PATH, default ~/.docker), as the docker CLI does.
 */
export function resolveEngineEndpoint(
  options: Pick<TransportOptions, "dockerHost" | "daemonEngine"> = {},
  machine: EngineHostMachine = {},
): EngineEndpoint {
  const engine = options.daemonEngine ?? "docker";
  const host = options.dockerHost || defaultEngineHost(engine, machine);
  if (host.startsWith("unix://")) {
    const socketPath = host.slice("unix://".length);
    if (!socketPath) throw badHost(host);
    return { host, engine, socketPath };
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
    if (!useTls) return { host, engine, hostname: url.hostname, port };
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
      engine,
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

/** `the Docker daemon at unix:///…` or `the Podman service at …`: who answered (or did not). */
export function describeEngine(endpoint: EngineEndpoint): string {
  return `${endpoint.engine === "podman" ? "the Podman service" : "the Docker daemon"} at ${endpoint.host}`;
}

/** What the default endpoint depends on: the environment, the caller's uid, which sockets exist. */
export interface EngineHostMachine {
  env?: NodeJS.ProcessEnv;
  uid?: number;
  exists?: (path: string) => boolean;
}

function defaultEngineHost(engine: DaemonEngine, machine: EngineHostMachine): string {
  const env = machine.env ?? process.env;
  const exists = machine.exists ?? existsSync;
  const podman = () => env.CONTAINER_HOST || `unix://${podmanDefaultSocket(machine.uid, env)}`;
  if (engine === "podman") return podman();
  if (env.DOCKER_HOST) return env.DOCKER_HOST;
  if (exists(DEFAULT_DOCKER_HOST.slice("unix://".length))) return DEFAULT_DOCKER_HOST;
  const fallback = podman();
  return fallback.startsWith("unix://") && exists(fallback.slice("unix://".length))
    ? fallback
    : DEFAULT_DOCKER_HOST;
}

function badHost(host: string): SutureError {
  const ssh = host.startsWith("ssh://")
    ? ": suture speaks to a local socket; forward it (ssh -L /tmp/podman.sock:/run/podman/podman.sock HOST) and use unix:///tmp/podman.sock"
    : ": use unix:///path/to/docker.sock or tcp://HOST:PORT";
  return new SutureError("USAGE", `unsupported engine host "${host}" (DOCKER_HOST/CONTAINER_HOST)${ssh}`);
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
 * The connection pool for an endpoint: its unix socket, or TCP (with the DOCKER_CERT_PATH
 * certificates for TLS), never through a proxy. No pool-wide header or body timeout: the daemon
 * answers an image export only once it is assembled, and a load only once it is read; a request
 * that wants a bound says so (EngineRequest.timeoutMs), and cancellation comes from the signal.
 */
function dispatcherFor(endpoint: EngineEndpoint): Dispatcher {
  return sharedDispatcher({
    route: endpoint.socketPath ? { kind: "socket", path: endpoint.socketPath } : { kind: "direct" },
    tls: endpoint.tls,
    timeouts: { connectMs: 30_000, headersMs: 0, bodyMs: 0 },
  });
}

/** The URL of an API path at the endpoint (a socket's host name is only a name). */
function endpointUrl(endpoint: EngineEndpoint, pathAndQuery: string): string {
  if (endpoint.socketPath) return `http://docker${pathAndQuery}`;
  return `${endpoint.tls ? "https" : "http"}://${endpoint.hostname}:${endpoint.port}${pathAndQuery}`;
}

/**
 * A client of one Docker Engine API endpoint, speaking the server's API version capped at
 * MAX_API_VERSION (found from `/_ping`'s API-Version header, or `/version`).
 */
export class EngineClient {
  readonly endpoint: EngineEndpoint;
  readonly apiVersion: string;
  readonly #dispatcher: Dispatcher;

  private constructor(endpoint: EngineEndpoint, apiVersion: string, dispatcher: Dispatcher) {
    this.endpoint = endpoint;
    this.apiVersion = apiVersion;
    this.#dispatcher = dispatcher;
  }

  /** Reach the daemon and agree on an API version; DAEMON error naming the socket when unreachable. */
  static async connect(
    options: Pick<TransportOptions, "dockerHost" | "daemonEngine" | "signal" | "dispatcher"> = {},
    timeoutMs = 10_000,
  ): Promise<EngineClient> {
    const endpoint = resolveEngineEndpoint(options);
    const dispatcher = options.dispatcher ?? dispatcherFor(endpoint);
    const ping = await sendTo(endpoint, dispatcher, {
      method: "GET",
      path: "/_ping",
      timeoutMs,
      signal: options.signal,
    });
    let server = header(ping, "api-version");
    await discard(ping);
    if (ping.status !== 200) {
      throw new SutureError(
        "DAEMON",
        `${describeEngine(endpoint)} answered /_ping with HTTP ${ping.status}: check ${endpoint.engine === "podman" ? "CONTAINER_HOST" : "DOCKER_HOST"} points at a Docker or Podman API socket`,
      );
    }
    if (!server) {
      const res = await sendTo(endpoint, dispatcher, {
        method: "GET",
        path: "/version",
        timeoutMs,
        signal: options.signal,
      });
      const body = await readPrefix(res, ERROR_BODY_LIMIT);
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
        `${describeEngine(endpoint)} speaks API ${server}, older than ${MIN_API_VERSION}: upgrade it`,
      );
    }
    const version = compareApiVersions(server, MAX_API_VERSION) > 0 ? MAX_API_VERSION : server;
    return new EngineClient(endpoint, version, dispatcher);
  }

  /** Send a versioned request; the caller reads or discards the response's body. */
  request(req: EngineRequest): Promise<HttpResponse> {
    return sendTo(this.endpoint, this.#dispatcher, { ...req, path: `/v${this.apiVersion}${req.path}` });
  }

  /**
   * Turn a non-2xx response into a SutureError carrying the daemon's message (`{"message": …}`),
   * read up to a cap. 404 becomes NOT_FOUND with `notFound` as the message when given.
   */
  async failure(res: HttpResponse, what: string, notFound?: string): Promise<SutureError> {
    const body = await readPrefix(res, ERROR_BODY_LIMIT);
    let message = body.toString("utf8").trim();
    try {
      const parsed = JSON.parse(message) as { message?: string };
      if (parsed.message) message = parsed.message;
    } catch {
      // Not JSON: keep the text.
    }
    if (res.status === 404 && notFound) return new SutureError("NOT_FOUND", notFound);
    return new SutureError(
      res.status === 404 ? "NOT_FOUND" : "DAEMON",
      `${what} failed: ${describeEngine(this.endpoint)} answered HTTP ${res.status}: ${message.split("\n")[0] || "(no message)"}`,
    );
  }
}

/** One request to the endpoint; resolves with the response once its headers arrived. */
async function sendTo(
  endpoint: EngineEndpoint,
  dispatcher: Dispatcher,
  req: EngineRequest,
): Promise<HttpResponse> {
  const query = req.query ? `?${new URLSearchParams(req.query).toString()}` : "";
  try {
    return await send({
      method: req.method,
      url: endpointUrl(endpoint, `${req.path}${query}`),
      headers: req.headers,
      // A stream goes chunked: an image archive's size is not known before it is written.
      body: req.body,
      signal: req.signal,
      dispatcher,
      headersDeadlineMs: req.timeoutMs,
    });
  } catch (e) {
    if (e instanceof NoResponseError && !req.signal?.aborted) {
      throw new SutureError(
        "DAEMON",
        `${describeEngine(endpoint)} did not answer ${req.path} within ${Math.round(e.deadlineMs / 1000)}s: is it running and healthy?`,
        { cause: e, retryable: true },
      );
    }
    throw networkError(e, {
      signal: req.signal,
      cancelled: `request to ${describeEngine(endpoint)} was cancelled`,
      code: "DAEMON",
      message: (f) => {
        const fix =
          endpoint.engine === "podman"
            ? f.code === "EACCES"
              ? "use your own Podman socket (rootless: $XDG_RUNTIME_DIR/podman/podman.sock) or set CONTAINER_HOST to a socket you may use"
              : "start Podman's API service (systemctl --user start podman.socket, or podman system service --time=0), or set CONTAINER_HOST to its socket"
            : f.code === "EACCES"
              ? "run as root or as a member of the docker group, or set DOCKER_HOST to a socket you may use"
              : "is dockerd running? start it, or set DOCKER_HOST to its socket (unix:///path or tcp://host:port)";
        return `cannot reach ${describeEngine(endpoint)} (${f.detail}): ${fix}`;
      },
      retryable: (f) => f.code === "ECONNREFUSED" || f.code === "ECONNRESET",
    });
  }
}
