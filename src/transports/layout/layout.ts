import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, readdir, rm, rmdir, stat, unlink } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { PassThrough, pipeline, type Readable } from "node:stream";
import { asSutureError, SutureError } from "../../errors/errors.ts";
import { placeFile, streamToFile, writeFileAtomic } from "../../fs/atomic.ts";
import { readFileCapped } from "../../fs/read-capped.ts";
import {
  DescriptorVerifyingStream,
  digestHex,
  sha256Digest,
  sinkVerifiers,
  verifyBytes,
} from "../../image/digest.ts";
import { checkBlobSize, DEFAULT_MAX_BLOB_SIZE } from "../../image/limits.ts";
import type { ImageSink, ImageSource, WriteBlobOptions } from "../../image/source.ts";
import { WriteTracker } from "../../image/write-tracker.ts";
import { selectFromLayoutIndex } from "../../oci/layout-index.ts";
import {
  type Descriptor,
  type Index,
  IndexSchema,
  parseJson,
  type RawManifest,
  sniffManifestMediaType,
} from "../../oci/manifest.ts";
import { Annotation, isIndexMediaType, MediaType } from "../../oci/media-types.ts";
import type { TransportOptions } from "../index.ts";
import { ociFormOf } from "./oci-convert.ts";

/** Manifests and indexes are small; anything bigger than this is not one. */
const MAX_MANIFEST_BYTES = 8 * 1024 * 1024;
const LAYOUT_FILE = "oci-layout";
const INDEX_FILE = "index.json";
const LAYOUT_CONTENT = `{"imageLayoutVersion":"1.0.0"}`;

function layoutName(dir: string, tag: string | undefined): string {
  return `oci:${dir}${tag ? `:${tag}` : ""}`;
}

/** Path of a blob in a layout; the digest is validated first, so it cannot name anything else. */
export function layoutBlobPath(dir: string, digest: string): string {
  return join(dir, "blobs", "sha256", digestHex(digest));
}

/**
 * Open an image in an OCI image layout directory (image-spec image-layout) for reading.
 * `tag` selects the index.json entry annotated `org.opencontainers.image.ref.name`; without a tag
 * the layout must hold one image. Every manifest and blob read is verified against its digest; the
 * directory is only ever read.
 */
export async function openLayoutSource(
  dir: string,
  tag: string | undefined,
  options: TransportOptions,
): Promise<ImageSource> {
  const name = layoutName(dir, tag);
  const index = await readLayoutIndex(dir, name);
  if (!index) {
    throw new SutureError(
      "NOT_FOUND",
      `${dir} is not an OCI image layout (no oci-layout or index.json): check the path`,
    );
  }
  const source = new LayoutSource(dir, name, options.maxBlobSize ?? DEFAULT_MAX_BLOB_SIZE);
  const selection = await selectFromLayoutIndex(
    index.parsed,
    tag,
    async (d) => {
      try {
        return parseJson(IndexSchema, (await source.manifest(d)).bytes, `${name} nested index ${d.digest}`);
      } catch (e) {
        if (e instanceof SutureError && e.code === "NOT_FOUND") return undefined;
        throw e;
      }
    },
    name,
  );
  source.root =
    selection.kind === "index"
      ? { bytes: index.bytes, mediaType: MediaType.ociIndex, digest: sha256Digest(index.bytes) }
      : await source.manifest(selection.descriptor);
  return source;
}

interface LayoutIndexFile {
  bytes: Buffer;
  parsed: Index;
}

