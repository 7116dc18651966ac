/**
 * The parts of undici suture runs (the connection pools and one request), imported from undici's
 * own files rather than its index: the index loads all of undici (fetch, WebSocket, EventSource,
 * the cache and mock layers), 110 modules against these 36, and every command pays for them
 * before its first request (0.15-0.3 s of start, more on a cold page cache). undici has no
 * `exports` map, so these paths are reachable; a version that moves them fails every command at
 * start, not quietly. Types come from undici's own declarations (undici-parts.d.ts).
 */
import type { Dispatcher } from "undici";
import requestOn from "undici/lib/api/api-request.js";
import { parseURL } from "undici/lib/core/util.js";
import AgentClass from "undici/lib/dispatcher/agent.js";
import EnvHttpProxyAgentClass from "undici/lib/dispatcher/env-http-proxy-agent.js";

export const Agent = AgentClass;
export const EnvHttpProxyAgent = EnvHttpProxyAgentClass;

/**
 * undici's `request(url, { dispatcher, ... })` on a given dispatcher: the index's `request` only
 * checks the URL with undici's own `parseURL` (http and https only, the same errors) and splits it
 * into origin and path, which is done here.
 */
export function request(
  url: string,
  options: Omit<Dispatcher.RequestOptions, "origin" | "path"> & { dispatcher: Dispatcher },
): Promise<Dispatcher.ResponseData> {
  const { dispatcher, ...rest } = options;
  const u = parseURL(url);
  return requestOn.call(dispatcher, { ...rest, origin: u.origin, path: `${u.pathname}${u.search}` });
}
