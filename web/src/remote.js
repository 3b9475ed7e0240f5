// A safetensors file on an HTTP server, read in fixed-size blocks by Range requests. Each block
// is kept in the Cache API with its SHA-256 and the file's version (ETag, else size), so a
// later load, or a load after an interrupted one, fetches only the blocks it lacks, and a block
// that does not hash to what was stored is fetched again. Blocks ahead of the last read are
// fetched in the background while the GPU takes the current one.

const CACHE_NAME = 'dsvl-gpu-blocks-v1';
const RETRIES = 3;
const READ_AHEAD = 2;
const KEEP = 4; // blocks kept in memory: small neighbouring tensors share blocks

export class QuotaError extends Error {}

async function sha256(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

const isQuota = (e) => e?.name === 'QuotaExceededError' || /quota/i.test(String(e?.message ?? ''));

/** Opens the shared block cache, or null where the Cache API is unavailable (insecure origin). */
export async function openCache() {
  try {
    return self.caches ? await self.caches.open(CACHE_NAME) : null;
  } catch {
    return null;
  }
}

/** Deletes every cached block (the package's `Dsvl.clearCache`). */
export async function clearCache() {
  return self.caches ? self.caches.delete(CACHE_NAME) : false;
}

export class RemoteFile {
  /**
   * @param {string} url absolute URL of the file
   * @param {object} ctx {cache, blockBytes, signal, stats, warn}
   */
  constructor(url, ctx) {
    this.url = url;
    this.ctx = ctx;
    this.B = ctx.blockBytes;
    this.memory = new Map(); // block index → Uint8Array (insertion order = age)
    this.inflight = new Map(); // block index → Promise<Uint8Array>
  }

  /** One network request for `start..end` (end exclusive); checks what came back. */
  async request(start, end) {
    let last;
    for (let attempt = 0; attempt <= RETRIES; attempt++) {
      this.ctx.signal?.throwIfAborted();
      try {
        const r = await fetch(this.url, { headers: { Range: `bytes=${start}-${end - 1}` }, signal: this.ctx.signal });
        if (r.status !== 206 && r.status !== 200) throw new Error(`${this.url}: HTTP ${r.status} ${r.statusText}`);
        const version = r.headers.get('ETag');
        if (this.version && version && !this.version.startsWith('size:') && version !== this.version) {
          throw new Error(`${this.url} changed on the server while loading (ETag ${this.version} → ${version}); load again`);
        }
        if (r.status === 200 && !(Number(r.headers.get('Content-Length')) <= 64 << 20)) {
          // The server ignored Range: fine for a small file, refused before reading a checkpoint whole.
          await r.body?.cancel().catch(() => {});
          throw new Error(`${this.url}: the server ignores HTTP Range requests (needed for large files)`);
        }
        const got = /^bytes (\d+)-/.exec(r.headers.get('Content-Range') ?? '');
        if (r.status === 206 && got && Number(got[1]) !== start) throw new Error(`${this.url}: asked for bytes from ${start}, got from ${got[1]}`);
        const body = new Uint8Array(await r.arrayBuffer());
        const bytes = r.status === 200 ? body.subarray(start, end) : body;
        return { bytes, response: r, total: r.status === 200 ? body.length : totalOf(r) };
      } catch (e) {
        if (e?.name === 'AbortError' || this.ctx.signal?.aborted) throw abortError();
        if (/changed on the server|ignores HTTP Range|HTTP 4\d\d/.test(String(e?.message))) throw e;
        last = e;
        await new Promise((ok) => setTimeout(ok, 250 * 2 ** attempt));
      }
    }
    throw new Error(`${this.url}: download failed after ${RETRIES + 1} attempts: ${last?.message ?? last}`);
  }

  /** Learns the size and version; returns the first `n` bytes (the header's length and more). */
  async open(n) {
    const { bytes, response, total: ranged } = await this.request(0, n);
    // Content-Range may be hidden by CORS; a HEAD's Content-Length is always readable.
    const total = Number.isFinite(ranged) ? ranged : await this.headSize();
    if (!Number.isFinite(total)) {
      throw new Error(`${this.url}: no file size in the response (Content-Range missing or not exposed by CORS)`);
    }
    this.size = total;
    this.version = response.headers.get('ETag') || `size:${total}`;
    this.ctx.stats.downloaded += bytes.length;
    return bytes;
  }

  async headSize() {
    try {
      const r = await fetch(this.url, { method: 'HEAD', signal: this.ctx.signal });
      const n = r.ok ? Number(r.headers.get('Content-Length')) : NaN;
      return n > 0 ? n : NaN;
    } catch {
      return NaN;
    }
  }

  key(i) {
    const u = new URL(this.url);
    u.searchParams.set('dsvl-block', `${i}`);
    u.searchParams.set('dsvl-block-bytes', `${this.B}`);
    return u.href;
  }

  async fromCache(i, len) {
    const cache = this.ctx.cache;
    if (!cache) return null;
    const hit = await cache.match(this.key(i)).catch(() => undefined);
    if (!hit) return null;
    const bytes = new Uint8Array(await hit.arrayBuffer());
    if (hit.headers.get('x-dsvl-version') !== this.version || bytes.length !== len) return null;
    if (hit.headers.get('x-dsvl-sha256') !== (await sha256(bytes))) {
      this.ctx.warn(`cached block ${i} of ${this.url} was corrupt; fetching it again`);
      return null;
    }
    return bytes;
  }

  async toCache(i, bytes) {
    const cache = this.ctx.cache;
    if (!cache || this.ctx.cacheFull) return;
    const headers = { 'Content-Type': 'application/octet-stream', 'x-dsvl-version': this.version, 'x-dsvl-sha256': await sha256(bytes) };
    try {
      await cache.put(this.key(i), new Response(bytes, { headers }));
    } catch (e) {
      if (!isQuota(e)) throw e;
      this.ctx.cacheFull = true;
      this.ctx.warn('browser storage is full: the rest of the model is not cached (free space or clear site data to cache it)');
    }
  }

  async block(i) {
    const start = i * this.B;
    const end = Math.min(start + this.B, this.size);
    let bytes = await this.fromCache(i, end - start);
    if (bytes) {
      this.ctx.stats.fromCache += bytes.length;
    } else {
      ({ bytes } = await this.request(start, end));
      if (bytes.length !== end - start) throw new Error(`${this.url}: got ${bytes.length} bytes for range ${start}-${end - 1}`);
      this.ctx.stats.downloaded += bytes.length;
      await this.toCache(i, bytes);
    }
    this.ctx.stats.progress();
    return bytes;
  }

  get(i) {
    if (this.memory.has(i)) return Promise.resolve(this.memory.get(i));
    if (!this.inflight.has(i)) {
      const p = this.block(i).then(
        (b) => {
          this.inflight.delete(i);
          this.memory.set(i, b);
          while (this.memory.size > KEEP + READ_AHEAD) this.memory.delete(this.memory.keys().next().value);
          return b;
        },
        (e) => {
          this.inflight.delete(i);
          throw e;
        },
      );
      this.inflight.set(i, p);
    }
    return this.inflight.get(i);
  }

  /** Bytes `start..end` of the file (end exclusive). */
  async read(start, end) {
    if (!(start >= 0 && end >= start && end <= this.size)) throw new Error(`${this.url}: range ${start}..${end} outside ${this.size} bytes`);
    const out = new Uint8Array(end - start);
    if (end === start) return out;
    const first = Math.floor(start / this.B);
    const last = Math.floor((end - 1) / this.B);
    const blocks = this.size / this.B;
    for (let i = last + 1; i <= last + READ_AHEAD && i < blocks; i++) this.get(i).catch(() => {}); // read-ahead; errors resurface on use
    for (let i = first; i <= last; i++) {
      const b = await this.get(i);
      const s = Math.max(start, i * this.B);
      const e = Math.min(end, i * this.B + b.length);
      out.set(b.subarray(s - i * this.B, e - i * this.B), s - start);
    }
    return out;
  }
}

function totalOf(response) {
  const m = /\/(\d+)\s*$/.exec(response.headers.get('Content-Range') ?? '');
  return m ? Number(m[1]) : NaN;
}

export function abortError() {
  return new DOMException('aborted', 'AbortError');
}
