#!/usr/bin/env bash
# Installs the Debian 12 packages blip2cpp builds and tests with. Idempotent: apt runs only when a
# package is missing. Needs root (or sudo).
set -euo pipefail
packages=(cmake make g++ pkg-config
          libeigen3-dev xtensor-dev xtl-dev libxsimd-dev
          libdnnl-dev ocl-icd-opencl-dev opencl-headers
          doctest-dev nlohmann-json3-dev libstb-dev
          libopenmpi-dev openmpi-bin)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
