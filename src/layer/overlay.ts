/**
 * How overlayfs records changes in its upper (and, for image layers extracted as overlay lower
 * dirs, lower) directories, and the extended attributes that carry them.
 *
 * - A deleted entry is a character device 0/0 (a "whiteout").
 * - A directory that replaced a lower one (removed, then created again) has the xattr
 *   `overlay.opaque` = "y": nothing of the lower directories shows through it.
 * - Overlay keeps private bookkeeping in `trusted.overlay.*` (or `user.overlay.*` when mounted
 *   with `userxattr`, as rootless mounts are): origin, impure, nlink, protattr… These are never
 *   image content and are never compared or written.
 * - With `redirect_dir=on` a renamed directory carries `overlay.redirect`, and with
 *   `metacopy=on` a chmod/chown copies up only metadata and marks the file `overlay.metacopy`
 *   (its data stays in a lower layer). Neither can be expressed in an OCI layer without copying
 *   the lower content in, so the sandbox must mount with {@link OVERLAY_MOUNT_OPTIONS}; the
 *   layer builder refuses upper dirs that carry either xattr.
 */

import type { BigIntStats } from "node:fs";
import { getAttributeSync, listAttributesSync } from "@napi-rs/xattr";
import { compareBytes } from "../archive/tar/write.ts";
import { SutureError } from "../errors/errors.ts";

/** Mount options the sandbox must pass so that every upper dir is expressible as a layer. */
export const OVERLAY_MOUNT_OPTIONS: readonly string[] = ["redirect_dir=off", "metacopy=off"];

const PRIVATE_PREFIXES = ["trusted.overlay.", "user.overlay."] as const;

/** Whether an xattr is overlayfs bookkeeping rather than file content. */
export function isOverlayPrivateXattr(name: string): boolean {
  return PRIVATE_PREFIXES.some((p) => name.startsWith(p));
}

/** A character device with device number 0/0: overlayfs' record of a deletion. */
export function isWhiteout(stat: BigIntStats): boolean {
  return stat.isCharacterDevice() && stat.rdev === 0n;
}

export interface EntryXattrs {
  /** Content xattrs (security.capability, ACLs, user.*), sorted by name in byte order. */
  content: Map<string, Buffer>;
  /** Overlay bookkeeping, keyed without the namespace prefix ("opaque", "redirect", …). */
  overlay: Map<string, Buffer>;
}

/**
 * Read an entry's xattrs without following symlinks. A filesystem without xattrs gives none.
 * Synchronous, like the other per-entry calls of the layer walk: a threadpool round trip per tiny
 * syscall cost about a millisecond per entry there.
 */
export function readXattrs(path: string): EntryXattrs {
  const content = new Map<string, Buffer>();
  const overlay = new Map<string, Buffer>();
  let names: string[];
  try {
    names = listAttributesSync(path);
  } catch (e) {
    if (isUnsupported(e)) return { content, overlay };
    throw new SutureError("IO", `cannot list the extended attributes of ${path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  for (const name of names.sort(compareBytes)) {
    let value: Buffer | null;
    try {
      value = getAttributeSync(path, name);
    } catch (e) {
      throw new SutureError("IO", `cannot read xattr ${name} of ${path}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    if (value === null) continue; // removed between list and get
    const prefix = PRIVATE_PREFIXES.find((p) => name.startsWith(p));
    if (prefix) overlay.set(name.slice(prefix.length), value);
    else content.set(name, value);
  }
  return { content, overlay };
}

/** Whether overlay marked this directory opaque (value "y"). */
export function isOpaque(xattrs: EntryXattrs, path: string): boolean {
  const v = xattrs.overlay.get("opaque");
  if (v === undefined) return false;
  const s = v.toString("latin1");
  if (s === "y") return true;
  // "x" marks a directory holding xattr-whiteouts (data-only lower layers, kernel 6.7+).
  throw new SutureError(
    "SANDBOX",
    `${path} has overlay.opaque="${s}", which only composefs-style data-only layers use: mount plain directories as overlay layers`,
  );
}

/** Refuse entries that only make sense together with lower content (see module comment). */
export function assertExpressible(xattrs: EntryXattrs, path: string): void {
  for (const key of ["redirect", "metacopy"]) {
    if (xattrs.overlay.has(key))
      throw new SutureError(
        "SANDBOX",
        `${path} carries overlay.${key}: the overlay was mounted with ${key === "redirect" ? "redirect_dir" : "metacopy"}=on, which a layer cannot express; mount it with -o ${OVERLAY_MOUNT_OPTIONS.join(",")}`,
      );
  }
}

/** Reads the opaque flag of a directory alone (cheaper than all its xattrs). */
export function readOpaque(dirPath: string): boolean {
  for (const prefix of PRIVATE_PREFIXES) {
    let v: Buffer | null;
    try {
      v = getAttributeSync(dirPath, `${prefix}opaque`);
    } catch (e) {
      if (isUnsupported(e) || isMissing(e)) continue;
      throw new SutureError("IO", `cannot read the xattrs of ${dirPath}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    if (v !== null) return isOpaque({ content: new Map(), overlay: new Map([["opaque", v]]) }, dirPath);
  }
  return false;
}

// @napi-rs/xattr reports errno only in its message ("… (os error 95)").
function isUnsupported(e: unknown): boolean {
  return /\(os error (95|61)\)/.test((e as Error)?.message ?? "");
}
function isMissing(e: unknown): boolean {
  return /\(os error (2|20)\)/.test((e as Error)?.message ?? "");
}
