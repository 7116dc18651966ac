/**
 * A blob uploaded while it is being written (issue 15: the patch layer, as it is compressed): an
 * upload session opened at once, the bytes sent as chunked PATCHes (Content-Range, each answer's
 * Location followed) as they arrive, closed with `PUT ?digest=` once the writer knows the digest.
 * It never fails its writer: a refused session, a 416 or 5xx PATCH, a connection cut, anything
 * unexpected cancels the session (DELETE, best effort), says so in an info event and leaves the
 * blob to the sink's ordinary upload of the finished file. Only a registry refusing the finished
 * blob's digest is an error: the bytes it received are not the bytes written.
 */
import { describeCause, isSutureError, SutureError } from "../../errors/errors.ts";
import { discard, header } from "../../http/request.ts";
import type { StreamingBlobUpload } from "../../image/source.ts";
import type { ProgressSink } from "../../progress/events.ts";
import {
  type CallOptions,
  cancelUpload,
  checkStoredDigest,
  startUploadSession,
  uploadLocation,
  withQuery,
} from "./api.ts";
import type { RegistryClient } from "./client.ts";

/**
 * Bytes per PATCH (at least; one sent while the writer filled on is up to twice that). Small
 * enough that the upload starts within the compressor's first seconds and that little is held (at
 * most four chunks' bytes: one PATCH of up to two on the wire, up to two more filling); large
 * enough that a distant registry's round trip per request is a small share of the time.
 */
export const DEFAULT_STREAM_CHUNK_SIZE = 4 * 1024 * 1024;

export interface StreamedUploadOptions {
  call: CallOptions;
  chunkSize?: number;
  progress?: ProgressSink;
}

/** Start a streamed upload into `repository`; its session is requested at once, in the background. */
export function beginStreamedUpload(
  client: RegistryClient,
  repository: string,
  options: StreamedUploadOptions,
): StreamingBlobUpload {
  return new StreamedUpload(client, repository, options);
}

class StreamedUpload implements StreamingBlobUpload {
  readonly #client: RegistryClient;
  readonly #call: CallOptions;
  readonly #progress?: ProgressSink;
  #chunkSize: number;
  /** The session's current Location; undefined until the POST answered (or when it failed). */
  #location: string | undefined;
  readonly #started: Promise<void>;
  /** Bytes the registry has acknowledged (or is being sent in the PATCH in flight). */
  #offset = 0;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** The PATCH being sent; never rejects (a failure marks the upload as given up). */
  #inflight: Promise<void> = Promise.resolve();
  #sending = false;
  #chunks = 0;
  /** Why the upload was given up; then every call is a no-op and finish answers false. */
  #gaveUp: string | undefined;
  #cancelled: Promise<void> | undefined;

