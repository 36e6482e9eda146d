#!/usr/bin/env bash
# The one command that runs every test: installs what the tests need when it
# is missing, checks formatting and lints, then runs the whole suite.
# `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Doc comments' links must resolve (a module renamed leaves none dangling).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p pushgate --locked --document-private-items
mkdir -p target
cargo test --workspace --all-targets --locked 2>&1 | tee target/cargo-test.log

for extra in scripts/test.d/*.sh; do
  [ -e "$extra" ] || continue
  echo "== $extra"
  bash "$extra"
done

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "cargo tests: %d passed, %d failed\n", p, f }' target/cargo-test.log
