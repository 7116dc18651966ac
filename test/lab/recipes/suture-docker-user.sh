#!/bin/sh
# The user of the lab's suture-in-Docker image (test/lab/suture-docker-image.ts): `suture`, uid and
# gid 1000 (what `docker run --user 1000:1000` runs as), with a home for its cache and subordinate
# id ranges, so a user namespace maps every owner an image has (a single-id mapping maps only the
# user's own id and cannot unpack images with files of other owners). Usage: suture-docker-user.sh ROOTFS
set -eu
root="$1"
grep -q '^suture:' "$root/etc/passwd" || printf '%s\n' 'suture:x:1000:1000:suture:/home/suture:/bin/sh' >>"$root/etc/passwd"
grep -q '^suture:' "$root/etc/group" || printf '%s\n' 'suture:x:1000:' >>"$root/etc/group"
grep -q '^suture:' "$root/etc/shadow" || printf '%s\n' 'suture:!:20454::::::' >>"$root/etc/shadow"
for f in subuid subgid; do
  printf '%s\n' 'suture:100000:65536' >"$root/etc/$f"
  chmod 0644 "$root/etc/$f"
done
mkdir -p "$root/home/suture"
chown 1000:1000 "$root/home/suture"
chmod 0755 "$root/home/suture"
# Inside a container without CAP_SYS_ADMIN a setuid-root newuidmap fails ("write to uid_map failed:
# Operation not permitted"): it opens the map file as euid 0, and the kernel wants the opener to be
# the namespace's owner or to hold CAP_SYS_ADMIN over it. With file capabilities instead (as
# Fedora ships them) it keeps the caller's euid, the owner, and Docker's default set has
# CAP_SETUID, CAP_SETGID and CAP_SETFCAP (mapping the namespace's root needs the last).
chmod 0755 "$root/usr/bin/newuidmap" "$root/usr/bin/newgidmap"
setcap cap_setuid,cap_setfcap=ep "$root/usr/bin/newuidmap"
setcap cap_setgid=ep "$root/usr/bin/newgidmap"
