#!/bin/sh
# mmdebstrap customize hook: make a freshly bootstrapped rootfs look like the official debian:bookworm
# image where a patcher can tell. Usage: official-rootfs.sh ROOTFS
# Its content is part of every lab recipe hash (test/lab/images.ts), so editing it rebuilds the images.
set -eu
root="$1"

# The official image ships deb822 sources that include bookworm-security; the build itself used
# bookworm main only, so the installed packages stay old and security fixes are really pending.
rm -f "$root/etc/apt/sources.list"
mkdir -p "$root/etc/apt/sources.list.d"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<'SOURCES'
Types: deb
# suture test lab: installed from bookworm main only; these sources are what debian:bookworm ships
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# suture test lab: bookworm-security holds the fixes the lab's patch tests expect to apply
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
chmod 0644 "$root/etc/apt/sources.list.d/debian.sources"

# Container engines bind-mount these; keep them present (mount targets) but host-independent.
: >"$root/etc/resolv.conf"
: >"$root/etc/hostname"
chmod 0644 "$root/etc/resolv.conf" "$root/etc/hostname"

# Like the official image: no package lists, no downloaded archives, no binary caches.
# /var/lib/dpkg is left untouched: it is the installed-package database patchers read.
rm -rf "$root"/var/lib/apt/lists/*
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/archives/partial/*
