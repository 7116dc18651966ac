import { SutureError } from "../../errors/errors.ts";
import { discard, type HttpResponse, type RequestBody, readCapped, readPrefix } from "../../http/request.ts";
import { isLoopbackRegistry } from "../../ref/reference.ts";
import type { Challenge } from "./challenge.ts";
import type { Credentials } from "./credentials.ts";
import { answerTooLarge, ERROR_BODY_CAP, errorFromResponse } from "./registry-errors.ts";

/** Token answers larger than this are refused: a token is a few KiB at most. */
const TOKEN_BODY_CAP = 1024 * 1024;
/** Spec default lifetime when a token server omits `expires_in`. */
const DEFAULT_TOKEN_SECONDS = 60;
const CLIENT_ID = "suture";

/** `repository:NAME:pull` — the scope for reading one repository. */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

/** `repository:NAME:pull,push` — the scope for writing one repository (push implies pull). */
export function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}

/** Sends one request to a token realm (the client supplies retries, TLS and proxy choice). */
export type TokenTransport = (request: {
  method: "GET" | "POST";
  url: string;
  headers: Record<string, string>;
  body?: RequestBody;
  /** What the token is for, for messages. */
  operation: string;
}) => Promise<HttpResponse>;

interface CachedToken {
  token: string;
  expiresAt: number;
}

/**
 * Answers a registry's challenge for a set of scopes: nothing (anonymous), `Basic …` from the
 * stored credentials, or `Bearer …` from a token server. Bearer tokens are cached per scope set
 * until shortly before they expire; concurrent requests for the same scopes share one token
 * request. Credentials are looked up only when a challenge asks for them, at most once.
 */
export class Authenticator {
  readonly #registry: string;
  readonly #loadCredentials: () => Promise<Credentials | undefined>;
  readonly #transport: TokenTransport;
  readonly #allowPlainRealm: boolean;
  #challenge: Challenge | undefined;
  #credentials: Promise<Credentials | undefined> | undefined;
  #refreshToken: string | undefined;
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<CachedToken>>();
  #usedCredentials = false;

  constructor(options: {
    registry: string;
    loadCredentials: () => Promise<Credentials | undefined>;
    transport: TokenTransport;
    /** Allow sending credentials to a plain-http realm that is not loopback (insecure mode). */
    allowPlainRealm: boolean;
  }) {
    this.#registry = options.registry;
    this.#loadCredentials = options.loadCredentials;
    this.#transport = options.transport;
    this.#allowPlainRealm = options.allowPlainRealm;
  }

  get challenge(): Challenge | undefined {
    return this.#challenge;
  }

  /** Replace the challenge (from a ping or a later 401); a different realm drops cached tokens. */
  setChallenge(challenge: Challenge | undefined): void {
    const old = this.#challenge;
    if (old?.params.realm !== challenge?.params.realm || old?.scheme !== challenge?.scheme)
      this.#tokens.clear();
    this.#challenge = challenge;
  }

  /** Whether the last Authorization produced used stored credentials (for error messages). */
  get usedCredentials(): boolean {
    return this.#usedCredentials;
  }

  /** Where credentials came from, once looked up. */
  async credentialSource(): Promise<string | undefined> {
    return (await this.#credentials)?.source;
  }

  /** Forget a cached token (it was refused), so the next call fetches a fresh one. */
  invalidate(scopes: string[]): void {
    this.#tokens.delete(scopeKey(scopes));
  }

  /**
   * The Authorization header value for a request needing `scopes`, or undefined to go anonymous.
   * `operation` names what is being done, for error messages.
   */
  async authorization(scopes: string[], operation: string): Promise<string | undefined> {
    const challenge = this.#challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === "basic") {
      const creds = await this.#creds();
      this.#usedCredentials = !!creds?.username;
      if (!creds?.username) return undefined;
      return `Basic ${Buffer.from(`${creds.username}:${creds.password ?? ""}`).toString("base64")}`;
    }
    if (challenge.scheme !== "bearer") return undefined;
    const key = scopeKey(scopes);
    const cached = this.#tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
    let pending = this.#inflight.get(key);
    if (!pending) {
      pending = this.#fetchToken(challenge, scopes, operation).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, pending);
    }
    const token = await pending;
    this.#tokens.set(key, token);
    return `Bearer ${token.token}`;
  }

