import { SutureError } from "../errors/errors.ts";
import { imagePlatform, loadImage, platformDescriptors, resolveRoot } from "../image/image.ts";
import type { ImageSource } from "../image/source.ts";
import type { Platform } from "../oci/manifest.ts";
import { formatPlatform, platformMatches } from "../oci/platform.ts";
import type { SbomSubject } from "./document.ts";
import { readImageInventory, type SbomImage } from "./inventory.ts";

/**
 * What `suture sbom` describes: a single image, or an index's platform images (those `platforms`
 * select; default all), each read from its layers. `name` is how the document names the image;
 * `repository` (registry/repository) gives it an oci purl.
 */
export async function sourceSubject(
  source: ImageSource,
  options: { name: string; repository?: string; platforms?: readonly Platform[]; signal?: AbortSignal },
): Promise<SbomSubject> {
  const identity = { name: options.name, ...(options.repository ? { repository: options.repository } : {}) };
  const root = await resolveRoot(source);
  if (root.kind === "image") {
    // A single-platform image is that platform only: asking for another must not be ignored.
    const has = imagePlatform(root.image);
    const missing = (options.platforms ?? []).filter((p) => !platformMatches(p, has));
    if (missing.length)
      throw new SutureError(
        "UNSUPPORTED_PLATFORM",
        `${source.name} has no ${missing.map(formatPlatform).join(", ")} image (it is a single-platform ${formatPlatform(has)} image): pass --platform ${formatPlatform(has)} or leave --platform out`,
      );
    return { images: [await readImageInventory(root.image, identity, { signal: options.signal })] };
  }
  const all = platformDescriptors(root.index.parsed);
  const selected = options.platforms?.length
    ? all.filter((d) => options.platforms!.some((p) => platformMatches(p, d.platform!)))
    : all;
  if (selected.length === 0) {
    const want = (options.platforms ?? []).map(formatPlatform).join(", ");
    const have = all.map((d) => formatPlatform(d.platform!)).join(", ") || "none";
    throw new SutureError(
      "UNSUPPORTED_PLATFORM",
      `${source.name} has no ${want} image (it has: ${have}): pass --platform with one of those`,
    );
  }
  const images: SbomImage[] = [];
  for (const d of selected) {
    const image = await loadImage(
      source,
      await source.manifest(d),
      `${source.name} (${formatPlatform(d.platform!)})`,
    );
    images.push(await readImageInventory(image, identity, { signal: options.signal }));
  }
  return { images, index: { ...identity, digest: root.index.manifest.digest } };
}
