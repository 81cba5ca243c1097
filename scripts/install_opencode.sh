#!/usr/bin/env bash
# Install the pinned opencode CLI (npm package opencode-ai) into a project-local prefix.
#
#   scripts/install_opencode.sh            -> installs into .tools/opencode, prints the binary path
#   OPENCODE_PREFIX=/opt/oc scripts/...    -> another prefix
#
# Idempotent: when the pinned version is already there, nothing is downloaded.
# razard's opencode rung finds the binary on its PATH (put .tools/opencode/bin there);
# the integration test looks in .tools/opencode/bin as well.
set -euo pipefail

OPENCODE_VERSION="1.18.33"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${OPENCODE_PREFIX:-$ROOT/.tools/opencode}"
BIN="$PREFIX/bin/opencode"

if ! command -v npm >/dev/null 2>&1; then
    echo "install_opencode.sh: npm is not installed; install Node.js >= 18 with npm" \
        "(Debian: apt-get install nodejs npm) and run this again" >&2
    exit 1
fi

installed_version() {
    local pkg="$PREFIX/lib/node_modules/opencode-ai/package.json"
    [ -f "$pkg" ] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$pkg" 2>/dev/null || true
}

if [ -x "$BIN" ] && [ "$(installed_version)" = "$OPENCODE_VERSION" ]; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$PREFIX"
echo "installing opencode-ai@$OPENCODE_VERSION into $PREFIX" >&2
npm install --global --prefix "$PREFIX" --no-fund --no-audit --loglevel=error \
    "opencode-ai@$OPENCODE_VERSION" >&2

if [ ! -x "$BIN" ]; then
    echo "install_opencode.sh: npm finished but $BIN is missing" >&2
    exit 1
fi
if ! "$BIN" --version >/dev/null 2>&1; then
    echo "install_opencode.sh: $BIN does not run (wrong platform package?)" >&2
    exit 1
fi
echo "$BIN"
