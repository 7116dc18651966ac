import { Readable, type TransformCallback } from "node:stream";
import { describeCause, isSutureError, SutureError } from "../../errors/errors.ts";
import { discard, type HttpResponse, header, headerValues, readCapped } from "../../http/request.ts";
import { withRetries } from "../../http/retry.ts";
import { DescriptorVerifyingStream, digestHex, sha256Digest, verifyBytes } from "../../image/digest.ts";
import { checkBlobSize, DEFAULT_MAX_BLOB_SIZE } from "../../image/limits.ts";
import type { Descriptor, RawManifest } from "../../oci/manifest.ts";
import { MediaType } from "../../oci/media-types.ts";
import type { ProgressSink } from "../../progress/events.ts";
import { pullScope, pushScope } from "./auth.ts";
import type { RegistryClient } from "./client.ts";
import { answerTooLarge, errorFromNetwork } from "./registry-errors.ts";

/** Every manifest type we can use, so the registry never down-converts to schema 1. */
export const MANIFEST_ACCEPT = [
  MediaType.ociManifest,
  MediaType.ociIndex,
  MediaType.dockerManifest,
  MediaType.dockerManifestList,
].join(", ");

/** Registries refuse manifests over 4 MiB; so do we, before reading more. */
export const MANIFEST_CAP = 4 * 1024 * 1024;
const TAG_LIST_CAP = 16 * 1024 * 1024;
const PROGRESS_STEP = 1024 * 1024;

/** Blobs above this size go up in chunks (PATCH with Content-Range) rather than one PUT. */
export const DEFAULT_CHUNK_THRESHOLD = 64 * 1024 * 1024;
export const DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024;

const schema1Types = new Set<string>([MediaType.dockerManifestV1, MediaType.dockerManifestV1Signed]);

function bareType(contentType: string | undefined): string | undefined {
  return contentType?.split(";")[0]?.trim().toLowerCase() || undefined;
}

function isDigest(reference: string): boolean {
  return /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(reference);
}

function manifestPath(repository: string, reference: string): string {
  return `/v2/${repository}/manifests/${reference}`;
}

function manifestName(repository: string, reference: string): string {
  return isDigest(reference) ? `${repository}@${reference}` : `${repository}:${reference}`;
}

/**
 * The media type of fetched manifest bytes: the document's own `mediaType` wins (it is covered by
 * the digest), then the Content-Type, then the shape of the document.
 */
function manifestMediaType(bytes: Buffer, contentType: string | undefined, what: string): string {
  let doc: { mediaType?: unknown; schemaVersion?: unknown; manifests?: unknown; config?: unknown };
  try {
    doc = JSON.parse(bytes.toString("utf8")) as typeof doc;
  } catch (e) {
    throw new SutureError(
      "INVALID_MANIFEST",
      `${what} is not valid JSON: the registry served something else`,
      {
        cause: e,
      },
    );
  }
  const type = bareType(contentType);
  if (doc.schemaVersion === 1 || (type && schema1Types.has(type))) {
    throw new SutureError(
      "INVALID_MANIFEST",
      `${what} is a Docker schema 1 manifest, which suture does not support: re-push the image with a current Docker, Buildah or skopeo (schema 2 or OCI)`,
    );
  }
  if (typeof doc.mediaType === "string") return doc.mediaType;
  if (
    type === MediaType.ociManifest ||
    type === MediaType.ociIndex ||
    type === MediaType.dockerManifest ||
    type === MediaType.dockerManifestList
  ) {
    return type;
  }
  if (Array.isArray(doc.manifests)) return MediaType.ociIndex;
  if (doc.config) return MediaType.ociManifest;
  throw new SutureError("INVALID_MANIFEST", `${what} is neither an image manifest nor an index`);
}

export interface CallOptions {
  scopes: string[];
  operation: string;
}

/**
 * GET a manifest by tag or digest. Verified before it returns: against the digest when addressed
 * by digest (and the descriptor's size when given), else against `Docker-Content-Digest`.
 */
