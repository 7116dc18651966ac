import { sha256Digest } from "../../image/digest.ts";
import type { RawManifest } from "../../oci/manifest.ts";
import { MediaType } from "../../oci/media-types.ts";

const layerTypes: Record<string, string> = {
  [MediaType.dockerLayerGzip]: MediaType.ociLayerGzip,
  "application/vnd.docker.image.rootfs.diff.tar": MediaType.ociLayer,
  [MediaType.dockerLayerForeignGzip]: MediaType.ociLayerNondistributableGzip,
};

type Doc = Record<string, unknown> & {
  mediaType?: string;
  config?: { mediaType?: string };
  layers?: { mediaType?: string }[];
  manifests?: { mediaType?: string; digest: string; size: number }[];
};

/**
 * The form of a manifest an OCI layout should hold. Docker schema 2 manifests and lists become
 * their OCI equivalents: the config and layer blobs keep their bytes (only the media types naming
 * them change), so only manifest digests change. An index whose children were converted is
 * rewritten to point at them; `converted` maps original child digests to what was stored. Other
 * fields (annotations, platforms) are kept. OCI manifests are returned unchanged.
 */
export function ociFormOf(m: RawManifest, converted: ReadonlyMap<string, RawManifest>): RawManifest {
  const isList = m.mediaType === MediaType.dockerManifestList || m.mediaType === MediaType.ociIndex;
  if (m.mediaType !== MediaType.dockerManifest && !isList) return m;
  const doc = JSON.parse(Buffer.from(m.bytes).toString("utf8")) as Doc;
  if (m.mediaType === MediaType.dockerManifest) {
    doc.mediaType = MediaType.ociManifest;
    if (doc.config?.mediaType === MediaType.dockerConfig) doc.config.mediaType = MediaType.ociConfig;
    for (const layer of doc.layers ?? []) {
      const oci = layer.mediaType ? layerTypes[layer.mediaType] : undefined;
      if (oci) layer.mediaType = oci;
    }
  } else {
    let changed = m.mediaType !== MediaType.ociIndex;
    doc.mediaType = MediaType.ociIndex;
    for (const child of doc.manifests ?? []) {
      const replacement = converted.get(child.digest);
      if (replacement) {
        child.digest = replacement.digest;
        child.size = replacement.bytes.length;
        child.mediaType = replacement.mediaType;
        changed = true;
      }
    }
    if (!changed) return m;
  }
  const bytes = Buffer.from(JSON.stringify(doc));
  return { bytes, mediaType: doc.mediaType, digest: sha256Digest(bytes) };
}
