#!/usr/bin/env bash
# Installs what alknet builds and tests with (Debian 12, as root). Idempotent.
set -euo pipefail
PKGS=(meson ninja-build pkg-config g++ liburing-dev android-libboringssl-dev libngtcp2-dev
      libc-ares-dev catch2 openssh-server openssh-client curl socat iperf3 netcat-openbsd python3 openssl
      iproute2 iptables procps ca-certificates nlohmann-json3-dev pebble redsocks dnsmasq)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] || [ "${ALKNET_FORCE_APT:-0}" = 1 ]; then
  echo "installing: ${missing[*]:-(refresh)}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${PKGS[@]}" >/dev/null
fi
