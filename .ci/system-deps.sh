#!/usr/bin/env bash
# Install the Debian packages a step needs, only when they are missing.
#   python: python3-venv        run: npm (to fetch Node 22 once)
#   test:   npm, chromium, bubblewrap, a running PostgreSQL on 127.0.0.1:5432
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  [ ${#need[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "Installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}

case "${1:-}" in
  python)
    python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
    apt_install
    ;;
  run)
    have_cmd npm || need+=(npm)
    have_cmd git || need+=(git)
    apt_install
    ;;
  test)
    have_cmd npm || need+=(npm)
    have_cmd git || need+=(git)
    [ -x /usr/bin/chromium ] || need+=(chromium)
    have_cmd pg_isready || need+=(postgresql)
    have_cmd bwrap || need+=(bubblewrap)
    apt_install
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
      echo "PostgreSQL is not answering on 127.0.0.1:5432; starting the local cluster"
      ver=$(ls /etc/postgresql | sort -V | tail -1)
      pg_ctlcluster --skip-systemctl-redirect "$ver" main start || pg_ctlcluster "$ver" main start
      for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
      pg_isready -h 127.0.0.1 -p 5432
    fi
    ;;
  *)
    echo "usage: $0 python|run|test" >&2
    exit 2
    ;;
esac