export async function getManifest(
  client: RegistryClient,
  repository: string,
  reference: string,
  options: CallOptions & { descriptor?: Descriptor },
): Promise<RawManifest> {
  const byDigest = isDigest(reference);
  if (byDigest) digestHex(reference);
  const name = manifestName(repository, reference);
  const what = `manifest ${name} from ${client.registry}`;
  if ((options.descriptor?.size ?? 0) > MANIFEST_CAP) {
    throw new SutureError(
      "TOO_LARGE",
      `${what} claims ${options.descriptor!.size} bytes, more than the ${MANIFEST_CAP} a registry accepts for a manifest: the index naming it is broken or hostile`,
    );
  }
  // The body is read inside the retry loop: a connection that drops mid-manifest is retried like
  // one that drops before the answer.
  const { res, bytes } = await withRetries(
    async () => {
      const res = await client.request({
        method: "GET",
        path: manifestPath(repository, reference),
        headers: { accept: MANIFEST_ACCEPT },
        scopes: options.scopes,
        operation: options.operation,
        object: `manifest ${name}`,
        ok: [200],
        retry: false,
      });
      try {
        return { res, bytes: await readCapped(res, MANIFEST_CAP, answerTooLarge(what, MANIFEST_CAP)) };
      } catch (e) {
        if (client.signal?.aborted)
          throw new SutureError("CANCELLED", `${client.registry}: operation cancelled`);
        throw isSutureError(e)
          ? e
          : errorFromNetwork(e, { registry: client.registry, operation: options.operation });
      }
    },
    client.policy,
    { signal: client.signal },
  );
  const mediaType = manifestMediaType(bytes, header(res, "content-type"), what);
  const digest = sha256Digest(bytes);
  if (byDigest) {
    verifyBytes(bytes, { digest: reference, size: options.descriptor?.size ?? -1 }, what);
  } else {
    const claimed = header(res, "docker-content-digest")?.trim();
    if (claimed?.startsWith("sha256:") && claimed !== digest) {
      throw new SutureError(
        "DIGEST_MISMATCH",
        `${what} has digest ${digest} but the registry says ${claimed}: the registry or something in between served altered content`,
      );
    }
  }
  return { bytes, mediaType, digest };
}

/** HEAD a manifest: its digest, type and size, or undefined when the tag or digest does not exist. */
export async function headManifest(
  client: RegistryClient,
  repository: string,
  reference: string,
  options: CallOptions,
): Promise<{ digest?: string; mediaType?: string; size?: number } | undefined> {
  const res = await client.request({
    method: "HEAD",
    path: manifestPath(repository, reference),
    headers: { accept: MANIFEST_ACCEPT },
    scopes: options.scopes,
    operation: options.operation,
    object: `manifest ${manifestName(repository, reference)}`,
    ok: [200, 404],
  });
  await discard(res);
  if (res.status === 404) return undefined;
  const size = Number(header(res, "content-length"));
  return {
    digest: header(res, "docker-content-digest"),
    mediaType: bareType(header(res, "content-type")),
    size: Number.isFinite(size) ? size : undefined,
  };
}

/** PUT a manifest under a tag or its digest, with its media type as Content-Type. */
export async function putManifest(
  client: RegistryClient,
  repository: string,
  reference: string,
  manifest: RawManifest,
  options: CallOptions,
): Promise<void> {
  if (manifest.bytes.length > MANIFEST_CAP) {
    throw new SutureError(
      "INVALID_MANIFEST",
      `manifest ${manifest.digest} is ${manifest.bytes.length} bytes: registries refuse manifests over 4 MiB`,
    );
  }
  const res = await client.request({
    method: "PUT",
    path: manifestPath(repository, reference),
    headers: { "content-type": manifest.mediaType },
    body: () => Buffer.from(manifest.bytes),
    scopes: options.scopes,
    operation: options.operation,
    object: `manifest ${manifestName(repository, reference)}`,
    ok: [200, 201, 202, 204],
  });
  await discard(res);
  const stored = header(res, "docker-content-digest")?.trim();
  if (stored?.startsWith("sha256:") && stored !== manifest.digest) {
    throw new SutureError(
      "DIGEST_MISMATCH",
      `${client.registry} stored manifest ${manifestName(repository, reference)} as ${stored}, not ${manifest.digest}: the registry altered it`,
    );
  }
}

/** HEAD a blob: true when the repository has it. */
export async function blobExists(
  client: RegistryClient,
  repository: string,
  digest: string,
  options: CallOptions,
): Promise<boolean> {
  const res = await client.request({
    method: "HEAD",
    path: `/v2/${repository}/blobs/${digest}`,
    scopes: options.scopes,
    operation: options.operation,
    object: `blob ${digest}`,
    ok: [200, 404],
  });
  await discard(res);
  return res.status === 200;
}

/** A DescriptorVerifyingStream that also reports progress: at the start, every MiB, and at a clean end. */
class MeteredVerifyingStream extends DescriptorVerifyingStream {
  readonly #emit?: (bytes: number) => void;
  #count = 0;
  #next = PROGRESS_STEP;

  constructor(d: Descriptor, what: string, emit?: (bytes: number) => void) {
    super(d, what);
    this.#emit = emit;
    emit?.(0);
  }

