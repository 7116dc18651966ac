#!/bin/sh
# The top layer of the lab's bookwormMinbaseMarked image: one small file, so the image is a cheap
# two-layer image (tests of the lab cache itself build it in seconds). Usage: marker-layer.sh ROOTFS
set -eu
mkdir -p "$1/etc/suture-lab"
printf '%s\n' 'suture lab marker layer' >"$1/etc/suture-lab/marker"
