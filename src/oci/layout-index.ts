import { quoteUntrusted, SutureError } from "../errors/errors.ts";
import type { Descriptor, Index } from "./manifest.ts";
import { Annotation, isImageManifestMediaType, isIndexMediaType } from "./media-types.ts";

/** What an OCI layout's index.json names for a tag: one descriptor, or the index.json itself. */
export type LayoutSelection = { kind: "descriptor"; descriptor: Descriptor } | { kind: "index" };

/** The tags (`org.opencontainers.image.ref.name`) an index lists, in order, without repeats. */
export function layoutTags(index: Index): string[] {
  const tags = index.manifests
    .map((d) => d.annotations?.[Annotation.refName])
    .filter((t): t is string => t !== undefined);
  return [...new Set(tags)];
}

/**
 * Pick what a tag names in an OCI layout (image-spec image-layout):
 * - with a tag: the entry of index.json annotated `org.opencontainers.image.ref.name=TAG`; when
 *   there is none at the top level, entries of nested indexes are searched too (some tools tag
 *   the platform manifests inside a nested index);
 * - without a tag: the only entry; or, when index.json lists several untagged platform images
 *   (a multi-platform image written straight into index.json), index.json itself;
 * - otherwise a clear error listing the tags there are.
 * `loadIndex` reads a nested index (verified) or returns undefined when its blob is absent.
 */
export async function selectFromLayoutIndex(
  index: Index,
  tag: string | undefined,
  loadIndex: (d: Descriptor) => Promise<Index | undefined>,
  name: string,
): Promise<LayoutSelection> {
  // Tags come from index.json: show odd ones quoted, so they cannot break the message's line.
  const tags = layoutTags(index).map((t) => (/^[\x21-\x7e]+$/.test(t) ? t : quoteUntrusted(t)));
  const listed = tags.length ? tags.join(", ") : "no tags";
  if (tag === undefined) {
    if (index.manifests.length === 1) return { kind: "descriptor", descriptor: index.manifests[0]! };
    if (index.manifests.length === 0) {
      throw new SutureError("NOT_FOUND", `${name} is an empty OCI layout: its index.json lists no images`);
    }
    const allUntaggedPlatforms = index.manifests.every(
      (d) =>
        d.annotations?.[Annotation.refName] === undefined &&
        isImageManifestMediaType(d.mediaType) &&
        d.platform !== undefined,
    );
    if (allUntaggedPlatforms) return { kind: "index" };
    throw new SutureError(
      "INVALID_REFERENCE",
      `${name} holds ${index.manifests.length} images (${listed}): name one with :TAG, e.g. ${name}:${tags[0] ?? "TAG"}`,
    );
  }
  const direct = index.manifests.find((d) => d.annotations?.[Annotation.refName] === tag);
  if (direct) return { kind: "descriptor", descriptor: direct };
  const seen = new Set<string>();
  const queue = index.manifests.filter((d) => isIndexMediaType(d.mediaType));
  while (queue.length) {
    const d = queue.shift()!;
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    const nested = await loadIndex(d);
    if (!nested) continue;
    const found = nested.manifests.find((c) => c.annotations?.[Annotation.refName] === tag);
    if (found) return { kind: "descriptor", descriptor: found };
    queue.push(...nested.manifests.filter((c) => isIndexMediaType(c.mediaType)));
  }
  throw new SutureError(
    "NOT_FOUND",
    `${name} has no image tagged ${quoteUntrusted(tag)} (it has: ${listed}): use one of those tags`,
  );
}
