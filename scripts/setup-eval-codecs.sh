#!/usr/bin/env bash
# Installs the classic codecs that `mirage eval` compares against, from Debian
# (idempotent: apt skips what is installed). Needs root or sudo.
set -euo pipefail
packages="libjpeg-turbo-progs webp libavif-bin libjxl-tools libjxl-devtools libheif-examples time"
missing=""
for p in $packages; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
