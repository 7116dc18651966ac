import type { Image } from "../image/image.ts";
import {
  buildSbom,
  readImageInventory,
  type SbomDocument,
  type SbomFormat,
  type SbomImage,
  withPrevious,
  writeSbom,
} from "../sbom/sbom.ts";

/** The patched image's SBOM as written (or only built, for `--attach`), and the inventory it came from. */
export interface PatchedSbom {
  file?: string;
  format: SbomFormat;
  document: SbomDocument;
  images: SbomImage[];
}

/**
 * `patch --sbom FILE`: the SBOM of what was written, read back from the patched image's layers
 * (the patch layer included), so it lists what the image now holds whichever engine ran or
 * whether a cached layer was reused; each package the patch changed carries the version it had.
 * An index gives one document (as the VEX does): the index, and each linux platform image in it,
 * patched ones with their changes, the others as they were carried over.
 */
export async function writePatchedSbom(
  options: {
    sbomFile?: string;
    sbomFormat?: SbomFormat;
    toolVersion?: string;
    signal?: AbortSignal;
    attach?: boolean;
  },
  written: {
    name: string;
    repository?: string;
    /** The written index's digest, for a multi-platform image. */
    index?: string;
    images: readonly {
      image: Image;
      /** The digest the sink committed (an OCI layout may store another form of the manifest). */
      digest?: string;
      changed: readonly { name: string; from?: string; to: string }[];
    }[];
  },
): Promise<PatchedSbom | undefined> {
  if (!options.sbomFile && !options.attach) return undefined;
  const identity = { name: written.name, ...(written.repository ? { repository: written.repository } : {}) };
  const images: SbomImage[] = [];
  for (const { image, digest, changed } of written.images) {
    const read = await readImageInventory(image, identity, { signal: options.signal });
    images.push(withPrevious(digest ? { ...read, digest } : read, changed));
  }
  const format = options.sbomFormat ?? "cyclonedx";
  const doc = buildSbom(
    format,
    { images, ...(written.index ? { index: { ...identity, digest: written.index } } : {}) },
    { toolVersion: options.toolVersion ?? "unknown" },
  );
  if (options.sbomFile) await writeSbom(options.sbomFile, doc);
  return { file: options.sbomFile, format, document: doc, images };
}
