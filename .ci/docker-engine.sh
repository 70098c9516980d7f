#!/usr/bin/env bash
# Idempotent: a Docker engine started by hand + the crucible-runner image, built without a
# registry (debootstrap -> docker import -> docker build). Usage: docker-engine.sh <statedir>
# tests/integration/test_docker_executor.py runs it (session fixture). Measured here:
# cold ~50 s (debootstrap ~30 s), warm < 0.5 s. Keep <statedir> short (unix socket paths are
# limited to 108 chars) and on ext4 (overlay2). docs/design/runners.md has the background.
set -euo pipefail
S=${1:?statedir}; mkdir -p "$S"
SOCK=$S/docker.sock; export DOCKER_HOST=unix://$SOCK
CTX=$(cd "$(dirname "$0")/../runner/image" && pwd)
t0=$(date +%s.%N); lap(){ printf '%-28s %6.1fs\n' "$1" "$(echo "$(date +%s.%N) - $t0" | bc)"; }
# 1. packages
command -v dockerd >/dev/null && command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null; }
lap packages
# 2. daemon
if ! docker version >/dev/null 2>&1; then
  [ -f "$S/docker.pid" ] && kill -0 "$(cat "$S/docker.pid")" 2>/dev/null && { echo "dockerd pid alive but not answering" >&2; exit 1; }
  rm -f "$S/docker.pid" "$SOCK"
  nohup setsid dockerd --data-root "$S/data" --exec-root "$S/exec" -H "unix://$SOCK" --pidfile "$S/docker.pid" \
      --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 >"$S/dockerd.log" 2>&1 &
  for i in $(seq 150); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
  docker version >/dev/null
fi
lap dockerd
# 3. base image
if ! docker image inspect crucible-base:bookworm >/dev/null 2>&1; then
  R=$S/rootfs.tmp; rm -rf "$R"
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  debootstrap --variant=minbase bookworm "$R" "${MIRROR:-http://deb.debian.org/debian}" >"$S/debootstrap.log" 2>&1
  rm -f "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/apt/*.bin "$R"/etc/apt/sources.list; rm -rf "$R"/var/lib/apt/lists/*
  cp /etc/apt/sources.list.d/debian.sources "$R"/etc/apt/sources.list.d/debian.sources
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Languages "none";\n' >"$R"/etc/apt/apt.conf.d/90crucible
  lap debootstrap
  tar --numeric-owner -C "$R" -c . | docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - crucible-base:bookworm >/dev/null
  rm -rf "$R"
  lap import
fi
# 4. runner image, tagged by content hash of build context
H=$(cd "$CTX" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
if ! docker image inspect "crucible-runner:$H" >/dev/null 2>&1; then
  docker build -q --network host -t "crucible-runner:$H" "$CTX" >"$S/build.log" 2>&1 || { cat "$S/build.log"; exit 1; }
  lap build
fi
docker tag "crucible-runner:$H" crucible-runner:current
lap done
echo "image crucible-runner:$H size=$(docker image inspect -f '{{.Size}}' crucible-runner:$H)"
