#!/usr/bin/env bash
# Installs the Debian packages suture's tests and lab need. Idempotent; run as root.
set -euo pipefail
packages=(
  runc crun            # OCI runtimes (runc works here; crun kept for other hosts)
  docker.io            # real dockerd for daemon-transport tests
  docker-registry      # real CNCF distribution registry for loopback tests
  apache2-utils        # htpasswd for the registry's basic-auth config
  openssl              # token-auth lab: self-signed certificate for the registry's token issuer
  skopeo umoci         # independent checkers of our OCI output
  mmdebstrap debian-archive-keyring  # real Debian images from the archive
  gpg                  # test keys for tampered-repository tests
  rpm                  # rpm.vercmp: the reference the RPM version-order tests compare against;
                       # rpm -qa over rpmdb readers; rpmbuild/rpmsign/rpm2cpio: the .rpm files
                       # the rpm format tests read; the rpm lab (test/lab/rpm-repo.ts) builds its
                       # rpms from Debian's debs with rpmbuild (dpkg-deb reads them) and signs them
                       # with rpmsign. Its images get dnf/zypper from the archive by mmdebstrap,
                       # so the host needs neither.
  db5.3-util           # db5.3_load: writes real Berkeley DB hash Packages for the rpm BDB reader tests
  createrepo-c         # real rpm-md repositories (repomd.xml, primary.xml.{gz,xz,zst})
  cpio                 # rpm2cpio | cpio -t: the reference listing of a .rpm payload
  zstd libcap2-bin       # layer tests: decompress zstd layers independently; setcap/getcap
  ca-certificates      # the CA-bundle test compares with the host's update-ca-certificates output
  podman uidmap        # podman:/docker-daemon: against a real `podman system service`, rootful and
                       # rootless (newuidmap/newgidmap map the lab user's subordinate ids)
  redis-server         # serve/worker's scaled-out queue (BullMQ): tests start their own on loopback
  postgresql           # serve's Postgres store: tests initdb their own server in a temp dir
  chromium             # the serve dashboard's browser test (playwright-core drives Debian's chromium)
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

# Optional, not run by default: emulation for the lab's foreign-architecture images (building
# bookwormMinbaseArm64 runs mmdebstrap --arch=arm64 under qemu-user). test/lab/images.ts invokes
# `install-system-deps.sh --arm64-emulation` only when an arm64 image is requested.
install_arm64_emulation() {
  local need=()
  # arch-test: mmdebstrap refuses foreign architectures without it ("install arch-test for foreign
  # architecture support").
  for p in qemu-user-static binfmt-support arch-test; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  # Containers and minimal hosts often lack the binfmt_misc mount that registration needs.
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || update-binfmts --enable >/dev/null 2>&1 || true
  if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
    echo "error: qemu-aarch64 binfmt handler is not enabled; check update-binfmts --display" >&2
    return 1
  fi
}
if [[ "${1:-}" == "--arm64-emulation" ]]; then
  install_arm64_emulation
fi
