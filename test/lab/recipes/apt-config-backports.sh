#!/bin/sh
# The top layer of the lab's bookwormBackports image: bookworm-backports enabled the way Debian
# documents it. Its Release says NotAutomatic + ButAutomaticUpgrades, so apt ranks it 100 and an
# upgrade must not move anything to a ~bpo version. Usage: apt-config-backports.sh ROOTFS
set -eu
cat >"$1/etc/apt/sources.list.d/backports.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
chmod 0644 "$1/etc/apt/sources.list.d/backports.sources"
