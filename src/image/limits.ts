import { formatBytes, SutureError } from "../errors/errors.ts";
import type { Descriptor } from "../oci/manifest.ts";

/**
 * Ceilings on what an image may claim, checked before anything is downloaded: a manifest is
 * untrusted input, and without them a hostile one could make suture fill the disk (a layer of
 * 100 GB) or spend hours on one image (thousands of layers).
 */

/**
 * Largest layer (or other non-config blob) read by default; `--max-blob-size` changes it. Real
 * layers of big images (CUDA, ML frameworks) reach a few GiB compressed; 16 GiB leaves room for
 * them while stopping a manifest from announcing terabytes.
 */
export const DEFAULT_MAX_BLOB_SIZE = 16 * 1024 ** 3;

/**
 * Largest image config read. Configs are JSON read whole into memory; real ones are a few KiB
 * (images with long histories reach a few hundred KiB).
 */
export const MAX_CONFIG_SIZE = 64 * 1024 ** 2;

/**
 * Most layers an image manifest may list. Docker's overlay2 driver refuses images deeper than
 * 128 layers (so images built by Docker stay below that), the kernel's overlayfs stacks at most
 * 500 lower dirs, containerd sets no limit of its own. 1000 accepts what any builder makes, while
 * a manifest of thousands of layer entries (a 4 MiB manifest can list about 30 000) is refused
 * before any of them is fetched.
 */
export const MAX_LAYERS = 1000;

/**
 * Refuse a blob whose descriptor claims more than `limit` bytes (the caller passes the configured
 * --max-blob-size), before a byte of it is read. `where` names the image it belongs to.
 */
export function checkBlobSize(d: Pick<Descriptor, "digest" | "size">, limit: number, where: string): void {
  if (d.size > limit) {
    throw new SutureError(
      "TOO_LARGE",
      `${where}: blob ${d.digest} claims ${formatBytes(d.size)} (${d.size} bytes), more than the ${formatBytes(limit)} allowed: pass --max-blob-size with a larger size if the image really has a blob this large`,
    );
  }
}

/** Refuse a config descriptor larger than any real config (MAX_CONFIG_SIZE). */
export function checkConfigSize(d: Pick<Descriptor, "digest" | "size">, where: string): void {
  if (d.size > MAX_CONFIG_SIZE) {
    throw new SutureError(
      "TOO_LARGE",
      `${where}: config ${d.digest} claims ${formatBytes(d.size)}, more than the ${formatBytes(MAX_CONFIG_SIZE)} a config may have: the manifest is broken or hostile`,
    );
  }
}

/** Refuse a manifest listing more than MAX_LAYERS layers. */
export function checkLayerCount(count: number, where: string): void {
  if (count > MAX_LAYERS) {
    throw new SutureError(
      "TOO_LARGE",
      `${where} lists ${count} layers, more than the ${MAX_LAYERS} suture reads: squash the image (Docker itself refuses more than 128)`,
    );
  }
}

/**
 * `16G`, `512MiB`, `1024k`, `2000000000` → bytes, for the size flags (`--max-blob-size`,
 * `--max-report-size`). Units are binary and case-insensitive (k, m, g, t, p, optionally followed
 * by `i` and/or `b`), as Docker reads `--shm-size`: one reading for every flag, so `1G` means the
 * same wherever it is written. Undefined when the text is no such size.
 */
export function parseByteSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])i?b?|b)?\s*$/i.exec(text);
  if (!m) return undefined;
  const power = m[2] ? "kmgtp".indexOf(m[2].toLowerCase()) + 1 : 0;
  const bytes = Math.floor(Number(m[1]) * 1024 ** power);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}
