#!/usr/bin/env node
// The demo page (web/demo) driven like a user in headless Chromium: type the fixture model's URL,
// pick f32, load, attach an image (pick, paste, drop), ask, watch the answer stream, ask a
// follow-up (multi-turn, KV cache reused), stop a long answer. Saves a screenshot
// (target/web-tests/demo.png or $DSVL_TEST_OUT/demo.png).
//
//   node web/tests/demo.mjs [--timeout SECONDS]

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FIXTURES, OUT_DIR, WEB_ROOT, forwardConsole, launch, serve } from './harness.mjs';

const { values: opts } = parseArgs({ options: { timeout: { type: 'string', default: process.env.DSVL_WEB_TIMEOUT ?? '600' } } });

async function main() {
  if (!existsSync(join(WEB_ROOT, 'pkg', 'dsvl_gpu_bg.wasm'))) throw new Error('web/pkg is missing: run scripts/build-web.sh first');
  const server = await serve();
  const browser = await launch({ viewport: { width: 900, height: 1100 } });
  const t0 = Date.now();
  const page = browser.ctx.pages()[0] ?? (await browser.ctx.newPage());
  page.setDefaultTimeout(Number(opts.timeout) * 1000);
  forwardConsole(page);
  const shot = join(OUT_DIR, 'demo.png');
  const check = (cond, message) => {
    if (!cond) throw new Error(message);
  };
  try {
    await page.goto(`${server.url}/demo/index.html`);
    check((await page.inputValue('#model-url')).startsWith('https://huggingface.co/deepseek-ai/deepseek-vl-1.3b-chat'), 'the hub URL is not the default');
    await page.fill('#model-url', `${server.url}/fixtures/tiny-orig/`);
    await page.selectOption('#quant', 'f32');
    await page.click('#load');
    await page.waitForFunction(() => /ready|could not load/.test(document.getElementById('model-status').textContent));
    const loadStatus = await page.textContent('#model-status');
    check(loadStatus.startsWith('ready'), `load: ${loadStatus}`);
    const adapter = await page.textContent('#adapter');
    check(/adapter: .*swiftshader|adapter: \S/.test(adapter) && adapter.includes('lacks'), `adapter panel: ${adapter}`);
    check(Number(await page.getAttribute('#p-upload', 'value')) > 0, 'no upload progress shown');
    console.log(`ok   load through the form (${((Date.now() - t0) / 1000).toFixed(1)} s)`);

    // Pick, paste and drop an image; remove the last two by clicking their thumbnails.
    await page.setInputFiles('#image-input', join(FIXTURES, 'images', 'wide.png'));
    await page.evaluate(async (url) => {
      const file = new File([await (await fetch(url)).blob()], 'tall.png', { type: 'image/png' });
      const dt = () => {
        const d = new DataTransfer();
        d.items.add(file);
        return d;
      };
      document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt(), bubbles: true }));
      document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt(), bubbles: true, cancelable: true }));
    }, `${server.url}/fixtures/images/tall.png`);
    check((await page.locator('#previews img').count()) === 3, `pick + paste + drop gave ${await page.locator('#previews img').count()} previews`);
    await page.click('#previews img:nth-child(3)');
    await page.click('#previews img:nth-child(2)');
    check((await page.locator('#previews img').count()) === 1, 'removing thumbnails failed');
    console.log('ok   image picked, pasted and dropped; thumbnails removable');
    await page.fill('#max-new-tokens', '8');
    await page.fill('#question', 'Describe this image.');
    // Record the answer's text each time it changes, to see it stream.
    await page.evaluate(() => {
      window.__seen = [];
      new MutationObserver(() => {
        const t = document.querySelector('.msg.assistant:last-child .text')?.textContent;
        if (t !== undefined && window.__seen.at(-1) !== t) window.__seen.push(t);
      }).observe(document.getElementById('transcript'), { subtree: true, childList: true, characterData: true });
    });
    const t1 = Date.now();
    await page.click('#ask');
    await page.waitForFunction(() => document.getElementById('stats').textContent.includes('tokens/s') || document.querySelector('.msg.error'));
    const stats = await page.textContent('#stats');
    const answer = await page.textContent('.msg.assistant:last-child .text');
    const seen = await page.evaluate(() => window.__seen);
    check(!(await page.locator('.msg.error').count()), `answer failed: ${answer}`);
    check(/time to first token [\d.]+ s · [\d.]+ tokens\/s · 8 tokens/.test(stats), `stats: ${stats}`);
    check(answer.length > 0 && seen.filter(Boolean).length >= 2, `the answer did not stream (${seen.length} states): ${answer}`);
    console.log(`ok   image + question, streamed answer in ${seen.length} steps (${((Date.now() - t1) / 1000).toFixed(1)} s): ${stats}`);

    await page.fill('#question', 'And what colour is it?');
    await page.click('#ask');
    await page.waitForFunction(() => document.querySelectorAll('.msg.assistant').length === 2 && !document.querySelector('.msg.streaming'));
    const stats2 = await page.textContent('#stats');
    const m = /prompt (\d+) tokens \((\d+) new\)/.exec(stats2);
    check(m && Number(m[2]) < Number(m[1]) / 2, `follow-up did not reuse the cache: ${stats2}`);
    console.log(`ok   follow-up question (multi-turn): ${stats2}`);

    await page.fill('#max-new-tokens', '200');
    await page.fill('#question', 'Tell me more.');
    await page.click('#ask');
    await page.waitForFunction(() => document.querySelector('.msg.assistant:last-child .text').textContent.length > 0);
    await page.click('#stop');
    await page.waitForFunction(() => !document.querySelector('.msg.streaming'));
    const stats3 = await page.textContent('#stats');
    const n = Number(/(\d+) tokens \(stopped\)/.exec(stats3)?.[1]);
    check(n > 0 && n < 200, `stop: ${stats3}`);
    console.log(`ok   stop button: stopped after ${n} tokens`);

    mkdirSync(OUT_DIR, { recursive: true });
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${shot}`);
    console.log(`demo test passed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return 0;
  } catch (e) {
    mkdirSync(OUT_DIR, { recursive: true });
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    console.error(`FAIL demo: ${e.message}\nscreenshot of the failure: ${shot}`);
    return 1;
  } finally {
    await browser.close();
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
