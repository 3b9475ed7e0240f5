// Types of the dsvl-gpu package (src/index.js).

/** What `images` accept: files and blobs (decoded like Pillow), bitmaps, pixels, or URLs. */
export type ImageInput = Blob | File | ImageBitmap | ImageData | URL | string | HTMLImageElement | HTMLCanvasElement;

/** As `dsvl-gpu run --quant`: a base format, optionally with per-part overrides (`q4,lm_head=q8`). */
export type Quant = 'f16' | 'f32' | 'q8' | 'q4' | 'mixed' | (string & {});

/** Load progress. `download`: bytes obtained (network, cache or local files) of the files' total;
 * `upload`: checkpoint bytes of the tensors the model uses that are on the GPU (converted or quantised
 * there), of their total; `quantise`: only when int8/int4 weights are made from a dense checkpoint
 * while loading (`quant` 'q8', 'q4', 'mixed', ...), the checkpoint bytes and tensors of those matrices
 * quantised so far, of their totals, first reported with nothing done; they are part of `upload` too;
 * `warning`: something the user should know (no cache, storage full); `ready`: done. */
export type Progress =
  | { stage: 'download'; loaded: number; total: number; downloaded: number; fromCache: number }
  | { stage: 'upload'; loaded: number; total: number }
  | {
      stage: 'quantise'; loaded: number; total: number; tensors: number; tensorsTotal: number;
      /** Where the quantisation runs: the GPU, unless this device's result differed from the CPU
       * reference on a probe matrix (then `note` says why and the CPU does it). */
      device: 'gpu' | 'cpu';
      note?: string;
    }
  | { stage: 'warning'; message: string }
  | { stage: 'ready' };

export interface LoadOptions {
  /** 'f16' (default): f16 weights, f16 activations where the device has shader-f16. 'f32': the parity
   * path. 'q8' / 'q4' / 'mixed': int8 / int4 weights quantised on the GPU while loading (the `quantise`
   * progress stage), fetched in row chunks. A folder written by `dsvl-gpu quantize` loads in its own
   * formats whatever this says. */
  quant?: Quant;
  onProgress?: (p: Progress) => void;
  signal?: AbortSignal;
  /** Keep downloaded blocks in the Cache API (default true). */
  cache?: boolean;
  /** Bytes per Range request and cache entry (default 16 MiB). */
  blockBytes?: number;
  /** Where worker.js is served, when a bundler does not keep it beside index.js. */
  workerUrl?: string | URL;
}

export interface SamplingOptions {
  /** Default 256. */
  maxNewTokens?: number;
  /** 0 (default): greedy. */
  temperature?: number;
  /** In (0, 1]; 1 (default) is off. */
  topP?: number;
  /** 0 (default) is off. */
  topK?: number;
  /** 1 (default) is off. */
  repetitionPenalty?: number;
  seed?: number;
  /** System prompt; DeepSeek-VL's default when absent. */
  system?: string;
  /** Streams each token's text (may be empty while a character or stop string is incomplete). */
  onToken?: (piece: string, id: number) => void;
  /** Aborting rejects with an AbortError whose `result` holds what was generated. */
  signal?: AbortSignal;
}

export interface GenerateOptions extends SamplingOptions {
  prompt: string;
  images?: ImageInput | ImageInput[];
}

export interface ChatOptions extends SamplingOptions {
  /** Tokens the chat's KV cache holds (default 4096, capped by the model). */
  contextTokens?: number;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
  images?: ImageInput | ImageInput[];
}

export interface Timings {
  preprocessMs: number;
  /** From the start of prefill to the first token. */
  firstTokenMs: number;
  totalMs: number;
  decodeTokensPerSecond: number;
}

export interface GenerateResult {
  text: string;
  tokenIds: number[];
  timings: Timings;
  promptTokens: number;
  /** Prompt tokens run this call (the rest came from the chat's KV cache). */
  prefilledTokens: number;
  stopReason: 'eos' | 'stop' | 'length' | 'abort';
}

export interface ModelInfo {
  adapter: { name: string; backend: string; deviceType: string; driver: string; driverInfo: string };
  /** WebGPU features the runtime uses (kebab-case). */
  features: string[];
  limits: Record<string, number>;
  paths: { f16: boolean; subgroups: boolean; maxBinding: number };
  /** What this device lacks, each with what it costs. */
  lacks: string[];
  quant: Quant;
  /** The weights' formats per part, as `run --json` names them (`f16`, `q8g128`, `mixed`, ...). */
  weights: string;
  /** GPU bytes of the weights (codes and scales included). */
  weight_bytes: number;
  activations: string;
  memory: { gpuLiveBytes: number; gpuPeakBytes: number; gpuCachedBytes: number };
  model: { layout: string; layers: number; hidden: number; vocab: number; maxPositions: number; imageSize: number; imageTokens: number };
  chatCachedTokens: number;
  loadMs: number;
  browser: { vendor: string; architecture: string; description: string; isFallbackAdapter: boolean; features: string[]; limits: Record<string, number> } | null;
  load: { where: string; cached: boolean; bytes: { total: number; downloaded: number; fromCache: number; fromFiles: number }; warnings: string[]; ms: number } | null;
  storage: { usage: number; quota: number } | null;
}

export declare class Dsvl {
  /** `source`: a model folder's base URL (e.g. https://huggingface.co/deepseek-ai/deepseek-vl-1.3b-chat/resolve/main/) or its files. */
  static load(source: string | URL | Iterable<File>, options?: LoadOptions): Promise<Dsvl>;
  /** Deletes the cached model blocks. */
  static clearCache(): Promise<boolean>;
  generate(options: GenerateOptions): Promise<GenerateResult>;
  /** Multi-turn, ending with the user's message; the KV cache is reused between calls. */
  chat(messages: ChatMessage[], options?: ChatOptions): Promise<GenerateResult>;
  resetChat(): Promise<void>;
  /** Next-token logits after the prompt (or conversation), for parity checks. */
  logits(options: { prompt?: string; images?: ImageInput | ImageInput[]; system?: string; messages?: ChatMessage[] }): Promise<Float32Array>;
  info(): Promise<ModelInfo>;
  /** Frees the model and the GPU device; the worker ends. */
  dispose(): Promise<void>;
}

export default Dsvl;
