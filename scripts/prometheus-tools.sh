#!/usr/bin/env bash
# Makes Debian's prometheus package available under target/ without
# installing it (installing it would register and start a system service):
# its .deb is downloaded and unpacked into target/deploy-tools/prometheus.
# Prints that directory; its usr/bin holds `prometheus` (run by
# tests/prometheus.rs, a real server scraping a real gateway) and `promtool`
# (scripts/test.d/deploy.sh, compose.sh). Idempotent and quick once unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/deploy-tools/prometheus
if [ ! -x "$dir/usr/bin/prometheus" ] || [ ! -x "$dir/usr/bin/promtool" ]; then
  echo "unpacking Debian's prometheus package into $dir" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  dl=$(mktemp -d)
  chmod 755 "$dl"
  if ! (cd "$dl" && apt-get download -qq prometheus >/dev/null 2>&1); then
    $SUDO apt-get update -qq
    (cd "$dl" && apt-get download -qq prometheus >/dev/null 2>&1) || { echo "apt-get download prometheus failed" >&2; exit 1; }
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  dpkg-deb -x "$dl"/prometheus_*.deb "$dir"
  rm -rf "$dl"
fi
echo "$PWD/$dir"
