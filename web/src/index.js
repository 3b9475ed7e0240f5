// dsvl-gpu: DeepSeek-VL on WebGPU. The main-thread side: a small proxy that starts the
// package's worker (worker.js, which owns the wasm module and the GPU) and turns its messages
// into promises and callbacks, so the page never blocks. Types: index.d.ts.

let nextId = 1;

function abortError(message = 'aborted') {
  return new DOMException(message, 'AbortError');
}

/** Makes a page-side image postable to the worker (Blob, File, ImageBitmap, ImageData, URL, <img>, <canvas>). */
async function postableImage(img) {
  if (img instanceof Blob) return img;
  if (typeof img === 'string' || img instanceof URL) return new URL(String(img), globalThis.location?.href).href;
  if (typeof ImageBitmap !== 'undefined' && img instanceof ImageBitmap) return img;
  if (typeof ImageData !== 'undefined' && img instanceof ImageData) return { width: img.width, height: img.height, rgba: new Uint8Array(img.data.buffer.slice(0)) };
  if (typeof HTMLImageElement !== 'undefined' && img instanceof HTMLImageElement) return new URL(img.currentSrc || img.src, location.href).href;
  if (typeof HTMLCanvasElement !== 'undefined' && img instanceof HTMLCanvasElement) return createImageBitmap(img);
  throw new TypeError('an image must be a Blob, File, ImageBitmap, ImageData, URL or string URL');
}

async function postableImages(list) {
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) list = [list];
  return Promise.all(list.map(postableImage));
}

/** Sampling and length options shared by generate and chat, in the wasm's names. */
function requestOptions(o) {
  const r = {};
  for (const k of ['system', 'maxNewTokens', 'temperature', 'topP', 'topK', 'repetitionPenalty', 'seed', 'contextTokens']) {
    if (o[k] !== undefined) r[k] = o[k];
  }
  return r;
}

export class Dsvl {
  /** Use `Dsvl.load`. */
  constructor(worker) {
    this._worker = worker;
    this._calls = new Map();
    this._disposed = false;
    worker.onmessage = ({ data: m }) => this._message(m);
    worker.onerror = (e) => this._fail(`the worker failed: ${e.message || 'see the console'}`);
    worker.onmessageerror = () => this._fail('a message from the worker could not be read');
  }

  /**
   * Loads a model. `source`: the base URL of a model folder, or its File objects.
   * Options: quant ('f16' | 'f32' | 'q8' | 'q4' | 'mixed', as `run --quant`), onProgress({stage, loaded, total, ...}), signal, cache
   * (default true), workerUrl (where worker.js is served, if a bundler moved it).
   */
  static async load(source, options = {}) {
    const { quant = 'f16', onProgress, signal, cache = true, blockBytes, workerUrl } = options;
    signal?.throwIfAborted();
    if (typeof navigator === 'undefined' || !navigator.gpu) {
      throw new Error('WebGPU is not available in this browser (navigator.gpu is missing): use a recent Chrome, Edge or Safari, or enable WebGPU');
    }
    if (typeof source === 'string' || source instanceof URL) {
      source = new URL(String(source), globalThis.location?.href).href;
      // Ask once that the cached model survive storage pressure (main thread only).
      if (cache) await navigator.storage?.persist?.().catch(() => false);
    } else if (source && typeof source[Symbol.iterator] === 'function') {
      source = [...source];
    } else {
      throw new TypeError('source must be a model folder URL or the model folder\'s File objects');
    }
    const worker = new Worker(workerUrl ?? new URL('./worker.js', import.meta.url), { type: 'module', name: 'dsvl-gpu' });
    const model = new Dsvl(worker);
    try {
      await model._call('load', { source, quant, cache, blockBytes }, { onProgress, signal });
    } catch (e) {
      model._terminate(e);
      throw e;
    }
    return model;
  }

  /** Deletes every cached model block (Cache API). */
  static async clearCache() {
    return globalThis.caches ? caches.delete('dsvl-gpu-blocks-v1') : false;
  }

