import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";

/** A loopback HTTP proxy in front of a lab registry that records every request it passes on. */
export interface CountingProxy {
  /** `127.0.0.1:PORT`: use it as the registry part of references. */
  readonly host: string;
  /** Every request so far, in order: method and path (with query). */
  readonly requests: { method: string; path: string }[];
  /** How many requests so far matched `method` and `path`. */
  count(method: string, path: RegExp): number;
  stop(): Promise<void>;
}

/**
 * Pass every request to `upstream` (`127.0.0.1:PORT`, plain HTTP) unchanged, keeping the Host the
 * client used, so the registry's Location headers (upload sessions) lead back through the proxy.
 * suture's first TLS attempt on a loopback registry is not HTTP: the proxy hangs up on it at once,
 * so the client falls back to plain HTTP without waiting.
 */
export async function startCountingProxy(upstream: string): Promise<CountingProxy> {
  const requests: { method: string; path: string }[] = [];
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method ?? "", path: req.url ?? "" });
    const forward = http.request(
      `http://${upstream}${req.url}`,
      { method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", () => res.destroy());
    // A client that hangs up mid-body must look the same to the registry.
    req.on("close", () => {
      if (!req.complete) forward.destroy();
    });
    res.on("close", () => {
      if (!res.writableFinished) forward.destroy();
    });
    req.pipe(forward);
  });
  server.on("clientError", (_e, socket) => socket.destroy());
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    count: (method, path) => requests.filter((r) => r.method === method && path.test(r.path)).length,
    async stop() {
      server.closeAllConnections();
      server.close();
    },
  };
}
