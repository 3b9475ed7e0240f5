#!/usr/bin/env node
// The npm package end to end in headless Chromium (WebGPU on SwiftShader, so the f32 path):
// the committed tiny fixture model served on 127.0.0.1 by a Range-capable server, loaded through
// src/index.js into its worker, then the fixture cases: next-token logits against HF's
// (rel L2 <= 1e-3, as tests/model_parity.rs), greedy ids against the native CLI's on the same
// fixture and image, chat reusing the KV cache, abort, errors, and the download cache (an
// interrupted load resumes; a second load downloads nothing; a corrupted cached block is
// fetched again). Also a load from File objects (the HF layout fixture).
//
//   node web/tests/model.mjs [--only NAME,...] [--timeout SECONDS]
//
// Needs web/pkg (scripts/build-web.sh). The CLI comparison runs target/{debug,release}/dsvl-gpu
// (or $DSVL_CLI) when built, else says so and compares with cases.json's greedy ids, which
// tests/cli.rs checks the CLI produces.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FIXTURES, REPO_ROOT, WEB_ROOT, forwardConsole, launch, readNpy, relL2, serve } from './harness.mjs';

const { values: opts } = parseArgs({
  options: {
    only: { type: 'string', default: '' },
    timeout: { type: 'string', default: process.env.DSVL_WEB_TIMEOUT ?? '900' },
  },
});
const TOL = 1e-3;
const fixture = (name) => JSON.parse(readFileSync(join(FIXTURES, name, 'cases.json'), 'utf8'));
const ORIG = fixture('tiny-orig');
const caseOf = (meta, name) => meta.cases.find((c) => c.name === name);
const npy = (dir, file) => readNpy(readFileSync(join(FIXTURES, dir, file))).data;

function assert(cond, message) {
  if (!cond) throw new Error(message);
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** The newest native CLI binary, or null when none is built. */
function cliBin() {
  const candidates = [process.env.DSVL_CLI, join(REPO_ROOT, 'target/debug/dsvl-gpu'), join(REPO_ROOT, 'target/release/dsvl-gpu')].filter((p) => p && existsSync(p));
  return candidates.length ? candidates.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0] : null;
}

/** `dsvl-gpu quantize` of tiny-orig to int4 under target/web-tests (the folder served as /gen/). */
function quantisedFixture() {
  const bin = cliBin();
  if (!bin) return null;
  const out = join(REPO_ROOT, 'target', 'web-tests', 'tiny-q4');
  rmSync(out, { recursive: true, force: true });
  execFileSync(bin, ['quantize', '--model', 'tests/fixtures/dsvl/tiny-orig', '--quant', 'q4', '--out', out], {
    cwd: REPO_ROOT, env: { ...process.env, NODEVICE_SELECT: '1' }, stdio: 'pipe', timeout: 300_000,
  });
  return out;
}

const cosine = (a, b) => {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) { ab += a[i] * b[i]; aa += a[i] * a[i]; bb += b[i] * b[i]; }
  return ab / Math.sqrt(aa * bb);
};

/** Greedy ids of `dsvl-gpu run` on one_image, or null when no CLI binary is built. */
function cliIds() {
  const bin = cliBin();
  if (!bin) return null;
  const out = execFileSync(bin, ['run', '--model', 'tests/fixtures/dsvl/tiny-orig', '--image', 'tests/fixtures/dsvl/images/wide.png', '--prompt', 'Describe this image.', '--quant', 'f32', '--max-new-tokens', '8', '--json'], {
    cwd: REPO_ROOT, env: { ...process.env, NODEVICE_SELECT: '1' }, encoding: 'utf8', timeout: 300_000,
  });
  return { bin, ids: JSON.parse(out).token_ids };
}