  override _transform(chunk: Buffer, enc: BufferEncoding, callback: TransformCallback): void {
    this.#count += chunk.length;
    if (this.#emit && this.#count >= this.#next) {
      this.#emit(this.#count);
      this.#next = this.#count + PROGRESS_STEP;
    }
    super._transform(chunk, enc, callback);
  }

  override _flush(callback: TransformCallback): void {
    super._flush((error, data) => {
      if (!error) this.#emit?.(this.#count);
      callback(error, data);
    });
  }
}

function meter(
  progress: ProgressSink | undefined,
  action: "download" | "upload",
  d: Descriptor,
): ((bytes: number) => void) | undefined {
  if (!progress) return undefined;
  return (bytes) => progress({ type: "blob", action, digest: d.digest, bytes, total: d.size });
}

/**
 * GET a blob as a stream verified against the descriptor: it errors as soon as more bytes arrive
 * than the descriptor names (the connection is dropped then), and at EOF on a digest or size
 * mismatch. A descriptor claiming more than `maxBlobSize` is refused before the request, and an
 * answer whose Content-Length differs from the descriptor before its body is read. Redirects to
 * storage are followed without our credentials.
 */
export async function getBlob(
  client: RegistryClient,
  repository: string,
  d: Descriptor,
  options: CallOptions & { progress?: ProgressSink; maxBlobSize?: number },
): Promise<Readable> {
  digestHex(d.digest);
  checkBlobSize(d, options.maxBlobSize ?? DEFAULT_MAX_BLOB_SIZE, `${client.registry}/${repository}`);
  const res = await client.request({
    method: "GET",
    path: `/v2/${repository}/blobs/${d.digest}`,
    scopes: options.scopes,
    operation: options.operation,
    object: `blob ${d.digest}`,
    ok: [200],
  });
  const announced = header(res, "content-length");
  if (announced !== undefined && d.size >= 0 && Number(announced) !== d.size) {
    // Hang up rather than read a body we already know is wrong (undici reports that as an error).
    res.body.on("error", () => {}).destroy();
    throw new SutureError(
      "DIGEST_MISMATCH",
      `${client.registry} answered blob ${d.digest} of ${repository} with ${announced} bytes, but its descriptor names ${d.size}: the registry serves different content than the manifest names`,
    );
  }
  const verifier = new MeteredVerifyingStream(
    d,
    `blob ${d.digest} from ${client.registry}/${repository}`,
    meter(options.progress, "download", d),
  );
  res.body.on("error", (e) => {
    verifier.destroy(
      isSutureError(e) ? e : errorFromNetwork(e, { registry: client.registry, operation: options.operation }),
    );
  });
  // A consumer that stops early must release the connection.
  verifier.on("close", () => {
    if (!res.body.destroyed && !res.body.readableEnded) res.body.destroy();
  });
  res.body.pipe(verifier);
  return verifier;
}

/** Where an upload continues: the Location of the last answer, resolved against its URL. */
export function uploadLocation(res: HttpResponse, registry: string, operation: string): string {
  const location = header(res, "location");
  if (!location) {
    throw new SutureError(
      "REGISTRY",
      `${registry} (${operation}) answered an upload request without a Location: the registry is not distribution-compatible`,
    );
  }
  return new URL(location, res.url).href;
}

export function withQuery(location: string, name: string, value: string): string {
  const url = new URL(location);
  url.search = `${url.search ? `${url.search}&` : "?"}${name}=${encodeURIComponent(value)}`;
  return url.href;
}

/**
 * POST to start an upload session; returns its Location and the smallest chunk (but the last)
 * the registry takes in a PATCH (`OCI-Chunk-Min-Length`, 0 when it names none).
 */
export async function startUploadSession(
  client: RegistryClient,
  repository: string,
  options: CallOptions,
): Promise<{ location: string; minChunk: number }> {
  const res = await client.request({
    method: "POST",
    path: `/v2/${repository}/blobs/uploads/`,
    headers: { "content-length": "0" },
    scopes: options.scopes,
    operation: options.operation,
    ok: [202],
    retry: false,
  });
  await discard(res);
  const min = Number(header(res, "oci-chunk-min-length") ?? 0);
  return {
    location: uploadLocation(res, client.registry, options.operation),
    minChunk: Number.isSafeInteger(min) && min > 0 ? min : 0,
  };
}

/**
 * Try to mount a blob from another repository of the same registry. Answers `mounted: true` when
 * the registry linked it (201); otherwise the registry may have opened an ordinary upload session
 * instead (202), whose location is returned for the caller to upload into. A refused mount (no
 * pull access on the source) is not an error: the caller uploads.
 */
