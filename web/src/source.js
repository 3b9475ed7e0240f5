// A model folder as the wasm loader wants it: the small files whole, each safetensors file's
// header, and a reader of byte ranges. From a base URL (HTTP Range requests through the block
// cache of remote.js) or from the File objects a user picked (File.slice).

import { openCache, RemoteFile } from './remote.js';

/** Files read whole; the first two are required. */
const SMALL = ['config.json', 'tokenizer.json', 'special_tokens_map.json', 'tokenizer_config.json', 'preprocessor_config.json', 'processor_config.json'];
const INDEX = 'model.safetensors.index.json';
const SINGLE = 'model.safetensors';
export const DEFAULT_BLOCK_BYTES = 16 << 20;

const utf8 = new TextDecoder();

/** Shard names from the index, or the single file. */
function shardNames(indexBytes) {
  if (!indexBytes) return [SINGLE];
  let map;
  try {
    map = JSON.parse(utf8.decode(indexBytes)).weight_map;
  } catch (e) {
    throw new Error(`${INDEX}: not valid JSON (${e.message})`);
  }
  if (!map || typeof map !== 'object') throw new Error(`${INDEX}: no weight_map`);
  const names = [...new Set(Object.values(map))].sort();
  for (const n of names) {
    if (typeof n !== 'string' || !n || /[/\\]/.test(n) || n === '.' || n === '..') throw new Error(`${INDEX}: shard ${JSON.stringify(n)} is not a plain file name`);
  }
  return names;
}

function headerLength(first8, name) {
  if (first8.length < 8) throw new Error(`${name}: too short for a safetensors file`);
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > 100n << 20n) throw new Error(`${name}: header length ${n} exceeds 100 MiB`);
  return 8 + Number(n);
}

/** From a base URL. `ctx`: {signal, blockBytes, useCache, warn, stats}. */
async function fromUrl(base, ctx) {
  const root = new URL(base, self.location.href);
  if (!root.pathname.endsWith('/')) root.pathname += '/';
  const get = async (name, required) => {
    let r;
    try {
      r = await fetch(new URL(name, root), { signal: ctx.signal });
    } catch (e) {
      if (ctx.signal?.aborted) throw e;
      throw new Error(`cannot reach ${new URL(name, root)}: ${e.message} (offline, or the server does not allow this origin through CORS)`);
    }
    if (r.status === 404) {
      if (required) throw new Error(`${new URL(name, root)}: not found (is ${root} a DeepSeek-VL model folder?)`);
      return undefined;
    }
    if (!r.ok) throw new Error(`${new URL(name, root)}: HTTP ${r.status} ${r.statusText}`);
    return new Uint8Array(await r.arrayBuffer());
  };
  const small = {};
  // Fetched together, but a failure is reported in SMALL's order (config.json first), not in
  // the order the responses happen to arrive.
  const settled = await Promise.allSettled(SMALL.map((n, i) => get(n, i < 2)));
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  const got = settled.map((r) => r.value);
  SMALL.forEach((n, i) => got[i] && (small[n] = got[i]));
  const names = shardNames(await get(INDEX, false));
  const cache = ctx.useCache ? await openCache() : null;
  if (ctx.useCache && !cache) ctx.warn('the Cache API is unavailable here (not a secure context?): downloads are not cached');
  const fileCtx = { cache, blockBytes: ctx.blockBytes, signal: ctx.signal, stats: ctx.stats, warn: ctx.warn, cacheFull: false };
  const files = new Map();
  const shards = [];
  for (const name of names) {
    const f = new RemoteFile(new URL(name, root).href, fileCtx);
    const first = await f.open(8);
    ctx.stats.total += f.size;
    files.set(name, f);
    shards.push({ name, head: await f.read(0, headerLength(first, name)), size: f.size });
  }
  const read = (name, start, end) => {
    const f = files.get(name);
    if (!f) return Promise.reject(new Error(`unknown shard ${name}`));
    return f.read(start, end);
  };
  return { small, shards, read, cached: !!cache, where: root.href };
}

/** From picked files (a folder's contents); names are matched by base name. */
async function fromFiles(list, ctx) {
  const byName = new Map();
  for (const f of list) {
    if (!(f instanceof Blob) || typeof f.name !== 'string') throw new Error('source files must be File objects');
    const depth = (f.webkitRelativePath || f.name).split('/').length;
    const prev = byName.get(f.name);
    if (!prev || depth < prev.depth) byName.set(f.name, { file: f, depth });
  }
  const bytes = async (f, s, e) => new Uint8Array(await (s === undefined ? f : f.slice(s, e)).arrayBuffer());
  const small = {};
  for (const [i, n] of SMALL.entries()) {
    const f = byName.get(n)?.file;
    if (!f && i < 2) throw new Error(`${n} is missing from the picked files (pick the whole model folder)`);
    if (f) small[n] = await bytes(f);
  }
  const index = byName.get(INDEX)?.file;
  const names = shardNames(index ? await bytes(index) : undefined);
  const shards = [];
  for (const name of names) {
    const f = byName.get(name)?.file;
    if (!f) throw new Error(`${name} is missing from the picked files`);
    ctx.stats.total += f.size;
    const first = await bytes(f, 0, 8);
    shards.push({ name, head: await bytes(f, 0, Math.min(f.size, headerLength(first, name))), size: f.size });
  }
  const read = async (name, start, end) => {
    ctx.signal?.throwIfAborted();
    const b = await bytes(byName.get(name).file, start, end);
    ctx.stats.fromFiles += b.length;
    ctx.stats.progress();
    return b;
  };
  return { small, shards, read, cached: false, where: 'local files' };
}

/**
 * Opens a model source: a base URL string (or URL) or an array / FileList of File objects.
 * `ctx.stats` collects {total, downloaded, fromCache, fromFiles} and `progress()` reports them.
 */
export function openSource(source, ctx) {
  if (typeof source === 'string' || source instanceof URL) return fromUrl(String(source), ctx);
  if (source && typeof source[Symbol.iterator] === 'function') return fromFiles([...source], ctx);
  throw new Error('source must be a model folder URL or the model folder\'s File objects');
}
