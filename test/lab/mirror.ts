import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A loopback "mirror" of the Debian archive: a reverse proxy to the real upstream (so metadata and
 * signatures are genuine) that records what was asked for and can alter chosen responses, to test
 * `--mirror` and what happens when a mirror serves tampered files.
 */
export interface LabMirror {
  /** `http://127.0.0.1:PORT`; upstream paths are kept (`/debian/dists/...`). */
  url: string;
  /** Paths requested, in order. */
  requests: string[];
  stop(): Promise<void>;
}

export interface LabMirrorOptions {
  /** Default http://deb.debian.org (serves /debian and /debian-security). */
  upstream?: string;
  /**
   * Called for every successful upstream response; return new bytes to serve instead, or undefined
   * to pass the original through.
   */
  alter?: (path: string, body: Buffer) => Buffer | undefined | Promise<Buffer | undefined>;
  /** Paths to answer with this status instead of proxying (e.g. 404 for InRelease). */
  status?: (path: string) => number | undefined;
}

export async function startMirror(options: LabMirrorOptions = {}): Promise<LabMirror> {
  const upstream = (options.upstream ?? "http://deb.debian.org").replace(/\/+$/, "");
  const requests: string[] = [];
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? "/";
    requests.push(path);
    const forced = options.status?.(path);
    if (forced) {
      res.writeHead(forced).end();
      return;
    }
    const up = await fetch(`${upstream}${path}`, { method: req.method === "HEAD" ? "HEAD" : "GET" });
    const body = Buffer.from(await up.arrayBuffer());
    const out = (up.ok && (await options.alter?.(path, body))) || body;
    const headers: Record<string, string> = { "content-length": String(out.length) };
    for (const h of ["content-type", "last-modified", "etag"]) {
      const v = up.headers.get(h);
      // An altered body must not be served with the original's validators.
      if (v && (out === body || h === "content-type")) headers[h] = v;
    }
    res.writeHead(up.status, headers);
    res.end(req.method === "HEAD" ? undefined : out);
  };
  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
