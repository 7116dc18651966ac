import { Readable } from "node:stream";
import type { Dispatcher } from "undici";
import { isSutureError, SutureError } from "../../errors/errors.ts";
import { sharedDispatcher } from "../../http/dispatchers.ts";
import {
  discard,
  type HttpResponse,
  header,
  headerValues,
  type RequestBody,
  readPrefix,
  send,
} from "../../http/request.ts";
import { defaultRetryPolicy, parseRetryAfter, type RetryPolicy, withRetries } from "../../http/retry.ts";
import { DOCKER_HUB, DOCKER_HUB_API, isLoopbackRegistry } from "../../ref/reference.ts";
import { Authenticator } from "./auth.ts";
import { parseChallenges, pickChallenge } from "./challenge.ts";
import { type Credentials, findCredentials } from "./credentials.ts";
import { ERROR_BODY_CAP, errorFromNetwork, errorFromResponse } from "./registry-errors.ts";

export interface RegistryClientOptions {
  /** Allow plain HTTP and unverified TLS for a registry that is not on loopback. */
  insecure?: boolean;
  /** Docker config directory for credential lookup. */
  dockerConfig?: string;
  /** The repository this client is for: containers auth files may hold per-namespace credentials. */
  repository?: string;
  signal?: AbortSignal;
  retry?: Partial<RetryPolicy>;
  /** Use these credentials instead of looking them up; `null` forces anonymous access. */
  credentials?: Credentials | null;
  /** Send every request through this dispatcher (tests: an in-process fake) instead of suture's pools. */
  dispatcher?: Dispatcher;
}

export type HttpMethod = "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE";

export interface RegistryRequest {
  method: HttpMethod;
  /** A path under the registry (`/v2/…`) or an absolute URL the registry handed out (uploads). */
  path: string;
  headers?: Record<string, string>;
  /** Produces the body afresh for every attempt, so a retried upload re-opens its stream. */
  body?: () => Promise<RequestBody> | RequestBody;
  /** Token scopes the request needs (`repository:NAME:pull`). */
  scopes: string[];
  /** What is being done, for messages: `pull library/x`. */
  operation: string;
  /** The object addressed, for not-found messages: `manifest library/x:latest`. */
  object?: string;
  /** Statuses that count as success; any other becomes a RegistryError. */
  ok: number[];
  /** Retry on 429/5xx/connection resets (default true). Off for requests that are not repeatable. */
  retry?: boolean;
  /**
   * Whether the body can be produced again to answer a 401 with fresh credentials (default true).
   * False for a streamed upload: its bytes are gone once sent.
   */
  replayable?: boolean;
  /**
   * Cancels this request instead of the client's signal: a clean-up request (dropping an upload
   * session) must still go out after the operation was aborted, bounded by its own timeout.
   */
  signal?: AbortSignal;
}

const redirectStatuses = new Set([301, 302, 303, 307, 308]);
const USER_AGENT = "suture (registry client)";
const MAX_REDIRECTS = 5;

/** The host a registry's API is served at: Docker Hub's lives on registry-1.docker.io. */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/**
 * One registry, as seen by one source or sink: finds out how to talk to it (`/v2/` ping, HTTPS or,
 * for loopback or insecure registries, HTTP), answers its auth challenges, retries what can be
 * retried, and follows redirects (sending Authorization only to the registry's own origin).
 */
export class RegistryClient {
  /** The registry as named in references and messages (`docker.io`, `127.0.0.1:5000`). */
  readonly registry: string;
  /** Where its API lives. */
  readonly host: string;
  readonly policy: RetryPolicy;
  readonly signal?: AbortSignal;
  readonly #insecure: boolean;
  readonly #dispatcher?: Dispatcher;
  readonly #auth: Authenticator;
  #base: Promise<URL> | undefined;

