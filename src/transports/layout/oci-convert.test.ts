import assert from "node:assert/strict";
import { test } from "node:test";
import { sha256Digest } from "../../image/digest.ts";
import type { RawManifest } from "../../oci/manifest.ts";
import { MediaType } from "../../oci/media-types.ts";
import { ociFormOf } from "./oci-convert.ts";

function raw(doc: object): RawManifest {
  const bytes = Buffer.from(JSON.stringify(doc));
  return { bytes, mediaType: (doc as { mediaType: string }).mediaType, digest: sha256Digest(bytes) };
}

test("Docker schema 2 manifests and lists take their OCI form; blobs keep their digests", () => {
  const layer = { mediaType: MediaType.dockerLayerGzip, digest: `sha256:${"1".repeat(64)}`, size: 10 };
  const docker = raw({
    schemaVersion: 2,
    mediaType: MediaType.dockerManifest,
    config: { mediaType: MediaType.dockerConfig, digest: `sha256:${"2".repeat(64)}`, size: 5 },
    layers: [layer, { ...layer, mediaType: "application/vnd.docker.image.rootfs.diff.tar" }],
  });
  const converted = new Map<string, RawManifest>();
  const oci = ociFormOf(docker, converted);
  const doc = JSON.parse(Buffer.from(oci.bytes).toString());
  assert.equal(oci.mediaType, MediaType.ociManifest);
  assert.equal(doc.config.mediaType, MediaType.ociConfig);
  assert.equal(doc.config.digest, `sha256:${"2".repeat(64)}`);
  assert.deepEqual(
    doc.layers.map((l: { mediaType: string }) => l.mediaType),
    [MediaType.ociLayerGzip, MediaType.ociLayer],
  );
  assert.equal(oci.digest, sha256Digest(oci.bytes));
  converted.set(docker.digest, oci);

  const list = raw({
    schemaVersion: 2,
    mediaType: MediaType.dockerManifestList,
    manifests: [
      {
        mediaType: MediaType.dockerManifest,
        digest: docker.digest,
        size: docker.bytes.length,
        platform: { os: "linux", architecture: "amd64" },
      },
    ],
  });
  const index = JSON.parse(Buffer.from(ociFormOf(list, converted).bytes).toString());
  assert.equal(index.mediaType, MediaType.ociIndex);
  assert.deepEqual(index.manifests[0], {
    mediaType: MediaType.ociManifest,
    digest: oci.digest,
    size: oci.bytes.length,
    platform: { os: "linux", architecture: "amd64" },
  });

  // OCI documents with nothing to convert are returned as they are (same bytes, same digest).
  assert.equal(ociFormOf(oci, converted), oci);
  const ociIndex = raw({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] });
  assert.equal(ociFormOf(ociIndex, converted), ociIndex);
});
