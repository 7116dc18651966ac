import { Readable } from "node:stream";
import { SutureError } from "../../errors/errors.ts";
import { discard, type HttpResponse, header, readCapped } from "../../http/request.ts";
import { digestHex, sha256Digest } from "../../image/digest.ts";
import {
  type Descriptor,
  type ImageManifest,
  ImageManifestSchema,
  IndexSchema,
  parseJson,
  type RawManifest,
} from "../../oci/manifest.ts";
import { MediaType } from "../../oci/media-types.ts";
import { blobExists, type CallOptions, MANIFEST_ACCEPT, MANIFEST_CAP, uploadBlob } from "./api.ts";
import type { RegistryClient } from "./client.ts";
import { answerTooLarge } from "./registry-errors.ts";

/** A manifest and the blobs it names, all small enough to hold in memory (attached documents). */
export interface PushableArtifact {
  manifest: RawManifest;
  blobs: readonly { descriptor: Descriptor; bytes: Uint8Array }[];
}

/** How many times a fallback-tag update is redone after another writer changed the tag under us. */
const FALLBACK_ATTEMPTS = 5;

/**
 * Upload an artifact's blobs (those missing) and PUT its manifest, by digest or under `tag`.
 * Returns whether the registry acknowledged the manifest's `subject` (the `OCI-Subject` header of
 * distribution-spec 1.1): when it did not, it has no referrers API and the pusher must maintain
 * the referrers tag itself.
 */
export async function pushArtifact(
  client: RegistryClient,
  repository: string,
  artifact: PushableArtifact,
  call: CallOptions,
  tag?: string,
): Promise<{ subjectAccepted: boolean }> {
  for (const b of artifact.blobs) {
    if (await blobExists(client, repository, b.descriptor.digest, call)) continue;
    await uploadBlob(client, repository, b.descriptor, async () => Readable.from([Buffer.from(b.bytes)]), {
      operation: call.operation,
    });
  }
  const reference = tag ?? artifact.manifest.digest;
  const res = await client.request({
    method: "PUT",
    path: `/v2/${repository}/manifests/${reference}`,
    headers: { "content-type": artifact.manifest.mediaType },
    body: () => Buffer.from(artifact.manifest.bytes),
    scopes: call.scopes,
    operation: call.operation,
    object: `manifest ${repository}@${artifact.manifest.digest}`,
    ok: [200, 201, 202, 204],
  });
  await discard(res);
  checkStored(res, artifact.manifest, client.registry, repository);
  return { subjectAccepted: header(res, "oci-subject") !== undefined };
}

function checkStored(
  res: Pick<HttpResponse, "headers">,
  manifest: RawManifest,
  registry: string,
  repository: string,
): void {
  const stored = header(res, "docker-content-digest")?.trim();
  if (stored?.startsWith("sha256:") && stored !== manifest.digest) {
    throw new SutureError(
      "DIGEST_MISMATCH",
      `${registry} stored manifest ${repository}@${manifest.digest} as ${stored}: the registry altered it`,
    );
  }
}

/** A tagged index as read, with the ETag to make the next write conditional on it. */
interface TaggedIndex {
  manifests: Descriptor[];
  etag?: string;
}

/** GET the index under `tag`; undefined when the tag does not exist. */
async function getTaggedIndex(
  client: RegistryClient,
  repository: string,
  tag: string,
  call: CallOptions,
): Promise<TaggedIndex | undefined> {
  const what = `referrers tag ${repository}:${tag} on ${client.registry}`;
  const found = await getTaggedDocument(client, repository, tag, call, what);
  if (!found) return undefined;
  const { bytes, res } = found;
  const index = parseJson(IndexSchema, bytes, what);
  return { manifests: index.manifests, etag: header(res, "etag") };
}

/**
 * The image manifest under `tag` (cosign's `.att` image, to append to it); undefined when the tag
 * does not exist.
 */
export async function getTaggedManifest(
  client: RegistryClient,
  repository: string,
  tag: string,
  call: CallOptions,
): Promise<ImageManifest | undefined> {
  const what = `manifest ${repository}:${tag} on ${client.registry}`;
  const found = await getTaggedDocument(client, repository, tag, call, what);
  if (!found) return undefined;
  const { bytes } = found;
  return parseJson(ImageManifestSchema, bytes, what);
}

/**
 * The referrers of `digest`: the referrers API (`GET /v2/<name>/referrers/<digest>`) first; a
 * registry without it (404, or an answer that is not an index) is read through the referrers tag
 * schema's `sha256-<hex>` tag. `artifactType` filters client-side (registries may ignore the filter).
 */
