#!/usr/bin/env python3
"""DeepSeek-VL at its real shapes with random weights: make the checkpoint, compute HF's reference logits,
compare ours with them, and time PyTorch on the same weights and prompt. 1.3B by default; `--hybrid7b` makes
DeepSeek-VL-7B (SAM-B + SigLIP-L hybrid tower, 30-layer 4096-wide llama).

  real_shapes.py make DIR [--hybrid7b]    random checkpoint in the ORIGINAL layout (bf16, config, tokenizer
                                          files, DIR/real.png). 1.3B: one model.safetensors; 7B: shards of at
                                          most 4 GB + model.safetensors.index.json, written tensor by tensor
  real_shapes.py reference DIR OUT.npy    HF DeepseekVL(Hybrid)ForConditionalGeneration in f32 (eager attention)
                                          on the bf16 weights: next-token logits for "Describe this image."
  real_shapes.py compare REF.npy A.npy... relative L2, cosine, max abs error, top-1 agreement (JSON lines)
  real_shapes.py torch-bench DIR [--hybrid7b]
                                          PyTorch bf16 (SDPA, eager mode) on the prompt of `dsvl-gpu bench`:
                                          vision + aligner, time to first token, decode tok/s, peak memory

`--small` makes a tiny model instead (to check this script on a CPU). Needs torch + transformers (5.x);
the tokenizer and the layout conversions come from tests/fixtures/gen_dsvl.py and gen_dsvl_hybrid.py.
"""

import argparse
import json
import os
import statistics
import sys
import time
import zlib

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
import gen_dsvl as g  # noqa: E402
import gen_dsvl_hybrid as hy  # noqa: E402
from transformers import DeepseekVLForConditionalGeneration, DeepseekVLHybridForConditionalGeneration  # noqa: E402

BASE, VOCAB = 100000, 102400  # BOS 100000, EOS 100001, image 100015: the real ids
REAL_V = {"image_size": 384, "patch_size": 16, "width": 1024, "layers": 24, "heads": 16, "mlp_ratio": 4}
REAL_T = {"vocab_size": VOCAB, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24,
          "num_attention_heads": 16, "num_key_value_heads": 16, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
          "max_position_embeddings": 16384}
SMALL_V = {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "heads": 2, "mlp_ratio": 4}
SMALL_T = dict(REAL_T, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=2)
# deepseek-vl-7b-chat: sam_b_downsample at 1024 px, siglip_large_patch16_384, deepseek-llm-7b.
REAL7_HI = {"image_size": 1024, "patch_size": 16, "width": 768, "layers": 12, "heads": 12, "window_size": 14,
            "global_attn_indexes": [2, 5, 8, 11], "out_chans": 256, "downsample_channels": [512, 1024],
            "output_dim": 1024}
REAL7_LO = dict(REAL_V, output_dim=1024)
REAL7_T = dict(REAL_T, hidden_size=4096, intermediate_size=11008, num_hidden_layers=30, num_attention_heads=32,
               num_key_value_heads=32)
SMALL7_HI, SMALL7_LO = hy.TINY_HI, hy.TINY_LO
SHARD_BYTES = 4_000_000_000
QUESTION = "Describe this image."
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def shapes(d):
    """The dims `make` recorded: {"v", "t"} for the 1.3B, {"hi", "lo", "t"} for the hybrid."""
    with open(os.path.join(d, "shapes.json")) as f:
        return json.load(f)


def init_(model, seed):
    """Seeded values of a useful scale, drawn on the model's device (2 B values)."""
    gen = torch.Generator(device=DEV).manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            p.copy_(g.init_value(name, torch.randn(p.shape, generator=gen, device=DEV)))


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
    real_png(d, v["image_size"])
    n = sum(x.numel() for x in orig.values())
    print(json.dumps({"made": d, "params": n, "seconds": round(time.time() - t0, 1)}))


