// Drives Debian's chromium (headless, through playwright-core; never a
// downloaded browser) for tests/client_browser.rs: pages that use the
// JavaScript client (clients/js), loaded from the gateway itself.
//
//   node client-drive.js
//
// Serves client.html on a free loopback port (another origin than the
// gateway's, as a real site would be) and opens it in tabs on command.
// Commands come on stdin, one JSON object a line:
//   {"cmd":"open","gateway":"http://127.0.0.1:PORT","options":{...},
//    "tokens":["...", ...],"blockWebSocket":false}
//       a new tab (numbered 1, 2, …) whose page loads GATEWAY/pushgate.js
//       with one script tag and runs `new Pushgate.PushgateClient(GATEWAY,
//       options)`; with `tokens`, its getToken() answers them in turn (the
//       last one forever); with blockWebSocket, the page has no usable
//       WebSocket (its constructor throws, as where a proxy or policy
//       forbids it)
//   {"cmd":"close","tab":N}   closes tab N
//   {"cmd":"quit"}            closes the browser and exits
// Events go to stdout, one JSON object a line:
//   {"event":"ready"}                               the browser is up
//   {"tab":N,"event":NAME,"detail":{...}}           the client in tab N emitted
//       NAME (message, broadcast, connected, disconnected, reconnecting,
//       recovered, gap; its `error` is reported as "client-error")
//   {"tab":N,"event":"closed"}                      tab N is closed
//   {"event":"error","data":"..."}                  a command failed
// The end of stdin and SIGTERM/SIGINT act as "quit".
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const readline = require('readline');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const page = fs.readFileSync(path.join(__dirname, 'client.html'), 'utf8');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

let browser = null;
let server = null;
let quitting = null;
const tabs = new Map();

async function quit(code) {
  if (!quitting) {
    quitting = (async () => {
      try {
        if (browser) await browser.close();
      } catch (e) {
        console.error('closing the browser:', e);
      }
      if (server) server.close();
      process.exit(code);
    })();
  }
  return quitting;
}

process.on('SIGTERM', () => quit(1));
process.on('SIGINT', () => quit(1));

async function open(context, pageUrl, n, cmd) {
  const tab = await context.newPage();
  tabs.set(n, tab);
  tab.on('pageerror', (e) => emit({ tab: n, event: 'page-error', data: String(e) }));
  await tab.exposeFunction('emit', (name, detail) => {
    emit({ tab: n, event: name === 'error' ? 'client-error' : name, detail });
  });
  const config = {
    options: cmd.options || {},
    tokens: cmd.tokens || [],
    blockWebSocket: !!cmd.blockWebSocket,
  };
  await tab.addInitScript((cfg) => {
    window.__config = cfg;
    if (cfg.blockWebSocket) {
      window.WebSocket = function WebSocket() {
        throw new DOMException('WebSocket is blocked here', 'SecurityError');
      };
    }
  }, config);
  await tab.goto(`${pageUrl}?gateway=${encodeURIComponent(cmd.gateway)}`);
}

async function main() {
  server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(page);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const pageUrl = `http://127.0.0.1:${server.address().port}/`;

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic'],
  });
  const context = await browser.newContext();
  emit({ event: 'ready' });

  let count = 0;
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let cmd;
    try {
      cmd = JSON.parse(line);
      if (cmd.cmd === 'open') {
        count += 1;
        await open(context, pageUrl, count, cmd);
      } else if (cmd.cmd === 'close') {
        const tab = tabs.get(cmd.tab);
        if (tab) await tab.close();
        tabs.delete(cmd.tab);
        emit({ tab: cmd.tab, event: 'closed' });
      } else if (cmd.cmd === 'quit') {
        break;
      } else {
        emit({ event: 'error', data: `unknown command: ${line}` });
      }
    } catch (e) {
      emit({ event: 'error', data: `${line}: ${e && e.stack ? e.stack : e}` });
    }
  }
  await quit(0);
}

main().catch((e) => {
  emit({ event: 'error', data: String(e && e.stack ? e.stack : e) });
  quit(1);
});
