// The undici files src/http/undici.ts imports: they ship no declarations of their own, and are
// the classes and the function undici's index re-exports.
declare module "undici/lib/dispatcher/agent.js" {
  const Agent: typeof import("undici").Agent;
  export default Agent;
}
declare module "undici/lib/dispatcher/env-http-proxy-agent.js" {
  const EnvHttpProxyAgent: typeof import("undici").EnvHttpProxyAgent;
  export default EnvHttpProxyAgent;
}
declare module "undici/lib/api/api-request.js" {
  import type { Dispatcher } from "undici";

  function request(this: Dispatcher, options: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData>;
  export default request;
}
declare module "undici/lib/core/util.js" {
  export function parseURL(url: string | URL): URL;
}
