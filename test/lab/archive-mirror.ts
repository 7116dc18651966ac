/**
 * The test lab's one way to the Debian archive: a loopback server that records what it fetched
 * into the lab cache and replays it, so a second run of the suite needs no network and survives
 * bookworm moving from deb.debian.org to archive.debian.org.
 *
 * It answers in two forms on one port:
 *   - reverse mirror: `GET http://127.0.0.1:PORT/debian/...` (and `/debian-security/...`) are
 *     deb.debian.org's paths, for `--mirror` tests and the lab's own reads;
 *   - forward HTTP proxy: absolute-URI requests (`GET http://deb.debian.org/debian/... HTTP/1.1`),
 *     which suture (undici's EnvHttpProxyAgent), apt (in runc or on the host) and mmdebstrap send
 *     when `http_proxy=http://127.0.0.1:PORT` is set. Only Debian's archive hosts are served.
 *
 * Recording: every 200 from upstream is written (atomically) to
 * `<lab cache>/archive/<host>/<path>`, and a 404 as `<path>.missing` (a client probing for a file
 * the archive lacks gets the same answer offline). Immutable paths (`pool/`, `by-hash/`, `.deb`)
 * are served from the recording first and fetched once across all test processes (under the lab
 * cache's lock discipline, cache.ts). Mutable paths (InRelease, Release, indexes by name) come
 * from upstream while it answers, and from the recording when it does not (connection refused,
 * DNS failure, 5xx, or a 404 once a suite has moved away), or always with
 * SUTURE_LAB_ARCHIVE_OFFLINE=1. With SUTURE_LAB_MIRROR_LOG=FILE every upstream request is appended
 * to FILE, so a run can show it made none.
 *
 * `archiveMirror()` is the process's shared instance, started on first use; `useArchiveMirror()`
 * also routes the process and its children through it (proxy environment). It never keeps the
 * process alive. A test that alters or refuses responses (`alter`, `status`) starts its own
 * instance with `startArchiveMirror`, over the same recording.
 *
 * `startCountingProxy` is the same server in front of a lab registry: it passes every request
 * through unchanged and only logs and counts them.
 */
import { appendFile, mkdir, readFile, rm, stat } from "node:fs/promises";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fetch as undiciFetch } from "undici";
import { writeFileAtomic } from "../../src/fs/atomic.ts";
import { createDispatcher } from "../../src/http/dispatchers.ts";
import { acquireLock, labCacheDir, releaseLock } from "./cache.ts";

/** The archive hosts the mirror records; a reverse-mirror path is deb.debian.org's. */
const ARCHIVE_HOSTS = new Set(["deb.debian.org", "security.debian.org"]);
const REVERSE_HOST = "deb.debian.org";
/** After a network failure upstream, mutable paths come from the recording for this long. */
const UPSTREAM_DOWN_MS = 60_000;
/** The longest a process waits for another process's fetch of the same immutable file. */
const FETCH_LOCK_WAIT_MS = 10 * 60_000;

/** One request the server received. `host` is the archive or registry host it was meant for. */
export interface ProxiedRequest {
  readonly method: string;
  /** Path with query, as the origin server sees it (`/debian/dists/...`). */
  readonly path: string;
  readonly host: string;
}

/** A loopback server that logs every request it answers. */
export interface LoopbackProxy {
  /** `http://127.0.0.1:PORT`: the reverse-mirror base and the proxy URL. */
  readonly url: string;
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** Every request so far, in order. */
  readonly requests: ProxiedRequest[];
  /** How many requests so far matched `method` and `path`. */
  count(method: string, path: RegExp): number;
  stop(): Promise<void>;
}

export interface ArchiveMirror extends LoopbackProxy {
  /** The upstream URLs this instance fetched, in order (recording replays are not listed). */
  readonly upstreamFetches: string[];
}

export interface ArchiveMirrorOptions {
  /**
   * Origin to fetch every archive host's paths from instead of `http://<host>` (a test points it
   * at a port that refuses connections to play the network being gone). Recordings stay keyed by
   * the archive host.
   */
  upstream?: string;
  /** Where recordings live; default `<lab cache>/archive`. */
  recordDir?: string;
  /** Never contact upstream (default: SUTURE_LAB_ARCHIVE_OFFLINE=1). */
  offline?: boolean;
  /**
   * Called for every 200 served (from upstream or the recording) with the path and the genuine
   * bytes; return other bytes to serve instead (the recording keeps the genuine ones), or undefined.
   */
  alter?: (path: string, body: Buffer) => Buffer | undefined | Promise<Buffer | undefined>;
  /** Paths to answer with this status instead (e.g. 404 for InRelease). */
  status?: (path: string) => number | undefined;
}

