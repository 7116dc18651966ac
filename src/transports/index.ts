import type { Dispatcher } from "undici";
import type { ImageSink, ImageSource } from "../image/source.ts";
import type { ProgressSink } from "../progress/events.ts";
import type { DaemonEngine, TransportReference } from "../ref/transport.ts";
import { openArchiveSink, openArchiveSource } from "./archive/docker-archive.ts";
import { openDaemonSink, openDaemonSource } from "./daemon/daemon.ts";
import { openLayoutSink, openLayoutSource } from "./layout/layout.ts";
import { openRegistrySink, openRegistrySource } from "./registry/registry.ts";

export interface TransportOptions {
  /** Allow plain HTTP / unverified TLS for non-loopback registries. */
  insecure?: boolean;
  /** Docker config directory (default $DOCKER_CONFIG or ~/.docker). */
  dockerConfig?: string;
  /** Docker Engine endpoint (default: see resolveEngineEndpoint). */
  dockerHost?: string;
  /** Which engine `docker-daemon:` means: Docker (default) or Podman (`podman:` references). */
  daemonEngine?: DaemonEngine;
  /** Scratch space for transports that spool (archives, daemon). */
  tmpDir?: string;
  progress?: ProgressSink;
  /** Aborting stops transfers in flight; sinks then remove what they wrote (see ImageSink.abort). */
  signal?: AbortSignal;
  /** Sources refuse a blob whose descriptor claims more bytes (default DEFAULT_MAX_BLOB_SIZE). */
  maxBlobSize?: number;
  /**
   * Send the registry's and the Docker Engine API's requests through this undici dispatcher
   * instead of suture's connection pools (`src/http/dispatchers.ts`); tests pass an in-process fake.
   */
  dispatcher?: Dispatcher;
}

export async function openSource(
  ref: TransportReference,
  options: TransportOptions = {},
): Promise<ImageSource> {
  switch (ref.transport) {
    case "registry":
      return openRegistrySource(ref.ref, options);
    case "oci":
      return openLayoutSource(ref.dir, ref.tag, options);
    case "docker-archive":
      return openArchiveSource(ref.file, ref.ref, options);
    case "docker-daemon":
      return openDaemonSource(ref.ref, { ...options, daemonEngine: ref.engine });
  }
}

export async function openSink(ref: TransportReference, options: TransportOptions = {}): Promise<ImageSink> {
  switch (ref.transport) {
    case "registry":
      return openRegistrySink(ref.ref, options);
    case "oci":
      return openLayoutSink(ref.dir, ref.tag, options);
    case "docker-archive":
      return openArchiveSink(ref.file, ref.ref, options);
    case "docker-daemon":
      return openDaemonSink(ref.ref, { ...options, daemonEngine: ref.engine });
  }
}
