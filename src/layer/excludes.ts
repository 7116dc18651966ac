/**
 * Paths a patch layer leaves out. An excluded path is simply not written: whatever the image's
 * lower layers hold there stays visible, so excluding never deletes anything from the image.
 */

/** What the exclude predicate learns about an upper-dir entry besides its path. */
export interface ExcludeInfo {
  /** "whiteout" is a deletion recorded by overlayfs. */
  type: "file" | "directory" | "symlink" | "whiteout" | "other";
  /** Byte size for regular files, 0 otherwise. */
  size: number;
}

/**
 * Decides whether an upper-dir entry is left out of the layer. `path` is the absolute path inside
 * the container ("/var/log/dpkg.log"). Returning true for a directory leaves out its whole subtree.
 */
export type ExcludePredicate = (path: string, info: ExcludeInfo) => boolean;

export interface ExcludeRule {
  /**
   * Absolute glob: `*` and `?` match within one path segment, `**` matches across segments.
   * `/dir/**` matches everything below /dir but not /dir itself.
   */
  pattern: string;
  /** Only matches when the entry is an empty regular file (a runtime-made mount point). */
  onlyIfEmptyFile?: boolean;
  /** Why the path is not part of what a patch changes. */
  why: string;
}

/**
 * What installing packages with apt/dpkg inside an OCI runtime leaves behind that is not part of
 * the patch. Every rule names its reason; keep the list explicit rather than clever.
 */
export const DEFAULT_EXCLUDES: readonly ExcludeRule[] = [
  // Package-manager caches and logs: large, useless in an image, and regenerated on demand.
  {
    pattern: "/var/lib/apt/lists/**",
    why: "apt's downloaded repository indexes; `apt-get update` refetches them",
  },
  { pattern: "/var/cache/apt/**", why: "downloaded .debs and apt's binary package caches" },
  { pattern: "/var/cache/debconf/*-old", why: "debconf's backup copies of its databases" },
  { pattern: "/var/cache/apk/**", why: "apk's repository indexes and downloaded packages" },
  { pattern: "/etc/apk/cache/**", why: "apk's package cache, when an image enables one" },
  { pattern: "/var/lib/dpkg/*-old", why: "dpkg's backups of status, available, diversions and statoverride" },
  { pattern: "/var/log/apt/**", why: "apt's history and terminal logs of the patch run" },
  { pattern: "/var/log/dpkg.log", why: "dpkg's log of the patch run" },
  { pattern: "/var/log/alternatives.log", why: "update-alternatives' log of the patch run" },
  {
    pattern: "/var/cache/ldconfig/aux-cache",
    why: "ldconfig's cache of libraries by inode and ctime: valid only on the filesystem it was written on (no entry matches once a layer is extracted), and different on every run, so keeping it would make two identical patches differ",
  },
  // Scratch space.
  { pattern: "/tmp/**", why: "temporary files of the patch run" },
  { pattern: "/var/tmp/**", why: "temporary files of the patch run" },
  // Runtime artefacts: the OCI runtime mounts these; anything under them in the upper dir is a
  // mount point or state of the sandbox container, not image content.
  { pattern: "/dev", why: "mount point the runtime creates when the image lacks it" },
  { pattern: "/dev/**", why: "device nodes and mount points the runtime creates" },
  { pattern: "/proc", why: "mount point the runtime creates when the image lacks it" },
  { pattern: "/proc/**", why: "procfs mount point contents" },
  { pattern: "/sys", why: "mount point the runtime creates when the image lacks it" },
  { pattern: "/sys/**", why: "sysfs mount point contents" },
  { pattern: "/run/**", why: "runtime state (pid files, sockets, locks) of the sandbox container" },
  {
    pattern: "/etc/resolv.conf",
    onlyIfEmptyFile: true,
    why: "empty mount point the runtime creates to bind the host's resolver config",
  },
  {
    pattern: "/etc/hosts",
    onlyIfEmptyFile: true,
    why: "empty mount point the runtime creates for /etc/hosts",
  },
  {
    pattern: "/etc/hostname",
    onlyIfEmptyFile: true,
    why: "empty mount point the runtime creates for /etc/hostname",
  },
  { pattern: "/.dockerenv", onlyIfEmptyFile: true, why: "marker file Docker creates in every container" },
];

/** Compile rules into one predicate. Patterns that are not absolute never match. */
export function excludeMatcher(rules: readonly ExcludeRule[]): ExcludePredicate {
  const compiled = rules.map((r) => ({ re: globToRegExp(r.pattern), onlyIfEmptyFile: r.onlyIfEmptyFile }));
  return (path, info) =>
    compiled.some(
      (c) => c.re.test(path) && (!c.onlyIfEmptyFile || (info.type === "file" && info.size === 0)),
    );
}

/** The predicate buildPatchLayer uses when the caller gives none. */
export const defaultExclude: ExcludePredicate = excludeMatcher(DEFAULT_EXCLUDES);

/** `**` → any characters; `*` → any within a segment; `?` → one character within a segment. */
export function globToRegExp(pattern: string): RegExp {
  let re = "^";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*" && pattern[i + 1] === "*") {
      re += ".*";
      i++;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[\\^$.|+(){}[\]]/g, "\\$&");
  }
  return new RegExp(`${re}$`, "s");
}
