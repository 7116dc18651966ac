import type { NativeHook } from "./stand-ins.ts";

/**
 * dpkg-maintscript-helper's calls in a postinst that do nothing, recorded instead of run.
 * debhelper writes one call per moved directory or conffile into every maintainer script
 * (tzdata's postinst: 16 `dir_to_symlink … -- "$@"`), and each is a shell that forks `basename`
 * and `dpkg --validate-version` before it finds there is nothing to do: tens of ms a call under
 * QEMU. In a postinst (dpkg 1.21.22 and 1.21.23, bookworm) the four commands act only on
 * leftovers of an interrupted switch:
 * - `dir_to_symlink`: `configure`, `<dir>.dpkg-backup` a directory, `<dir>` a real directory with
 *   `.dpkg-staging-dir` in it (there is no version guard here: see the helper's own comment);
 * - `symlink_to_dir`: `configure` and `<link>.dpkg-backup` a symlink;
 * - `rm_conffile`: `configure`, an old version, `<file>.dpkg-backup` or `.dpkg-remove` existing,
 *   then the version guard `le-nl`;
 * - `mv_conffile`: `configure`, an old version, `<old>.dpkg-remove` or `<old>` existing, then the
 *   version guard.
 * The stand-in checks exactly these conditions with shell builtins (`[` follows symlinks as the
 * helper's own `[` does), so the version guard never needs evaluating: where it matters, leftovers
 * exist and the real helper runs. So does every call the helper would refuse (bad arguments, a
 * missing `--`, a last-version `dpkg --validate-version` might reject: only plain
 * `digit[alnum.+~-]*` versions not ending in `-` are taken, which dpkg accepts), any other script or
 * command, and any setting that changes the helper (DPKG_ROOT other than `/`, DPKG_DEBUG,
 * DPKG_DATADIR). Recorded calls need nothing afterwards.
 */
const DECIDES = (
  real: string,
) => `# suture: only a postinst call that provably does nothing is recorded; any other runs the helper.
valid_version() {
  case "$1" in
  [0123456789]*) ;;
  *) return 1 ;;
  esac
  case "$1" in
  *[!0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.+~-]* | *-) return 1 ;;
  esac
}
does_nothing() {
  [ "$DPKG_MAINTSCRIPT_NAME" = postinst ] && [ -n "$DPKG_MAINTSCRIPT_PACKAGE" ] || return 1
  [ -z "$DPKG_DEBUG" ] && [ -z "$DPKG_DATADIR" ] || return 1
  case "$DPKG_ROOT" in '' | /) ;; *) return 1 ;; esac
  [ -r /usr/share/dpkg/sh/dpkg-error.sh ] || return 1
  command="$1"
  shift
  case "$command" in
  dir_to_symlink) path="\${1%/}" target="$2" last="$3" ;;
  symlink_to_dir | mv_conffile) path="$1" target="$2" last="$3" ;;
  rm_conffile) path="$1" target=- last="$2" ;;
  *) return 1 ;;
  esac
  [ "$last" != -- ] || last=
  [ -z "$last" ] || valid_version "$last" || return 1
  case "$path" in /*) ;; *) return 1 ;; esac
  [ -n "$target" ] || return 1
  while [ $# -gt 0 ] && [ "$1" != -- ]; do shift; done
  [ $# -gt 0 ] || return 1
  shift
  [ -n "$1" ] || return 1
  case "$command" in
  dir_to_symlink)
    [ "$1" != configure ] || [ ! -d "$path.dpkg-backup" ] || [ -h "$path" ] || [ ! -d "$path" ] ||
      [ ! -f "$path/.dpkg-staging-dir" ]
    ;;
  symlink_to_dir)
    case "$path" in */) return 1 ;; esac
    [ "$1" != configure ] || [ ! -h "$path.dpkg-backup" ]
    ;;
  rm_conffile)
    [ "$1" != configure ] || [ -z "$2" ] && return 0
    valid_version "$2" && [ ! -e "$path.dpkg-backup" ] && [ ! -e "$path.dpkg-remove" ]
    ;;
  mv_conffile)
    case "$target" in /*) ;; *) return 1 ;; esac
    [ "$1" != configure ] || [ -z "$2" ] && return 0
    valid_version "$2" && [ ! -e "$path.dpkg-remove" ] && [ ! -h "$path.dpkg-remove" ] && [ ! -e "$path" ]
    ;;
  esac
}
does_nothing "$@" || exec ${real} "$@"`;

export const MAINTSCRIPT_HELPER: NativeHook = {
  package: "dpkg",
  anyPackage: true,
  hook: "dpkg-maintscript-helper",
  program: "/usr/bin/dpkg-maintscript-helper",
  // The two texts differ only in their version string.
  texts: new Map([
    ["aa4036297b2b85b7dce70653e3f41437f771c1b5c78f8d3646914a2333e6d32e", "1.21.22 (bookworm)"],
    ["ab44bb8f3454a2ef0991dcfd832c99e89747f6a9624ffc7095786530f627e2ff", "1.21.23 (bookworm)"],
  ]),
  decides: DECIDES,
  async run(_root, args) {
    return { done: true, detail: `${args[0]} with nothing to do` };
  },
};
