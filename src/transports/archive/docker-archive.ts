import { SutureError } from "../../errors/errors.ts";
import type { ImageSink, ImageSource } from "../../image/source.ts";
import { formatReference, type ImageReference } from "../../ref/reference.ts";
import type { TransportOptions } from "../index.ts";
import { openArchiveFile } from "./archive-source.ts";
import { ArchiveFileSink, ArchiveSpool } from "./archive-writer.ts";

export { type ArchiveSourceOptions, openArchiveFile } from "./archive-source.ts";
export { type ArchivePlan, ArchiveSpool, archiveStream } from "./archive-writer.ts";

function archiveName(file: string, ref: ImageReference | undefined): string {
  return `docker-archive:${file}${ref ? `:${formatReference(ref)}` : ""}`;
}

/**
 * Read an image from a `docker save` archive (legacy or Docker 25+, plain or gzip/zstd-compressed)
 * or a tarred OCI layout. `ref` selects the image when the archive holds several (by RepoTags, or
 * by image ID when it pins a digest); without it the archive must hold exactly one. The file is
 * only read; see openArchiveFile for how the manifest is obtained.
 */
export async function openArchiveSource(
  file: string,
  ref: ImageReference | undefined,
  options: TransportOptions,
): Promise<ImageSource> {
  options.signal?.throwIfAborted();
  return openArchiveFile(file, ref, {
    name: archiveName(file, ref),
    tmpDir: options.tmpDir,
    maxBlobSize: options.maxBlobSize,
    signal: options.signal,
  });
}

/**
 * Write one image as a `docker save` archive loadable by `docker load` (RepoTags from `ref`).
 * Cannot hold an index (`acceptsIndex = false`); see ArchiveFileSink for the commit contract.
 */
export async function openArchiveSink(
  file: string,
  ref: ImageReference | undefined,
  options: TransportOptions,
): Promise<ImageSink> {
  if (ref?.digest && !ref.tag) {
    throw new SutureError(
      "INVALID_REFERENCE",
      `docker-archive:${file}:${formatReference(ref)}: an archive names images by tag, not digest: give a tag`,
    );
  }
  const name = archiveName(file, ref);
  return new ArchiveFileSink(
    file,
    ref,
    name,
    new ArchiveSpool(name, options.tmpDir),
    options.progress,
    options.signal,
  );
}