async function main() {
  assert(existsSync(join(WEB_ROOT, 'pkg', 'dsvl_gpu_bg.wasm')), 'web/pkg is missing: run scripts/build-web.sh first');
  mkdirSync(join(REPO_ROOT, 'target', 'web-tests'), { recursive: true });
  const server = await serve({ '/': WEB_ROOT, '/fixtures/': FIXTURES, '/gen/': join(REPO_ROOT, 'target', 'web-tests') });
  const browser = await launch();
  const t0 = Date.now();
  console.log(`chromium ${browser.version}; serving ${server.url}`);
  const page = browser.ctx.pages()[0] ?? (await browser.ctx.newPage());
  page.setDefaultTimeout(Number(opts.timeout) * 1000);
  forwardConsole(page);
  await page.goto(`${server.url}/tests/package.html`);
  const fx = `${server.url}/fixtures/tiny-orig/`;
  const img = (name) => `${server.url}/fixtures/images/${name}`;
  const ev = (fn, arg) => page.evaluate(fn, arg);
  const only = opts.only.split(',').map((s) => s.trim()).filter(Boolean);
  let failed = 0;
  let ran = 0;
  const step = async (name, fn, { required = false } = {}) => {
    if (only.length && !required && !only.some((o) => name.includes(o))) return;
    const s = Date.now();
    ran++;
    try {
      const note = await fn();
      console.log(`ok   ${name.padEnd(34)} ${`${Date.now() - s} ms`.padStart(9)}  ${note ?? ''}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${name.padEnd(34)} ${`${Date.now() - s} ms`.padStart(9)}  ${String(e?.message ?? e).split('\n')[0]}`);
      if (required) throw new Error(`${name} failed; the remaining steps need it`);
    }
  };
  const logitsOf = async (request) => Float32Array.from(await ev(async (r) => Array.from(await window.m.logits(r)), request));

  try {
    await ev(async () => {
      const { Dsvl } = await import('/src/index.js');
      window.Dsvl = Dsvl;
      await Dsvl.clearCache();
    });

    await step('load tiny-orig from URL (f32)', async () => {
      const r = await ev(async (fx) => {
        const stages = {};
        window.m = await window.Dsvl.load(fx, { quant: 'f32', blockBytes: 1 << 20, onProgress: (p) => (stages[p.stage] = p) });
        return { stages, info: await window.m.info() };
      }, fx);
      for (const s of ['download', 'upload', 'ready']) assert(r.stages[s], `no ${s} progress (got ${Object.keys(r.stages)})`);
      assert(r.stages.upload.loaded === r.stages.upload.total && r.stages.upload.total > 0, `upload progress ended at ${r.stages.upload.loaded}/${r.stages.upload.total}`);
      const i = r.info;
      assert(i.adapter?.name && i.features && i.limits?.maxStorageBufferBindingSize > 0 && i.memory?.gpuLiveBytes > 0, `info incomplete: ${JSON.stringify(i).slice(0, 300)}`);
      assert(i.activations === 'f32' && i.weights === 'f32', `dtypes ${i.weights}/${i.activations}`);
      if (!i.paths.f16) assert(i.lacks.some((l) => l.startsWith('shader-f16')), `lacks does not name shader-f16: ${i.lacks}`);
      return `${i.adapter.name}; ${(i.memory.gpuLiveBytes / 1e6).toFixed(1)} MB on the GPU; lacks: ${i.lacks.map((l) => l.split(':')[0]).join(', ')}`;
    }, { required: true });

    const cases = [
      ['one_image', { prompt: 'Describe this image.', images: [img('wide.png')] }],
      ['two_images', { prompt: 'Which of the two images is brighter?', images: [img('tall.png'), img('big.png')] }],
      ['text_only', { prompt: 'What colour is the cat?' }],
      ['multi_turn', { messages: [
        { role: 'user', content: 'Describe this image.', images: [img('big.png')] },
        { role: 'assistant', content: 'A red square on a blue background.' },
        { role: 'user', content: 'How many apples are on the table?' },
      ] }],
    ];
    for (const [name, request] of cases) {
      await step(`logits ${name}`, async () => {
        const got = await logitsOf(request);
        const err = relL2(got, npy('tiny-orig', caseOf(ORIG, name).logits_last));
        assert(got.every(Number.isFinite), 'non-finite logits');
        assert(err <= TOL, `rel L2 ${err.toExponential(2)} > ${TOL}`);
        return `rel L2 ${err.toExponential(2)}`;
      });
    }

    await step('generate one_image = CLI greedy ids', async () => {
      const c = caseOf(ORIG, 'one_image');
      const r = await ev(async (image) => {
        const pieces = [];
        const out = await window.m.generate({ prompt: 'Describe this image.', images: [image], maxNewTokens: 8, onToken: (p, id) => pieces.push([p, id]) });
        return { out, pieces };
      }, img('wide.png'));
      const { out, pieces } = r;
      assert(out.promptTokens === c.input_ids.length, `prompt of ${out.promptTokens} tokens, HF's has ${c.input_ids.length}`);
      assert(same(pieces.map((p) => p[1]), out.tokenIds), 'streamed ids differ from the result');
      assert(pieces.map((p) => p[0]).join('') === out.text, 'streamed text differs from the result');
      for (const k of ['preprocessMs', 'firstTokenMs', 'totalMs', 'decodeTokensPerSecond']) assert(typeof out.timings[k] === 'number', `timings.${k} missing`);
      const cli = cliIds();
      const want = cli?.ids ?? c.greedy_ids;
      assert(same(out.tokenIds, want), `ids ${out.tokenIds} != ${cli ? 'CLI' : 'cases.json'} ${want}`);
      return `${out.tokenIds.length} tokens = ${cli ? `CLI (${cli.bin.replace(REPO_ROOT + '/', '')})` : 'cases.json (no CLI built)'}; first token ${out.timings.firstTokenMs.toFixed(0)} ms, ${out.timings.decodeTokensPerSecond.toFixed(1)} tok/s`;
    });

    await step('chat multi_turn reuses the KV cache', async () => {
      const c = caseOf(ORIG, 'multi_turn');
      const r = await ev(async (image) => {
        const first = [{ role: 'user', content: 'Describe this image.', images: [image] }];
        const a = await window.m.chat(first, { maxNewTokens: 1 });
        const msgs = [...first, { role: 'assistant', content: 'A red square on a blue background.' }, { role: 'user', content: 'How many apples are on the table?' }];
        const b = await window.m.chat(msgs, { maxNewTokens: 8 });
        return { a, b };
      }, img('big.png'));
      assert(r.b.promptTokens === c.input_ids.length, `prompt of ${r.b.promptTokens} tokens, HF's has ${c.input_ids.length}`);
      assert(r.b.prefilledTokens < r.b.promptTokens - r.a.promptTokens + 2, `prefilled ${r.b.prefilledTokens} of ${r.b.promptTokens}: the first turn was not reused`);
      assert(same(r.b.tokenIds, c.greedy_ids), `ids ${r.b.tokenIds} != HF ${c.greedy_ids}`);
      return `second turn prefilled ${r.b.prefilledTokens} of ${r.b.promptTokens} tokens; ids = HF`;
    });

    await step('abort stops generation', async () => {
      const r = await ev(async () => {
        const ac = new AbortController();
        let n = 0;
        try {
          await window.m.generate({ prompt: 'What colour is the cat?', maxNewTokens: 200, signal: ac.signal, onToken: () => ++n === 2 && ac.abort() });
          return { resolved: true };
        } catch (e) {
          return { name: e.name, got: e.result?.tokenIds?.length, n };
        }
      });
      assert(r.name === 'AbortError' && r.got >= 2 && r.got < 20, `abort: ${JSON.stringify(r)}`);
      // A call aborted while it waits behind another never runs; the other is unaffected.
      const q = await ev(async () => {
        const ac = new AbortController();
        // b is queued in the worker by the time a streams its first token.
        const a = window.m.generate({ prompt: 'hi', maxNewTokens: 2, onToken: () => ac.abort() });
        const b = window.m.generate({ prompt: 'hi', maxNewTokens: 2, signal: ac.signal, onToken: () => (window.__ranB = true) });
        return { a: (await a).tokenIds.length, b: await b.then(() => 'resolved', (e) => e.name), ranB: !!window.__ranB };
      });
      assert(q.a === 2 && q.b === 'AbortError' && !q.ranB, `queued abort: ${JSON.stringify(q)}`);
      return `stopped after ${r.got} tokens; a queued call aborted before it ran`;
    });

    await step('errors reject with a message', async () => {
      const r = await ev(async () => {
        const msg = async (p) => p.then(() => 'resolved', (e) => `${e.name}: ${e.message}`);
        return {
          placeholder: await msg(window.m.generate({ prompt: '<image_placeholder> what is this?' })),
          badImage: await msg(window.m.generate({ prompt: 'hi', images: [new Blob(['not an image'])] })),
          topP: await msg(window.m.generate({ prompt: 'hi', topP: 1.5 })),
          context: await msg(window.m.generate({ prompt: 'hi', maxNewTokens: 100000 })),
          after: (await window.m.generate({ prompt: 'hi', maxNewTokens: 1 })).tokenIds.length,
          noWebGpu: await (async () => {
            Object.defineProperty(navigator, 'gpu', { value: undefined, configurable: true });
            try {
              return await msg(window.Dsvl.load('/fixtures/tiny-orig/'));
            } finally {
              delete navigator.gpu;
            }
          })(),
          noModel: await msg(window.Dsvl.load('/fixtures/images/', { quant: 'f32' })),
        };
      });
      assert(/placeholder/.test(r.placeholder), r.placeholder);
      assert(/unrecognised format/.test(r.badImage), r.badImage);
      assert(/topP/.test(r.topP), r.topP);
      assert(/exceeds the context/.test(r.context), r.context);
      assert(r.after === 1, 'the model does not work after errors');
      assert(/WebGPU is not available/.test(r.noWebGpu), r.noWebGpu);
      assert(/config\.json: not found/.test(r.noModel), r.noModel);
      return 'placeholder, bad image, topP, context, no WebGPU, not a model folder: clear messages; model still works';
    });

    await step('dispose', async () => {
      const r = await ev(async () => {
        await window.m.dispose();
        return window.m.generate({ prompt: 'hi' }).then(() => 'resolved', (e) => e.message);
      });
      assert(/disposed/.test(r), r);
    });

    await step('cache: interrupted load resumes, reload downloads nothing', async () => {
      const served = () => server.log.filter((e) => e.path.endsWith('.safetensors') && e.status === 206).reduce((s, e) => s + e.bytes, 0);
      const size = statSync(join(FIXTURES, 'tiny-orig', 'model.safetensors')).size;
      await ev(() => window.Dsvl.clearCache());
      const before = served();
      server.breakAfter(3); // the 8-byte open, the header block, one more block; then connections drop
      const broken = await ev((fx) => window.Dsvl.load(fx, { quant: 'f32', blockBytes: 1 << 20 }).then(() => 'loaded', (e) => e.message), fx);
      server.breakAfter(null);
      assert(/download failed/.test(broken), `interrupted load: ${broken}`);
      const first = served() - before;
      const r = await ev(async (fx) => {
        const m = await window.Dsvl.load(fx, { quant: 'f32', blockBytes: 1 << 20 });
        const i = await m.info();
        await m.dispose();
        return i.load.bytes;
      }, fx);
      const second = served() - before - first;
      assert(first > 0 && first + second <= size + 64, `interrupted ${first} + resumed ${second} bytes for a file of ${size}`);
      assert(r.fromCache >= first - 16, `resumed load took ${r.fromCache} bytes from the cache, ${first} were fetched before`);
      const again = await ev(async (fx) => {
        const m = await window.Dsvl.load(fx, { quant: 'f32', blockBytes: 1 << 20 });
        const i = await m.info();
        await m.dispose();
        return i.load.bytes;
      }, fx);
      assert(again.downloaded <= 8 && again.fromCache > 0, `third load downloaded ${again.downloaded} bytes`);
      // Flip one byte of a cached block (keeping its stored hash): the next load must notice and refetch it.
      const fixed = await ev(async (fx) => {
        const cache = await caches.open('dsvl-gpu-blocks-v1');
        const key = (await cache.keys()).find((k) => k.url.includes('dsvl-block=2&'));
        const hit = await cache.match(key);
        const bytes = new Uint8Array(await hit.arrayBuffer());
        bytes[100] ^= 0xff;
        await cache.put(key, new Response(bytes, { headers: hit.headers }));
        const m = await window.Dsvl.load(fx, { quant: 'f32', blockBytes: 1 << 20 });
        const i = await m.info();
        await m.dispose();
        return i.load;
      }, fx);
      assert(fixed.bytes.downloaded === 8 + (1 << 20) && fixed.warnings.some((w) => /corrupt/.test(w)), `after corrupting a block: ${JSON.stringify(fixed)}`);
      return `interrupted after ${first} B, resumed with ${second} B (of ${size}); reload: ${again.downloaded} B downloaded; a corrupted block was refetched`;
    });

    await step('quant f16 (the default) stays close', async () => {
      const r = await ev(async (fx) => {
        const m = await window.Dsvl.load(fx, { quant: 'f16' });
        const l = await m.logits({ prompt: 'What colour is the cat?' });
        const i = await m.info();
        await m.dispose();
        return { l: Array.from(l), w: i.weights, a: i.activations, f16: i.paths.f16 };
      }, fx);
      const err = relL2(Float32Array.from(r.l), npy('tiny-orig', caseOf(ORIG, 'text_only').logits_last));
      assert(r.w === 'f16' && r.a === (r.f16 ? 'f16' : 'f32'), `dtypes ${r.w}/${r.a} with shader-f16 ${r.f16}`);
      assert(err <= 2e-2, `rel L2 ${err.toExponential(2)} > 2e-2`);
      return `weights ${r.w}, activations ${r.a}: text_only rel L2 ${err.toExponential(2)}`;
    });

    await step('int8 and int4 quantised at load on the GPU, and an int4 `dsvl-gpu quantize` folder over Range', async () => {
      const q4 = quantisedFixture();
      assert(q4, 'no native dsvl-gpu binary to write the int4 folder with (cargo build first)');
      const r = await ev(async ({ fx, q4url }) => {
        const out = {};
        for (const [name, src, quant] of [['q8', fx, 'q8'], ['q4', fx, 'q4'], ['folder', q4url, 'f32']]) {
          const quantise = [];
          let upload = null;
          const onProgress = (p) => {
            if (p.stage === 'quantise') quantise.push(p);
            if (p.stage === 'upload') upload = p;
          };
          const m = await window.Dsvl.load(src, { quant, cache: false, onProgress });
          const l = await m.logits({ prompt: 'What colour is the cat?' });
          const i = await m.info();
          await m.dispose();
          out[name] = { l: Array.from(l), weights: i.weights, bytes: i.weight_bytes, quantise, upload };
        }
        return out;
      }, { fx, q4url: `${server.url}/gen/tiny-q4/` });
      const want = npy('tiny-orig', caseOf(ORIG, 'text_only').logits_last);
      // The quantise stage: from nothing to its totals, every report on the GPU; none for the folder.
      for (const name of ['q8', 'q4']) {
        const q = r[name].quantise;
        const [first, last] = [q[0], q[q.length - 1]];
        assert(q.length > 1 && first.loaded === 0 && first.tensors === 0, `${name}: quantise stage starts at ${JSON.stringify(first)}`);
        assert(last.loaded === last.total && last.tensors === last.tensorsTotal && last.tensorsTotal > 0, `${name}: quantise stage ends at ${JSON.stringify(last)}`);
        assert(q.every((p) => p.device === 'gpu' && p.note === undefined), `${name}: quantised off the GPU: ${JSON.stringify(q.find((p) => p.device !== 'gpu'))}`);
        assert(r[name].upload.loaded === r[name].upload.total, `${name}: upload stage ends at ${JSON.stringify(r[name].upload)}`);
      }
      assert(r.folder.quantise.length === 0, `the quantised folder reported a quantise stage: ${JSON.stringify(r.folder.quantise[0])}`);
      const c8 = cosine(r.q8.l, want);
      const c4 = cosine(r.q4.l, want);
      const cf = cosine(r.folder.l, want);
      // The issue's bounds: 0.999 for int8, 0.98 for int4 (logits cosine against f32 / HF).
      assert(/q8/.test(r.q8.weights) && c8 >= 0.999, `q8 (${r.q8.weights}): cosine ${c8}`);
      assert(/q4/.test(r.q4.weights) && c4 >= 0.98, `q4 (${r.q4.weights}): cosine ${c4}`);
      assert(/q4/.test(r.folder.weights) && cf >= 0.98, `q4 folder (${r.folder.weights}): cosine ${cf}`);
      // The native quantiser wrote the folder on the CPU; the GPU's codes are the same, so are the logits.
      assert(same(r.q4.l, r.folder.l), 'q4 quantised at load on the GPU gives other logits than the CPU-quantised folder');
      assert(r.q4.bytes < r.q8.bytes, `int4 ${r.q4.bytes} B not below int8 ${r.q8.bytes} B`);
      const t = r.q4.quantise.at(-1);
      return `q8 at load: cosine ${c8.toFixed(5)}; q4 at load: ${c4.toFixed(5)} (= the folder's logits); ${t.tensorsTotal} tensors, ${r.q4.quantise.length} quantise reports, on the GPU`;
    });

    await step('load tiny-hf from File objects', async () => {
      const hf = fixture('tiny-hf');
      const names = ['config.json', 'tokenizer.json', 'special_tokens_map.json', 'tokenizer_config.json', 'preprocessor_config.json', 'processor_config.json', 'model.safetensors'];
      const got = Float32Array.from(await ev(async ({ base, names, image }) => {
        const files = await Promise.all(names.map(async (n) => new File([await (await fetch(base + n)).blob()], n)));
        const m = await window.Dsvl.load(files, { quant: 'f32' });
        const l = await m.logits({ prompt: 'Describe this image.', images: [image] });
        await m.dispose();
        return Array.from(l);
      }, { base: `${server.url}/fixtures/tiny-hf/`, names, image: img('wide.png') }));
      const err = relL2(got, npy('tiny-hf', caseOf(hf, 'one_image').logits_last));
      assert(err <= TOL, `rel L2 ${err.toExponential(2)} > ${TOL}`);
      return `one_image rel L2 ${err.toExponential(2)}`;
    });

    await step('7B hybrid tower (SAM-B + SigLIP) fixture: f32 and int4 at load', async () => {
      const hy = fixture('tiny-hybrid-orig');
      const r = await ev(async ({ base, image }) => {
        const out = {};
        for (const quant of ['f32', 'q4']) {
          const m = await window.Dsvl.load(base, { quant, cache: false });
          const l = await m.logits({ prompt: 'Describe this image.', images: [image] });
          const i = await m.info();
          await m.dispose();
          out[quant] = { l: Array.from(l), weights: i.weights };
        }
        return out;
      }, { base: `${server.url}/fixtures/tiny-hybrid-orig/`, image: img('wide.png') });
      const want = npy('tiny-hybrid-orig', caseOf(hy, 'one_image').logits_last);
      const err = relL2(Float32Array.from(r.f32.l), want);
      const c4 = cosine(r.q4.l, want);
      assert(err <= TOL, `f32: rel L2 ${err.toExponential(2)} > ${TOL}`);
      assert(/q4/.test(r.q4.weights) && c4 >= 0.98, `q4 (${r.q4.weights}): cosine ${c4}`);
      return `f32 one_image rel L2 ${err.toExponential(2)}; q4 at load cosine ${c4.toFixed(5)}`;
    });
  } catch (e) {
    if (!String(e.message).includes('the remaining steps need it')) {
      failed++;
      console.log(`error: ${e.stack ?? e}`);
    }
  } finally {
    await browser.close();
    server.close();
  }
  console.log(`package tests: ${ran - failed} passed, ${failed} failed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return failed || !ran ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`error: ${e?.stack ?? e}`);
    process.exit(1);
  },
);
