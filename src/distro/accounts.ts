import { readFileInRoot } from "../fs/in-root.ts";

/**
 * An image's user or group names → numeric ids, from its `/etc/passwd` or `/etc/group` (`name:x:id:…`
 * lines), as the image's own programs would look them up: the first entry of a name wins, as
 * getpwnam/getgrnam find it. Malformed lines are skipped; a missing file is an empty table.
 */
export async function imageIds(
  root: string,
  file: "/etc/passwd" | "/etc/group",
): Promise<Map<string, number>> {
  const map = new Map<string, number>();
  const text = (await readFileInRoot(root, file))?.toString("utf8") ?? "";
  for (const line of text.split("\n")) {
    const [name, , id] = line.split(":");
    if (name && id && /^\d{1,10}$/.test(id) && !map.has(name)) map.set(name, Number(id));
  }
  return map;
}
