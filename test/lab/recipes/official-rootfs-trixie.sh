#!/bin/sh
# mmdebstrap customize hook for the lab's trixie images: official-rootfs.sh's counterpart writing
# the deb822 sources debian:trixie ships (trixie, trixie-updates, trixie-security). The build used
# trixie main only, so the installed packages stay old and trixie-security's fixes are pending.
# Usage: official-rootfs-trixie.sh ROOTFS
set -eu
root="$1"

rm -f "$root/etc/apt/sources.list"
mkdir -p "$root/etc/apt/sources.list.d"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<'SOURCES'
Types: deb
# suture test lab: installed from trixie main only; these sources are what debian:trixie ships
URIs: http://deb.debian.org/debian
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# suture test lab: trixie-security holds the fixes the lab's patch tests expect to apply
URIs: http://deb.debian.org/debian-security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
chmod 0644 "$root/etc/apt/sources.list.d/debian.sources"

# Container engines bind-mount these; keep them present (mount targets) but host-independent.
: >"$root/etc/resolv.conf"
: >"$root/etc/hostname"
chmod 0644 "$root/etc/resolv.conf" "$root/etc/hostname"

# Like the official image: no package lists, no downloaded archives, no binary caches.
rm -rf "$root"/var/lib/apt/lists/*
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/archives/partial/*
