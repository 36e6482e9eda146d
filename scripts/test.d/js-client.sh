#!/usr/bin/env bash
# The JavaScript client (clients/js, issue 16):
#   1. its unit tests under node's own test runner (backoff, close codes, resume, SSE fallback,
#      token refresh, against small fake WebSocket/EventSource classes);
#   2. the committed dist/ files are byte for byte a fresh build (the gateway embeds them, so
#      `cargo build` never runs node; a source change without a rebuild fails here);
#   3. each dist file is at most 4096 bytes minified and gzipped (gzip -9);
#   4. `npm pack --dry-run` carries the dist files and the types.
# Dev dependencies (esbuild, pinned) come from the committed lock file with `npm ci` when
# node_modules is missing or older than the lock file. Run by scripts/test.sh; also runs
# alone: `bash scripts/test.d/js-client.sh`.
set -euo pipefail
cd "$(dirname "$0")/../../clients/js"

say() { echo "js-client: $*"; }
fail() { echo "js-client: FAIL: $*" >&2; exit 1; }

stamp=node_modules/.package-lock.json
if [ ! -d node_modules/esbuild ] || [ package-lock.json -nt "$stamp" ]; then
  say "installing dev dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
node --test test/*.test.js >"$fresh/test.log" 2>&1 || { cat "$fresh/test.log"; fail "node --test (above)"; }
say "node --test: $(awk '/^# pass/ { print $3 }' "$fresh/test.log") tests pass"
rm "$fresh/test.log"

node build.mjs "$fresh"
for name in pushgate.mjs pushgate.js; do
  cmp -s "dist/$name" "$fresh/$name" \
    || fail "dist/$name differs from a fresh build: run \`npm run build\` in clients/js and commit dist/"
  size=$(gzip -9 -c "dist/$name" | wc -c)
  [ "$size" -le 4096 ] || fail "dist/$name is $size bytes gzipped (budget 4096)"
  say "dist/$name: matches a fresh build; $(wc -c <"dist/$name") bytes minified, $size gzipped (budget 4096)"
done

pack=$(npm pack --dry-run --json 2>/dev/null)
for want in dist/pushgate.mjs dist/pushgate.js pushgate.d.ts package.json; do
  grep -q "\"path\": \"$want\"" <<<"$pack" || fail "npm pack --dry-run lacks $want"
done
if grep -qE '"path": "(test|node_modules|examples)/' <<<"$pack"; then
  fail "npm pack --dry-run carries tests, examples or node_modules"
fi
say "npm pack --dry-run: $(grep -c '"path"' <<<"$pack") files, dist and types included"
