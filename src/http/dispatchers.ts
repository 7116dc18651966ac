import type { Dispatcher } from "undici";
import { Agent, EnvHttpProxyAgent } from "./undici.ts";

/**
 * Where a request's connection goes. Every client of suture (registry, apt repositories, Docker
 * Engine API) gets its connection pools here, so proxies, TLS and timeouts are set in one place;
 * each client also takes an injected `dispatcher` (tests pass an in-process undici MockAgent).
 */
export type Route =
  /** HTTP_PROXY/HTTPS_PROXY/NO_PROXY from the environment (read when the dispatcher is made). */
  | {
      kind: "env-proxy";
      /**
       * Whether plain-http requests tunnel through the proxy with CONNECT (undici's default) or go
       * as absolute-form requests, as apt and curl send them (many proxies refuse CONNECT to :80).
       */
      tunnelPlainHttp: boolean;
    }
  /** Straight to the origin (loopback registries: Docker never proxies those either). */
  | { kind: "direct" }
  /** A unix socket (the Docker Engine API); the URL's host is only a name. */
  | { kind: "socket"; path: string };

export interface TlsSettings {
  /** False accepts any certificate (insecure or loopback registries, DOCKER_TLS without VERIFY). */
  verify: boolean;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export interface Timeouts {
  /** TCP (and TLS) connect. */
  connectMs: number;
  /** From the request sent to the response headers; 0 disables (the caller bounds it). */
  headersMs: number;
  /** Longest pause between two body chunks; 0 disables. */
  bodyMs: number;
}

export interface DispatcherSettings {
  route: Route;
  tls?: TlsSettings;
  timeouts: Timeouts;
}

/** A new connection pool for these settings (an env-proxy one reads the environment now). */
export function createDispatcher(settings: DispatcherSettings): Dispatcher {
  const { route, timeouts } = settings;
  const tls = settings.tls
    ? {
        rejectUnauthorized: settings.tls.verify,
        ...(settings.tls.ca && { ca: settings.tls.ca }),
        ...(settings.tls.cert && { cert: settings.tls.cert }),
        ...(settings.tls.key && { key: settings.tls.key }),
      }
    : {};
  const common = {
    connect: {
      ...tls,
      timeout: timeouts.connectMs,
      ...(route.kind === "socket" && { socketPath: route.path }),
    },
    headersTimeout: timeouts.headersMs,
    bodyTimeout: timeouts.bodyMs,
  };
  if (route.kind !== "env-proxy") return new Agent(common);
  return new EnvHttpProxyAgent({
    ...common,
    // The origin's TLS settings apply through a proxy tunnel as well.
    ...(settings.tls && { requestTls: tls }),
    ...(!route.tunnelPlainHttp && { proxyTunnel: false }),
  });
}

const shared = new Map<string, Dispatcher>();

/**
 * A process-wide pool for these settings, so e.g. a copy between two repositories of one registry
 * reuses connections. Idle sockets are unref'd by undici and do not keep the process alive.
 */
export function sharedDispatcher(settings: DispatcherSettings): Dispatcher {
  const key = JSON.stringify(settings);
  let dispatcher = shared.get(key);
  if (!dispatcher) {
    dispatcher = createDispatcher(settings);
    shared.set(key, dispatcher);
  }
  return dispatcher;
}
