#!/usr/bin/env bash
# What `cargo install --path .` and a published package would carry (issue 13):
#   1. `cargo package --list`: the gateway's sources and documents only, never
#      the tests' private keys, CI, scripts, deploy files or the bench crate;
#   2. `cargo install --path .` installs the gateway alone (no pushgate-bench);
#   3. `cargo machete` (crates.io): no declared dependency goes unused.
# Run by scripts/test.sh; also runs alone: `bash scripts/test.d/package.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "package: $*"; }
fail() { echo "package: FAIL: $*" >&2; exit 1; }

list=$(cargo package --list --locked --allow-dirty -p pushgate 2>/dev/null)
for want in Cargo.toml README.md openapi.yaml src/main.rs src/lib.rs; do
  grep -qx "$want" <<<"$list" || fail "the package lacks $want"
done
if bad=$(grep -E '^(tests/|\.ci/|scripts/|deploy/|bench/|fuzz/)|\.pem$' <<<"$list"); then
  fail "the package carries files it must not: $bad"
fi
say "cargo package --list: $(wc -l <<<"$list") files, sources and documents only"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# Offline and debug: what is installed is the question, not how fast it runs.
CARGO_TARGET_DIR=target cargo install --quiet --locked --debug --offline --path . --root "$root" 2>/dev/null \
  || CARGO_TARGET_DIR=target cargo install --quiet --locked --debug --path . --root "$root"
installed=$(ls "$root/bin")
[ "$installed" = "pushgate" ] || fail "cargo install --path . installed: $installed (want pushgate alone)"
say "cargo install --path . installs pushgate alone"

tools=target/tools
if [ ! -x "$tools/bin/cargo-machete" ]; then
  say "installing cargo-machete (crates.io) into $tools"
  cargo install --quiet --locked cargo-machete@0.9.2 --root "$tools"
fi
"$tools/bin/cargo-machete" --with-metadata . || fail "cargo machete: unused dependencies (above)"
say "cargo machete: every declared dependency is used"
