import { z } from "zod";
import { quoteUntrusted, SutureError } from "../../errors/errors.ts";
import { familiarName, type ImageReference, parseReference } from "../../ref/reference.ts";

/**
 * One image of a `docker save` archive's manifest.json. Paths are archive members: legacy
 * archives use `<id>.json` and `<id>/layer.tar`; Docker 25+ uses `blobs/sha256/<hex>`.
 */
export const ArchiveItemSchema = z.looseObject({
  Config: z.string().min(1),
  RepoTags: z.array(z.string()).nullish(),
  Layers: z.array(z.string()),
  Parent: z.string().optional(),
  LayerSources: z.record(z.string(), z.unknown()).nullish(),
});
export type ArchiveItem = z.infer<typeof ArchiveItemSchema>;
export const ArchiveManifestSchema = z.array(ArchiveItemSchema);

/** The RepoTags entry Docker writes for a reference: familiar name and tag (`nginx:1.25`). */
export function repoTagFor(ref: ImageReference): string | undefined {
  return ref.tag ? `${familiarName(ref)}:${ref.tag}` : undefined;
}

/** Whether a RepoTags entry names the same image as `ref` (both normalised, so `nginx` = `docker.io/library/nginx:latest`). */
export function repoTagMatches(repoTag: string, ref: ImageReference): boolean {
  let parsed: ImageReference;
  try {
    parsed = parseReference(repoTag);
  } catch {
    return false;
  }
  return (
    parsed.registry === ref.registry &&
    parsed.repository === ref.repository &&
    parsed.tag === (ref.tag ?? "latest")
  );
}

export interface SelectItemOptions {
  /** Archive name for messages. */
  name: string;
  /** Digest of each item's config (the Docker image ID), for references that pin a digest. */
  configDigest: (item: ArchiveItem) => Promise<string>;
  /** When the reference matches nothing but the archive holds exactly one image, use it. */
  acceptSingle?: boolean;
}

/**
 * Choose the image of a docker-archive that `ref` names: by RepoTags, or by image ID (config
 * digest) when the reference pins a digest. Without a reference the archive must hold one image.
 */
export async function selectArchiveItem(
  items: ArchiveItem[],
  ref: ImageReference | undefined,
  options: SelectItemOptions,
): Promise<ArchiveItem> {
  // RepoTags come from the archive: show odd ones quoted, so they cannot break the message's line.
  const tags = items
    .flatMap((i) => i.RepoTags ?? [])
    .map((t) => (/^[\x21-\x7e]+$/.test(t) ? t : quoteUntrusted(t)));
  const listed = tags.length ? tags.join(", ") : `${items.length} untagged`;
  if (items.length === 0) {
    throw new SutureError("NOT_FOUND", `${options.name} holds no images (its manifest.json is empty)`);
  }
  if (!ref) {
    if (items.length === 1) return items[0]!;
    throw new SutureError(
      "INVALID_REFERENCE",
      `${options.name} holds ${items.length} images (${listed}): name one, e.g. ${options.name}:${tags[0] ?? "IMAGE:TAG"}`,
    );
  }
  if (ref.digest) {
    for (const item of items) {
      if ((await options.configDigest(item)) === ref.digest) return item;
    }
  } else {
    const found = items.find((i) => (i.RepoTags ?? []).some((t) => repoTagMatches(t, ref)));
    if (found) return found;
  }
  if (options.acceptSingle && items.length === 1) return items[0]!;
  throw new SutureError(
    "NOT_FOUND",
    `${options.name} has no image ${ref.digest ?? repoTagFor(ref) ?? ref.repository} (it has: ${listed}): name one of those`,
  );
}
