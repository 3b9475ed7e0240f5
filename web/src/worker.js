// The package's worker: owns the wasm module, the GPU device and one model. index.js talks to
// it by messages: {id, op, args} in; {id, type: 'progress' | 'token' | 'result' | 'error'} out;
// {op: 'abort', target} stops the call `target`. Calls that use the model run one at a time.

import init, { loadModel, trimGpu } from '../pkg/dsvl_gpu.js';
import { abortError } from './remote.js';
import { DEFAULT_BLOCK_BYTES, openSource } from './source.js';

let model = null;
let browser = null; // what the browser says about the adapter, before wgpu opens it
let load = null; // {where, cached, stats, warnings}
let broken = null; // set when the wasm module trapped: it cannot be trusted afterwards
const controllers = new Map(); // call id → AbortController
let queue = Promise.resolve();

const post = (m, transfer) => self.postMessage(m, transfer ?? []);

/** Refuses clearly when the browser or device lacks what the model needs. */
async function checkWebGpu() {
  if (!self.navigator.gpu) {
    throw new Error('WebGPU is not available in this browser (navigator.gpu is missing in the worker): use a recent Chrome, Edge or Safari, or enable WebGPU');
  }
  const adapter = await self.navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('WebGPU is present but no GPU adapter is available (blocklisted GPU or WebGPU disabled)');
  const i = adapter.info ?? {};
  const l = adapter.limits;
  browser = {
    vendor: i.vendor ?? '', architecture: i.architecture ?? '', description: i.description ?? '',
    isFallbackAdapter: !!(i.isFallbackAdapter ?? adapter.isFallbackAdapter),
    features: [...adapter.features].sort(),
    limits: { maxStorageBufferBindingSize: l.maxStorageBufferBindingSize, maxBufferSize: l.maxBufferSize, maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup, maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage },
  };
  // The kernels need 8 storage buffers per stage and 256 invocations per workgroup (WebGPU's defaults).
  if (l.maxStorageBuffersPerShaderStage < 8 || l.maxComputeInvocationsPerWorkgroup < 256) {
    throw new Error(`this GPU's WebGPU limits are too small: ${l.maxStorageBuffersPerShaderStage} storage buffers per stage (8 needed), ${l.maxComputeInvocationsPerWorkgroup} invocations per workgroup (256 needed)`);
  }
}

