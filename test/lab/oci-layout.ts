import { createHash } from "node:crypto";
import { copyFile, link, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * Writing a small OCI image layout by hand, for lab images assembled from parts. `put` stores a
 * blob and returns its descriptor fields; `reuse` hard-links (else copies) a blob from another
 * layout; `tag` writes oci-layout and an index.json naming one manifest or index.
 */
export async function layoutWriter(dir: string) {
  await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  return {
    async put(bytes: Uint8Array): Promise<{ digest: string; size: number }> {
      const hex = createHash("sha256").update(bytes).digest("hex");
      await writeFile(join(dir, "blobs", "sha256", hex), bytes);
      return { digest: `sha256:${hex}`, size: bytes.length };
    },
    async reuse(fromLayout: string, digest: string): Promise<void> {
      const from = join(fromLayout, "blobs", "sha256", digest.slice(7));
      const to = join(dir, "blobs", "sha256", digest.slice(7));
      await link(from, to).catch(async (e: NodeJS.ErrnoException) => {
        if (e.code !== "EEXIST") await copyFile(from, to);
      });
    },
    async tag(
      mediaType: string,
      descriptor: { digest: string; size: number },
      name = "latest",
    ): Promise<void> {
      await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
      await writeFile(
        join(dir, "index.json"),
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.index.v1+json",
          manifests: [
            { mediaType, ...descriptor, annotations: { "org.opencontainers.image.ref.name": name } },
          ],
        }),
      );
    },
  };
}