  constructor(registry: string, options: RegistryClientOptions = {}) {
    this.registry = registry;
    this.host = apiHost(registry);
    this.policy = { ...defaultRetryPolicy, ...options.retry };
    this.signal = options.signal;
    this.#insecure = options.insecure === true;
    this.#dispatcher = options.dispatcher;
    const explicit = options.credentials;
    this.#auth = new Authenticator({
      registry,
      loadCredentials: async () =>
        explicit !== undefined
          ? (explicit ?? undefined)
          : findCredentials(registry, options.repository, { dockerConfig: options.dockerConfig }),
      transport: (r) =>
        this.#sendAnywhere(r.method, new URL(r.url), r.headers, r.body, `${r.operation}: token request`),
      allowPlainRealm: this.#insecure,
    });
  }

  /** Whether plain HTTP / unverified TLS is acceptable for this URL's host. */
  #relaxed(url: URL): boolean {
    return this.#insecure || isLoopbackRegistry(url.host);
  }

  /**
   * The pool for a URL: loopback registries are reached directly (Docker never proxies those
   * either), others through the environment's proxies; TLS unverified only where `#relaxed` allows.
   */
  #dispatcherFor(url: URL): Dispatcher {
    return (
      this.#dispatcher ??
      sharedDispatcher({
        route: isLoopbackRegistry(url.host)
          ? { kind: "direct" }
          : { kind: "env-proxy", tunnelPlainHttp: true },
        tls: { verify: !this.#relaxed(url) },
        timeouts: { connectMs: 30_000, headersMs: 120_000, bodyMs: 120_000 },
      })
    );
  }

  /** The registry's base URL (`https://host/` or `http://host/`), pinging on first use. */
  baseUrl(operation: string): Promise<URL> {
    this.#base ??= this.#ping(operation).catch((e) => {
      this.#base = undefined;
      throw e;
    });
    return this.#base;
  }

  async #ping(operation: string): Promise<URL> {
    const schemes = this.#insecure || isLoopbackRegistry(this.host) ? ["https", "http"] : ["https"];
    let lastError: unknown;
    for (const scheme of schemes) {
      const url = new URL(`${scheme}://${this.host}/v2/`);
      let res: HttpResponse;
      try {
        res = await send({
          method: "GET",
          url: url.href,
          headers: { "user-agent": USER_AGENT },
          signal: this.signal,
          dispatcher: this.#dispatcherFor(url),
        });
      } catch (e) {
        this.#throwIfCancelled(e);
        lastError = e;
        continue;
      }
      if (res.status === 401) {
        this.#auth.setChallenge(pickChallenge(parseChallenges(headerValues(res, "www-authenticate"))));
      }
      await discard(res);
      return new URL(`${scheme}://${this.host}/`);
    }
    throw errorFromNetwork(lastError, { registry: this.registry, operation });
  }

  #throwIfCancelled(e: unknown, signal = this.signal): void {
    if (signal?.aborted) {
      throw new SutureError("CANCELLED", `${this.registry}: operation cancelled`, { cause: e });
    }
  }

  /** A request to some URL outside the registry API (token realms), with the right TLS/proxy choice. */
  async #sendAnywhere(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body: RequestBody | undefined,
    operation: string,
    where = `${this.registry} (${url.host})`,
    signal = this.signal,
  ): Promise<HttpResponse> {
    try {
      return await send({
        method,
        url: url.href,
        headers: { "user-agent": USER_AGENT, ...headers },
        body,
        signal,
        dispatcher: this.#dispatcherFor(url),
      });
    } catch (e) {
      this.#throwIfCancelled(e, signal);
      if (isSutureError(e)) throw e;
      throw errorFromNetwork(e, { registry: where, operation });
    }
  }

  /**
   * Send a registry request: authenticated for its scopes, re-authenticated once on a 401 that
   * brings a new challenge, redirects followed for GET/HEAD, retried per the policy. Returns the
   * response for an `ok` status (the caller consumes its body); throws a RegistryError otherwise.
   */
  async request(req: RegistryRequest): Promise<HttpResponse> {
    const run = async (): Promise<HttpResponse> => {
      const base = await this.baseUrl(req.operation);
      const url = new URL(req.path, base);
      let res = await this.#exchange(req, url, base, req.scopes);
      if (res.status === 401 && req.replayable !== false) {
        const challenge = pickChallenge(parseChallenges(headerValues(res, "www-authenticate")));
        if (challenge) {
          await discard(res);
          this.#auth.invalidate(req.scopes);
          this.#auth.setChallenge(challenge);
          const extra = challenge.params.scope?.split(" ").filter(Boolean) ?? [];
          const scopes = [...new Set([...req.scopes, ...extra])];
          res = await this.#exchange(req, url, base, scopes);
        }
      }
      if (req.ok.includes(res.status)) return res;
      throw await this.#errorFor(res, req);
    };
    if (req.retry === false) return run();
    return withRetries(run, this.policy, { signal: req.signal ?? this.signal });
  }

  async #errorFor(res: HttpResponse, req: RegistryRequest): Promise<Error> {
    const retryAfter = parseRetryAfter(header(res, "retry-after"));
    const text = (await readPrefix(res, ERROR_BODY_CAP)).toString("utf8");
    return errorFromResponse(
      res.status,
      text,
      {
        registry: this.registry,
        operation: req.operation,
        object: req.object,
        authenticated: this.#auth.usedCredentials,
        credentialSource: await this.#auth.credentialSource(),
      },
      retryAfter,
    );
  }

  async #exchange(req: RegistryRequest, start: URL, base: URL, scopes: string[]): Promise<HttpResponse> {
    const follow = req.method === "GET" || req.method === "HEAD";
    const body = req.body ? await req.body() : undefined;
    let url = start;
    try {
      for (let hop = 0; ; hop++) {
        const headers: Record<string, string> = { ...req.headers };
        // Credentials go to the registry's own origin only: a redirect to blob storage (S3, a CDN)
        // must not receive them, and the storage URL is pre-signed anyway.
        if (url.origin === base.origin) {
          const authorization = await this.#auth.authorization(scopes, req.operation);
          if (authorization) headers.authorization = authorization;
        }
        const where =
          url.origin === base.origin ? this.registry : `${this.registry} (redirected to ${url.host})`;
        const res = await this.#sendAnywhere(
          req.method,
          url,
          headers,
          body,
          req.operation,
          where,
          req.signal ?? this.signal,
        );
        const location = header(res, "location");
        if (!follow || !redirectStatuses.has(res.status) || !location) return res;
        await discard(res);
        if (hop >= MAX_REDIRECTS) {
          throw new SutureError(
            "REGISTRY",
            `${this.registry} (${req.operation}) redirected more than ${MAX_REDIRECTS} times: check the registry's storage setup`,
          );
        }
        const next = new URL(location, url);
        if (next.protocol === "http:" && url.protocol === "https:" && !this.#relaxed(next)) {
          throw new SutureError(
            "REGISTRY",
            `${this.registry} (${req.operation}) redirected from HTTPS to plain HTTP (${next.host}): refusing the downgrade`,
          );
        }
        url = next;
      }
    } finally {
      if (body instanceof Readable && !body.readableEnded && !body.destroyed) body.destroy();
    }
  }
}
