#!/usr/bin/env bash
# Validates docs/asyncapi.yaml (the v2 WebSocket channel) with the AsyncAPI
# initiative's own parser (@asyncapi/parser, npm): the document must parse as
# AsyncAPI 3 with no error and no warning from its built-in rules, and every
# message example must match its payload schema (checked with ajv, which the
# parser brings; the parser's rules do not check examples).
#
# The parser comes from npm into target/node-tools (kept between runs), so
# the check needs node and npm, and the registry once.
set -euo pipefail
cd "$(dirname "$0")/../.."

tools=target/node-tools
if [ ! -d "$tools/node_modules/@asyncapi/parser" ]; then
  echo "installing: @asyncapi/parser (npm) into $tools"
  mkdir -p "$tools"
  npm install --silent --no-audit --no-fund --prefix "$tools" '@asyncapi/parser@^3' >/dev/null
fi

NODE_PATH="$PWD/$tools/node_modules" node - docs/asyncapi.yaml <<'JS'
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');
const file = process.argv[2];
(async () => {
  const { document, diagnostics } = await new Parser().parse(fs.readFileSync(file, 'utf8'), {
    source: file,
  });
  // Severity 0 is an error, 1 a warning; hints (2, 3) are style advice.
  const serious = diagnostics.filter((d) => d.severity <= 1);
  for (const d of serious) {
    console.error(`${file}: ${d.path.join('.')}: ${d.message} (${d.code})`);
  }
  if (!document || serious.length > 0) process.exit(1);
  const Ajv = require('ajv');
  const ajv = new Ajv({ strict: false, allErrors: true });
  let bad = 0;
  for (const message of document.allMessages()) {
    const check = ajv.compile(message.payload().json());
    for (const example of message.examples()) {
      if (!check(example.payload())) {
        bad++;
        console.error(`${file}: example ${example.name()} of ${message.id()}: ` +
          ajv.errorsText(check.errors));
      }
    }
  }
  if (bad > 0) process.exit(1);
  console.log(`${file}: valid AsyncAPI ${document.version()}, ` +
    `${document.allMessages().length} messages, ${document.operations().length} operations`);
})().catch((e) => { console.error(e); process.exit(1); });
JS
