#!/usr/bin/env node
// Runs every registered kernel check in headless Chromium (WebGPU through SwiftShader), inside
// a module Web Worker, against the wasm build in web/pkg (scripts/build-web.sh makes it).
//
//   node web/tests/kernels.mjs [--filter a,b] [--timeout SECONDS]
//
// Serves web/ from 127.0.0.1 on a free port, opens tests/kernels.html, prints one line per
// check, and exits non-zero when any check fails, when no WebGPU adapter comes up, or when
// fewer checks ran than are registered (matching the filter). Uses Debian's /usr/bin/chromium
// (override with CHROMIUM=path); never downloads a browser. DSVL_CHROMIUM_ARGS (space
// separated) replaces the GPU flags (harness.mjs), to try other flag sets.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CHROMIUM, WEB_ROOT, launch, serve } from './harness.mjs';

const { values: opts } = parseArgs({
  options: {
    filter: { type: 'string', default: process.env.DSVL_CHECKS ?? '' },
    timeout: { type: 'string', default: process.env.DSVL_WEB_TIMEOUT ?? '1200' },
  },
});
const TIMEOUT_MS = Number(opts.timeout) * 1000;

const matches = (name, filter) => {
  const parts = filter.split(',').map((s) => s.trim()).filter(Boolean);
  return parts.length === 0 || parts.some((p) => name.includes(p));
};

async function main() {
  if (!existsSync(join(WEB_ROOT, 'pkg', 'dsvl_gpu_bg.wasm'))) {
    throw new Error('web/pkg is missing: run scripts/build-web.sh first');
  }
  const server = await serve();
  const url = `${server.url}/tests/kernels.html` +
    (opts.filter ? `?filter=${encodeURIComponent(opts.filter)}` : '');
  const t0 = Date.now();
  const secs = () => ((Date.now() - t0) / 1000).toFixed(1);
  let chrome;
  try {
    chrome = await launch();
    const browser = chrome.ctx;
    console.log(`chromium ${chrome.version} (${CHROMIUM}) ${chrome.args.join(' ')}`);
    const page = browser.pages()[0] ?? (await browser.newPage());

    let names = null;
    let adapterSeen = false;
    let settle;
    const finished = new Promise((ok) => (settle = ok));
    await page.exposeFunction('__kernelReport', (m) => {
      switch (m.type) {
        case 'browser-adapter':
          console.log(`browser adapter: ${m.info}`);
          break;
        case 'adapter':
          adapterSeen = true;
          console.log(m.info.trimEnd().split('\n').map((l) => `  ${l}`).join('\n'));
          break;
        case 'names':
          names = m.names;
          console.log(`${names.length} kernel checks registered`);
          break;
        case 'result': {
          const r = m.result;
          const ms = `${r.ms.toFixed(0)} ms`.padStart(9);
          console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.name.padEnd(32)} ${ms}  ${r.ok ? r.summary : r.error}`);
          break;
        }
        case 'done':
        case 'error':
          settle(m);
          break;
      }
    });
    page.on('console', (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warning') console.log(`[browser ${msg.type()}] ${msg.text()}`);
    });
    page.on('pageerror', (e) => settle({ type: 'error', message: `page error: ${e.message}` }));
    page.on('crash', () => settle({ type: 'error', message: 'the page crashed' }));
    browser.on('close', () => settle({ type: 'error', message: 'the browser closed' }));

    await page.goto(url);
    let timer;
    const timeout = new Promise((ok) => {
      timer = setTimeout(() => ok({ type: 'error', message: `timed out after ${opts.timeout} s` }), TIMEOUT_MS);
    });
    const end = await Promise.race([finished, timeout]);
    clearTimeout(timer);

    const problems = [];
    if (end.type === 'error') problems.push(end.message);
    if (!adapterSeen) problems.push('no WebGPU adapter/device came up');
    const results = end.results ?? [];
    const failed = results.filter((r) => !r.ok);
    if (failed.length) problems.push(`${failed.length} check(s) failed: ${failed.map((r) => r.name).join(', ')}`);
    if (names) {
      const expected = names.filter((n) => matches(n, opts.filter));
      const ran = new Set(results.map((r) => r.name));
      const missing = expected.filter((n) => !ran.has(n));
      if (end.type === 'done' && (missing.length || expected.length === 0)) {
        problems.push(`${results.length} checks ran, ${expected.length} registered${missing.length ? `; not run: ${missing.join(', ')}` : ''}`);
      }
    } else {
      problems.push('the worker never listed the registered checks');
    }
    const total = results.reduce((s, r) => s + r.ms, 0);
    console.log(`checks took ${(total / 1000).toFixed(1)} s on the GPU side; ${secs()} s in all`);
    console.log(`browser: ${results.length - failed.length} passed, ${failed.length + (problems.length && !failed.length ? 1 : 0)} failed`);
    if (problems.length) {
      for (const p of problems) console.error(`error: ${p}`);
      return 1;
    }
    return 0;
  } finally {
    await chrome?.close();
    server.close();
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`error: ${e?.stack ?? e}`);
    process.exit(1);
  },
);
