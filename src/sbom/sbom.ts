import { createHash } from "node:crypto";
import { SutureError } from "../errors/errors.ts";
import { writeFileAtomic } from "../fs/atomic.ts";
import { formatPlatform } from "../oci/platform.ts";
import { canonicalJson } from "../vex/openvex.ts";
import { ociPurl } from "../vex/purl.ts";
import { buildCycloneDx } from "./cyclonedx.ts";
import { packagePurl, type SbomImage, type SbomPackage } from "./inventory.ts";
import { buildSpdx } from "./spdx.ts";

export type { SbomImage, SbomPackage } from "./inventory.ts";
export { readImageInventory } from "./inventory.ts";

export const SBOM_FORMATS = ["cyclonedx", "spdx"] as const;
export type SbomFormat = (typeof SBOM_FORMATS)[number];

/**
 * What one SBOM document describes: one image, or (a multi-platform patch or `suture sbom` of an
 * index) an index and its platform images, in one document, as suture's OpenVEX does.
 */
export interface SbomSubject {
  images: readonly SbomImage[];
  /** The index holding `images`, when the document is about one. */
  index?: { name: string; digest: string; repository?: string };
}

export interface BuildSbomOptions {
  /** suture's version, named as the creating tool. */
  toolVersion: string;
  /** Default: SOURCE_DATE_EPOCH when set (reproducible documents), else now. */
  timestamp?: Date;
}

/** A document ready to serialise (CycloneDX 1.6 or SPDX 2.3 JSON). */
export type SbomDocument = Record<string, unknown>;

export function buildSbom(format: SbomFormat, subject: SbomSubject, options: BuildSbomOptions): SbomDocument {
  if (subject.images.length === 0) throw new SutureError("INTERNAL", "an SBOM needs at least one image");
  const timestamp = options.timestamp ?? sbomTimestamp();
  const input = { subject, toolVersion: options.toolVersion, timestamp };
  return format === "spdx" ? buildSpdx(input) : buildCycloneDx(input);
}

/**
 * The document's time: SOURCE_DATE_EPOCH (seconds) when set, so the same image gives the same
 * bytes; a value that is not a whole number of seconds is a usage error, not silently now.
 */
export function sbomTimestamp(env: NodeJS.ProcessEnv = process.env): Date {
  const raw = env.SOURCE_DATE_EPOCH;
  if (raw === undefined || raw === "") return new Date(Math.floor(Date.now() / 1000) * 1000);
  if (!/^\d{1,12}$/.test(raw.trim()))
    throw new SutureError(
      "USAGE",
      `SOURCE_DATE_EPOCH=${JSON.stringify(raw)} is not a number of seconds since 1970: set it to one (e.g. $(git log -1 --format=%ct)) or unset it`,
    );
  return new Date(Number(raw.trim()) * 1000);
}

/**
 * Mark what a patch changed: each package `changed` names at its new version carries the version
 * (and the purl) it had before. Packages the patch added (no `from`) are listed as they are.
 */
export function withPrevious(
  image: SbomImage,
  changed: readonly { name: string; from?: string; to: string }[],
): SbomImage {
  const byName = new Map(changed.filter((c) => c.from !== undefined).map((c) => [c.name, c]));
  return {
    ...image,
    packages: image.packages.map((p) => {
      const c = byName.get(p.name);
      if (!c || c.to !== p.version || c.from === p.version) return p;
      const from = c.from!;
      const epoch = p.format === "apk" ? undefined : Number(/^(\d+):/.exec(from)?.[1] ?? 0) || undefined;
      const { epoch: _e, ...rest } = p;
      const old: Omit<SbomPackage, "purl"> = { ...rest, version: from, ...(epoch ? { epoch } : {}) };
      return { ...p, previous: { version: from, purl: packagePurl(old, image.os) } };
    }),
  };
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

/** Write a document atomically (temporary beside it, renamed), mode 0644, as the VEX is written. */
export async function writeSbom(path: string, doc: SbomDocument): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(doc, null, 2)}\n`, {
    mode: 0o644,
    exactMode: true,
    fsync: false,
    failure: `cannot write SBOM ${path}`,
  });
}
