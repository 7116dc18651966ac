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

/** A package file's owner and group, by name as its archive or header records them. */
export interface OwnerNames {
  user?: string;
  group?: string;
}

/**
 * Package files' owner and group names resolved to the image's ids, as package managers resolve
 * them when they place a file (apk's `apk_resolve_uid`, rpm's `rpmugUid`): each table is read when a
 * name first needs it and kept until `forget()`. Callers forget after every script they run, since
 * a pre-install script adds the users and groups its package's files belong to. A name the image
 * does not have is `undefined`: what it becomes (the archive's number, root) is the package
 * manager's rule, not this one's.
 */
export class ImageAccounts {
  readonly #root: string;
  #users: Promise<Map<string, number>> | undefined;
  #groups: Promise<Map<string, number>> | undefined;

  constructor(root: string) {
    this.#root = root;
  }

  /** Read the tables again at the next lookup (a script may have changed them). */
  forget(): void {
    this.#users = undefined;
    this.#groups = undefined;
  }

  async ids(owner: OwnerNames): Promise<{ uid: number | undefined; gid: number | undefined }> {
    let uid: number | undefined;
    let gid: number | undefined;
    if (owner.user !== undefined) {
      this.#users ??= imageIds(this.#root, "/etc/passwd");
      uid = (await this.#users).get(owner.user);
    }
    if (owner.group !== undefined) {
      this.#groups ??= imageIds(this.#root, "/etc/group");
      gid = (await this.#groups).get(owner.group);
    }
    return { uid, gid };
  }
}
