/**
 * Test-only helpers for the sandbox tests: layer tars written with our writer (test/lab/tar.ts) and
 * GNU tar where binary xattrs are needed, images built over them in memory, and filesystem snapshots.
 */
import { execFileSync } from "node:child_process";
import { lstatSync, readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import zlib from "node:zlib";
import { getAttributeSync, listAttributesSync } from "@napi-rs/xattr";
import { sha256Digest } from "../../src/image/digest.ts";
import { type Image, loadImage } from "../../src/image/image.ts";
import type { RawManifest } from "../../src/oci/manifest.ts";
import { MediaType } from "../../src/oci/media-types.ts";
import { memorySource } from "../lab/random-image.ts";

export { type EntrySpec, MTIME, tarOf } from "../lab/tar.ts";

/** A layer tar of a real directory written by GNU tar with every xattr (binary-safe PAX records). */
export function gnuTarOf(dir: string): Buffer {
  return execFileSync(
    "tar",
    ["--xattrs", "--xattrs-include=*", "--numeric-owner", "--format=posix", "-C", dir, "-cf", "-", "."],
    { maxBuffer: 256 * 1024 * 1024 },
  );
}

export interface TestImage {
  image: Image;
  /** Every blob by digest; tests may replace one to simulate tampering. */
  blobs: Map<string, Buffer>;
  layerDigests: string[];
  diffIds: string[];
}

/**
 * An image over these layer tars (gzip-compressed), served by a verifying in-memory source.
 * `diffIds` overrides what the config claims (to test DIGEST_MISMATCH).
 */
export async function imageOf(
  tars: Buffer[],
  options: { diffIds?: (string | undefined)[]; env?: string[] } = {},
): Promise<TestImage> {
  const blobs = new Map<string, Buffer>();
  const layers = tars.map((t) => {
    const gz = zlib.gzipSync(t);
    const digest = sha256Digest(gz);
    blobs.set(digest, gz);
    return { mediaType: MediaType.ociLayerGzip, digest, size: gz.length };
  });
  const diffIds = tars.map((t, i) => options.diffIds?.[i] ?? sha256Digest(t));
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: { Env: options.env ?? ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
      rootfs: { type: "layers", diff_ids: diffIds },
    }),
  );
  const configDigest = sha256Digest(config);
  blobs.set(configDigest, config);
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: configDigest, size: config.length },
      layers,
    }),
  );
  const manifest: RawManifest = {
    bytes: manifestBytes,
    mediaType: MediaType.ociManifest,
    digest: sha256Digest(manifestBytes),
  };
  blobs.set(manifest.digest, manifestBytes);
  const image = await loadImage(memorySource("test-image", manifest, blobs), manifest, "test image");
  return { image, blobs, layerDigests: layers.map((l) => l.digest), diffIds };
}

/** Every path below `root` with type, mode, owner, size, mtime (ns), link target and xattrs. */
export function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    const path = rel ? join(root, rel) : root;
    const st = lstatSync(path, { bigint: true });
    const kind = st.isDirectory()
      ? "d"
      : st.isSymbolicLink()
        ? `l:${readlinkSync(path)}`
        : st.isCharacterDevice()
          ? `c:${st.rdev}`
          : st.isFIFO()
            ? "p"
            : "f";
    const xattrs = listAttributesSync(path)
      .sort()
      .map((k) => `${k}=${getAttributeSync(path, k)?.toString("hex")}`)
      .join(",");
    out.set(
      rel || ".",
      `${kind} ${st.mode} ${st.uid}:${st.gid} ${st.size} ${st.mtimeNs} ${st.ino} [${xattrs}]`,
    );
    if (st.isDirectory()) for (const name of readdirSync(path)) walk(rel ? `${rel}/${name}` : name);
  };
  walk("");
  return out;
}

/** Relative paths of everything below `root` (sorted). */
export function listTree(root: string): string[] {
  return [...snapshot(root).keys()].filter((k) => k !== ".").sort();
}
