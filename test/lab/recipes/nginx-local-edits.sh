#!/bin/sh
# The top layer of the lab's bookwormNginx image: the kind of local changes a real image carries and a
# patch must preserve. Usage: nginx-local-edits.sh ROOTFS (run on the unpacked rootfs, no chroot).
# Its content is part of the recipe hash (test/lab/images.ts), so editing it rebuilds the image.
set -eu
root="$1"

# A locally modified conffile of a package that bookworm-security updates (openssl): when the fix is
# installed, dpkg must keep the admin's version instead of prompting or overwriting it.
printf '%s\n' '# suture-lab: local edit to a conffile; a patch must keep this line' >>"$root/etc/ssl/openssl.cnf"
# The same for nginx, whose package also has pending security fixes.
printf '%s\n' '# suture-lab: local edit to a conffile; a patch must keep this line' >>"$root/etc/nginx/nginx.conf"

# A symlink outside any package that points into one: it must survive the target being replaced.
mkdir -p "$root/usr/local/bin"
ln -sfn /usr/bin/openssl "$root/usr/local/bin/ssl"

# Files owned by a non-root uid/gid that no package knows about: ownership must survive patching.
mkdir -p "$root/srv/app"
printf '%s\n' 'application data owned by uid 1000' >"$root/srv/app/data.txt"
chown 1000:1000 "$root/srv/app" "$root/srv/app/data.txt"
chmod 0750 "$root/srv/app"
chmod 0640 "$root/srv/app/data.txt"
