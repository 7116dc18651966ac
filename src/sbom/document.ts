import { createHash } from "node:crypto";
import { formatPlatform } from "../oci/platform.ts";
import { canonicalJson } from "../vex/openvex.ts";
import { ociPurl } from "../vex/purl.ts";
import type { SbomImage } from "./inventory.ts";

/** What both writers share: the subject of a document and how its identifiers are made. */

/**
 * What one SBOM document describes: one image, or (a multi-platform patch or `suture sbom` of an
 * index) an index and its platform images, in one document, as suture's OpenVEX does.
 */
export interface SbomSubject {
  images: readonly SbomImage[];
  /** The index holding `images`, when the document is about one. */
  index?: { name: string; digest: string; repository?: string };
}

/** RFC 3339 in UTC to the second (both formats' date-time; SPDX wants no fractions). */
export function formatTime(t: Date): string {
  return t.toISOString().replace(/\.\d+Z$/, "Z");
}

/**
 * A UUID derived from the document's content (RFC 9562 version 8: the layout is SHA-256's first
 * 128 bits with the version and variant bits set), so the same input gives the same document and
 * any change in it, its time included, a different one.
 */
export function contentUuid(content: unknown): string {
  const h = createHash("sha256").update(canonicalJson(content)).digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** The image's own identifier: its oci purl when it came from a registry, else name@digest. */
export function imageRef(
  image: { name: string; digest: string; repository?: string },
  arch?: string,
): string {
  return image.repository
    ? ociPurl({ repository: image.repository, digest: image.digest, architecture: arch })
    : `${image.name}@${image.digest}`;
}

export function imagePurl(image: { digest: string; repository?: string }, arch?: string): string | undefined {
  return image.repository
    ? ociPurl({ repository: image.repository, digest: image.digest, architecture: arch })
    : undefined;
}

export function platformName(image: SbomImage): string {
  return formatPlatform(image.platform);
}