export async function listReferrers(
  client: RegistryClient,
  repository: string,
  digest: string,
  call: CallOptions,
  artifactType?: string,
): Promise<{ manifests: Descriptor[]; via: "api" | "tag" }> {
  const hex = digestHex(digest);
  const res = await client.request({
    method: "GET",
    path: `/v2/${repository}/referrers/${digest}${artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : ""}`,
    headers: { accept: MediaType.ociIndex },
    scopes: call.scopes,
    operation: call.operation,
    object: `referrers of ${repository}@${digest}`,
    ok: [200, 400, 404, 405],
  });
  const type = header(res, "content-type")?.split(";")[0]?.trim();
  let manifests: Descriptor[] | undefined;
  if (res.status === 200 && type === MediaType.ociIndex) {
    const bytes = await readCapped(
      res,
      MANIFEST_CAP,
      answerTooLarge(`referrers of ${repository}@${digest}`, MANIFEST_CAP),
    );
    manifests = parseJson(IndexSchema, bytes, `referrers of ${repository}@${digest}`).manifests;
  } else {
    await discard(res);
  }
  const filter = (ds: Descriptor[]) =>
    artifactType ? ds.filter((d) => d.artifactType === artifactType) : ds;
  if (manifests) return { manifests: filter(manifests), via: "api" };
  const tagged = await getTaggedIndex(client, repository, `sha256-${hex}`, call);
  return { manifests: filter(tagged?.manifests ?? []), via: "tag" };
}

/**
 * Add descriptors to the referrers tag of `digest` (the referrers tag schema, for registries
 * without the referrers API): read the tag's index, add what is new, write it back conditionally
 * on the ETag read (`If-Match`), and start over when another writer changed it meanwhile (412).
 * Registries that ignore If-Match (distribution 2.8) leave a window a concurrent writer can lose
 * an entry in; re-reading just before writing keeps it short.
 */
export async function addToReferrersTag(
  client: RegistryClient,
  repository: string,
  digest: string,
  added: readonly Descriptor[],
  call: CallOptions,
): Promise<RawManifest> {
  const tag = `sha256-${digestHex(digest)}`;
  for (let attempt = 1; ; attempt++) {
    const current = await getTaggedIndex(client, repository, tag, call);
    const existing = current?.manifests ?? [];
    const manifests = [...existing.filter((d) => !added.some((a) => a.digest === d.digest)), ...added];
    const bytes = new TextEncoder().encode(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }),
    );
    const raw: RawManifest = { bytes, mediaType: MediaType.ociIndex, digest: sha256Digest(bytes) };
    const headers: Record<string, string> = { "content-type": raw.mediaType };
    if (current?.etag) headers["if-match"] = current.etag;
    const res = await client.request({
      method: "PUT",
      path: `/v2/${repository}/manifests/${tag}`,
      headers,
      body: () => Buffer.from(raw.bytes),
      scopes: call.scopes,
      operation: call.operation,
      object: `manifest ${repository}:${tag}`,
      ok: [200, 201, 202, 204, 412],
    });
    await discard(res);
    if (res.status !== 412) {
      checkStored(res, raw, client.registry, repository);
      return raw;
    }
    if (attempt >= FALLBACK_ATTEMPTS) {
      throw new SutureError(
        "REGISTRY",
        `${client.registry} kept refusing the update of referrers tag ${repository}:${tag} (412: changed by another writer ${FALLBACK_ATTEMPTS} times): run the command again`,
        { retryable: true },
      );
    }
  }
}

/**
 * The bytes of the manifest or index under `tag`, checked against the digest the registry claims
 * for them; undefined when the tag does not exist.
 */
async function getTaggedDocument(
  client: RegistryClient,
  repository: string,
  tag: string,
  call: CallOptions,
  what: string,
): Promise<{ bytes: Buffer; res: HttpResponse } | undefined> {
  const res = await client.request({
    method: "GET",
    path: `/v2/${repository}/manifests/${tag}`,
    headers: { accept: MANIFEST_ACCEPT },
    scopes: call.scopes,
    operation: call.operation,
    object: `manifest ${repository}:${tag}`,
    ok: [200, 404],
  });
  if (res.status === 404) {
    await discard(res);
    return undefined;
  }
  const bytes = await readCapped(res, MANIFEST_CAP, answerTooLarge(what, MANIFEST_CAP));
  const claimed = header(res, "docker-content-digest")?.trim();
  if (claimed?.startsWith("sha256:") && claimed !== sha256Digest(bytes)) {
    throw new SutureError(
      "DIGEST_MISMATCH",
      `${what} has digest ${sha256Digest(bytes)} but the registry says ${claimed}: something altered it`,
    );
  }
  return { bytes, res };
}
