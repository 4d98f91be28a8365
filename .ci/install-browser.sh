#!/bin/sh
# Headless Chromium and its WebDriver for the dashboard end-to-end test
# (tests/tests/dashboard.rs). Debian packages; run as root.
set -eu
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