  _message(m) {
    const c = this._calls.get(m.id);
    if (!c) return;
    if (m.type === 'progress') {
      try {
        c.onProgress?.(m.data);
      } catch (e) {
        console.warn('dsvl-gpu: onProgress threw', e);
      }
    } else if (m.type === 'token') {
      try {
        c.onToken?.(m.piece, m.tokenId);
      } catch (e) {
        console.warn('dsvl-gpu: onToken threw', e);
      }
    } else if (m.type === 'result') {
      this._calls.delete(m.id);
      c.resolve(m.value);
    } else if (m.type === 'error') {
      this._calls.delete(m.id);
      c.reject(m.name === 'AbortError' ? abortError(m.message) : new Error(m.message));
    }
  }

  _fail(message) {
    const e = new Error(message);
    for (const c of this._calls.values()) c.reject(e);
    this._calls.clear();
  }

  _terminate(reason) {
    this._disposed = true;
    this._worker.terminate();
    for (const c of this._calls.values()) c.reject(reason instanceof Error ? reason : new Error(String(reason)));
    this._calls.clear();
  }

  _call(op, args, { onProgress, onToken, signal } = {}, transfer = []) {
    if (this._disposed) return Promise.reject(new Error('this model was disposed'));
    if (signal?.aborted) return Promise.reject(abortError());
    const id = nextId++;
    return new Promise((resolve, reject) => {
      const onAbort = () => this._worker.postMessage({ op: 'abort', target: id });
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => signal?.removeEventListener('abort', onAbort);
      this._calls.set(id, {
        onProgress, onToken,
        resolve: (v) => (done(), resolve(v)),
        reject: (e) => (done(), reject(e)),
      });
      this._worker.postMessage({ id, op, args }, transfer);
    });
  }

  /** Runs `generate` or `chat` in the worker; an abort rejects with AbortError carrying the partial result. */
  async _stream(op, request, images, options) {
    const out = await this._call(op, { request, images }, options);
    if (out.stopReason === 'abort') {
      const e = abortError('generation aborted');
      e.result = out;
      throw e;
    }
    return out;
  }

  /**
   * Answers one prompt about `images`. Resolves to {text, tokenIds, timings, ...}; onToken(piece, id)
   * streams; `signal` aborts.
   */
  async generate(options) {
    const { prompt, images, onToken, signal } = options ?? {};
    if (typeof prompt !== 'string') throw new TypeError('generate: prompt must be a string');
    const request = { prompt, ...requestOptions(options) };
    return this._stream('generate', request, await postableImages(images), { onToken, signal });
  }

  /**
   * Multi-turn: `messages` [{role: 'system' | 'user' | 'assistant', content, images?}], ending with
   * the user's. The KV cache is kept between calls: only what changed since the last call is prefilled.
   */
  async chat(messages, options = {}) {
    if (!Array.isArray(messages)) throw new TypeError('chat: messages must be an array');
    const images = [];
    const msgs = [];
    for (const m of messages) {
      const imgs = m.images === undefined ? [] : Array.isArray(m.images) ? m.images : [m.images];
      images.push(...imgs);
      msgs.push({ role: m.role, content: String(m.content ?? ''), images: imgs.length });
    }
    const request = { messages: msgs, ...requestOptions(options) };
    return this._stream('chat', request, await postableImages(images), options);
  }

  /** Forgets the chat's KV cache. */
  resetChat() {
    return this._call('resetChat', {});
  }

  /** Next-token logits after the prompt (Float32Array of the vocabulary size), for parity checks. */
  async logits({ prompt, images, system, messages } = {}) {
    const request = messages ? { messages: messages.map((m) => ({ role: m.role, content: m.content, images: (m.images ?? []).length })) } : { prompt };
    if (system !== undefined) request.system = system;
    const all = messages ? messages.flatMap((m) => m.images ?? []) : images;
    return this._call('logits', { request, images: await postableImages(all) });
  }

  /** Adapter, features, limits, what the device lacks, GPU memory, model and load statistics. */
  info() {
    return this._call('info', {});
  }

  /** Frees the model and the GPU device (the worker ends). */
  async dispose() {
    if (this._disposed) return;
    for (const id of this._calls.keys()) this._worker.postMessage({ op: 'abort', target: id });
    try {
      await this._call('dispose', {});
    } finally {
      this._terminate(new Error('this model was disposed'));
    }
  }
}

export default Dsvl;
