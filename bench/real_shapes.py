#!/usr/bin/env python3
"""DeepSeek-VL-1.3B at its real shapes with random weights: make the checkpoint, compute HF's reference
logits, compare ours with them, and time PyTorch on the same weights and prompt.

  real_shapes.py make DIR                 random 1.3B checkpoint in the ORIGINAL layout (bf16, one
                                          model.safetensors, config, tokenizer files) + DIR/real.png
  real_shapes.py reference DIR OUT.npy    HF DeepseekVLForConditionalGeneration in f32 (eager attention) on
                                          the bf16 weights: next-token logits for "Describe this image."
  real_shapes.py compare REF.npy A.npy... relative L2, cosine, max abs error, top-1 agreement (JSON lines)
  real_shapes.py torch-bench DIR          PyTorch bf16 (SDPA, eager mode) on the prompt of `dsvl-gpu bench`:
                                          vision + aligner, time to first token, decode tok/s, peak memory

`--small` makes a tiny model instead (to check this script on a CPU). Needs torch + transformers (5.x);
the tokenizer and the layout conversion come from tests/fixtures/gen_dsvl.py.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
import gen_dsvl as g  # noqa: E402
from transformers import DeepseekVLForConditionalGeneration  # noqa: E402

BASE, VOCAB = 100000, 102400  # BOS 100000, EOS 100001, image 100015: the real ids
REAL_V = {"image_size": 384, "patch_size": 16, "width": 1024, "layers": 24, "heads": 16, "mlp_ratio": 4}
REAL_T = {"vocab_size": VOCAB, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24,
          "num_attention_heads": 16, "num_key_value_heads": 16, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
          "max_position_embeddings": 16384}
SMALL_V = {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "heads": 2, "mlp_ratio": 4}
SMALL_T = dict(REAL_T, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=2)
QUESTION = "Describe this image."
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def shapes(d):
    with open(os.path.join(d, "shapes.json")) as f:
        s = json.load(f)
    return s["v"], s["t"]


def init_(model, seed):
    """Seeded values of a useful scale, drawn on the model's device (2 B values)."""
    gen = torch.Generator(device=DEV).manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=gen, device=DEV)
            if "norm" in name:
                p.copy_(1 + 0.1 * r if name.endswith("weight") else 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            elif "embed_tokens" in name:
                p.copy_(r)
            elif "position_embedding" in name:
                p.copy_(0.2 * r)
            else:
                p.copy_(r / math.sqrt(math.prod(p.shape[1:])))


def make(d, small):
    v, t = (SMALL_V, SMALL_T) if small else (REAL_V, REAL_T)
    os.makedirs(d, exist_ok=True)
    t0 = time.time()
    tok = g.build_tokenizer(BASE, VOCAB)
    cfg = g.hf_config(v, t, BASE + 15, BASE, BASE + 1)
    with torch.device(DEV):
        model = DeepseekVLForConditionalGeneration(cfg).eval()
    init_(model, 2024)
    sd = {k: x.to(torch.bfloat16) for k, x in model.state_dict().items()}
    del model
    orig = g.to_original(sd, v["width"], 2024)
    orig = {k: x.to(torch.bfloat16).cpu().contiguous() for k, x in orig.items()}  # the real checkpoint is bf16
    save_file(orig, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    conf = g.original_config(v, t, BASE, BASE + 1)
    conf["torch_dtype"] = conf["language_config"]["torch_dtype"] = "bfloat16"
    if not small:  # the real config names the tower only by model_name
        for k in ("width", "layers", "heads", "mlp_ratio", "patch_size"):
            del conf["vision_config"]["params"][k]
    g.dump_json(os.path.join(d, "config.json"), conf)
    g.save_tokenizer_files(d, tok, v["image_size"], v["patch_size"])
    g.dump_json(os.path.join(d, "shapes.json"), {"v": v, "t": t})
    # Exactly the model's size: preprocessing is then the identity resize, with no PIL-version drift.
    s = v["image_size"]
    y, x = np.mgrid[0:s, 0:s]
    a = np.stack([x * 255 // s, y * 255 // s, (x * 7 + y * 13) % 256], -1).astype(np.uint8)
    Image.fromarray(a, "RGB").save(os.path.join(d, "real.png"))
    n = sum(x.numel() for x in orig.values())
    print(json.dumps({"made": d, "params": n, "seconds": round(time.time() - t0, 1)}))


def load_hf(d, dtype, attn):
    v, t = shapes(d)
    cfg = g.hf_config(v, t, BASE + 15, BASE, BASE + 1)
    with torch.device(DEV):
        model = DeepseekVLForConditionalGeneration(cfg).eval()
    sd = g.from_original(load_file(os.path.join(d, "model.safetensors"), device=DEV))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # transformers keeps rotary inv_freq as a (non-persistent) buffer: nothing else may be missing.
    assert not unexpected and all("inv_freq" in k for k in missing), (missing, unexpected)
    model = model.to(dtype)
    model.config._attn_implementation = attn
    return model, v


def reference(d, out):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, v = load_hf(d, torch.float32, "eager")
    tok = g.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    ids = tok.encode(g.prompt([(f"{g.IMG}{QUESTION}", None)])).ids
    n_img = (v["image_size"] // v["patch_size"]) ** 2
    exp = []
    for i in ids:
        exp += [BASE + 15] * n_img if i == BASE + 15 else [i]
    px = torch.from_numpy(g.preprocess(os.path.join(d, "real.png"), v["image_size"])[None]).to(DEV)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([exp], device=DEV), pixel_values=px).logits[0, -1].float().cpu()
    np.save(out, logits.numpy().astype("<f4"))
    print(json.dumps({"reference": out, "prompt_tokens": len(exp), "top1": int(logits.argmax())}))


def compare(ref, others):
    r = np.load(ref).astype(np.float64)
    for p in others:
        a = np.load(p).astype(np.float64)
        rel = float(np.linalg.norm(a - r) / np.linalg.norm(r))
        cos = float(a @ r / (np.linalg.norm(a) * np.linalg.norm(r)))
        top5 = len(set(np.argsort(-a)[:5]) & set(np.argsort(-r)[:5]))
        print(json.dumps({"file": os.path.basename(p), "rel_l2": rel, "cosine": cos,
                          "max_abs": float(np.abs(a - r).max()), "top1_equal": int(a.argmax()) == int(r.argmax()),
                          "top5_overlap": top5}))


def bench_prompt(image_tokens, text_tokens):
    """The prompt `dsvl-gpu bench` builds (src/bench_model.rs)."""
    ids = [BASE] + [BASE + 15] * image_tokens
    for i in range(text_tokens - 1):
        t = (1000 + 37 * i) % VOCAB
        ids.append(t + 1 if t == BASE + 15 else t)
    return ids


def synthetic_pixels(s):
    """`dsvl-gpu bench`'s synthetic image, normalised with mean = std = 0.5."""
    y, x = np.mgrid[0:s, 0:s]
    a = np.stack([x * 255 // s, y * 255 // s, (x * 7 + y * 13) % 256], 0).astype(np.float32)
    return (a / 255.0 - 0.5) / 0.5


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def torch_bench(d, runs, decode_tokens, text_tokens):
    model, v = load_hf(d, torch.bfloat16, "sdpa")
    n_img = (v["image_size"] // v["patch_size"]) ** 2
    ids = torch.tensor([bench_prompt(n_img, text_tokens)], device=DEV)
    px = torch.from_numpy(synthetic_pixels(v["image_size"])[None]).to(DEV, torch.bfloat16)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
    vis, ttft, tps = [], [], []
    with torch.no_grad():
        for run in range(runs + 1):
            sync()
            t0 = time.perf_counter()
            model.model.get_image_features(pixel_values=px)
            sync()
            t1 = time.perf_counter()
            model(input_ids=ids, pixel_values=px, use_cache=True).logits[0, -1].argmax().item()
            t2 = time.perf_counter()
            out = model.generate(input_ids=ids, pixel_values=px, max_new_tokens=decode_tokens,
                                 min_new_tokens=decode_tokens, do_sample=True, temperature=0.7, top_p=0.9, top_k=0)
            sync()
            t3 = time.perf_counter()
            assert out.shape[1] == ids.shape[1] + decode_tokens
            if run > 0:
                vis.append(t1 - t0)
                ttft.append(t2 - t1)
                # generate = prefill + (n - 1) decode steps; prefill measured just before
                tps.append((decode_tokens - 1) / max(t3 - t2 - (t2 - t1), 1e-9))
    peak = torch.cuda.max_memory_allocated() if DEV == "cuda" else 0
    print(json.dumps({
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "dtype": "bfloat16", "attn": "sdpa",
        "prompt_tokens": int(ids.shape[1]), "runs": runs,
        "vision_ms": 1e3 * statistics.median(vis), "first_token_ms": 1e3 * statistics.median(ttft),
        "decode_tokens": decode_tokens, "decode_tok_s": statistics.median(tps), "gpu_peak_bytes": peak,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--small", action="store_true")
    r = sub.add_parser("reference")
    r.add_argument("dir")
    r.add_argument("out")
    c = sub.add_parser("compare")
    c.add_argument("ref")
    c.add_argument("others", nargs="+")
    b = sub.add_parser("torch-bench")
    b.add_argument("dir")
    b.add_argument("--runs", type=int, default=5)
    b.add_argument("--decode-tokens", type=int, default=256)
    b.add_argument("--text-tokens", type=int, default=40)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    if a.cmd == "make":
        make(a.dir, a.small)
    elif a.cmd == "reference":
        reference(a.dir, a.out)
    elif a.cmd == "compare":
        compare(a.ref, a.others)
    else:
        torch_bench(a.dir, a.runs, a.decode_tokens, a.text_tokens)


if __name__ == "__main__":
    main()
