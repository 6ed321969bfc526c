#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the preference study's end-to-end
# browser test (crates/mirage-study/tests/browser.rs); idempotent. Needs root or sudo.
set -euo pipefail
packages="chromium chromium-driver"
missing=""
for p in $packages; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
