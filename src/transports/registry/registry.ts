import type { Readable } from "node:stream";
import { SutureError } from "../../errors/errors.ts";
import type { RetryPolicy } from "../../http/retry.ts";
import type { ImageSink, ImageSource, WriteBlobOptions } from "../../image/source.ts";
import type { Descriptor, ImageManifest, RawManifest } from "../../oci/manifest.ts";
import { formatReference, type ImageReference, manifestIdentifier } from "../../ref/reference.ts";
import type { TransportOptions } from "../index.ts";
import {
  blobExists,
  getBlob,
  getManifest,
  headManifest,
  listTags as listRepositoryTags,
  mountBlob,
  putManifest,
  uploadBlob,
} from "./api.ts";
import { pullScope, pushScope } from "./auth.ts";
import { RegistryClient } from "./client.ts";
import { type Credentials, normalizeRegistryHost } from "./credentials.ts";
import {
  addToReferrersTag,
  getTaggedManifest,
  listReferrers,
  type PushableArtifact,
  pushArtifact,
} from "./referrers.ts";
import { beginStreamedUpload } from "./streamed-upload.ts";

/** Transport options plus knobs of the registry transport that only tests and tuning need. */
export interface RegistryOptions extends TransportOptions {
  retry?: Partial<RetryPolicy>;
  /** Blobs larger than this are uploaded in chunks (default 64 MiB). */
  chunkThreshold?: number;
  /** Chunk size for chunked uploads (default 16 MiB). */
  chunkSize?: number;
  /** Chunk size of a blob uploaded as it is written (default DEFAULT_STREAM_CHUNK_SIZE, 4 MiB). */
  streamChunkSize?: number;
  /** Use these credentials instead of the Docker/Podman config; `null` forces anonymous access. */
  credentials?: Credentials | null;
}

function clientFor(ref: ImageReference, options: RegistryOptions): RegistryClient {
  return new RegistryClient(ref.registry, {
    insecure: options.insecure,
    dockerConfig: options.dockerConfig,
    repository: ref.repository,
    signal: options.signal,
    retry: options.retry,
    credentials: options.credentials,
    dispatcher: options.dispatcher,
  });
}

/**
 * Read an image or index from a registry (`docker://…`). `rootManifest()` fetches by digest when
 * the reference pins one (verified against it), else by tag (verified against the registry's
 * Docker-Content-Digest). Blobs stream and are verified as they flow; redirects to storage hosts
 * are followed without our credentials. Nothing is contacted until the first call.
 */
export async function openRegistrySource(
  ref: ImageReference,
  options: RegistryOptions = {},
): Promise<ImageSource> {
  const client = clientFor(ref, options);
  const repo = ref.repository;
  const call = { scopes: [pullScope(repo)], operation: `pull ${repo}` };
  return {
    name: `docker://${formatReference(ref)}`,
    rootManifest: () => getManifest(client, repo, manifestIdentifier(ref), call),
    manifest: (d: Descriptor) => getManifest(client, repo, d.digest, { ...call, descriptor: d }),
    blob: (d: Descriptor) =>
      getBlob(client, repo, d, { ...call, progress: options.progress, maxBlobSize: options.maxBlobSize }),
    close: async () => {},
  };
}

/**
 * Write an image or index to a registry. Blobs and child manifests go up as they are written;
 * `commit(root)` PUTs the root manifest under the reference's tag (or by digest when the
 * reference has only a digest), which is the moment the image becomes visible. An upload that
 * fails or is interrupted (TransportOptions.signal) deletes its upload session, so its partial
 * data does not linger; `abort()` has nothing left to do: blobs already uploaded whole stay,
 * unreferenced, until the registry's garbage collection.
 */
