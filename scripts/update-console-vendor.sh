#!/usr/bin/env bash
# Refreshes the console's one third-party file, Chart.js, from the npm registry: the console has no front-end build,
# so the gateway (and `custos demo` on a machine with only the .NET SDK) serves the file committed here.
# Usage: scripts/update-console-vendor.sh [version]   (default: the version pinned below)
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-4.6.1}"
target=src/Custos.Gateway/Console/wwwroot/lib
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "chart.js@$version" >/dev/null && tar xzf "chart.js-$version.tgz")
cp "$work/package/dist/chart.umd.min.js" "$target/chart.umd.min.js"
cp "$work/package/LICENSE.md" "$target/chart.js.LICENSE.md"
echo "Chart.js $version -> $target/chart.umd.min.js ($(wc -c <"$target/chart.umd.min.js") bytes); update the version in docs/console.md."
