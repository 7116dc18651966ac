/**
 * A tree's entries as comparable lines, for the differential tests that hold a native result to
 * what the real program (dpkg, a maintainer script, the image's apt) leaves: one line per path,
 * naming its type, mode, owner and link target or content hash.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";

/**
 * Every entry below `dir` of `root` (the whole tree by default), keyed by its path in the image
 * (`/etc/ssl/certs/…`): `dir MODE UID:GID`, `link UID:GID TARGET`, `file MODE UID:GID SHA256` or
 * `other MODE UID:GID`. `keep` leaves out a path and, for a directory, what is below it.
 */
export async function treeSnapshot(
  root: string,
  dir = "",
  keep: (path: string) => boolean = () => true,
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string) => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const path = `${rel}/${name}`;
      if (!keep(path)) continue;
      const st = await lstat(join(root, path));
      const facts = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
      if (st.isSymbolicLink()) out.set(path, `link ${st.uid}:${st.gid} ${await readlink(join(root, path))}`);
      else if (st.isDirectory()) {
        out.set(path, `dir ${facts}`);
        await walk(path);
      } else if (st.isFile())
        out.set(
          path,
          `file ${facts} ${createHash("sha256")
            .update(await readFile(join(root, path)))
            .digest("hex")}`,
        );
      else out.set(path, `other ${facts}`);
    }
  };
  await walk(dir);
  return out;
}

/** The paths whose lines differ, as `PATH: LABEL_A line / LABEL_B line` (absent when missing). */
export function treeDifferences(
  a: ReadonlyMap<string, string>,
  b: ReadonlyMap<string, string>,
  [labelA, labelB]: readonly [string, string],
): string[] {
  const differ: string[] = [];
  for (const path of new Set([...a.keys(), ...b.keys()]))
    if (a.get(path) !== b.get(path))
      differ.push(`${path}: ${labelA} ${a.get(path) ?? "absent"} / ${labelB} ${b.get(path) ?? "absent"}`);
  return differ;
}

/** Fail naming every path where the native result differs from the real program's. */
export function assertSameTrees(
  oracle: ReadonlyMap<string, string>,
  native: ReadonlyMap<string, string>,
  what: string,
): void {
  const differ = treeDifferences(oracle, native, ["real", "native"]);
  assert.deepEqual(
    differ,
    [],
    `${what}: the native result differs from the real program's:\n${differ.join("\n")}`,
  );
}
