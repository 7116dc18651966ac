import type { Readable } from "node:stream";
import type { Descriptor, RawManifest } from "../oci/manifest.ts";
import type { ProgressSink } from "../progress/events.ts";

/**
 * Reads an image (or index) from one place. Contract for every transport:
 * - `rootManifest()` returns the manifest the reference names: an index or an image manifest,
 *   with its exact bytes; when the reference pins a digest the bytes are verified against it.
 * - `manifest(d)` and `blob(d)` are addressed by descriptor and verified: `manifest` before it
 *   returns (never reading more than a manifest may hold), `blob` while streaming (the stream
 *   errors as soon as more bytes arrive than the descriptor names, and at EOF on a digest or size
 *   mismatch, so a consumer must not commit anything until the stream has ended cleanly).
 * - `blob(d)` refuses (TOO_LARGE) a descriptor claiming more than TransportOptions.maxBlobSize,
 *   before reading anything.
 * - Reads are idempotent and may be repeated; each `blob` call returns a fresh stream that the
 *   caller must consume or destroy.
 * - `close()` releases connections and temporary files; it is safe to call twice.
 */
export interface ImageSource {
  /** How to name this source in messages: `docker://…`, `oci:DIR:TAG`, … */
  readonly name: string;
  /**
   * Digests the place the image is read from knows it by besides its config and manifest: the
   * Docker daemon's image ID, which with the containerd image store is the index or manifest
   * digest, not the config's (scanners reading the daemon report it as the image ID).
   */
  readonly imageIds?: readonly string[];
  rootManifest(): Promise<RawManifest>;
  manifest(descriptor: Descriptor): Promise<RawManifest>;
  blob(descriptor: Descriptor): Promise<Readable>;
  close(): Promise<void>;
}

/** Anything that can hand out verified blobs: a source, or an image built in memory over one. */
export interface BlobProvider {
  blob(descriptor: Descriptor): Promise<Readable>;
}

/**
 * Writes an image (or index) to one place. Contract:
 * - Nothing becomes visible under the destination's name until `commit(root)` succeeds; before
 *   that, `abort()` leaves the destination as it was and removes partial data (temporary files,
 *   spooled blobs; a registry's failed upload sessions are deleted as they fail). Blobs already
 *   uploaded whole to a registry may remain, unreferenced, as with every registry client.
 * - TransportOptions.signal breaks off a `commit` in progress (a docker-archive being written, a
 *   daemon load); writes are stopped by destroying the stream `open` returned.
 * - `writeBlob` is idempotent: writing a blob the sink already has is cheap. `open` is called only
 *   when the bytes are really needed, and may be called again on retry.
 * - `writeManifest` stores a child manifest (a platform manifest of an index) by digest.
 * - Sinks that cannot hold an index (docker-archive, daemon) say so with `acceptsIndex = false`;
 *   the caller then selects one platform.
 */
export interface ImageSink {
  readonly name: string;
  readonly acceptsIndex: boolean;
  hasBlob(descriptor: Descriptor): Promise<boolean>;
  writeBlob(descriptor: Descriptor, open: () => Promise<Readable>, options?: WriteBlobOptions): Promise<void>;
  writeManifest(manifest: RawManifest): Promise<void>;
  commit(root: RawManifest): Promise<void>;
  abort(): Promise<void>;
  /**
   * Start sending a blob whose bytes are still being produced (the patch layer, as it is
   * compressed), before its digest is known. Only sinks that gain from it offer it (a registry).
   */
  beginBlobUpload?(options?: { progress?: ProgressSink }): StreamingBlobUpload;
}

/**
 * One blob sent while it is written. It never fails what feeds it: a refused or broken upload is
 * cancelled, said as an info event, and `finish` answers false, so the caller's sink uploads the
 * blob whole later. The one exception is a registry refusing the finished blob's digest: the
 * bytes arrived altered, and `finish` throws DIGEST_MISMATCH.
 */
export interface StreamingBlobUpload {
  /** Queue the next bytes; resolves once they are accepted for sending (backpressure). */
  write(chunk: Buffer): Promise<void>;
  /** Send what is left and close the upload under `digest`: true when the blob is now stored. */
  finish(blob: { digest: string; size: number }): Promise<boolean>;
  /** Drop the upload (an aborted or failed build), best effort. */
  cancel(): Promise<void>;
}

export interface WriteBlobOptions {
  /** Where the blob can be found already; a registry sink may mount it instead of uploading. */
  mountFrom?: { registry: string; repository: string };
  progress?: ProgressSink;
}
