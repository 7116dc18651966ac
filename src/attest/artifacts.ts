import { digestHex, sha256Digest } from "../image/digest.ts";
import type { Descriptor, RawManifest } from "../oci/manifest.ts";
import { Annotation, MediaType } from "../oci/media-types.ts";

/** artifactType of each attached document (OCI 1.1 referrers). */
export const ArtifactType = {
  openvex: "application/openvex+json",
  cyclonedx: "application/vnd.cyclonedx+json",
  spdx: "application/spdx+json",
  inToto: "application/vnd.in-toto+json",
} as const;

/** The media type of a DSSE envelope layer, as cosign stores attestations. */
export const DSSE_ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json";
/** The annotation cosign puts on an attestation layer naming the statement's predicate type. */
export const PREDICATE_TYPE_ANNOTATION = "predicateType";

/** A blob with its descriptor. */
export interface ArtifactBlob {
  descriptor: Descriptor;
  bytes: Uint8Array;
}

/** An OCI manifest and every blob it names: what a sink needs to hold it. */
export interface Artifact {
  manifest: RawManifest;
  blobs: ArtifactBlob[];
  /** The descriptor a referrers index lists it by (artifactType and annotations copied up, as the spec asks). */
  descriptor: Descriptor;
}

function blob(mediaType: string, bytes: Uint8Array, annotations?: Record<string, string>): ArtifactBlob {
  return {
    descriptor: {
      mediaType,
      digest: sha256Digest(bytes),
      size: bytes.length,
      ...(annotations ? { annotations } : {}),
    },
    bytes,
  };
}

function json(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}

/** OCI 1.1's empty descriptor `{}`: the config of an artifact that needs none. */
const EMPTY_CONFIG = blob(MediaType.ociEmpty, new TextEncoder().encode("{}"));

export interface ArtifactLayer {
  mediaType: string;
  bytes: Uint8Array;
  annotations?: Record<string, string>;
}

/**
 * An OCI 1.1 artifact manifest referring to `subject`: artifactType set, the empty config, the
 * document(s) as layers. Its bytes depend only on the inputs (created comes from the caller), so
 * the same patch attaches the same digests.
 */
export function referrerArtifact(
  subject: Descriptor,
  artifactType: string,
  layers: readonly ArtifactLayer[],
  created: Date,
): Artifact {
  const layerBlobs = layers.map((l) => blob(l.mediaType, l.bytes, l.annotations));
  const annotations = { [Annotation.created]: created.toISOString().replace(/\.\d+Z$/, "Z") };
  const manifestDoc = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    artifactType,
    config: EMPTY_CONFIG.descriptor,
    layers: layerBlobs.map((b) => b.descriptor),
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations,
  };
  const bytes = json(manifestDoc);
  const manifest: RawManifest = { bytes, mediaType: MediaType.ociManifest, digest: sha256Digest(bytes) };
  return {
    manifest,
    blobs: [EMPTY_CONFIG, ...layerBlobs],
    descriptor: {
      mediaType: MediaType.ociManifest,
      digest: manifest.digest,
      size: bytes.length,
      artifactType,
      annotations,
    },
  };
}

/**
 * cosign's attestation image (the `sha256-<hex>.att` tag): an OCI image manifest whose layers are
 * DSSE envelopes, each annotated with its statement's predicate type, over a config listing those
 * layers as its diff IDs (the envelopes are stored uncompressed).
 */
export function cosignAttestationImage(
  envelopes: readonly { bytes: Uint8Array; predicateType: string }[],
  /**
   * Layers of the `.att` image already at the tag (cosign appends; so do we): kept first, unless
   * one is byte-identical to a new envelope. Their blobs are already where the tag is.
   */
  existing: readonly Descriptor[] = [],
): Artifact {
  const ours = envelopes.map((e) =>
    blob(DSSE_ENVELOPE_MEDIA_TYPE, e.bytes, { [PREDICATE_TYPE_ANNOTATION]: e.predicateType }),
  );
  const kept = existing.filter((d) => !ours.some((o) => o.descriptor.digest === d.digest));
  const layers = [...kept.map((descriptor) => ({ descriptor })), ...ours];
  const config = blob(
    MediaType.ociConfig,
    json({
      architecture: "",
      os: "",
      config: {},
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.descriptor.digest) },
    }),
  );
  const bytes = json({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: config.descriptor,
    layers: layers.map((l) => l.descriptor),
  });
  const manifest: RawManifest = { bytes, mediaType: MediaType.ociManifest, digest: sha256Digest(bytes) };
  return {
    manifest,
    blobs: [config, ...ours],
    descriptor: { mediaType: MediaType.ociManifest, digest: manifest.digest, size: bytes.length },
  };
}

/** The referrers tag schema's tag for a subject digest: `sha256-<hex>`. */
export function referrersTag(digest: string): string {
  return `sha256-${digestHex(digest)}`;
}

/** The tag cosign reads attestations of a digest from: `sha256-<hex>.att`. */
export function cosignAttestationTag(digest: string): string {
  return `${referrersTag(digest)}.att`;
}

/**
 * The referrers index (what the referrers API answers, and what the fallback tag holds): the
 * existing descriptors kept, the new ones added, none twice.
 */
export function referrersIndex(existing: readonly Descriptor[], added: readonly Descriptor[]): RawManifest {
  const manifests = [...existing.filter((d) => !added.some((a) => a.digest === d.digest)), ...added];
  const bytes = json({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests });
  return { bytes, mediaType: MediaType.ociIndex, digest: sha256Digest(bytes) };
}
