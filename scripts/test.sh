#!/usr/bin/env bash
# Runs Coalition's whole test suite: unit tests, end-to-end tests with real nodes on
# loopback, and the dashboard test in headless Chromium (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ]; then
        sh .ci/install-browser.sh
    else
        echo "note: chromium/chromedriver missing and not root: the dashboard test will be skipped" >&2
    fi
fi
exec cargo test --workspace --locked