def real_png(d, s):
    """Exactly the model's (high-res) size: preprocessing is then the identity resize, with no PIL-version drift."""
    y, x = np.mgrid[0:s, 0:s]
    a = np.stack([x * 255 // s, y * 255 // s, (x * 7 + y * 13) % 256], -1).astype(np.uint8)
    Image.fromarray(a, "RGB").save(os.path.join(d, "real.png"))


def make_hybrid7b(d, small, shard_bytes, seed=2025):
    """DeepSeek-VL-7B in the original sharded layout. Each tensor is drawn on its own (seeded by its name), cast to
    bf16 and streamed into its shard, so host memory holds one tensor at a time (the largest is 0.8 GB)."""
    hi, lo, t = (SMALL7_HI, SMALL7_LO, SMALL_T) if small else (REAL7_HI, REAL7_LO, REAL7_T)
    os.makedirs(d, exist_ok=True)
    t0 = time.time()
    cfg = hy.hf_config(hi, lo, t, BASE + 15, BASE, BASE + 1)
    with torch.device("meta"):  # names and shapes only
        hf = dict(DeepseekVLHybridForConditionalGeneration(cfg).named_parameters())
    orig = hy.to_original(hf, hi, lo, seed, dtype=torch.bfloat16)  # meta tensors, and the small unused ones

    def value(name):
        meta = orig[name]
        if not meta.is_meta:  # an unused tensor, already made
            return meta
        # The HF parameters this tensor is made of (three for a fused qkv), each drawn from its own seed.
        parts = []
        for n, p in hy.from_original({name: meta}).items():
            gen = torch.Generator(device=DEV).manual_seed(seed ^ zlib.crc32(n.encode()))
            parts.append(g.init_value(n, torch.randn(p.shape, generator=gen, device=DEV)))
        return torch.cat(parts, 0).reshape(meta.shape).to(torch.bfloat16).cpu()

    shards = plan_shards(orig, shard_bytes)
    weight_map = {}
    for i, names in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(d, fname), [(n, list(orig[n].shape)) for n in names], value)
        weight_map.update({n: fname for n in names})
    total = sum(orig[n].numel() * 2 for n in orig)
    g.dump_json(os.path.join(d, "model.safetensors.index.json"),
                {"metadata": {"total_size": total}, "weight_map": weight_map})
    conf = hy.original_config(hi, lo, t, BASE, BASE + 1, overrides=small)
    conf["torch_dtype"] = conf["language_config"]["torch_dtype"] = "bfloat16"
    g.dump_json(os.path.join(d, "config.json"), conf)
    tok = g.build_tokenizer(BASE, VOCAB)
    n_img = (lo["image_size"] // lo["patch_size"]) ** 2
    g.save_tokenizer_files(d, tok, hi["image_size"], hi["patch_size"], hy.CLIP_MEAN, hy.CLIP_STD,
                           do_normalize=False, num_image_tokens=n_img)
    g.dump_json(os.path.join(d, "shapes.json"), {"hi": hi, "lo": lo, "t": t})
    real_png(d, hi["image_size"])
    print(json.dumps({"made": d, "params": total // 2, "shards": len(shards), "seconds": round(time.time() - t0, 1)}))


def plan_shards(tensors, shard_bytes):
    """Names in sorted order, cut into shards of at most shard_bytes (bf16), as lists of names."""
    shards, size = [[]], 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * 2
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_safetensors(path, entries, value):
    """A bf16 safetensors file written tensor by tensor: header from the shapes, then each tensor's bytes."""
    header, off = {}, 0
    for name, shape in entries:
        n = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for name, shape in entries:
            t = value(name)
            assert t.dtype == torch.bfloat16 and list(t.shape) == shape, name
            f.write(t.contiguous().view(torch.int16).numpy().tobytes())
    assert os.path.getsize(path) == 8 + len(h) + off


def is_hybrid(d):
    return "hi" in shapes(d)


def load_hf(d, dtype, attn):
    """HF model on DEV from DIR's original-layout weights, and the dims `make` recorded."""
    s = shapes(d)
    if "hi" in s:
        cfg = hy.hf_config(s["hi"], s["lo"], s["t"], BASE + 15, BASE, BASE + 1)
        with torch.device(DEV):  # the attention class of SAM is fixed at construction
            model = DeepseekVLHybridForConditionalGeneration._from_config(cfg, attn_implementation=attn).eval()
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        remap = hy.from_original
    else:
        cfg = g.hf_config(s["v"], s["t"], BASE + 15, BASE, BASE + 1)
        with torch.device(DEV):
            model = DeepseekVLForConditionalGeneration(cfg).eval()
        model.config._attn_implementation = attn
        files, remap = ["model.safetensors"], g.from_original
    loaded = set()
    for f in files:  # one shard at a time
        missing, unexpected = model.load_state_dict(remap(load_file(os.path.join(d, f), device=DEV)), strict=False)
        assert not unexpected, unexpected
        loaded |= set(model.state_dict()) - set(missing)
    # transformers keeps rotary inv_freq as a (non-persistent) buffer: nothing else may be missing.
    missing = set(model.state_dict()) - loaded
    assert all("inv_freq" in k for k in missing), sorted(missing)
    return model.to(dtype), s


def image_inputs(s, x):
    """Model keyword arguments for processor output `x` [n,3,S,S] (normalised for the 1.3B, in [0,1] for the
    hybrid, whose towers normalise it themselves, after resizing it for the low-res one)."""
    x = torch.from_numpy(x).to(DEV)
    if "hi" not in s:
        return {"pixel_values": x}
    low, high = hy.tower_inputs(x, s["lo"]["image_size"])
    return {"pixel_values": low, "high_res_pixel_values": high}


def image_tokens(s):
    v = s["lo"] if "hi" in s else s["v"]
    return (v["image_size"] // v["patch_size"]) ** 2


def reference(d, out):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, s = load_hf(d, torch.float32, "eager")
    tok = g.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    ids = tok.encode(g.prompt([(f"{g.IMG}{QUESTION}", None)])).ids
    exp = g.expand_images(ids, BASE + 15, image_tokens(s))
    png = os.path.join(d, "real.png")
    if "hi" in s:
        x = g.preprocess(png, s["hi"]["image_size"], hy.CLIP_MEAN, hy.CLIP_STD, do_normalize=False)
    else:
        x = g.preprocess(png, s["v"]["image_size"])
    kw = image_inputs(s, x[None])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([exp], device=DEV), **kw).logits[0, -1]
    logits = logits.float().cpu()
    np.save(out, logits.numpy().astype("<f4"))
    report = {"reference": out, "prompt_tokens": len(exp), "top1": int(logits.argmax())}
    if "hi" in s:
        # HF's image features against the original tower recomputed from the checkpoint's own tensors: at the
        # real shapes this covers window 14 on a 64 grid (padded to 70) and the original's fixed 96x96 resize.
        with torch.no_grad():
            feats = model.model.get_image_features(**kw).pooler_output
            orig = hy.original_image_embeds(original_vision(d), kw["pixel_values"], kw["high_res_pixel_values"],
                                            s["hi"], s["lo"])
        report["original_tower_max_rel_err"] = float((feats - orig).abs().max() / orig.abs().max())
    print(json.dumps(report))


def original_vision(d):
    """The vision tower and aligner tensors of a sharded original checkpoint, on DEV."""
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    out = {}
    for fname in sorted(set(weight_map.values())):
        with safe_open(os.path.join(d, fname), framework="pt", device=DEV) as f:
            for k in f.keys():
                if k.startswith(("vision_model.", "aligner.")):
                    out[k] = f.get_tensor(k)
    return out


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


def synthetic_image(s):
    """`dsvl-gpu bench`'s synthetic image, [3, s, s] in [0, 1]."""
    y, x = np.mgrid[0:s, 0:s]
    a = np.stack([x * 255 // s, y * 255 // s, (x * 7 + y * 13) % 256], 0).astype(np.float32)
    return a / 255.0


def synthetic_pixels(s):
    """The synthetic image normalised with mean = std = 0.5 (the 1.3B's processor output)."""
    return (synthetic_image(s) - 0.5) / 0.5


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def torch_bench(d, runs, decode_tokens, text_tokens):
    model, s = load_hf(d, torch.bfloat16, "sdpa")
    ids = torch.tensor([bench_prompt(image_tokens(s), text_tokens)], device=DEV)
    # The processor output (for the hybrid: at the high-res size), made into tower inputs outside the timing.
    x = synthetic_image(s["hi"]["image_size"]) if "hi" in s else synthetic_pixels(s["v"]["image_size"])
    px = {k: t.to(torch.bfloat16) for k, t in image_inputs(s, x[None]).items()}
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
    vis, ttft, tps = [], [], []
    with torch.no_grad():
        for run in range(runs + 1):
            sync()
            t0 = time.perf_counter()
            model.model.get_image_features(**px)
            sync()
            t1 = time.perf_counter()
            model(input_ids=ids, **px, use_cache=True).logits[0, -1].argmax().item()
            t2 = time.perf_counter()
            out = model.generate(input_ids=ids, **px, max_new_tokens=decode_tokens,
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
        "model": "deepseek-vl-7b (hybrid)" if "hi" in s else "deepseek-vl-1.3b",
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
    m.add_argument("--hybrid7b", action="store_true", help="DeepSeek-VL-7B (hybrid tower), sharded")
    m.add_argument("--shard-bytes", type=int, default=SHARD_BYTES, help=argparse.SUPPRESS)  # small shards for tests
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
    b.add_argument("--hybrid7b", action="store_true", help="DIR holds the 7B hybrid (make --hybrid7b)")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    if a.cmd in ("reference", "torch-bench") and getattr(a, "hybrid7b", is_hybrid(a.dir)) != is_hybrid(a.dir):
        sys.exit(f"{a.dir}: --hybrid7b {'missing' if is_hybrid(a.dir) else 'given'}, but it holds the "
                 f"{'7B hybrid' if is_hybrid(a.dir) else '1.3B'}")
    if a.cmd == "make":
        if a.hybrid7b:
            make_hybrid7b(a.dir, a.small, a.shard_bytes)
        else:
            make(a.dir, a.small)
    elif a.cmd == "reference":
        reference(a.dir, a.out)
    elif a.cmd == "compare":
        compare(a.ref, a.others)
    else:
        torch_bench(a.dir, a.runs, a.decode_tokens, a.text_tokens)


if __name__ == "__main__":
    main()
