#!/usr/bin/env bash
# Installs the Debian packages suture's tests and lab need. Idempotent; run as root.
set -euo pipefail
packages=(
  runc crun            # OCI runtimes (runc works here; crun kept for other hosts)
  docker.io            # real dockerd for daemon-transport tests
  docker-registry      # real CNCF distribution registry for loopback tests
  apache2-utils        # htpasswd for the registry's basic-auth config
  skopeo umoci         # independent checkers of our OCI output
  mmdebstrap debian-archive-keyring  # real Debian images from the archive
  gpg                  # test keys for tampered-repository tests
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
