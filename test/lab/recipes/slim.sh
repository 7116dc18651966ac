#!/bin/sh
# The top layer of the lab's bookwormSlim image: what Docker's official debian:*-slim images do to
# a Debian rootfs. They carry /etc/dpkg/dpkg.cfg.d/docker (the file debuerreotype's slimify step
# writes: each path-exclude after a comment naming the packages with such files, then every
# path-include) and lack the files those rules exclude. Usage: slim.sh ROOTFS (as root: dpkg -S and
# find run in the rootfs by chroot, so the image's own paths and symlinks are what they look at).
# Its content is part of the recipe hash (test/lab/images.ts), so editing it rebuilds the image.
set -eu
root="$1"
export LC_ALL=C
cfg="$root/etc/dpkg/dpkg.cfg.d/docker"

excludes='/usr/share/doc/*
/usr/share/groff/*
/usr/share/info/*
/usr/share/linda/*
/usr/share/lintian/overrides/*
/usr/share/locale/*
/usr/share/man/*'
includes='/usr/share/doc/*/copyright
/usr/share/doc/kde/HTML/C/*
/usr/share/gnome/help/*/C/*
/usr/share/locale/all_languages
/usr/share/locale/currency/*
/usr/share/locale/l10n/*
/usr/share/locale/languages
/usr/share/locale/locale.alias
/usr/share/omf/*/*-C.emf'

# The patterns are data: no globbing; one per line.
set -f
IFS='
'

# find(1) arguments matching any include, kept in the positional parameters.
set --
for pattern in $includes; do
	if [ $# -gt 0 ]; then set -- "$@" -o; fi
	set -- "$@" -path "$pattern"
done

mkdir -p "${cfg%/*}"
cat >"$cfg" <<'HEADER'
# This is the "slim" variant of the Debian base image.
# Many files which are normally unnecessary in containers are excluded,
# and this configuration file keeps them that way.
HEADER

for pattern in $excludes; do
	{
		echo
		echo "# dpkg -S '$pattern'"
		if owners="$(chroot "$root" dpkg -S "$pattern" 2>&1)"; then
			# "pkg1, pkg2: path" lines -> the owning packages, sorted, on one line.
			printf '%s\n' "$owners" | sed 's/: .*//; s/, /\n/g' | sort -u | xargs
		else
			printf '%s\n' "$owners"
		fi | fold -w 76 -s | sed 's/^/#  /'
		echo "path-exclude $pattern"
	} >>"$cfg"

	dir="${pattern%/\*}"
	[ -d "$root$dir" ] || continue
	# Files first (what an include matches stays; directories and symlinks are dpkg's to keep),
	# then empty directories and dangling symlinks until none is left.
	chroot "$root" find "$dir" -depth -mindepth 1 ! \( "$@" \) ! \( -type d -o -type l \) -exec rm -f {} +
	while [ -n "$(chroot "$root" find "$dir" -depth -mindepth 1 \( -empty -o -xtype l \) -print -exec rm -rf {} \;)" ]; do :; done
done

{
	echo
	for pattern in $includes; do echo "path-include $pattern"; done
} >>"$cfg"
chmod 0644 "$cfg"