export async function openRegistrySink(
  ref: ImageReference,
  options: RegistryOptions = {},
): Promise<ImageSink> {
  const client = clientFor(ref, options);
  const repo = ref.repository;
  const call = { scopes: [pushScope(repo)], operation: `push ${repo}` };
  // Digests hasBlob found missing: writeBlob need not ask again before uploading.
  const absent = new Set<string>();
  return {
    name: `docker://${formatReference(ref)}`,
    acceptsIndex: true,

    async hasBlob(d: Descriptor): Promise<boolean> {
      const exists = await blobExists(client, repo, d.digest, call);
      if (exists) absent.delete(d.digest);
      else absent.add(d.digest);
      return exists;
    },

    async writeBlob(d: Descriptor, open: () => Promise<Readable>, blobOptions: WriteBlobOptions = {}) {
      const progress = blobOptions.progress ?? options.progress;
      if (!absent.has(d.digest) && (await blobExists(client, repo, d.digest, call))) {
        progress?.({ type: "blob", action: "exists", digest: d.digest, bytes: 0, total: d.size });
        return;
      }
      let location: string | undefined;
      const from = blobOptions.mountFrom;
      if (
        from &&
        from.repository !== repo &&
        normalizeRegistryHost(from.registry) === normalizeRegistryHost(ref.registry)
      ) {
        const mounted = await mountBlob(client, repo, d.digest, from.repository, {
          operation: `push ${repo} (mount from ${from.repository})`,
        });
        if (mounted.mounted) {
          progress?.({ type: "blob", action: "mount", digest: d.digest, bytes: d.size, total: d.size });
          absent.delete(d.digest);
          return;
        }
        location = mounted.location;
      }
      await uploadBlob(client, repo, d, open, {
        operation: call.operation,
        location,
        chunkThreshold: options.chunkThreshold,
        chunkSize: options.chunkSize,
        progress,
      });
      absent.delete(d.digest);
    },

    async writeManifest(manifest: RawManifest): Promise<void> {
      await putManifest(client, repo, manifest.digest, manifest, call);
    },

    async commit(root: RawManifest): Promise<void> {
      if (ref.digest && ref.digest !== root.digest) {
        throw new SutureError(
          "INVALID_REFERENCE",
          `cannot push manifest ${root.digest} to ${formatReference(ref)}, which pins a different digest: drop the @digest or push a tag`,
        );
      }
      await putManifest(client, repo, ref.tag ?? root.digest, root, call);
    },

    async abort(): Promise<void> {},

    // The patch layer goes up while it is compressed; writeBlob then finds it present (HEAD).
    beginBlobUpload: (uploadOptions = {}) =>
      beginStreamedUpload(client, repo, {
        call,
        chunkSize: options.streamChunkSize,
        progress: uploadOptions.progress ?? options.progress,
      }),
  };
}

/**
 * Every tag of the reference's repository (its tag and digest are ignored), following the
 * registry's `Link` pagination; `pageSize` is the `n` asked per page (default 1000).
 */
export async function listTags(
  ref: ImageReference,
  options: RegistryOptions & { pageSize?: number } = {},
): Promise<string[]> {
  return listRepositoryTags(
    clientFor(ref, options),
    ref.repository,
    `list tags of ${ref.repository}`,
    options.pageSize,
  );
}

/**
 * What the reference names right now, without downloading it: digest, media type and size from a
 * HEAD request; undefined when the tag or digest does not exist.
 */
export async function resolveManifest(
  ref: ImageReference,
  options: RegistryOptions = {},
): Promise<{ digest?: string; mediaType?: string; size?: number } | undefined> {
  const repo = ref.repository;
  return headManifest(clientFor(ref, options), repo, manifestIdentifier(ref), {
    scopes: [pullScope(repo)],
    operation: `pull ${repo}`,
  });
}

/**
 * OCI 1.1 referrers of one repository: push artifacts (by digest or under a tag), keep the
 * referrers tag of registries without the referrers API, and list a digest's referrers (API first,
 * the `sha256-<hex>` tag second). Used by `patch --attach` (src/attest/).
 */
export interface RegistryReferrers {
  readonly name: string;
  push(artifact: PushableArtifact, tag?: string): Promise<{ subjectAccepted: boolean }>;
  addToReferrersTag(subject: string, added: readonly Descriptor[]): Promise<RawManifest>;
  list(subject: string, artifactType?: string): Promise<{ manifests: Descriptor[]; via: "api" | "tag" }>;
  /** The image manifest under a tag (cosign's `.att`), undefined when there is none. */
  manifestByTag(tag: string): Promise<ImageManifest | undefined>;
}

export function openRegistryReferrers(ref: ImageReference, options: RegistryOptions = {}): RegistryReferrers {
  const client = clientFor(ref, options);
  const repo = ref.repository;
  const push = { scopes: [pushScope(repo)], operation: `attach to ${repo}` };
  const pull = { scopes: [pullScope(repo)], operation: `list referrers in ${repo}` };
  return {
    name: `docker://${ref.registry}/${repo}`,
    push: (artifact, tag) => pushArtifact(client, repo, artifact, push, tag),
    addToReferrersTag: (subject, added) => addToReferrersTag(client, repo, subject, added, push),
    list: (subject, artifactType) => listReferrers(client, repo, subject, pull, artifactType),
    manifestByTag: (tag) => getTaggedManifest(client, repo, tag, pull),
  };
}