/** The archive recording's root: `<lab cache>/archive`. */
export function archiveRecordDir(): string {
  return path.join(labCacheDir(), "archive");
}

let shared: Promise<ArchiveMirror> | undefined;

/**
 * The process's shared archive mirror, started on first call. The server holds no reference on
 * the event loop, so it ends with the process.
 */
export function archiveMirror(): Promise<ArchiveMirror> {
  shared ??= startArchiveMirror();
  return shared;
}

/**
 * Routes this test process through the shared archive mirror and returns it: from now on its own
 * HTTP clients (suture's, created after this call) and every child it starts with its environment
 * (suture, apt, mmdebstrap) reach the archive through it: `http_proxy`/`HTTP_PROXY` name it and
 * `no_proxy`/`NO_PROXY` keep loopback servers (lab registries, test mirrors) direct. Every test
 * file that uses the Debian archive calls it in its `before`.
 */
export async function useArchiveMirror(): Promise<ArchiveMirror> {
  const mirror = await archiveMirror();
  Object.assign(process.env, archiveProxyEnv(mirror));
  return mirror;
}

/** The environment that sends a process's plain-http archive traffic through `mirror`. */
export function archiveProxyEnv(mirror: Pick<LoopbackProxy, "url">): Record<string, string> {
  const noProxy = "127.0.0.1,localhost,::1";
  return { http_proxy: mirror.url, HTTP_PROXY: mirror.url, no_proxy: noProxy, NO_PROXY: noProxy };
}

