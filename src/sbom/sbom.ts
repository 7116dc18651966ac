import { SutureError } from "../errors/errors.ts";
import { writeFileAtomic } from "../fs/atomic.ts";
import { buildCycloneDx } from "./cyclonedx.ts";
import type { SbomSubject } from "./document.ts";
import { packagePurl, type SbomImage, type SbomPackage } from "./inventory.ts";
import { buildSpdx } from "./spdx.ts";

export type { SbomSubject } from "./document.ts";
export type { SbomImage, SbomPackage } from "./inventory.ts";
export { readImageInventory } from "./inventory.ts";

export const SBOM_FORMATS = ["cyclonedx", "spdx"] as const;
export type SbomFormat = (typeof SBOM_FORMATS)[number];

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
  return sourceDateEpoch(env) ?? new Date(Math.floor(Date.now() / 1000) * 1000);
}

/**
 * SOURCE_DATE_EPOCH (reproducible-builds.org) as a date, undefined when unset: the SBOM's time and
 * the patch's (its layer's clamped times, its `created`). Not a whole number of seconds: USAGE.
 */
export function sourceDateEpoch(env: NodeJS.ProcessEnv = process.env): Date | undefined {
  const raw = env.SOURCE_DATE_EPOCH;
  if (raw === undefined || raw === "") return undefined;
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

/** Write a document atomically (temporary beside it, renamed), mode 0644, as the VEX is written. */
export async function writeSbom(path: string, doc: SbomDocument): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(doc, null, 2)}\n`, {
    mode: 0o644,
    exactMode: true,
    fsync: false,
    failure: `cannot write SBOM ${path}`,
  });
}
