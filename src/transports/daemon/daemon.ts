import { createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { asSutureError, SutureError } from "../../errors/errors.ts";
import { readAll } from "../../image/image.ts";
import type { ImageSink, ImageSource, WriteBlobOptions } from "../../image/source.ts";
import type { Descriptor, RawManifest } from "../../oci/manifest.ts";
import type { ProgressSink } from "../../progress/events.ts";
import { familiarName, type ImageReference } from "../../ref/reference.ts";
import { openArchiveFile } from "../archive/archive-source.ts";
import { ArchiveSpool, archiveStream } from "../archive/archive-writer.ts";
import type { TransportOptions } from "../index.ts";
import { describeEngine, EngineClient, type EngineEndpoint } from "./engine.ts";

export { EngineClient, type EngineEndpoint, resolveEngineEndpoint } from "./engine.ts";

/** How the daemon knows an image: Docker's familiar form, `nginx:1.25`, `localhost:5000/app@sha256:…`. */
export function daemonImageName(ref: ImageReference): string {
  let name = familiarName(ref);
  if (ref.tag) name += `:${ref.tag}`;
  if (ref.digest) name += `@${ref.digest}`;
  return name;
}

/** `docker-daemon:NAME` or `podman:NAME`, as the user wrote the transport. */
function daemonTransportName(ref: ImageReference, options: TransportOptions): string {
  return `${options.daemonEngine === "podman" ? "podman" : "docker-daemon"}:${daemonImageName(ref)}`;
}

/** Whether a Docker (or Podman-compatible) daemon answers at the configured endpoint. Never throws. */
export async function daemonAvailable(options: TransportOptions = {}): Promise<boolean> {
  try {
    await EngineClient.connect(options, 3_000);
    return true;
  } catch {
    return false;
  }
}

/**
 * Read an image from the local Docker daemon: `GET /images/get` streams a docker-archive, which is
 * spooled to a temporary file (TransportOptions.tmpDir or the OS temp dir) and read like
 * `docker-archive:`. The spool is removed on close. The daemon's image is never modified.
 */
export async function openDaemonSource(ref: ImageReference, options: TransportOptions): Promise<ImageSource> {
  const name = daemonTransportName(ref, options);
  const client = await EngineClient.connect(options);
  const image = daemonImageName(ref);
  const pull = `${client.endpoint.engine === "podman" ? "podman" : "docker"} pull it first`;
  const inspect = await client.request({
    method: "GET",
    path: `/images/${encodeURI(image)}/json`,
    timeoutMs: 60_000,
    signal: options.signal,
  });
  if (inspect.status !== 200) {
    throw await client.failure(
      inspect,
      `inspecting ${image}`,
      `image ${image} not found in ${describeEngine(client.endpoint)}: ${pull}`,
    );
  }
  const imageId = await readImageId(inspect.body);
  const dir = await mkdtemp(join(options.tmpDir ?? tmpdir(), "suture-daemon-")).catch((e) => {
    throw asSutureError(e, "IO", "cannot create scratch space for the daemon export");
  });
  try {
    const file = join(dir, "image.tar");
    const res = await client.request({
      method: "GET",
      path: "/images/get",
      query: { names: image },
      // No header timeout: the daemon answers only after assembling the export, which for a
      // large image takes long; cancellation comes from the signal.
      signal: options.signal,
    });
    if (res.status !== 200) {
      throw await client.failure(
        res,
        `exporting ${image}`,
        `image ${image} not found in ${describeEngine(client.endpoint)}: ${pull}`,
      );
    }
    options.progress?.({
      type: "info",
      message: `exporting ${image} from ${describeEngine(client.endpoint)}`,
    });
    try {
      await pipeline(res.body, createWriteStream(file));
    } catch (e) {
      // The signal also ends the response body: that is the user's interrupt, not the daemon's fault.
      if (options.signal?.aborted) {
        throw new SutureError("CANCELLED", "the export was cancelled", { cause: e });
      }
      throw asSutureError(e, "DAEMON", `${describeEngine(client.endpoint)} broke off exporting ${image}`);
    }
    // The export names the image as the daemon does; a digest-only reference has no RepoTags.
    const source = await openArchiveFile(file, ref, {
      name,
      tmpDir: options.tmpDir,
      removeOnClose: dir,
      acceptSingle: true,
      maxBlobSize: options.maxBlobSize,
      signal: options.signal,
    });
    return imageId ? Object.assign(source, { imageIds: [imageId] }) : source;
  } catch (e) {
    await rm(dir, { recursive: true, force: true }).catch(() => {});
    throw e;
  }
}

/**
 * The image ID of a `GET /images/NAME/json` answer (its `Id`), when it is a sha256 digest. Only a
 * report's image check uses it, so an answer that cannot be read just yields none.
 */
async function readImageId(inspect: Readable): Promise<string | undefined> {
  try {
    const body = await readAll(inspect, 4 * 1024 * 1024);
    const id = (JSON.parse(body.toString("utf8")) as { Id?: unknown }).Id;
    return typeof id === "string" && /^sha256:[0-9a-f]{64}$/.test(id) ? id : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Write an image into the local Docker daemon: blobs are spooled (verified, layers uncompressed),
 * and `commit` streams a docker-archive tagged `ref` to `POST /images/load`, surfacing the daemon's
 * `error`/`errorDetail`. The daemon is reached at open, so a missing daemon fails before any
 * download. Cannot hold an index (`acceptsIndex = false`). Before `commit` the daemon is untouched.
 */
export async function openDaemonSink(ref: ImageReference, options: TransportOptions): Promise<ImageSink> {
  if (!ref.tag) {
    throw new SutureError(
      "INVALID_REFERENCE",
      `${daemonTransportName(ref, options)}: the daemon names loaded images by tag: give a tag, e.g. ${daemonTransportName({ ...ref, tag: "patched", digest: undefined }, options)}`,
    );
  }
  const client = await EngineClient.connect(options);
  const name = daemonTransportName(ref, options);
  return new DaemonSink(client, ref, name, new ArchiveSpool(name, options.tmpDir), options);
}

class DaemonSink implements ImageSink {
  readonly name: string;
  readonly acceptsIndex = false;
  readonly #client: EngineClient;
  readonly #ref: ImageReference;
  readonly #spool: ArchiveSpool;
  readonly #options: TransportOptions;

  constructor(
    client: EngineClient,
    ref: ImageReference,
    name: string,
    spool: ArchiveSpool,
    options: TransportOptions,
  ) {
    this.#client = client;
    this.#ref = ref;
    this.name = name;
    this.#spool = spool;
    this.#options = options;
  }

  async hasBlob(descriptor: Descriptor): Promise<boolean> {
    return this.#spool.has(descriptor.digest);
  }

  async writeBlob(descriptor: Descriptor, open: () => Promise<Readable>, options?: WriteBlobOptions) {
    await this.#spool.write(descriptor, open, options?.progress ?? this.#options.progress);
  }

  async writeManifest(_manifest: RawManifest): Promise<void> {
    // docker load takes a docker-archive; manifests of an index are not needed.
  }

  async commit(root: RawManifest): Promise<void> {
    const plan = await this.#spool.plan(root, this.#ref);
    const body = archiveStream(plan);
    let bodyError: unknown;
    body.on("error", (e) => {
      bodyError = e;
    });
    const image = daemonImageName(this.#ref);
    this.#options.progress?.({
      type: "info",
      message: `loading ${image} into ${describeEngine(this.#client.endpoint)}`,
    });
    try {
      const res = await this.#client.request({
        method: "POST",
        path: "/images/load",
        query: { quiet: "1" },
        headers: { "Content-Type": "application/x-tar" },
        body,
        signal: this.#options.signal,
      });
      if (res.status !== 200) throw await this.#client.failure(res, `loading ${image}`);
      await readLoadMessages(res.body, image, this.#client.endpoint, this.#options.progress);
      if (bodyError) throw bodyError;
    } catch (e) {
      if (bodyError instanceof SutureError) throw bodyError;
      // The signal also ends the response body: that is the user's interrupt, not the daemon's fault.
      if (this.#options.signal?.aborted) {
        throw new SutureError("CANCELLED", "the load was cancelled", { cause: e });
      }
      throw e;
    }
    await this.#spool.cleanup();
  }

  async abort(): Promise<void> {
    await this.#spool.cleanup();
  }
}

interface JsonMessage {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
}

/**
 * Parse the JSON-lines answer of `/images/load`: progress lines become info events; an
 * `error`/`errorDetail` line fails the load (Docker answers 200 and reports errors in the body).
 */
async function readLoadMessages(
  res: Readable,
  image: string,
  endpoint: EngineEndpoint,
  progress: ProgressSink | undefined,
): Promise<void> {
  let buffered = "";
  let failure: string | undefined;
  const handle = (line: string) => {
    const text = line.trim();
    if (!text) return;
    let msg: JsonMessage;
    try {
      msg = JSON.parse(text) as JsonMessage;
    } catch {
      progress?.({ type: "info", message: text });
      return;
    }
    const error = msg.errorDetail?.message || msg.error;
    if (error) failure ??= error;
    const info = (msg.stream ?? msg.status)?.trim();
    if (info) progress?.({ type: "info", message: info });
  };
  try {
    for await (const chunk of res) {
      buffered += (chunk as Buffer).toString("utf8");
      let nl = buffered.indexOf("\n");
      while (nl >= 0) {
        handle(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf("\n");
      }
      if (buffered.length > 1024 * 1024) buffered = buffered.slice(-1024 * 1024);
    }
  } catch (e) {
    throw asSutureError(e, "DAEMON", `${describeEngine(endpoint)} broke off loading ${image}`);
  }
  handle(buffered);
  if (failure) {
    throw new SutureError("DAEMON", `${describeEngine(endpoint)} could not load ${image}: ${failure}`);
  }
}