  #creds(): Promise<Credentials | undefined> {
    this.#credentials ??= this.#loadCredentials().then((c) => {
      this.#refreshToken = c?.identityToken;
      return c;
    });
    return this.#credentials;
  }

  async #fetchToken(challenge: Challenge, scopes: string[], operation: string): Promise<CachedToken> {
    const realm = parseRealm(challenge.params.realm, this.#registry, operation);
    const creds = await this.#creds();
    const hasSecret = !!(this.#refreshToken || creds?.username);
    if (
      hasSecret &&
      realm.protocol === "http:" &&
      !isLoopbackRegistry(realm.host) &&
      !this.#allowPlainRealm
    ) {
      throw new SutureError(
        "UNAUTHORIZED",
        `${this.#registry} sends clients to a plain-http token server (${realm.origin}) (${operation}): refusing to send credentials unencrypted; allow it as an insecure registry only if you trust the network`,
      );
    }
    const service = challenge.params.service;
    const sorted = [...new Set(scopes)].sort();
    let res: HttpResponse;
    let authenticated = false;
    if (this.#refreshToken) {
      // OAuth2 refresh-token grant: what Docker does with an `identitytoken` from docker login.
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: this.#refreshToken });
      if (service) form.set("service", service);
      if (sorted.length) form.set("scope", sorted.join(" "));
      form.set("client_id", CLIENT_ID);
      form.set("access_type", "offline");
      res = await this.#transport({
        method: "POST",
        url: realm.href,
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: form.toString(),
        operation,
      });
      authenticated = true;
      if ((res.status === 404 || res.status === 405) && creds?.username && creds.password) {
        await discard(res);
        res = await this.#getToken(realm, service, sorted, creds, operation);
      }
    } else {
      authenticated = !!creds?.username;
      res = await this.#getToken(realm, service, sorted, creds, operation);
    }
    this.#usedCredentials = authenticated;
    if (res.status !== 200) {
      const text = (await readPrefix(res, ERROR_BODY_CAP)).toString("utf8");
      throw errorFromResponse(res.status, text, {
        registry: this.#registry,
        operation,
        authenticated,
        credentialSource: creds?.source,
      });
    }
    const body = await readCapped(
      res,
      TOKEN_BODY_CAP,
      answerTooLarge(`token answer from ${realm.origin}`, TOKEN_BODY_CAP),
    );
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown; refresh_token?: unknown };
    try {
      doc = JSON.parse(body.toString("utf8")) as typeof doc;
    } catch (e) {
      throw new SutureError(
        "REGISTRY",
        `token server ${realm.origin} for ${this.#registry} (${operation}) answered something that is not JSON: check the registry's auth setup`,
        { cause: e },
      );
    }
    const token =
      typeof doc.access_token === "string" && doc.access_token
        ? doc.access_token
        : typeof doc.token === "string"
          ? doc.token
          : "";
    if (!token) {
      throw new SutureError(
        "REGISTRY",
        `token server ${realm.origin} for ${this.#registry} (${operation}) answered without a token: check the registry's auth setup`,
      );
    }
    if (typeof doc.refresh_token === "string" && doc.refresh_token) this.#refreshToken = doc.refresh_token;
    const seconds =
      typeof doc.expires_in === "number" && doc.expires_in > 0 ? doc.expires_in : DEFAULT_TOKEN_SECONDS;
    // Renew a little early so a token does not expire between our check and the registry's.
    const margin = Math.min(30, seconds / 4) * 1000;
    return { token, expiresAt: Date.now() + seconds * 1000 - margin };
  }

  #getToken(
    realm: URL,
    service: string | undefined,
    scopes: string[],
    creds: Credentials | undefined,
    operation: string,
  ): Promise<HttpResponse> {
    const url = new URL(realm.href);
    if (service) url.searchParams.set("service", service);
    for (const s of scopes) url.searchParams.append("scope", s);
    const headers: Record<string, string> = {};
    if (creds?.username) {
      url.searchParams.set("account", creds.username);
      headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password ?? ""}`).toString("base64")}`;
    }
    return this.#transport({ method: "GET", url: url.href, headers, operation });
  }
}

function scopeKey(scopes: string[]): string {
  return [...new Set(scopes)].sort().join(" ");
}

function parseRealm(realm: string | undefined, registry: string, operation: string): URL {
  let url: URL | undefined;
  try {
    url = realm ? new URL(realm) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    throw new SutureError(
      "REGISTRY",
      `${registry} (${operation}) asked for a bearer token without a usable realm URL (${realm ?? "none"}): check the registry's auth setup`,
    );
  }
  return url;
}
