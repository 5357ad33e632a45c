#!/usr/bin/env bash
# Installs what the test suite needs beyond the .NET SDK, from Debian packages, when it is missing:
# - redis-server (the Redis counter tests start their own instance on loopback with a private folder);
# - postgresql (the PostgreSQL store tests run their own initdb and postgres on loopback with a private folder);
# - chromium (the browser tests in tests/Custos.Browser.Tests drive Debian's headless Chromium through Playwright;
#   Playwright never downloads a browser of its own).
# A service a package starts is stopped again (and PostgreSQL's cluster kept from starting at boot): nothing listens
# on Redis's or PostgreSQL's default port because of us. Does nothing when all three are there.
set -euo pipefail

have_postgres() {
  if command -v postgres >/dev/null && command -v initdb >/dev/null; then
    return 0
  fi
  local bin
  for bin in /usr/lib/postgresql/*/bin; do
    if [ -x "$bin/postgres" ] && [ -x "$bin/initdb" ]; then
      return 0
    fi
  done
  return 1
}

# The browser tests launch $CUSTOS_CHROMIUM when set, else /usr/bin/chromium, else chromium on the PATH.
have_chromium() {
  if [ -n "${CUSTOS_CHROMIUM:-}" ] && [ -x "$CUSTOS_CHROMIUM" ]; then
    return 0
  fi
  [ -x /usr/bin/chromium ] || command -v chromium >/dev/null
}

packages=()
if ! command -v redis-server >/dev/null; then
  packages+=(redis-server)
fi
if ! have_postgres; then
  packages+=(postgresql)
fi
if ! have_chromium; then
  packages+=(chromium)
fi
if [ "${#packages[@]}" -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "error: ${packages[*]} missing and this user cannot install them; the Redis and PostgreSQL tests start their own servers" >&2
    echo "       and the browser tests drive Debian's Chromium." >&2
    echo "       Install them as root: apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 1
  fi
  sudo="sudo"
fi

echo "==> installing ${packages[*]} (Debian packages) for the Redis, PostgreSQL and browser tests"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

for package in "${packages[@]}"; do
  case "$package" in
    redis-server)
      $sudo systemctl stop redis-server 2>/dev/null || $sudo service redis-server stop 2>/dev/null || true
      ;;
    postgresql)
      # The package creates and starts a cluster ("main"): stop every cluster and keep it from starting again.
      if command -v pg_lsclusters >/dev/null; then
        while read -r version cluster _; do
          $sudo pg_ctlcluster "$version" "$cluster" stop 2>/dev/null || true
          if [ -f "/etc/postgresql/$version/$cluster/start.conf" ]; then
            echo manual | $sudo tee "/etc/postgresql/$version/$cluster/start.conf" >/dev/null
          fi
        done < <(pg_lsclusters --no-header 2>/dev/null || true)
      fi
      $sudo systemctl disable --now postgresql 2>/dev/null || $sudo service postgresql stop 2>/dev/null || true
      ;;
  esac
done