export async function mountBlob(
  client: RegistryClient,
  repository: string,
  digest: string,
  from: string,
  options: { operation: string },
): Promise<{ mounted: boolean; location?: string }> {
  let res: HttpResponse;
  try {
    res = await client.request({
      method: "POST",
      path: `/v2/${repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`,
      headers: { "content-length": "0" },
      scopes: [pushScope(repository), pullScope(from)],
      operation: options.operation,
      object: `blob ${digest} in ${from}`,
      ok: [201, 202],
    });
  } catch (e) {
    if (isSutureError(e, "UNAUTHORIZED") || isSutureError(e, "DENIED") || isSutureError(e, "NOT_FOUND")) {
      return { mounted: false };
    }
    throw e;
  }
  await discard(res);
  if (res.status === 201) return { mounted: true };
  return { mounted: false, location: uploadLocation(res, client.registry, options.operation) };
}

/** Hands out exactly `n` bytes at a time from a stream, without holding more than one read. */
class ChunkReader {
  readonly #it: AsyncIterator<Buffer>;
  #pending: Buffer | undefined;

  constructor(stream: Readable) {
    this.#it = stream[Symbol.asyncIterator]();
  }

  async *take(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      let buf = this.#pending;
      this.#pending = undefined;
      if (!buf) {
        const r = await this.#it.next();
        if (r.done) {
          throw new SutureError("DIGEST_MISMATCH", "blob stream ended before its descriptor's size");
        }
        buf = r.value;
      }
      if (buf.length > left) {
        this.#pending = buf.subarray(left);
        buf = buf.subarray(0, left);
      }
      left -= buf.length;
      yield buf;
    }
  }

  /** Read to the end, so the verifier checks the digest; there must be nothing left over. */
  async finish(): Promise<void> {
    if (this.#pending?.length) {
      throw new SutureError("DIGEST_MISMATCH", "blob stream is longer than its descriptor's size");
    }
    const r = await this.#it.next();
    if (!r.done) throw new SutureError("DIGEST_MISMATCH", "blob stream is longer than its descriptor's size");
  }
}

export interface UploadOptions {
  operation: string;
  /** An upload session already open (from a mount the registry turned into an upload). */
  location?: string;
  chunkThreshold?: number;
  chunkSize?: number;
  progress?: ProgressSink;
}

/**
 * Upload a blob, streaming from `open()`: one PUT for blobs up to the chunk threshold, PATCHes with
 * Content-Range then a closing PUT above it. The bytes are verified against the descriptor on
 * the way out. A failed attempt cancels its session and the whole upload starts again with a
 * fresh stream (per the client's retry policy).
 */
export async function uploadBlob(
  client: RegistryClient,
  repository: string,
  d: Descriptor,
  open: () => Promise<Readable>,
  options: UploadOptions,
): Promise<void> {
  digestHex(d.digest);
  const scopes = [pushScope(repository)];
  const call = { scopes, operation: options.operation };
  const threshold = options.chunkThreshold ?? DEFAULT_CHUNK_THRESHOLD;
  const chunkSize = Math.max(1, options.chunkSize ?? DEFAULT_CHUNK_SIZE);
  let preset = options.location;
  await withRetries(
    async () => {
      const location = preset ?? (await startUploadSession(client, repository, call)).location;
      preset = undefined;
      let current = location;
      let source: Readable | undefined;
      let verified: MeteredVerifyingStream | undefined;
      try {
        source = await open();
        verified = new MeteredVerifyingStream(
          d,
          `blob ${d.digest} for ${client.registry}/${repository}`,
          meter(options.progress, "upload", d),
        );
        const v = verified;
        // A failing source is not the registry's fault: say so, instead of letting the request
        // report it as a connection error. Source-side SutureErrors keep their retryability.
        source.on("error", (e) =>
          v.destroy(
            isSutureError(e)
              ? e
              : new SutureError("IO", `reading blob ${d.digest} to upload it failed: ${describeCause(e)}`, {
                  cause: e,
                }),
          ),
        );
        source.pipe(v);
        if (d.size <= threshold) {
          const res = await client.request({
            method: "PUT",
            path: withQuery(current, "digest", d.digest),
            headers: { "content-type": "application/octet-stream", "content-length": String(d.size) },
            body: () => v,
            ...call,
            object: `blob ${d.digest}`,
            ok: [201, 204],
            retry: false,
            replayable: false,
          });
          await discard(res);
          checkStoredDigest(res, d, client.registry);
          return;
        }
        const reader = new ChunkReader(v);
        let offset = 0;
        while (offset < d.size) {
          const n = Math.min(chunkSize, d.size - offset);
          const res = await client.request({
            method: "PATCH",
            path: current,
            headers: {
              "content-type": "application/octet-stream",
              "content-range": `${offset}-${offset + n - 1}`,
              "content-length": String(n),
            },
            body: () => Readable.from(reader.take(n), { objectMode: false }),
            ...call,
            object: `blob ${d.digest}`,
            ok: [202, 204],
            retry: false,
            replayable: false,
          });
          await discard(res);
          current = uploadLocation(res, client.registry, options.operation);
          const range = /^(?:bytes=)?0-(\d+)$/.exec(header(res, "range") ?? "");
          if (range && Number(range[1]) !== offset + n - 1) {
            throw new SutureError(
              "REGISTRY",
              `${client.registry} (${options.operation}) accepted bytes 0-${range[1]} of blob ${d.digest}, expected 0-${offset + n - 1}`,
              { retryable: true },
            );
          }
          offset += n;
        }
        await reader.finish();
        const res = await client.request({
          method: "PUT",
          path: withQuery(current, "digest", d.digest),
          headers: { "content-length": "0" },
          ...call,
          object: `blob ${d.digest}`,
          ok: [201, 204],
          retry: false,
        });
        await discard(res);
        checkStoredDigest(res, d, client.registry);
      } catch (e) {
        source?.destroy();
        verified?.destroy();
        await cancelUpload(client, current, call);
        throw e;
      }
    },
    client.policy,
    { signal: client.signal },
  );
}

