#!/bin/sh
# The top layer of the lab's bookwormDefaultReleaseGlob image (on bookwormDefaultRelease): the
# Default-Release becomes the glob "bookworm*", which apt matches against each Release's Suite and
# Codename, so bookworm-security and bookworm-updates are raised to 990 too and their fixes come in
# while trixie (500) still stays out. With the plain "bookworm" they stay at 500, below the
# installed bookworm version's 990, and apt upgrades nothing. Usage: apt-config-default-release-glob.sh ROOTFS
set -eu
printf 'APT::Default-Release "bookworm*";\n' >"$1/etc/apt/apt.conf.d/99default-release"
chmod 0644 "$1/etc/apt/apt.conf.d/99default-release"