/** An image from the page as the wasm wants it: file bytes, or RGBA pixels of a bitmap. */
async function imageBytes(img, signal) {
  if (img instanceof Blob) return new Uint8Array(await img.arrayBuffer());
  if (typeof img === 'string') {
    const r = await fetch(img, { signal });
    if (!r.ok) throw new Error(`image ${img}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  }
  if (typeof ImageBitmap !== 'undefined' && img instanceof ImageBitmap) {
    const c = new OffscreenCanvas(img.width, img.height);
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, img.width, img.height);
    return { width: d.width, height: d.height, rgba: new Uint8Array(d.data.buffer) };
  }
  if (img && img.rgba && img.width && img.height) return { width: img.width, height: img.height, rgba: new Uint8Array(img.rgba.buffer ?? img.rgba) };
  throw new Error('an image must be a Blob, File, ImageBitmap, ImageData or URL');
}

async function opLoad(id, { source, quant = 'f16', blockBytes = DEFAULT_BLOCK_BYTES, cache = true }, signal) {
  if (model) throw new Error('this worker already holds a model');
  await checkWebGpu();
  await init();
  const warnings = [];
  const warn = (message) => {
    warnings.push(message);
    post({ id, type: 'progress', data: { stage: 'warning', message } });
  };
  let lastPost = 0;
  const stats = {
    total: 0, downloaded: 0, fromCache: 0, fromFiles: 0,
    progress() {
      const now = Date.now();
      if (now - lastPost < 50) return;
      lastPost = now;
      post({ id, type: 'progress', data: { stage: 'download', loaded: stats.downloaded + stats.fromCache + stats.fromFiles, total: stats.total, downloaded: stats.downloaded, fromCache: stats.fromCache } });
    },
  };
  const src = await openSource(source, { signal, blockBytes, useCache: cache, warn, stats });
  const t0 = performance.now();
  // {stage: 'upload', ...} and, when weights are quantised while loading, {stage: 'quantise', ...}.
  model = await loadModel(src.small, src.shards, src.read, quant, (p) => post({ id, type: 'progress', data: p }));
  const { total, downloaded, fromCache, fromFiles } = stats;
  load = { where: src.where, cached: src.cached, bytes: { total, downloaded, fromCache, fromFiles }, warnings, ms: performance.now() - t0 };
  post({ id, type: 'progress', data: { stage: 'ready' } });
  return info();
}

async function info() {
  const r = model ? JSON.parse(model.info()) : {};
  let storage = null;
  try {
    storage = await self.navigator.storage?.estimate?.();
  } catch {}
  // wgpu names no adapter on the web; the browser's own description does.
  if (r.adapter && !r.adapter.name && browser) r.adapter.name = [browser.vendor, browser.architecture, browser.description].filter(Boolean).join(' / ') || 'unknown';
  const lacks = [...(r.lacks ?? [])];
  if (browser?.isFallbackAdapter) lacks.push('a hardware GPU: this is a software adapter, expect slow generation');
  return { ...r, lacks, browser, load, storage: storage ? { usage: storage.usage, quota: storage.quota } : null };
}

/** The wasm's streaming call with abort wired to onToken's return value. */
async function opGenerate(id, method, request, images, signal) {
  if (!model) throw new Error('no model loaded');
  const raws = [];
  for (const img of images ?? []) raws.push(await imageBytes(img, signal));
  const onToken = (piece, tokenId) => {
    post({ id, type: 'token', piece, tokenId });
    return !signal.aborted;
  };
  const json = await model[method](JSON.stringify(request), raws, onToken);
  return JSON.parse(json);
}

async function opLogits(id, request, images, signal) {
  if (!model) throw new Error('no model loaded');
  const raws = [];
  for (const img of images ?? []) raws.push(await imageBytes(img, signal));
  return model.logits(JSON.stringify(request), raws);
}

function opDispose() {
  model?.free();
  model = null;
  try {
    trimGpu();
  } catch {}
  return true;
}

async function run(m, signal) {
  switch (m.op) {
    case 'load': return opLoad(m.id, m.args, signal);
    case 'generate': return opGenerate(m.id, 'generate', m.args.request, m.args.images, signal);
    case 'chat': return opGenerate(m.id, 'chat', m.args.request, m.args.images, signal);
    case 'logits': return opLogits(m.id, m.args.request, m.args.images, signal);
    case 'resetChat': return model?.resetChat();
    case 'dispose': return opDispose();
    default: throw new Error(`unknown op ${m.op}`);
  }
}

async function handle(m, controller) {
  try {
    controller.signal.throwIfAborted(); // aborted while it waited its turn
    if (broken) throw new Error(`the wasm module failed earlier (${broken}); load the model again`);
    const value = await run(m, controller.signal);
    if (value instanceof Float32Array) post({ id: m.id, type: 'result', value }, [value.buffer]);
    else post({ id: m.id, type: 'result', value });
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) broken = e.message;
    const aborted = controller.signal.aborted;
    post({ id: m.id, type: 'error', name: aborted ? 'AbortError' : (e?.name ?? 'Error'), message: aborted ? 'aborted' : String(e?.message ?? e) });
  } finally {
    controllers.delete(m.id);
  }
}

self.onmessage = ({ data: m }) => {
  if (m.op === 'abort') {
    controllers.get(m.target)?.abort(abortError());
    return;
  }
  if (m.op === 'info') {
    // Answered at once, even while a call runs.
    info().then(
      (value) => post({ id: m.id, type: 'result', value }),
      (e) => post({ id: m.id, type: 'error', message: String(e?.message ?? e) }),
    );
    return;
  }
  const controller = new AbortController();
  controllers.set(m.id, controller);
  queue = queue.then(() => handle(m, controller));
};
