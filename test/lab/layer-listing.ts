import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { decompressAuto } from "../../src/archive/compression.ts";
import { readTar } from "../../src/archive/tar/read.ts";

/**
 * Every entry of the top layer of the image an OCI layout holds (its first manifest), one line
 * each: name, type, owner, mode, link, size, content hash — no times, so two modes' or two runs'
 * layers compare entry for entry. `contentIgnored` paths keep their line with a fixed hash (e.g.
 * ldconfig's aux-cache, which records inode numbers).
 */
export async function topLayerListing(
  layoutDir: string,
  contentIgnored: (path: string) => boolean = () => false,
): Promise<string[]> {
  const index = JSON.parse(await readFile(join(layoutDir, "index.json"), "utf8"));
  const blob = (d: string) => join(layoutDir, "blobs", ...d.split(":"));
  const manifest = JSON.parse(await readFile(blob(index.manifests[0].digest), "utf8"));
  const top = manifest.layers.at(-1).digest as string;
  const out: string[] = [];
  for await (const { header, body } of readTar(decompressAuto(createReadStream(blob(top))))) {
    const h = createHash("sha256");
    if (contentIgnored(header.path)) h.update("ignored");
    else for await (const c of body) h.update(c);
    out.push(
      [
        header.path,
        header.type,
        `${header.uid}:${header.gid}`,
        header.mode.toString(8),
        header.linkname,
        header.size,
        h.digest("hex").slice(0, 16),
      ].join(" "),
    );
  }
  return out;
}
