import { quoteUntrusted, SutureError } from "../../errors/errors.ts";

/** How a caller names a member path it refuses (`what`: the member, `why`: the reason). */
export type RefuseMemberPath = (what: string, why: string) => SutureError;

/** A layer entry that could write outside the root it is extracted into: UNSAFE_LAYER. */
export const refuseLayerEntry: RefuseMemberPath = (what, why) =>
  new SutureError(
    "UNSAFE_LAYER",
    `layer entry ${quoteUntrusted(what)} ${why}: refusing to extract a layer that could write outside its root`,
  );

/**
 * The one normaliser of tar member paths (names and hardlink targets), for the extractor, the
 * index and the dpkg unpacker: components relative to the archive root. `./a//b/` → ["a","b"];
 * `.`/`./` → [] (the root); `a/x/../b` → ["a","b"] (lexical, as Go's filepath.IsLocal: nothing
 * is looked up on disk). Absolute paths and `..` that climbs above the root are refused through
 * `refuse`, which names them in the caller's terms (UNSAFE_LAYER for a layer by default).
 */
export function normaliseEntryPath(
  raw: string,
  what = raw,
  refuse: RefuseMemberPath = refuseLayerEntry,
): string[] {
  if (raw.startsWith("/")) throw refuse(what, "is an absolute path");
  const out: string[] = [];
  for (const part of raw.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length === 0) throw refuse(what, "climbs out of the archive root with '..'");
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out;
}
