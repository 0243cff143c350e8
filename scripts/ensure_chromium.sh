#!/usr/bin/env bash
# Make sure a headless Chromium is available for the dashboard browser test.
# Prints the path of the binary on success. Installs Debian's `chromium` with apt-get when it is
# missing and we are root; otherwise exits non-zero with a message saying what to do.
set -euo pipefail

find_chromium() {
    local name
    for name in chromium chromium-browser google-chrome; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if find_chromium; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_chromium: chromium is not installed and we are not root; run 'sudo apt-get install chromium'" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: chromium is not installed and apt-get is not available; install chromium by hand" >&2
    exit 1
fi

echo "ensure_chromium: installing chromium with apt-get ..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq >&2 || ! apt-get install -y -qq --no-install-recommends chromium >&2; then
    echo "ensure_chromium: 'apt-get install chromium' failed; install it by hand" >&2
    exit 1
fi

if ! find_chromium; then
    echo "ensure_chromium: apt-get finished but no chromium binary is on PATH" >&2
    exit 1
fi