/** Read and check a layout's oci-layout and index.json; undefined when `dir` holds no layout. */
async function readLayoutIndex(dir: string, name: string): Promise<LayoutIndexFile | undefined> {
  let layoutBytes: Buffer;
  try {
    layoutBytes = await readLayoutFile(join(dir, LAYOUT_FILE), 64 * 1024, `${name} oci-layout`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw asSutureError(e, "IO", `cannot read ${join(dir, LAYOUT_FILE)}`);
  }
  let version: unknown;
  try {
    version = (JSON.parse(layoutBytes.toString("utf8")) as { imageLayoutVersion?: unknown })
      .imageLayoutVersion;
  } catch {
    version = undefined;
  }
  if (typeof version !== "string" || !version.startsWith("1.")) {
    throw new SutureError(
      "INVALID_MANIFEST",
      `${name}: oci-layout declares image layout version ${JSON.stringify(version)}, suture reads 1.x`,
    );
  }
  let bytes: Buffer;
  try {
    bytes = await readLayoutFile(join(dir, INDEX_FILE), MAX_MANIFEST_BYTES, `${name} index.json`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      // A layout whose first write never committed: it holds no image yet.
      return {
        bytes: Buffer.from(`{"schemaVersion":2,"manifests":[]}`),
        parsed: { schemaVersion: 2, manifests: [] },
      };
    }
    throw asSutureError(e, "IO", `cannot read ${join(dir, INDEX_FILE)}`);
  }
  return { bytes, parsed: parseJson(IndexSchema, bytes, `${name} index.json`) };
}

class LayoutSource implements ImageSource {
  readonly name: string;
  readonly #dir: string;
  readonly #maxBlobSize: number;
  root?: RawManifest;

  constructor(dir: string, name: string, maxBlobSize: number) {
    this.#dir = dir;
    this.name = name;
    this.#maxBlobSize = maxBlobSize;
  }

  async rootManifest(): Promise<RawManifest> {
    if (!this.root) throw new SutureError("INTERNAL", `${this.name} was not opened`);
    return this.root;
  }

  async manifest(descriptor: Descriptor): Promise<RawManifest> {
    if (descriptor.size > MAX_MANIFEST_BYTES) {
      throw new SutureError(
        "INVALID_MANIFEST",
        `${this.name}: manifest ${descriptor.digest} is ${descriptor.size} bytes, too large for a manifest`,
      );
    }
    const path = layoutBlobPath(this.#dir, descriptor.digest);
    let bytes: Buffer;
    try {
      // Never more than the descriptor names: a larger file fails verification anyway.
      bytes = await readLayoutFile(path, descriptor.size, `${this.name} manifest ${descriptor.digest}`, true);
    } catch (e) {
      throw missingOrIo(e, this.name, descriptor.digest, path);
    }
    verifyBytes(bytes, descriptor, `${this.name} manifest ${descriptor.digest}`);
    return {
      bytes,
      mediaType: descriptor.mediaType || sniffManifestMediaType(bytes),
      digest: descriptor.digest,
    };
  }

  async blob(descriptor: Descriptor): Promise<Readable> {
    checkBlobSize(descriptor, this.#maxBlobSize, this.name);
    const path = layoutBlobPath(this.#dir, descriptor.digest);
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      handle = await open(path, "r");
    } catch (e) {
      throw missingOrIo(e, this.name, descriptor.digest, path);
    }
    const verifier = new DescriptorVerifyingStream(descriptor, `${this.name} blob ${descriptor.digest}`);
    pipeline(handle.createReadStream(), verifier, () => {});
    return verifier;
  }

  async close(): Promise<void> {}
}

/**
 * Read a whole file that must not exceed `cap` bytes, checking its size before reading: a layout
 * is untrusted input, and a "manifest" of gigabytes must not be pulled into memory. A larger file
 * is a DIGEST_MISMATCH when `cap` is the size a descriptor names, else INVALID_MANIFEST.
 */
function readLayoutFile(path: string, cap: number, what: string, named = false): Promise<Buffer> {
  return readFileCapped(path, {
    limit: cap,
    what,
    tooLarge: (size) => {
      const actual = size === undefined ? `more than ${cap}` : `${size}`;
      return named
        ? new SutureError(
            "DIGEST_MISMATCH",
            `${what} is ${actual} bytes, expected ${cap}: the layout holds different content than its index names`,
          )
        : new SutureError("INVALID_MANIFEST", `${what} is ${actual} bytes, more than the ${cap} it may have`);
    },
  });
}

function missingOrIo(e: unknown, name: string, digest: string, path: string): SutureError {
  if (e instanceof SutureError) return e;
  if ((e as NodeJS.ErrnoException).code === "ENOENT") {
    return new SutureError(
      "NOT_FOUND",
      `${name} is missing blob ${digest} (${path}): the layout is incomplete; copy the image into it again`,
      { cause: e },
    );
  }
  return asSutureError(e, "IO", `cannot read ${path}`);
}

/**
 * Open an OCI image layout directory for writing the image tagged `tag` (created if missing).
 * Contract: blobs are verified while streamed into a temporary file and renamed into place only
 * when their digest matched; `commit` writes oci-layout if missing and adds (or replaces) the
 * index.json entry for `tag` atomically, under a lock file, keeping every other entry. Before
 * `commit`, the layout's index.json is untouched; `abort` removes the blobs this sink added that
 * nothing references (and the whole directory if this sink created it).
 */
export async function openLayoutSink(
  dir: string,
  tag: string | undefined,
  options: TransportOptions,
): Promise<ImageSink> {
  const name = layoutName(dir, tag);
  let entries: string[] | undefined;
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) {
      throw new SutureError("IO", `${dir} exists and is not a directory: choose a directory for ${name}`);
    }
    entries = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw asSutureError(e, "IO", `cannot open ${dir}`);
  }
  if (entries && entries.length > 0 && !entries.includes(LAYOUT_FILE)) {
    throw new SutureError(
      "IO",
      `${dir} is not empty and is not an OCI image layout: write ${name} into a new or empty directory`,
    );
  }
  if (entries?.includes(LAYOUT_FILE)) await readLayoutIndex(dir, name);
  return new LayoutSink(dir, tag, name, options);
}

/**
 * The root manifest a layout sink stored at commit: its OCI form when the image had Docker schema 2
 * media types (OCI layout readers such as skopeo and umoci only read OCI manifests), so callers can
 * report the digest really written. Undefined for other sinks or before commit.
 */
export function committedLayoutManifest(sink: ImageSink): RawManifest | undefined {
  return sink instanceof LayoutSink ? sink.stored : undefined;
}

class LayoutSink implements ImageSink {
  readonly name: string;
  readonly acceptsIndex = true;
  readonly #dir: string;
  readonly #tag: string | undefined;
  readonly #options: TransportOptions;
  /** Blobs this sink put into the layout (they did not exist before). */
  readonly #added = new Set<string>();
  /** Docker schema 2 manifests stored in OCI form: original digest → stored manifest. */
  readonly #converted = new Map<string, RawManifest>();
  #prepared?: Promise<void>;
  #tmpDir?: string;
  /** The first directory this sink created (the layout itself, or a parent), if any. */
  #created?: string;
  #committed = false;
  #wroteLayoutFile = false;
  readonly #writes = new WriteTracker();
  /** After commit: the root manifest as stored (its OCI form when a Docker manifest was given). */
  stored?: RawManifest;

  constructor(dir: string, tag: string | undefined, name: string, options: TransportOptions) {
    this.#dir = dir;
    this.#tag = tag;
    this.name = name;
    this.#options = options;
  }

  #prepare(): Promise<void> {
    this.#prepared ??= (async () => {
      try {
        const created = await mkdir(join(this.#dir, "blobs", "sha256"), { recursive: true });
        // Only the first sink to create it records it: removing is theirs to do.
        if (created) this.#created ??= resolve(created);
        this.#tmpDir = await mkdtemp(join(this.#dir, ".suture-tmp-"));
      } catch (e) {
        throw asSutureError(e, "IO", `cannot create ${this.#dir}`);
      }
    })();
    return this.#prepared;
  }

  async hasBlob(descriptor: Descriptor): Promise<boolean> {
    try {
      const s = await stat(layoutBlobPath(this.#dir, descriptor.digest));
      return s.isFile() && s.size === descriptor.size;
    } catch {
      return false;
    }
  }

  async writeBlob(
    descriptor: Descriptor,
    openBlob: () => Promise<Readable>,
    options?: WriteBlobOptions,
  ): Promise<void> {
    if (await this.hasBlob(descriptor)) return;
    await this.#writes.run(`${this.name} blob ${descriptor.digest}`, async (track) => {
      await this.#prepare();
      const tmp = join(this.#tmpDir!, randomBytes(8).toString("hex"));
      const input = track(await openBlob());
      await streamToFile(
        input,
        sinkVerifiers(input, descriptor, `${this.name} blob ${descriptor.digest}`),
        tmp,
      );
      await this.#place(tmp, descriptor.digest);
    });
    (options?.progress ?? this.#options.progress)?.({
      type: "blob",
      action: "upload",
      digest: descriptor.digest,
      bytes: descriptor.size,
      total: descriptor.size,
    });
  }

  async writeManifest(manifest: RawManifest): Promise<void> {
    await this.#storeManifest(manifest);
  }

  /** Store a manifest in its OCI form (see ociFormOf) and return what was stored. */
  async #storeManifest(manifest: RawManifest): Promise<RawManifest> {
    verifyBytes(
      manifest.bytes,
      { digest: manifest.digest, size: manifest.bytes.length },
      `${this.name} manifest ${manifest.digest}`,
    );
    const stored = ociFormOf(manifest, this.#converted);
    if (stored !== manifest) {
      this.#converted.set(manifest.digest, stored);
      this.#options.progress?.({
        type: "info",
        message: `${this.name}: storing ${manifest.mediaType} ${manifest.digest} as ${stored.mediaType} ${stored.digest} (OCI layouts hold OCI manifests; the blobs are unchanged)`,
      });
    }
    const descriptor = { mediaType: stored.mediaType, digest: stored.digest, size: stored.bytes.length };
    if (await this.hasBlob(descriptor)) return stored;
    await this.#writes.run(`${this.name} manifest ${stored.digest}`, async () => {
      await this.#prepare();
      const tmp = join(this.#tmpDir!, randomBytes(8).toString("hex"));
      await streamToFile(bufferStream(stored.bytes), [], tmp);
      await this.#place(tmp, stored.digest);
    });
    return stored;
  }

  async #place(tmp: string, digest: string): Promise<void> {
    await placeFile(tmp, layoutBlobPath(this.#dir, digest));
    this.#added.add(digest);
  }

  /** Store `root` and tag it; `stored` then holds the manifest as written (see ociFormOf). */
  async commit(root: RawManifest): Promise<void> {
    if (this.#committed) throw new SutureError("INTERNAL", `${this.name} was already committed`);
    const stored = await this.#storeManifest(root);
    await this.#prepare();
    const layoutPath = join(this.#dir, LAYOUT_FILE);
    if (!(await exists(layoutPath))) {
      await writeFileAtomic(layoutPath, LAYOUT_CONTENT);
      this.#wroteLayoutFile = true;
    }
    await withIndexLock(this.#dir, async () => {
      const current = await readIndexDocument(this.#dir, this.name);
      const entry: Descriptor = {
        mediaType: stored.mediaType,
        digest: stored.digest,
        size: stored.bytes.length,
        ...(this.#tag ? { annotations: { [Annotation.refName]: this.#tag } } : {}),
      };
      const kept = current.manifests.filter((d) =>
        this.#tag
          ? d.annotations?.[Annotation.refName] !== this.#tag
          : d.annotations?.[Annotation.refName] !== undefined || d.digest !== stored.digest,
      );
      const next = {
        ...current,
        mediaType: current.mediaType ?? MediaType.ociIndex,
        manifests: [...kept, entry],
      };
      await writeFileAtomic(join(this.#dir, INDEX_FILE), JSON.stringify(next));
    });
    this.#committed = true;
    this.stored = stored;
    await this.#cleanTmp();
  }

  async abort(): Promise<void> {
    if (this.#committed) return;
    await this.#writes.close();
    await this.#cleanTmp();
    if (this.#added.size > 0 || this.#wroteLayoutFile) {
      // Under the lock, so a writer committing meanwhile either sees its blobs referenced or not yet added.
      await withIndexLock(this.#dir, async () => {
        const referenced = await referencedBlobs(this.#dir, this.name);
        for (const digest of this.#added) {
          if (!referenced.has(digest)) await unlink(layoutBlobPath(this.#dir, digest)).catch(() => {});
        }
        if (this.#wroteLayoutFile && !(await exists(join(this.#dir, INDEX_FILE)))) {
          await unlink(join(this.#dir, LAYOUT_FILE)).catch(() => {});
        }
      }).catch(() => {});
      this.#added.clear();
    }
    if (this.#created) {
      // Remove the directories this sink created if they are empty now; another writer's files keep them.
      const top = resolve(this.#dir);
      const dirs = [join(top, "blobs", "sha256"), join(top, "blobs")];
      for (let d = top; d.length >= this.#created.length && d !== dirname(d); d = dirname(d)) dirs.push(d);
      for (const d of dirs) {
        if (!d.startsWith(this.#created)) break;
        await rmdir(d).catch(() => {});
      }
    }
  }

  async #cleanTmp(): Promise<void> {
    if (this.#tmpDir) await rm(this.#tmpDir, { recursive: true, force: true }).catch(() => {});
    this.#tmpDir = undefined;
    this.#prepared = undefined;
  }
}

type IndexDocument = Record<string, unknown> & { mediaType?: string; manifests: Descriptor[] };

/** index.json as a loose document, so fields we do not know survive a rewrite. */
async function readIndexDocument(dir: string, name: string): Promise<IndexDocument> {
  let bytes: Buffer;
  try {
    bytes = await readLayoutFile(join(dir, INDEX_FILE), MAX_MANIFEST_BYTES, `${name} index.json`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { schemaVersion: 2, manifests: [] };
    throw asSutureError(e, "IO", `cannot read ${join(dir, INDEX_FILE)}`);
  }
  parseJson(IndexSchema, bytes, `${name} index.json`);
  return JSON.parse(bytes.toString("utf8")) as IndexDocument;
}

/** Every blob reachable from index.json (manifests, nested indexes, configs, layers). */
async function referencedBlobs(dir: string, name: string): Promise<Set<string>> {
  const index = await readIndexDocument(dir, name);
  const seen = new Set<string>();
  const queue: Descriptor[] = [...index.manifests];
  while (queue.length) {
    const d = queue.shift()!;
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    let bytes: Buffer;
    try {
      if (d.size > MAX_MANIFEST_BYTES) continue;
      bytes = await readLayoutFile(layoutBlobPath(dir, d.digest), d.size, d.digest, true);
    } catch {
      continue;
    }
    let doc: { config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[]; subject?: Descriptor };
    try {
      doc = JSON.parse(bytes.toString("utf8"));
    } catch {
      continue;
    }
    if (isIndexMediaType(d.mediaType) || Array.isArray(doc.manifests)) queue.push(...(doc.manifests ?? []));
    if (doc.config?.digest) seen.add(doc.config.digest);
    for (const l of doc.layers ?? []) if (l?.digest) seen.add(l.digest);
  }
  return seen;
}

const LOCK_FILE = "index.json.lock";
/** A lock left behind by a crashed writer is ignored after this long. */
const STALE_LOCK_MS = 5 * 60 * 1000;
const LOCK_WAIT_MS = 60 * 1000;

/** Serialise index.json rewrites between writers of the same layout (several tags at once). */
async function withIndexLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dir, LOCK_FILE);
  const started = Date.now();
  for (;;) {
    try {
      const handle = await open(lock, "wx");
      await handle.writeFile(String(process.pid));
      await handle.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw asSutureError(e, "IO", `cannot lock ${lock}`);
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > STALE_LOCK_MS) {
        await unlink(lock).catch(() => {});
        continue;
      }
      if (Date.now() - started > LOCK_WAIT_MS) {
        throw new SutureError(
          "IO",
          `${lock} has been held for over ${LOCK_WAIT_MS / 1000}s: another writer is busy, or it crashed (remove the lock file)`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    await unlink(lock).catch(() => {});
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

function bufferStream(bytes: Uint8Array): Readable {
  const s = new PassThrough();
  s.end(Buffer.from(bytes));
  return s;
}
