#!/bin/sh
# The top layer of the lab's bookwormPinned image: apt preferences and a hold that change what an
# upgrade installs. Usage: apt-config-pins.sh ROOTFS (run on the unpacked rootfs, no chroot)
#  - tzdata pinned with Pin-Priority 1001 to the version installed: apt keeps it as candidate;
#  - liblzma5 pinned below zero in bookworm-security (n= matches its Codename): never from there;
#  - apt held (dpkg selection "hold"): apt-get upgrade leaves it, but may upgrade libapt-pkg6.0.
set -eu
root="$1"
status="$root/var/lib/dpkg/status"
tzdata=$(awk '/^Package: /{p=$2} /^Version: /{if (p=="tzdata") print $2}' "$status")
[ -n "$tzdata" ]
mkdir -p "$root/etc/apt/preferences.d"
cat >"$root/etc/apt/preferences.d/suture-lab.pref" <<PREF
Explanation: keep the installed time zone data
Package: tzdata
Pin: version $tzdata
Pin-Priority: 1001

Explanation: never take liblzma5 from the security suite
Package: liblzma5
Pin: release n=bookworm-security
Pin-Priority: -1
PREF
chmod 0644 "$root/etc/apt/preferences.d/suture-lab.pref"
# What `apt-mark hold apt` writes: the selection field of apt's status entry.
sed -i '/^Package: apt$/,/^$/ s/^Status: install ok installed$/Status: hold ok installed/' "$status"
grep -q '^Status: hold ok installed$' "$status"
