// The demo page: load a model (hub URL or a local folder), attach images (drop, paste, pick),
// chat with streamed answers, stop, and see progress, the adapter and speed. Uses only the
// package's public API (../src/index.js). `?model=URL&quant=f32` preset the form.

import { Dsvl } from '../src/index.js';

const $ = (id) => document.getElementById(id);
const els = Object.fromEntries(
  ['model-url', 'model-files', 'quant', 'load', 'cancel-load', 'progress', 'p-download', 't-download', 'p-upload', 't-upload', 'b-quantise', 'p-quantise', 't-quantise', 'model-status', 'adapter',
    'transcript', 'drop', 'previews', 'image-input', 'question', 'ask', 'stop', 'new-chat', 'max-new-tokens', 'temperature', 'stats'].map((id) => [id, $(id)]),
);

let model = null;
let loading = null; // AbortController of the load in progress
let asking = null; // AbortController of the answer in progress
let pending = []; // images for the next message: {file, url}
let messages = []; // the conversation: {role, content, images: File[]}

const params = new URLSearchParams(location.search);
if (params.get('model')) els['model-url'].value = params.get('model');
if (params.get('quant')) els.quant.value = params.get('quant');

const mb = (n) => `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} MB`;

function status(el, text, cls = '') {
  el.textContent = text;
  el.className = `status ${cls}`;
}

function setBusy() {
  const ready = !!model && !loading;
  els.load.disabled = !!loading;
  els['cancel-load'].hidden = !loading;
  els.ask.disabled = !ready || !!asking;
  els.stop.disabled = !asking;
  els['new-chat'].disabled = !ready || !!asking || messages.length === 0;
}

function onProgress(p) {
  if (p.stage === 'download' || p.stage === 'upload') {
    const bar = els[`p-${p.stage}`];
    bar.max = p.total || 1;
    bar.value = p.loaded;
    const cached = p.fromCache ? `, ${mb(p.fromCache)} cached` : '';
    els[`t-${p.stage}`].textContent = `${mb(p.loaded)} / ${mb(p.total)}${cached}`;
  } else if (p.stage === 'quantise') {
    els['b-quantise'].hidden = false;
    els['p-quantise'].max = p.tensorsTotal || 1;
    els['p-quantise'].value = p.tensors;
    els['t-quantise'].textContent = `${p.tensors} / ${p.tensorsTotal} tensors on the ${p.device.toUpperCase()}`;
    if (p.note) status(els['model-status'], p.note, 'warning');
  } else if (p.stage === 'warning') {
    status(els['model-status'], p.message, 'warning');
  }
}

function describe(info) {
  const lines = [
    `adapter: ${info.adapter.name} (${info.adapter.deviceType})`,
    `weights ${info.weights}, activations ${info.activations}; ${mb(info.memory.gpuLiveBytes)} on the GPU; loaded in ${(info.loadMs / 1000).toFixed(1)} s`,
    `features: ${info.features.join(', ') || 'none'}`,
    `max storage binding: ${mb(info.limits.maxStorageBufferBindingSize)}, max buffer: ${mb(info.limits.maxBufferSize)}`,
  ];
  if (info.lacks.length) lines.push(`this device lacks: ${info.lacks.join('; ')}`);
  if (info.load?.bytes) lines.push(`from ${info.load.where}: ${mb(info.load.bytes.downloaded)} downloaded, ${mb(info.load.bytes.fromCache)} from cache`);
  return lines.join('\n');
}

async function load() {
  const files = [...els['model-files'].files];
  const source = files.length ? files : els['model-url'].value.trim();
  if (!files.length && !source) return status(els['model-status'], 'give a model URL or pick a folder', 'error');
  if (model) {
    await model.dispose();
    model = null;
  }
  loading = new AbortController();
  els.progress.hidden = false;
  els['b-quantise'].hidden = true;
  els.adapter.hidden = true;
  status(els['model-status'], `loading ${files.length ? `${files.length} local files` : source}…`);
  setBusy();
  try {
    model = await Dsvl.load(source, { quant: els.quant.value, onProgress, signal: loading.signal });
    const info = await model.info();
    els.adapter.textContent = describe(info);
    els.adapter.hidden = false;
    status(els['model-status'], 'ready: attach an image and ask', 'ready');
    newChat();
  } catch (e) {
    status(els['model-status'], e.name === 'AbortError' ? 'loading cancelled' : `could not load: ${e.message}`, e.name === 'AbortError' ? '' : 'error');
  } finally {
    loading = null;
    setBusy();
  }
}

