/**
 * In-process HTTP fakes for failure injection in the unit tier (no sockets: `npm run test:unit`
 * runs with the network off). undici's MockAgent answers requests from interceptors; the
 * truncating dispatcher in front of it drops a connection mid-body, which MockAgent cannot.
 * The real loopback servers (test/lab) stay the integration tier's.
 */
import { Dispatcher, errors, type Interceptable, MockAgent } from "undici";

/** A MockAgent that refuses anything it has no interceptor for (never the network). */
export function mockAgent(): MockAgent {
  const agent = new MockAgent();
  agent.disableNetConnect();
  return agent;
}

/** Answer every request for `path` with `statusCode`, counting them (a server that never recovers). */
export function alwaysFail(pool: Interceptable, path: string, statusCode: number): { attempts: number } {
  const count = { attempts: 0 };
  pool
    .intercept({ path })
    .reply(() => {
      count.attempts++;
      return { statusCode, data: "" };
    })
    .persist();
  return count;
}

/**
 * A busy server: 429 with `Retry-After: 1` (seconds), then 503 with a Retry-After HTTP date 3 s
 * from now (1-2 s after the second answer, as the date has whole seconds), then `body`. A client
 * that honours both waits at least 2 s.
 */
export function busyThenOk(
  pool: Interceptable,
  path: string,
  body: Buffer | string,
  headers: Record<string, string> = {},
): void {
  pool.intercept({ path }).reply(429, "slow down", { headers: { "retry-after": "1" } });
  pool
    .intercept({ path })
    .reply(503, "busy", { headers: { "retry-after": new Date(Date.now() + 3000).toUTCString() } });
  pool.intercept({ path }).reply(200, body, { headers });
}

/**
 * One 503 asking to come back in 25 s, and `controller` aborted once it has been served: the
 * client is then in (or entering) its Retry-After wait, the moment an abort must cut short.
 */
export function busyThenAbort(pool: Interceptable, path: string, controller: AbortController): void {
  pool.intercept({ path }).reply(
    503,
    () => {
      setImmediate(() => controller.abort());
      return "";
    },
    { headers: { "retry-after": "25" } },
  );
}

/** A connection reset as Node reports it (what a retry may cure). */
export function connectionReset(): Error {
  return Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
}

type LegacyHandler = {
  onConnect?(abort: (err?: Error) => void, context?: unknown): void;
  onHeaders?(status: number, headers: Buffer[], resume: () => void, statusText: string): boolean;
  onData?(chunk: Buffer): boolean;
  onComplete?(trailers: unknown): void;
  onError?(err: Error): void;
};

/**
 * Forwards to `inner`; the first `times` requests whose path `matches` get only `keep` bytes of
 * their body, then fail as a server that hung up does (undici's "other side closed").
 */
export class TruncatingDispatcher extends Dispatcher {
  readonly #inner: Dispatcher;
  readonly #matches: (path: string) => boolean;
  readonly #keep: number;
  #remaining: number;
  /** How many bodies were cut so far. */
  truncated = 0;

  constructor(inner: Dispatcher, matches: (path: string) => boolean, keep: number, times = 1) {
    super();
    this.#inner = inner;
    this.#matches = matches;
    this.#keep = keep;
    this.#remaining = times;
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    if (!this.#matches(options.path) || this.#remaining <= 0) return this.#inner.dispatch(options, handler);
    this.#remaining--;
    this.truncated++;
    // undici's request() hands its dispatcher a handler of the callback style MockAgent drives.
    const h = handler as unknown as LegacyHandler;
    const keep = this.#keep;
    let sent = 0;
    let cut = false;
    const wrapper: LegacyHandler = {
      onConnect: (abort, context) => h.onConnect?.(abort, context),
      onHeaders: (status, headers, resume, statusText) =>
        h.onHeaders?.(status, headers, resume, statusText) ?? true,
      onData: (chunk) => {
        if (cut) return false;
        const room = keep - sent;
        if (chunk.length <= room) {
          sent += chunk.length;
          return h.onData?.(chunk) ?? true;
        }
        if (room > 0) h.onData?.(chunk.subarray(0, room));
        cut = true;
        h.onError?.(new errors.SocketError("other side closed"));
        return false;
      },
      onComplete: (trailers) => {
        if (!cut) h.onComplete?.(trailers);
      },
      onError: (err) => {
        if (!cut) h.onError?.(err);
      },
    };
    return this.#inner.dispatch(options, wrapper as unknown as Dispatcher.DispatchHandler);
  }

  override close(): Promise<void> {
    return this.#inner.close();
  }

  override destroy(): Promise<void> {
    return this.#inner.destroy();
  }
}
