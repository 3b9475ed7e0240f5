#!/usr/bin/env python3
"""How sensitive is the random-weight DeepSeek-VL-1.3B decoder to weight error? (issue 4's q4 bound)

Builds the decoder at its real shapes with `bench/real_shapes.py`'s seeded initialisation (f32, CPU,
text only), takes next-token logits for a fixed 64-token prompt, and compares them (cosine) with the
logits after perturbing the weights of every decoder linear layer and the head:

  q4g32z        int4 in groups of 32 with scale and offset, round to nearest (the `q4` format's maths,
                re-done here in torch: a study of magnitudes, not the shipped quantiser)
  q8g128        int8 in groups of 128, symmetric
  noise=q4      Gaussian noise with the same RMS error as q4g32z, matrix by matrix: no quantiser at all
  q4 layer 0 / q4 layer 23 / q4 head     int4 on one place only

If `noise=q4` loses as much as `q4g32z`, the cosine is set by the size of the error and the network's
amplification of it, not by the quantiser's pattern. Usage: python3 bench/q4_sensitivity.py [--layers N]
(needs ~8 GB of memory and a few minutes of CPU).
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
import gen_dsvl as g  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


def q4g32z(w):
    x = w.reshape(w.shape[0], -1, 32)
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp_min(1e-12)
    q = ((x - lo) / scale).round().clamp(0, 15)
    return (q * scale + lo).reshape(w.shape)


def q8g128(w):
    x = w.reshape(w.shape[0], -1, 128)
    scale = (x.abs().amax(-1, keepdim=True) / 127).clamp_min(1e-12)
    return ((x / scale).round().clamp(-127, 127) * scale).reshape(w.shape)


def noise_like_q4(w, gen):
    err = (q4g32z(w) - w).pow(2).mean().sqrt()
    return w + err * torch.randn(w.shape, generator=gen)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=24)
    a = ap.parse_args()
    t = {"hidden": 2048, "layers": a.layers, "heads": 16, "kv_heads": 16, "intermediate": 5632, "vocab": 102400}
    cfg = LlamaConfig(vocab_size=t["vocab"], hidden_size=t["hidden"], intermediate_size=t["intermediate"],
                      num_hidden_layers=t["layers"], num_attention_heads=t["heads"], num_key_value_heads=t["kv_heads"],
                      max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(2024)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            p.copy_(g.init_value(name, torch.randn(p.shape, generator=gen)))
    ids = torch.randint(0, t["vocab"], (1, 64), generator=torch.Generator().manual_seed(7))

    def logits():
        with torch.no_grad():
            return model(ids).logits[0, -1].double()

    base = logits()
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    originals = {n: m.weight.detach().clone() for n, m in linears}

    def run(label, pick, f):
        ngen = torch.Generator().manual_seed(11)
        with torch.no_grad():
            for n, m in linears:
                if pick(n):
                    w = originals[n]
                    m.weight.copy_(f(w, ngen) if f is noise_like_q4 else f(w))
        out = logits()
        with torch.no_grad():
            for n, m in linears:
                m.weight.copy_(originals[n])
        cos = torch.nn.functional.cosine_similarity(out, base, dim=0).item()
        print(json.dumps({"perturbation": label, "cosine": round(cos, 5), "top1_equal": bool(out.argmax() == base.argmax())}), flush=True)

    last = t["layers"] - 1
    run("q8g128 everywhere", lambda n: True, q8g128)
    run("q4g32z everywhere", lambda n: True, q4g32z)
    run("noise=q4 everywhere", lambda n: True, noise_like_q4)
    run("q4g32z layer 0 only", lambda n: n.startswith("model.layers.0."), q4g32z)
    run(f"q4g32z layer {last} only", lambda n: n.startswith(f"model.layers.{last}."), q4g32z)
    run("q4g32z head only", lambda n: n == "lm_head", q4g32z)
    rel = []
    for n, _ in linears[:3]:
        w = originals[n]
        rel.append((q4g32z(w) - w).pow(2).mean().sqrt().item() / w.pow(2).mean().sqrt().item())
    print(json.dumps({"q4g32z relative RMS weight error (first matrices)": [round(r, 4) for r in rel]}))


if __name__ == "__main__":
    main()