export function checkStoredDigest(res: HttpResponse, d: Descriptor, registry: string): void {
  const stored = header(res, "docker-content-digest")?.trim();
  if (stored?.startsWith("sha256:") && stored !== d.digest) {
    throw new SutureError(
      "DIGEST_MISMATCH",
      `${registry} stored blob ${d.digest} as ${stored}: the registry altered it`,
    );
  }
}

/** How long dropping an upload session may take; it also runs after an interrupt. */
const CANCEL_UPLOAD_TIMEOUT_MS = 10_000;

/**
 * Best effort: drop a failed or interrupted upload session so its partial data does not linger
 * until the registry's purge. It goes out even when the operation's signal was aborted. (CNCF
 * distribution refuses it for a session whose request was broken off mid-body: its state token
 * no longer matches what it stored, and only its upload purging removes that data.)
 */
export async function cancelUpload(
  client: RegistryClient,
  location: string,
  call: CallOptions,
): Promise<void> {
  try {
    const res = await client.request({
      method: "DELETE",
      path: location,
      ...call,
      ok: [200, 202, 204, 404],
      retry: false,
      signal: AbortSignal.timeout(CANCEL_UPLOAD_TIMEOUT_MS),
    });
    await discard(res);
  } catch {
    // The original failure is what matters.
  }
}

/** `<…>; rel="next"` from a Link header, resolved against the answering URL. */
export function nextLink(res: Pick<HttpResponse, "headers" | "url">): string | undefined {
  for (const value of headerValues(res, "link")) {
    for (const part of value.split(/,(?=\s*<)/)) {
      const m = /^\s*<([^>]*)>(.*)$/.exec(part);
      if (m && /(?:^|;)\s*rel="?next"?/i.test(m[2]!)) return new URL(m[1]!, res.url).href;
    }
  }
  return undefined;
}

/** All tags of a repository, following `Link: <…>; rel="next"` pagination. */
export async function listTags(
  client: RegistryClient,
  repository: string,
  operation: string,
  pageSize = 1000,
): Promise<string[]> {
  const tags: string[] = [];
  let path: string | undefined = `/v2/${repository}/tags/list?n=${pageSize}`;
  const seen = new Set<string>();
  while (path && !seen.has(path)) {
    seen.add(path);
    const res = await client.request({
      method: "GET",
      path,
      scopes: [pullScope(repository)],
      operation,
      object: `repository ${repository}`,
      ok: [200],
    });
    const body = await readCapped(
      res,
      TAG_LIST_CAP,
      answerTooLarge(`tag list of ${repository}`, TAG_LIST_CAP),
    );
    let doc: { tags?: unknown };
    try {
      doc = JSON.parse(body.toString("utf8")) as typeof doc;
    } catch (e) {
      throw new SutureError(
        "REGISTRY",
        `${client.registry} (${operation}) answered a tag list that is not JSON`,
        {
          cause: e,
        },
      );
    }
    if (Array.isArray(doc.tags)) for (const t of doc.tags) if (typeof t === "string") tags.push(t);
    path = nextLink(res);
  }
  return tags;
}
