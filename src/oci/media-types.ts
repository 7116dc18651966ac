/** Every media type suture reads or writes, in one place. */
export const MediaType = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  ociLayerNondistributableGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  ociEmpty: "application/vnd.oci.empty.v1+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerLayerForeignGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  dockerManifestV1Signed: "application/vnd.docker.distribution.manifest.v1+prettyjws",
  dockerManifestV1: "application/vnd.docker.distribution.manifest.v1+json",
} as const;

export type Compression = "gzip" | "zstd" | "none";

export function isIndexMediaType(mt: string | undefined): boolean {
  return mt === MediaType.ociIndex || mt === MediaType.dockerManifestList;
}

export function isImageManifestMediaType(mt: string | undefined): boolean {
  return mt === MediaType.ociManifest || mt === MediaType.dockerManifest;
}

/** Compression implied by a layer media type; undefined for types we do not recognise as layers. */
export function layerCompression(mediaType: string): Compression | undefined {
  if (mediaType.endsWith("+gzip") || mediaType.endsWith(".tar.gzip")) return "gzip";
  if (mediaType.endsWith("+zstd")) return "zstd";
  if (mediaType.endsWith(".tar") || mediaType === "application/vnd.docker.image.rootfs.diff.tar")
    return "none";
  return undefined;
}

/** The layer media type to use for a new layer, matching the manifest's family (OCI or Docker). */
export function layerMediaTypeFor(manifestMediaType: string, compression: Compression): string {
  const docker = manifestMediaType === MediaType.dockerManifest;
  if (compression === "gzip") return docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip;
  if (compression === "zstd") return MediaType.ociLayerZstd; // Docker schema 2 has no zstd type; callers switch to OCI.
  return docker ? "application/vnd.docker.image.rootfs.diff.tar" : MediaType.ociLayer;
}

export const Annotation = {
  baseName: "org.opencontainers.image.base.name",
  baseDigest: "org.opencontainers.image.base.digest",
  created: "org.opencontainers.image.created",
  version: "org.opencontainers.image.version",
  refName: "org.opencontainers.image.ref.name",
  /** containerd/docker name annotation in OCI layouts written by Docker. */
  containerdImageName: "io.containerd.image.name",
  copaPatched: "sh.copa.image.patched",
  copaIndexPatched: "sh.copa.patched",
} as const;

/** Config label copa writes to find the original image of a patched one; suture writes it too. */
export const BaseImageLabel = "BaseImage";
/** suture's own labels, recording what the patch layer replaced so re-patching can start over. */
export const SutureLabel = {
  patchedLayerDiffId: "dev.suture.patch.layer",
  baseLayers: "dev.suture.base.layers",
  /**
   * The config digest of the image before suture first patched it: the image a scanner's report
   * of the unpatched image names (Trivy ImageID), so a re-patch with that report can be checked.
   */
  baseConfig: "dev.suture.base.config",
} as const;
