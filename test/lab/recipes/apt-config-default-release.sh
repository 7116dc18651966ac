#!/bin/sh
# The top layer of the lab's bookwormDefaultRelease image: trixie (testing at the time of the old
# "mixed stable/testing" setups) listed beside bookworm, with APT::Default-Release "bookworm".
# apt then ranks bookworm's and bookworm-security's versions 990 and trixie's 500, so an upgrade
# stays on bookworm and nothing comes from trixie. Usage: apt-config-default-release.sh ROOTFS
set -eu
cat >"$1/etc/apt/sources.list.d/trixie.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
chmod 0644 "$1/etc/apt/sources.list.d/trixie.sources"
printf 'APT::Default-Release "bookworm";\n' >"$1/etc/apt/apt.conf.d/99default-release"
chmod 0644 "$1/etc/apt/apt.conf.d/99default-release"
