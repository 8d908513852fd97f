#!/usr/bin/env bash
# Configures (once) and builds into $1 (default: build) with extra meson options after it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"; shift || true
if [ ! -f "$dir/build.ninja" ]; then meson setup "$dir" "$@" >/dev/null; fi
ninja -C "$dir" ${ALKNET_TARGETS:-} >/dev/null
