// Runs the library's kernel checks inside a module Web Worker, as the product will run all GPU
// work. Protocol: receives {filter}, posts {type: 'names'|'adapter'|'result'|'done'|'error', ...}.
import init, { adapterInfo, kernelCheckNames, runKernelChecks } from '../pkg/dsvl_gpu.js';

const post = (m) => self.postMessage(m);

self.onmessage = async (ev) => {
  try {
    if (!self.navigator.gpu) {
      throw new Error('navigator.gpu is missing in this worker: WebGPU is not enabled');
    }
    // The browser's own view of the adapter (vendor/architecture), before wgpu opens it.
    const adapter = await self.navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error('navigator.gpu.requestAdapter() returned null: no WebGPU adapter');
    const i = adapter.info ?? {};
    post({
      type: 'browser-adapter',
      info: `${i.vendor || '?'} / ${i.architecture || '?'} / ${i.description || ''}` +
        ` (fallback: ${i.isFallbackAdapter ?? adapter.isFallbackAdapter ?? '?'},` +
        ` features: ${[...adapter.features].sort().join(' ')})`,
    });

    await init();
    post({ type: 'names', names: JSON.parse(kernelCheckNames()) });
    post({ type: 'adapter', info: await adapterInfo() });
    const results = JSON.parse(
      await runKernelChecks(ev.data?.filter || null, (json) => post({ type: 'result', result: JSON.parse(json) })),
    );
    post({ type: 'done', results });
  } catch (e) {
    post({ type: 'error', message: String(e?.message ?? e) });
  }
};
