#!/usr/bin/env bash
# Installs what the test suite needs beyond the .NET SDK, from Debian packages, when it is missing:
# redis-server (the Redis counter tests start their own instance on loopback with a private folder).
# A service the package starts is stopped again: nothing listens on Redis's default port because of us.
set -euo pipefail

if command -v redis-server >/dev/null; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "error: redis-server is not on PATH and this user cannot install it; the Redis counter tests start their own." >&2
    echo "       Install it as root: apt-get install -y --no-install-recommends redis-server" >&2
    exit 1
  fi
  sudo="sudo"
fi

echo "==> installing redis-server (Debian package) for the Redis counter tests"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
$sudo systemctl stop redis-server 2>/dev/null || $sudo service redis-server stop 2>/dev/null || true
