// Shared by the browser tests: a static server on 127.0.0.1 with HTTP Range support (and a
// switch to break transfers, for the resume test), and headless Chromium with WebGPU on
// SwiftShader (see web/README.md for the flags). Never downloads a browser.

import { createServer } from 'node:http';
import { open, stat } from 'node:fs/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const WEB_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const REPO_ROOT = resolve(WEB_ROOT, '..');
export const FIXTURES = join(REPO_ROOT, 'tests', 'fixtures', 'dsvl');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.css': 'text/css',
  '.png': 'image/png',
  '.ts': 'text/plain; charset=utf-8',
  '.map': 'application/json',
};

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` → [start, end) or null when unsatisfiable; undefined when absent. */
function parseRange(h, size) {
  if (!h) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start, end;
  if (m[1] === '') {
    start = Math.max(0, size - Number(m[2]));
    end = size;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size : Math.min(size, Number(m[2]) + 1);
  }
  return start < end && start < size ? [start, end] : null;
}

/**
 * Serves `mounts` ({'/url/prefix/': '/dir'}) on a free port of 127.0.0.1. Returns the server
 * with `url`, `log` (every request: {path, range, status, bytes}) and `breakAfter(n)`: after n
 * more Range requests for a .safetensors file, further ones lose their connection (null: never).
 */
export async function serve(mounts = { '/': WEB_ROOT, '/fixtures/': FIXTURES }) {
  const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
  let breakLeft = null;
  const log = [];
  const server = createServer(async (req, res) => {
    const entry = { path: '', range: req.headers.range ?? null, status: 0, bytes: 0 };
    log.push(entry);
    try {
      const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
      entry.path = path;
      const prefix = prefixes.find((p) => path.startsWith(p));
      if (!prefix) throw Object.assign(new Error(), { code: 'ENOENT' });
      const root = mounts[prefix];
      const file = normalize(join(root, path.slice(prefix.length)));
      if (file !== root && !file.startsWith(root + sep)) throw Object.assign(new Error(), { code: 'ENOENT' });
      const st = await stat(file);
      if (!st.isFile()) throw Object.assign(new Error(), { code: 'ENOENT' });
      const range = parseRange(req.headers.range, st.size);
      if (range !== undefined && file.endsWith('.safetensors') && breakLeft !== null && breakLeft-- <= 0) {
        entry.status = -1;
        req.socket.destroy(); // an interrupted transfer
        return;
      }
      const headers = {
        'Content-Type': MIME[extname(file)] ?? 'application/octet-stream',
        'Cache-Control': 'no-store',
        'Accept-Ranges': 'bytes',
        ETag: `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`,
      };
      if (range === null) {
        entry.status = 416;
        res.writeHead(416, { ...headers, 'Content-Range': `bytes */${st.size}` });
        res.end();
        return;
      }
      const [start, end] = range ?? [0, st.size];
      const fh = await open(file);
      const body = Buffer.alloc(end - start);
      try {
        await fh.read(body, 0, body.length, start);
      } finally {
        await fh.close();
      }
      entry.status = range ? 206 : 200;
      entry.bytes = body.length;
      if (range) headers['Content-Range'] = `bytes ${start}-${end - 1}/${st.size}`;
      res.writeHead(entry.status, { ...headers, 'Content-Length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      entry.status = e.code === 'ENOENT' ? 404 : 500;
      res.writeHead(entry.status, { 'Content-Type': 'text/plain' });
      res.end(e.code === 'ENOENT' ? 'not found' : String(e));
    }
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', ok);
  });
  server.url = `http://127.0.0.1:${server.address().port}`;
  server.log = log;
  server.breakAfter = (n) => (breakLeft = n);
  return server;
}

// WebGPU in headless Chromium without a GPU: --enable-unsafe-webgpu gives an adapter,
// --use-webgpu-adapter=swiftshader pins the one CI has. DSVL_CHROMIUM_ARGS replaces them.
export const GPU_ARGS = process.env.DSVL_CHROMIUM_ARGS?.split(/\s+/).filter(Boolean) ?? ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];
// Keep Chromium off the network and out of first-run work.
const HOUSEKEEPING_ARGS = ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'];

/** Headless Chromium with a fresh profile; `close()` removes the profile. */
export async function launch(options = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'dsvl-chromium-'));
  const args = [...GPU_ARGS, ...HOUSEKEEPING_ARGS];
  const ctx = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args, timeout: 120_000, ...options });
  const close = async () => {
    await ctx.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  };
  return { ctx, args, close, version: ctx.browser()?.version() ?? '?' };
}

/** Relative L2 error, in f64. */
export function relL2(got, want) {
  if (got.length !== want.length) throw new Error(`length ${got.length} vs ${want.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** A little-endian f32 C-order .npy as {shape, data: Float32Array}. */
export function readNpy(buf) {
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error('not a .npy file');
  const v1 = buf[6] === 1;
  const hlen = v1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = v1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + hlen);
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True")) throw new Error(`unsupported .npy: ${header}`);
  const shape = /'shape': \(([^)]*)\)/.exec(header)[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const bytes = buf.subarray(start + hlen);
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  return { shape, data };
}

/** Where tests put what they save (screenshots): $DSVL_TEST_OUT or target/web-tests. */
export const OUT_DIR = process.env.DSVL_TEST_OUT ?? join(REPO_ROOT, 'target', 'web-tests');

/** Logs the page's console errors and warnings and the worker's, prefixed. */
export function forwardConsole(page, all = false) {
  page.on('console', (msg) => {
    if (all || msg.type() === 'error' || msg.type() === 'warning') console.log(`[browser ${msg.type()}] ${msg.text()}`);
  });
  page.on('pageerror', (e) => console.log(`[browser pageerror] ${e.message}`));
}
