#!/usr/bin/env bash
# Installs the Debian packages SwiftAI needs. Idempotent: does nothing when all are present.
set -euo pipefail
packages=(libdnnl-dev zlib1g-dev libcairo2-dev fonts-dejavu-core libturbojpeg0-dev libpng-dev dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
