#!/usr/bin/env bash
# Installs what the test suite needs when it is missing, from Debian's
# packages (and npm/PyPI where noted). Safe to run again: it only installs
# what is absent. Needs root (or sudo) on a fresh Debian machine.
set -euo pipefail

need_apt=()
# /usr/sbin too: nginx lives there, outside a non-root PATH.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# name-of-command:debian-package
# nginx-light: tests/proxy.rs puts a real nginx in front of the gateway;
# netcat-openbsd: README's text-port example, run by scripts/test.d/readme.sh.
for pair in php:php-cli redis-server:redis-server chromium:chromium node:nodejs npm:npm \
  nginx:nginx-light nc:netcat-openbsd curl:curl; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  have "$cmd" || need_apt+=("$pkg")
done

if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# tests/browser.rs drives Debian's chromium through playwright-core (the npm
# package alone: it never downloads a browser). Installed from the committed
# lock file when missing or when the lock file changed.
browser_dir="$(dirname "$0")/../tests/browser"
stamp="$browser_dir/node_modules/.package-lock.json"
if [ ! -d "$browser_dir/node_modules/playwright-core" ] || [ "$browser_dir/package-lock.json" -nt "$stamp" ]; then
  echo "installing: npm packages of tests/browser"
  npm ci --prefix "$browser_dir" --no-audit --no-fund --loglevel=error
fi

# A real Prometheus (tests/prometheus.rs) and promtool (scripts/test.d/), from
# Debian's prometheus package, unpacked under target/ rather than installed.
"$(dirname "$0")/prometheus-tools.sh" >/dev/null
