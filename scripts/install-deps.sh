#!/usr/bin/env bash
# Installs what Flotilla needs on a fresh Debian machine (as root, Node 20 present) and builds it.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(runc crun nats-server containerd docker-registry busybox-static containernetworking-plugins skopeo
      iproute2 zstd libdeflate0 golang-github-containerd-containerd-dev systemd docker-compose docker.io
      # the CRI's tests: crictl/critest come xz-packed; the conformance kit builds its fixture images
      # (python3, gcc, libc6-dev, curl) and critest runs ipcmk/ipcs on the host (util-linux)
      xz-utils python3 gcc libc6-dev curl util-linux)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