  constructor(client: RegistryClient, repository: string, options: StreamedUploadOptions) {
    this.#client = client;
    this.#call = options.call;
    this.#progress = options.progress;
    this.#chunkSize = Math.max(1, options.chunkSize ?? DEFAULT_STREAM_CHUNK_SIZE);
    this.#started = startUploadSession(client, repository, this.#call).then(
      ({ location, minChunk }) => {
        this.#location = location;
        this.#chunkSize = Math.max(this.#chunkSize, minChunk);
      },
      (e) => this.#giveUp(e),
    );
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.#gaveUp !== undefined || chunk.length === 0) return;
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    // While a PATCH is on the wire the writer goes on filling up to a second chunk before it
    // waits: compressed output comes in bursts, and a writer held at every chunk boundary loses
    // part of the overlap (measured: about 0.3 s a chunk at 5 MB/s).
    if (this.#pendingBytes < this.#chunkSize) return;
    if (this.#sending && this.#pendingBytes < 2 * this.#chunkSize) return;
    await this.#sendPending(false);
  }

  /**
   * Hand the bytes gathered so far to a PATCH once the previous one is answered (the registry
   * takes chunks in order, one at a time). Resolves when that PATCH has started, so the writer
   * fills the next chunk while this one is on the wire. Only the last chunk may be short of the
   * chunk size (which the session's answer may have raised meanwhile).
   */
  async #sendPending(last: boolean): Promise<void> {
    await this.#started;
    await this.#inflight;
    if (this.#gaveUp !== undefined || this.#pendingBytes === 0) return;
    if (!last && this.#pendingBytes < this.#chunkSize) return;
    const body = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending);
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#sending = true;
    this.#inflight = this.#patch(body)
      .catch((e) => this.#giveUp(e))
      .finally(() => {
        this.#sending = false;
      });
  }

  async #patch(body: Buffer): Promise<void> {
    const start = this.#offset;
    const end = start + body.length - 1;
    this.#offset += body.length;
    const res = await this.#client.request({
      method: "PATCH",
      path: this.#location!,
      headers: {
        "content-type": "application/octet-stream",
        "content-range": `${start}-${end}`,
        "content-length": String(body.length),
      },
      // The chunk is held whole, so a 401 answered with a fresh token can send it again.
      body: () => body,
      ...this.#call,
      object: "the patch layer's upload",
      ok: [202, 204],
      retry: false,
    });
    await discard(res);
    this.#location = uploadLocation(res, this.#client.registry, this.#call.operation);
    const range = /^(?:bytes=)?0-(\d+)$/.exec(header(res, "range") ?? "");
    if (range && Number(range[1]) !== end) {
      throw new SutureError(
        "REGISTRY",
        `${this.#client.registry} acknowledged bytes 0-${range[1]} after a chunk ending at ${end}`,
      );
    }
    this.#chunks++;
  }

  async finish(blob: { digest: string; size: number }): Promise<boolean> {
    await this.#sendPending(true);
    await this.#started;
    await this.#inflight;
    if (this.#gaveUp !== undefined) {
      // The session is dropped before the caller moves on (or the process ends on an interrupt).
      await this.#cancelled;
      return false;
    }
    if (this.#offset !== blob.size) {
      this.#giveUp(`${this.#offset} bytes were sent of a ${blob.size}-byte blob`);
      await this.#cancelled;
      return false;
    }
    try {
      const res = await this.#client.request({
        method: "PUT",
        path: withQuery(this.#location!, "digest", blob.digest),
        headers: { "content-length": "0" },
        ...this.#call,
        object: `blob ${blob.digest}`,
        ok: [201, 204],
        retry: false,
      });
      await discard(res);
      checkStoredDigest(res, { digest: blob.digest, size: blob.size, mediaType: "" }, this.#client.registry);
    } catch (e) {
      if (isSutureError(e, "DIGEST_MISMATCH")) {
        this.#gaveUp = "refused";
        await cancelUpload(this.#client, this.#location!, this.#call);
        throw new SutureError(
          "DIGEST_MISMATCH",
          `${this.#client.registry} (${this.#call.operation}) refused the patch layer ${blob.digest} uploaded as it was written: the bytes it received are not the bytes written (something between alters them); nothing was tagged, check the network path to the registry and patch again`,
          { cause: e },
        );
      }
      this.#giveUp(e);
      await this.#cancelled;
      return false;
    }
    this.#progress?.({
      type: "blob",
      action: "upload",
      digest: blob.digest,
      bytes: blob.size,
      total: blob.size,
    });
    this.#progress?.({
      type: "info",
      message: `patch layer ${blob.digest.slice(0, 19)} uploaded as it was written (${this.#chunks} chunk${this.#chunks === 1 ? "" : "s"})`,
    });
    return true;
  }

  async cancel(): Promise<void> {
    if (this.#gaveUp === undefined) {
      this.#gaveUp = "cancelled";
      this.#pending = [];
      this.#cancelled = this.#dropSession();
    }
    await this.#cancelled;
  }

  /** Stop streaming for good: say why (unless the writer cancelled) and drop the session. */
  #giveUp(reason: unknown): void {
    if (this.#gaveUp !== undefined) return;
    const cancelled = this.#client.signal?.aborted === true;
    this.#gaveUp = typeof reason === "string" ? reason : describeCause(reason);
    this.#pending = [];
    this.#pendingBytes = 0;
    if (!cancelled) {
      this.#progress?.({
        type: "info",
        message: `the patch layer could not be uploaded as it was written (${this.#gaveUp}): it is uploaded whole with the image`,
      });
    }
    this.#cancelled = this.#dropSession();
  }

  async #dropSession(): Promise<void> {
    await this.#started;
    await this.#inflight;
    if (this.#location) await cancelUpload(this.#client, this.#location, this.#call);
  }
}
