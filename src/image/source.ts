import type { Readable } from "node:stream";
import type { Descriptor, RawManifest } from "../oci/manifest.ts";
import type { ProgressSink } from "../progress/events.ts";

/**
 * Reads an image (or index) from one place. Contract for every transport:
 * - `rootManifest()` returns the manifest the reference names: an index or an image manifest,
 *   with its exact bytes; when the reference pins a digest the bytes are verified against it.
 * - `manifest(d)` and `blob(d)` are addressed by descriptor and verified: `manifest` before it
 *   returns, `blob` while streaming (the stream errors at EOF on a digest or size mismatch, so a
 *   consumer must not commit anything until the stream has ended cleanly).
 * - Reads are idempotent and may be repeated; each `blob` call returns a fresh stream that the
 *   caller must consume or destroy.
 * - `close()` releases connections and temporary files; it is safe to call twice.
 */
export interface ImageSource {
  /** How to name this source in messages: `docker://…`, `oci:DIR:TAG`, … */
  readonly name: string;
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
 *   that, `abort()` leaves the destination as it was (blobs already uploaded to a registry may
 *   remain, unreferenced, as with every registry client).
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
}

export interface WriteBlobOptions {
  /** Where the blob can be found already; a registry sink may mount it instead of uploading. */
  mountFrom?: { registry: string; repository: string };
  progress?: ProgressSink;
}