function addImages(list) {
  for (const file of list) {
    if (!file.type.startsWith('image/')) continue;
    const url = URL.createObjectURL(file);
    pending.push({ file, url });
    const img = document.createElement('img');
    img.src = url;
    img.alt = file.name || 'pasted image';
    img.title = 'click to remove';
    img.onclick = () => {
      pending = pending.filter((p) => p.url !== url);
      img.remove();
    };
    els.previews.appendChild(img);
  }
}

function bubble(role, text, images = []) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = role === 'user' ? 'You' : 'DeepSeek-VL';
  div.appendChild(who);
  for (const im of images) {
    const img = document.createElement('img');
    img.src = im.url;
    img.alt = 'attached image';
    div.appendChild(img);
  }
  const t = document.createElement('span');
  t.className = 'text';
  t.textContent = text;
  div.appendChild(t);
  els.transcript.appendChild(div);
  div.scrollIntoView({ block: 'end' });
  return { div, text: t };
}

function newChat() {
  messages = [];
  els.transcript.textContent = '';
  els.stats.textContent = '';
  model?.resetChat().catch(() => {});
  setBusy();
}

async function ask() {
  const question = els.question.value.trim();
  if (!model || asking || (!question && !pending.length)) return;
  const imgs = pending;
  pending = [];
  els.previews.textContent = '';
  els.question.value = '';
  bubble('user', question, imgs);
  messages.push({ role: 'user', content: question, images: imgs.map((i) => i.file) });
  const answer = bubble('assistant', '');
  answer.div.classList.add('streaming');
  asking = new AbortController();
  setBusy();
  let text = '';
  let out = null;
  try {
    out = await model.chat(messages, {
      maxNewTokens: Number(els['max-new-tokens'].value) || 256,
      temperature: Number(els.temperature.value) || 0,
      signal: asking.signal,
      onToken: (piece) => {
        text += piece;
        answer.text.textContent = text;
      },
    });
  } catch (e) {
    if (e.name === 'AbortError' && e.result) {
      out = e.result;
    } else {
      messages.pop(); // the question was not answered; it can be asked again
      answer.text.textContent = `error: ${e.message}`;
      answer.div.classList.add('error');
    }
  } finally {
    answer.div.classList.remove('streaming');
    asking = null;
    setBusy();
  }
  if (out) {
    answer.text.textContent = out.text;
    messages.push({ role: 'assistant', content: out.text.trim() });
    const t = out.timings;
    const stopped = out.stopReason === 'abort' ? ' (stopped)' : '';
    els.stats.textContent = `time to first token ${(t.firstTokenMs / 1000).toFixed(2)} s · ${t.decodeTokensPerSecond.toFixed(1)} tokens/s · ` +
      `${out.tokenIds.length} tokens${stopped} · prompt ${out.promptTokens} tokens (${out.prefilledTokens} new)`;
  }
}

els.load.onclick = load;
els['model-url'].oninput = () => (els['model-files'].value = ''); // the URL wins once edited
els['cancel-load'].onclick = () => loading?.abort();
els.ask.onclick = ask;
els.stop.onclick = () => asking?.abort();
els['new-chat'].onclick = newChat;
els['image-input'].onchange = () => {
  addImages(els['image-input'].files);
  els['image-input'].value = '';
};
els.question.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    ask();
  }
});
els.drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  els.drop.classList.add('over');
});
els.drop.addEventListener('dragleave', () => els.drop.classList.remove('over'));
els.drop.addEventListener('drop', (e) => {
  e.preventDefault();
  els.drop.classList.remove('over');
  addImages(e.dataTransfer.files);
});
document.addEventListener('paste', (e) => {
  const files = [...(e.clipboardData?.items ?? [])].filter((i) => i.kind === 'file').map((i) => i.getAsFile()).filter(Boolean);
  if (files.length) {
    e.preventDefault();
    addImages(files);
  }
});
if (!navigator.gpu) {
  status(els['model-status'], 'This browser has no WebGPU (navigator.gpu is missing): use a recent Chrome, Edge or Safari.', 'error');
  els.load.disabled = true;
} else {
  setBusy();
}
