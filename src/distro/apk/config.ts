import { quoteUntrusted } from "../../errors/errors.ts";
import { listDirInRoot, readFileInRoot } from "../../fs/in-root.ts";
import { mirroredUrl } from "../mirrors.ts";
import { isValidApkKeyName } from "./signature.ts";

/**
 * The image's apk configuration under /etc/apk, read the way apk-tools 2.x reads it, for both apk
 * engines: the native one fetches and verifies from it, the sandbox one hands the image's apk a
 * rewritten copy (mirrors) without touching the image's own files.
 */
export interface ApkRepository {
  /** The URL as the image lists it (trailing slashes removed). */
  url: string;
  /** The URL to fetch from: `url` with `--mirror` applied. */
  fetchUrl: string;
  /** `@tag` of a tagged repository (`@edge https://…`): apk installs from it only when asked by tag. */
  tag?: string;
  /** Where it is listed, for messages: `/etc/apk/repositories:2`. */
  origin: string;
}

export interface ApkConfig {
  repositories: ApkRepository[];
  /** `/etc/apk/arch` (x86_64, aarch64, …), when the image has one. */
  arch?: string;
  /** Package names (with constraints) the image asked for explicitly, from `/etc/apk/world`. */
  world: string[];
  /** What apk would warn about in the configuration (lines it leaves out). */
  warnings: string[];
  /**
   * Public keys the image trusts, file name → PEM: `/etc/apk/keys`, what apk itself reads (a key
   * removed from there is distrusted, even if alpine-keys still ships it); only an image with none
   * there gets Alpine's `/usr/share/apk/keys/<arch>` (alpine-keys ships every signer there).
   */
  keys: Map<string, Buffer>;
}

export const APK_REPOSITORIES_FILE = "/etc/apk/repositories";
export const APK_REPOSITORIES_DIR = "/etc/apk/repositories.d/";
export const APK_ARCH_FILE = "/etc/apk/arch";
export const APK_WORLD_FILE = "/etc/apk/world";
export const APK_KEYS_DIR = "/etc/apk/keys/";

/**
 * Repository lines of one file: one URL or local path a line, optionally after an `@tag`; blank
 * lines and `#` comments skipped, as apk does. A line apk could not use is left out with a
 * warning pushed to `warnings` (apk warns and goes on too).
 */
export function parseApkRepositories(
  text: string,
  file: string,
  mirrors: Readonly<Record<string, string>> = {},
  warnings: string[] = [],
): ApkRepository[] {
  const out: ApkRepository[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const words = line.split(/\s+/);
    const tag = words[0]!.startsWith("@") ? words.shift()!.slice(1) : undefined;
    const origin = `${file}:${i + 1}`;
    if (words.length !== 1 || tag === "") {
      warnings.push(
        `${origin}: ${quoteUntrusted(line)} is not an apk repository line ("[@tag] URL"), left out as apk leaves it out; fix the image's ${file}`,
      );
      return;
    }
    const url = words[0]!.replace(/\/+$/, "");
    out.push({ url, fetchUrl: mirroredUrl(url, mirrors), ...(tag ? { tag } : {}), origin });
  });
  return out;
}

/** The image's apk configuration from its root (the sandbox's merged dir). */
export async function readApkConfig(
  root: string,
  mirrors: Readonly<Record<string, string>> = {},
): Promise<ApkConfig> {
  const text = async (path: string) => (await readFileInRoot(root, path))?.toString("utf8");
  const repositories: ApkRepository[] = [];
  const main = await text(APK_REPOSITORIES_FILE);
  const warnings: string[] = [];
  if (main !== undefined)
    repositories.push(...parseApkRepositories(main, APK_REPOSITORIES_FILE, mirrors, warnings));
  for (const name of await listDirInRoot(root, APK_REPOSITORIES_DIR)) {
    if (!name.endsWith(".list")) continue;
    const path = `${APK_REPOSITORIES_DIR}${name}`;
    const content = await text(path);
    if (content !== undefined) repositories.push(...parseApkRepositories(content, path, mirrors, warnings));
  }
  const arch = (await text(APK_ARCH_FILE))?.trim() || undefined;
  const world = ((await text(APK_WORLD_FILE)) ?? "").split(/\s+/).filter(Boolean);
  const keys = new Map<string, Buffer>();
  const keyDirs = [
    APK_KEYS_DIR,
    ...(arch && /^[a-z0-9_]+$/.test(arch) ? [`/usr/share/apk/keys/${arch}/`] : []),
  ];
  for (const dir of keyDirs) {
    if (keys.size > 0) break;
    for (const name of await listDirInRoot(root, dir)) {
      if (keys.has(name) || !isValidApkKeyName(name)) continue;
      const pem = await readFileInRoot(root, `${dir}${name}`);
      if (pem) keys.set(name, pem);
    }
  }
  return { repositories, arch, world, keys, warnings };
}

/** The repository tags a world pins packages to (`zlib@edge` → `edge`). */
export function worldTags(world: readonly string[]): Set<string> {
  return new Set(world.flatMap((w) => /@([^<>=~]+)/.exec(w)?.[1] ?? []));
}
