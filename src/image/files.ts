import { posix } from "node:path";
import { decompressAuto } from "../archive/compression.ts";
import { readTar } from "../archive/tar/read.ts";
import { describeCause, isSutureError, SutureError } from "../errors/errors.ts";
import { type PathTree, READ_POLICY, walkPath } from "../fs/in-root.ts";
import type { Image } from "./image.ts";

export interface ImageFile {
  path: string;
  content: Buffer;
}

export interface ReadFilesOptions {
  /** Largest file we keep in memory; larger matches are an error (a dpkg status is a few MB). */
  maxFileBytes?: number;
  signal?: AbortSignal;
}

/**
 * Read selected files from an image's merged filesystem without unpacking it: streams every layer
 * bottom-up, applies whiteouts and opaque directories, and follows symlinks among what it saw.
 * `wanted` receives normalised absolute paths ("/etc/os-release"). Returns the merged view of the
 * wanted files, keyed by path, with symlinks resolved for the paths asked for.
 */
export async function readImageFiles(
  image: Image,
  wanted: (path: string) => boolean,
  options: ReadFilesOptions = {},
): Promise<Map<string, Buffer>> {
  try {
    return await readMergedFiles(image, wanted, options);
  } catch (e) {
    // zlib throws its own errors for a corrupt or truncated layer ("unexpected end of file"): the
    // image is at fault, so say so with a code.
    if (e instanceof SutureError || options.signal?.aborted) throw e;
    throw new SutureError(
      "INVALID_ARCHIVE",
      `a layer of the image is not a readable tar archive: ${describeCause(e)}`,
      {
        cause: e,
      },
    );
  }
}

async function readMergedFiles(
  image: Image,
  wanted: (path: string) => boolean,
  options: ReadFilesOptions,
): Promise<Map<string, Buffer>> {
  const maxBytes = options.maxFileBytes ?? 64 * 1024 * 1024;
  const files = new Map<string, Buffer>();
  const links = new Map<string, string>();
  // A layer listed again higher up is read only there: replaying it on top redoes everything the
  // lower occurrence did (its files, whiteouts and opaque dirs), so skipping that one changes
  // nothing, and an image repeating one layer hundreds of times is read once.
  const layers = image.parsed.layers;
  const last = new Map(layers.map((l, i) => [l.digest, i]));
  for (const [i, layer] of layers.entries()) {
    if (last.get(layer.digest) !== i) continue;
    options.signal?.throwIfAborted();
    const stream = decompressAuto(await image.blobs.blob(layer));
    try {
      for await (const { header, body } of readTar(stream)) {
        const path = normalise(header.path);
        const base = posix.basename(path);
        const dir = posix.dirname(path);
        if (base === ".wh..wh..opq") {
          removeUnder(files, dir, false);
          removeUnder(links, dir, false);
        } else if (base.startsWith(".wh.")) {
          const target = posix.join(dir, base.slice(4));
          removeUnder(files, target, true);
          removeUnder(links, target, true);
        } else {
          // A new entry at a path replaces whatever lower layers had there.
          files.delete(path);
          links.delete(path);
          if (header.type === "symlink" && header.linkname) {
            links.set(path, header.linkname);
          } else if (header.type === "file" && wanted(path)) {
            if (header.size > maxBytes) {
              throw new SutureError(
                "INVALID_ARCHIVE",
                `${path} in the image is larger than ${maxBytes} bytes`,
              );
            }
            const chunks: Buffer[] = [];
            for await (const c of body) chunks.push(c);
            files.set(path, Buffer.concat(chunks));
          }
        }
        // Whatever body is left unread, readTar skips.
      }
    } finally {
      // On an early error the decompressor and the blob stream behind it must not stay open.
      stream.destroy();
    }
  }
  // Symlinked wanted paths (Debian's /etc/os-release → ../usr/lib/os-release).
  for (const [link] of links) {
    if (!wanted(link)) continue;
    const resolved = resolveLink(link, links);
    const content = resolved && files.get(resolved);
    if (content) files.set(link, content);
  }
  return files;
}

function normalise(name: string): string {
  const p = posix.normalize(`/${name}`);
  return p.length > 1 && p.endsWith("/") ? p.slice(0, -1) : p;
}

function removeUnder<T>(map: Map<string, T>, path: string, includeSelf: boolean): void {
  const prefix = path === "/" ? "/" : `${path}/`;
  for (const key of map.keys()) {
    if ((includeSelf && key === path) || key.startsWith(prefix)) map.delete(key);
  }
}

/**
 * Where `path` leads among the symlinks seen in the layers (the in-root resolver over that map: a
 * path no symlink is recorded at counts as a plain entry); undefined for a symlink loop.
 */
function resolveLink(path: string, links: Map<string, string>): string | undefined {
  const tree: PathTree<string | null> = {
    lookup: (p) => links.get(p) ?? null,
    isDirectory: () => true,
    linkTarget: (_p, target) => target ?? undefined,
  };
  try {
    return walkPath(tree, path, READ_POLICY).path;
  } catch (e) {
    if (isSutureError(e, "UNSAFE_LAYER")) return undefined;
    throw e;
  }
}
