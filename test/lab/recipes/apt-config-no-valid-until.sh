#!/bin/sh
# The top layer of the lab's bookwormNoValidUntil image: what images of archived releases and
# snapshot.debian.org set so apt accepts Release files past their Valid-Until.
# Usage: apt-config-no-valid-until.sh ROOTFS
set -eu
mkdir -p "$1/etc/apt/apt.conf.d"
cat >"$1/etc/apt/apt.conf.d/99no-check-valid-until" <<'CONF'
// snapshot and archive mirrors serve Release files whose Valid-Until has passed
Acquire::Check-Valid-Until "false";
CONF
chmod 0644 "$1/etc/apt/apt.conf.d/99no-check-valid-until"
