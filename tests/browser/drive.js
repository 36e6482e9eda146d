// Drives Debian's chromium (headless, through playwright-core; never a
// downloaded browser) for tests/browser.rs.
//
//   node drive.js GATEWAY_WS_PORT
//
// Serves seed.html (the seed's page) on a free loopback port and opens it in
// tabs on command. Commands come on stdin, one a line:
//   open       a new tab with the page
//   close N    closes tab N
//   quit       closes the browser and exits
// Events go to stdout, one JSON object a line:
//   {"event":"ready"}                         the browser is up
//   {"tab":N,"event":"open"}                  tab N's socket opened and sent its uid
//   {"tab":N,"event":"message","data":"..."}  tab N's socket got a message (e.data)
//   {"tab":N,"event":"close","data":CODE}     tab N's socket closed
//   {"tab":N,"event":"closed"}                tab N is closed (after "close N")
//   {"event":"error","data":"..."}            a command failed
// The end of stdin and SIGTERM/SIGINT act as "quit", so the browser never
// outlives the test that started it.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const readline = require('readline');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node drive.js GATEWAY_WS_PORT');
  process.exit(2);
}

const page = fs
  .readFileSync(path.join(__dirname, 'seed.html'), 'utf8')
  .replace('__PORT__', String(port));

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

let browser = null;
let server = null;
let quitting = null;

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
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext();
  const tabs = new Map(); // tab number -> Page
  const numbers = new Map(); // Page -> tab number
  await context.exposeBinding('report', (source, event, data) => {
    const tab = numbers.get(source.page);
    const line = { tab, event };
    if (data !== undefined) line.data = data;
    emit(line);
  });
  let next = 1;

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('close', () => quit(0));
  // Commands run one after another, in the order they came.
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    chain = chain.then(async () => {
      const [cmd, arg] = line.trim().split(/\s+/);
      try {
        if (cmd === 'open') {
          const tab = next++;
          const p = await context.newPage();
          tabs.set(tab, p);
          numbers.set(p, tab);
          await p.goto(pageUrl);
        } else if (cmd === 'close') {
          const tab = Number(arg);
          const p = tabs.get(tab);
          if (!p) throw new Error(`no tab ${arg}`);
          await p.close();
          tabs.delete(tab);
          emit({ tab, event: 'closed' });
        } else if (cmd === 'quit') {
          await quit(0);
        } else if (cmd !== undefined && cmd !== '') {
          throw new Error(`unknown command ${JSON.stringify(line)}`);
        }
      } catch (e) {
        emit({ event: 'error', data: String(e && e.stack || e) });
      }
    });
  });
  emit({ event: 'ready' });
}

main().catch((e) => {
  console.error(e);
  emit({ event: 'error', data: String(e && e.stack || e) });
  quit(1);
});