/** Starts an archive mirror instance (see the file comment); `archiveMirror()` is the shared one. */
export async function startArchiveMirror(options: ArchiveMirrorOptions = {}): Promise<ArchiveMirror> {
  const recording = new ArchiveRecording(
    options.recordDir ?? archiveRecordDir(),
    options.upstream?.replace(/\/+$/, ""),
    options.offline ?? process.env.SUTURE_LAB_ARCHIVE_OFFLINE === "1",
  );
  const serve = async (req: IncomingMessage, res: ServerResponse, target: ArchiveTarget) => {
    const forced = options.status?.(target.path);
    if (forced) {
      res.writeHead(forced).end();
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    const got = await recording.get(target.host, target.path);
    const ok = got.status === 200;
    const body = (ok && (await options.alter?.(target.path, got.body))) || got.body;
    const headers: Record<string, string> = { "content-length": String(body.length) };
    if (got.contentType) headers["content-type"] = got.contentType;
    res.writeHead(got.status, headers);
    res.end(req.method === "HEAD" ? undefined : body);
  };
  const server = await listen((req, res, log) => {
    const target = archiveTarget(req.url ?? "/");
    log(target?.host ?? "", target?.path ?? req.url ?? "");
    if (!target) {
      res.writeHead(403, { "content-type": "text/plain" });
      res.end(`the lab's archive mirror serves only ${[...ARCHIVE_HOSTS].join(", ")}\n`);
      return;
    }
    serve(req, res, target).catch(() => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
  });
  return { ...server, upstreamFetches: recording.upstreamFetches };
}

/** Failure injection for {@link startCountingProxy}: what a real registry will not do on demand. */
export interface ProxyFaults {
  /**
   * Called before a request is forwarded (after it was logged): may wait (to hold a request in
   * flight) and may answer a status itself instead of forwarding (an empty body).
   */
  intercept?: (request: ProxiedRequest) => Promise<number | undefined> | number | undefined;
  /** Replace a forwarded request's body (read whole first; Content-Length kept), or undefined. */
  alterBody?: (request: ProxiedRequest, body: Buffer) => Buffer | undefined;
}

/**
 * A loopback HTTP proxy in front of a lab registry (`127.0.0.1:PORT`, plain HTTP) that passes
 * every request on unchanged, keeping the Host the client used so the registry's Location headers
 * (upload sessions) lead back through the proxy, and logs it. suture's first TLS attempt on a
 * loopback registry is not HTTP: the proxy hangs up on it at once, so the client falls back to
 * plain HTTP without waiting. `faults` turn it into a misbehaving registry for failure tests.
 */
export function startCountingProxy(upstream: string, faults: ProxyFaults = {}): Promise<LoopbackProxy> {
  return listen((req, res, log) => {
    log(upstream, req.url ?? "");
    const seen: ProxiedRequest = { method: req.method ?? "", path: req.url ?? "", host: upstream };
    const pass = () => {
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
      if (!faults.alterBody) {
        req.pipe(forward);
        return;
      }
      const parts: Buffer[] = [];
      req.on("data", (c: Buffer) => parts.push(c));
      req.on("end", () => forward.end(faults.alterBody!(seen, Buffer.concat(parts)) ?? Buffer.concat(parts)));
      // A request paused for `intercept` stays paused when a data listener is added.
      req.resume();
    };
    if (!faults.intercept) return pass();
    req.pause();
    Promise.resolve(faults.intercept(seen)).then(
      (status) => {
        if (res.destroyed || req.destroyed) return;
        // pipe() resumes the paused request; pass() resumes it for alterBody.
        if (status === undefined) return pass();
        req.resume();
        req.on("end", () => res.writeHead(status, { "content-length": "0" }).end());
      },
      () => res.destroy(),
    );
  });
}

type Handler = (req: IncomingMessage, res: ServerResponse, log: (host: string, path: string) => void) => void;

/**
 * The server both proxies are: 127.0.0.1 on a free port, a request log, and no hold on the event
 * loop (neither the listening socket nor accepted connections), so a test process ends when its
 * tests do, with its shared mirror.
 */
async function listen(handler: Handler): Promise<LoopbackProxy> {
  const requests: ProxiedRequest[] = [];
  const server = http.createServer((req, res) =>
    handler(req, res, (host, p) => requests.push({ method: req.method ?? "", path: p, host })),
  );
  server.on("clientError", (_e, socket) => socket.destroy());
  server.on("connection", (socket) => socket.unref());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  server.unref();
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `http://${host}`,
    host,
    requests,
    count: (method, p) => requests.filter((r) => r.method === method && p.test(r.path)).length,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface ArchiveTarget {
  /** The archive host (recordings are kept under it). */
  readonly host: string;
  /** Origin-form path with query. */
  readonly path: string;
}

/** Which archive file a request names, in either form; undefined for anything else. */
function archiveTarget(requestUrl: string): ArchiveTarget | undefined {
  if (requestUrl.startsWith("/")) {
    // Reverse-mirror form: deb.debian.org's paths.
    return /^\/debian(-security)?\//.test(requestUrl) ? { host: REVERSE_HOST, path: requestUrl } : undefined;
  }
  let url: URL;
  try {
    url = new URL(requestUrl);
  } catch {
    return undefined;
  }
  if (url.protocol !== "http:" || url.port !== "" || !ARCHIVE_HOSTS.has(url.hostname)) return undefined;
  return { host: url.hostname, path: `${url.pathname}${url.search}` };
}

/** Files that never change once published: the pool and by-hash indexes. */
function isImmutable(p: string): boolean {
  return /\/(pool|by-hash)\//.test(p) || p.endsWith(".deb");
}

interface Answer {
  status: number;
  body: Buffer;
  contentType?: string;
}

/** The recording of archive files under one directory, with the upstream it fills from. */
class ArchiveRecording {
  readonly upstreamFetches: string[] = [];
  /** Until when upstream counts as unreachable (after a network failure). */
  #downUntil = 0;
  /** In-process fetches of immutable files, so one process asks the lock once per file. */
  readonly #inflight = new Map<string, Promise<Answer>>();
  /** Straight to upstream: this process's own proxy environment may name this very mirror. */
  readonly #dispatcher = createDispatcher({
    route: { kind: "direct" },
    timeouts: { connectMs: 10_000, headersMs: 60_000, bodyMs: 60_000 },
  });

  readonly dir: string;
  readonly upstream: string | undefined;
  readonly offline: boolean;

  constructor(dir: string, upstream: string | undefined, offline: boolean) {
    this.dir = dir;
    this.upstream = upstream;
    this.offline = offline;
  }

  async get(host: string, requestPath: string): Promise<Answer> {
    const file = this.fileFor(host, requestPath);
    if (file && isImmutable(requestPath)) {
      let p = this.#inflight.get(file);
      if (!p) {
        p = this.#immutable(host, requestPath, file).finally(() => this.#inflight.delete(file));
        this.#inflight.set(file, p);
      }
      return p;
    }
    return this.#mutable(host, requestPath, file);
  }

  /**
   * Where a path's recording lives, or undefined if it cannot have one (a directory, a query, or
   * a segment that would leave the host's directory).
   */
  fileFor(host: string, requestPath: string): string | undefined {
    if (requestPath.includes("?") || requestPath.endsWith("/")) return undefined;
    let decoded: string;
    try {
      decoded = decodeURIComponent(requestPath);
    } catch {
      return undefined;
    }
    const segments = decoded.split("/").slice(1);
    const unsafe = (s: string) =>
      s === "" ||
      s === "." ||
      s === ".." ||
      s.includes("\0") ||
      [".lock", ".tmp", MISSING].some((suffix) => s.endsWith(suffix));
    if (segments.length === 0 || segments.some(unsafe)) return undefined;
    return path.join(this.dir, host, ...segments);
  }

  async #immutable(host: string, requestPath: string, file: string): Promise<Answer> {
    const recorded = await replay(file);
    if (recorded?.status === 200 || this.offline) return recorded ?? notRecorded(requestPath);
    await mkdir(path.dirname(file), { recursive: true });
    const lock = `${file}.lock`;
    const fetchedByOther = async () => (await stat(file).catch(() => undefined)) !== undefined;
    if (!(await acquireLock(lock, fetchedByOther, FETCH_LOCK_WAIT_MS))) {
      return (await replay(file)) ?? notRecorded(requestPath);
    }
    try {
      const again = await replay(file);
      if (again?.status === 200) return again;
      const got = await this.#fetch(host, requestPath);
      if (!got) return again ?? notReachable(requestPath);
      await record(file, got);
      return got;
    } finally {
      await releaseLock(lock);
    }
  }

  async #mutable(host: string, requestPath: string, file: string | undefined): Promise<Answer> {
    const recorded = async () => (file ? await replay(file) : undefined);
    if (this.offline || Date.now() < this.#downUntil) return (await recorded()) ?? notRecorded(requestPath);
    const got = await this.#fetch(host, requestPath);
    if (got && got.status < 500) {
      // A 404 for a file we hold means the suite moved away (to archive.debian.org): keep serving it.
      const kept = got.status === 404 || got.status === 410 ? await recorded() : undefined;
      if (kept?.status === 200) return kept;
      if (file) await record(file, got);
      return got;
    }
    // Upstream unreachable or failing.
    return (await recorded()) ?? got ?? notReachable(requestPath);
  }

  /** GET from upstream; undefined when it cannot be reached (then it counts as down for a while). */
  async #fetch(host: string, requestPath: string): Promise<Answer | undefined> {
    const url = `${this.upstream ?? `http://${host}`}${requestPath}`;
    this.upstreamFetches.push(url);
    try {
      const res = await undiciFetch(url, { dispatcher: this.#dispatcher, redirect: "follow" });
      const body = Buffer.from(await res.arrayBuffer());
      await logUpstream(`GET ${url} ${res.status} ${body.length}`);
      return { status: res.status, body, contentType: res.headers.get("content-type") ?? undefined };
    } catch (e) {
      await logUpstream(`GET ${url} failed: ${String((e as Error).cause ?? e)}`);
      this.#downUntil = Date.now() + UPSTREAM_DOWN_MS;
      return undefined;
    }
  }
}

/** Beside a path's recording: upstream answered 404 for it (replayed as 404 when offline). */
const MISSING = ".missing";

/** A path's recording: its bytes, a 404 if upstream said it does not exist, or undefined. */
async function replay(file: string): Promise<Answer | undefined> {
  try {
    return { status: 200, body: await readFile(file), contentType: "application/octet-stream" };
  } catch {
    const missing = await stat(`${file}${MISSING}`).catch(() => undefined);
    return missing ? { status: 404, body: Buffer.alloc(0) } : undefined;
  }
}

/**
 * Records what upstream answered for a path: a 200's bytes, or that it was a 404 (other answers
 * are not kept). Written atomically (src/fs/atomic.ts): a reader in another process sees the
 * whole previous recording or the whole new one.
 */
async function record(file: string, got: Answer): Promise<void> {
  if (got.status !== 200 && got.status !== 404) return;
  try {
    await mkdir(path.dirname(file), { recursive: true });
    if (got.status === 200) {
      await writeFileAtomic(file, got.body);
      await rm(`${file}${MISSING}`, { force: true });
    } else {
      await writeFileAtomic(`${file}${MISSING}`, "");
    }
  } catch {
    // A path that clashes with a recorded directory (or a full disk) is served, not recorded.
  }
}

function notRecorded(requestPath: string): Answer {
  return {
    status: 504,
    body: Buffer.from(`offline and ${requestPath} was never recorded; run once with the network\n`),
    contentType: "text/plain",
  };
}

function notReachable(requestPath: string): Answer {
  return {
    status: 502,
    body: Buffer.from(`upstream unreachable and ${requestPath} was never recorded\n`),
    contentType: "text/plain",
  };
}

async function logUpstream(line: string): Promise<void> {
  const log = process.env.SUTURE_LAB_MIRROR_LOG;
  if (log) await appendFile(log, `${new Date().toISOString()} pid ${process.pid} ${line}\n`);
}
