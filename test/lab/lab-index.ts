import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { type LabRecipeName, labImage } from "./images.ts";
import { layoutWriter } from "./oci-layout.ts";
import type { RandomImage } from "./random-image.ts";

/**
 * A multi-platform lab image: the `latest` images of several lab recipes (e.g. amd64 and arm64
 * minbase) behind one OCI image index, written as a new OCI layout at `dir` tagged `latest`.
 * Blobs are hard-linked from the lab cache (copied across filesystems), so this takes milliseconds
 * once the recipes are built. The platform of each entry comes from its image config.
 */
export async function labIndex(
  recipes: readonly LabRecipeName[],
  dir: string,
  /** Generated images to add as further platforms (e.g. one no OS can be detected in). */
  extra: readonly { image: RandomImage; architecture: string }[] = [],
): Promise<{ reference: string; digest: string }> {
  const layout = await layoutWriter(dir);
  const put = layout.put;
  const manifests: unknown[] = [];
  for (const name of recipes) {
    const lab = await labImage(name);
    const index = JSON.parse(await readFile(join(lab.layoutDir, "index.json"), "utf8"));
    const entry = index.manifests.find(
      (m: { annotations?: Record<string, string> }) =>
        m.annotations?.["org.opencontainers.image.ref.name"] === "latest",
    );
    const blob = (digest: string) => join(lab.layoutDir, "blobs", "sha256", digest.slice(7));
    const manifest = JSON.parse(await readFile(blob(entry.digest), "utf8"));
    const config = JSON.parse(await readFile(blob(manifest.config.digest), "utf8"));
    for (const d of [
      entry.digest,
      manifest.config.digest,
      ...manifest.layers.map((l: { digest: string }) => l.digest),
    ])
      await layout.reuse(lab.layoutDir, d);
    const platform: Record<string, string> = { os: config.os, architecture: config.architecture };
    if (config.variant) platform.variant = config.variant;
    manifests.push({ mediaType: entry.mediaType, digest: entry.digest, size: entry.size, platform });
  }
  for (const { image, architecture } of extra) {
    for (const bytes of image.blobs.values()) await put(bytes);
    manifests.push({
      mediaType: image.manifest.mediaType,
      digest: image.manifest.digest,
      size: image.manifest.bytes.length,
      platform: { os: "linux", architecture },
    });
  }
  const index = await put(
    new TextEncoder().encode(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.index.v1+json",
        manifests,
        annotations: { "org.opencontainers.image.description": `suture lab index of ${recipes.join(", ")}` },
      }),
    ),
  );
  await layout.tag("application/vnd.oci.image.index.v1+json", index);
  return { reference: `oci:${dir}:latest`, digest: index.digest };
}
