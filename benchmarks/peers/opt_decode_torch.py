#!/usr/bin/python3
"""The PyTorch peer of bench_opt_decode: an OPT-2.7B-shaped decoder written from scratch in torch.

The computation of Hugging Face's OPTDecoder in eval mode (pre-LN layers, q scaled by head_dim^-0.5 after
its bias, ReLU, final LayerNorm, lm_head tied to embed_tokens, positions offset by 2) with a KV cache that
grows by concatenation, as transformers' generation does: a prefill of L embedding rows, then one position
per sequence per step at batch 1 (greedy) and batch 5 (the prefill's cache repeated five times, as beam
search expands it). float32, no_grad.

Weights and inputs come from the counter-based hash the C++ side uses (peer_common.values, in
for_each_opt_parameter order), so the greedy tokens of both can be compared.

Run with /usr/bin/python3 (Debian's python3-torch). Prints one JSON line on stdout.
  opt_decode_torch.py --threads 2 --layers 32 --tokens 16 --prompt 8 --reps 5
"""
import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from peer_common import IMAGE_ORDINAL, loaded_blas, values

V, C, NH, FFN, QUERIES, EPS = 50272, 2560, 32, 10240, 32, 1e-5
HD = C // NH


class Maker:
    """Parameters in for_each_opt_parameter order; ordinal = position in that order."""

    def __init__(self):
        self.ordinal = 0

    def tensor(self, shape, kind):
        n = int(np.prod(shape))
        scale, shift = {"weight": (0.05, 0.0), "bias": (0.02, 0.0), "ln_weight": (0.1, 1.0), "ln_bias": (0.02, 0.0)}[kind]
        t = torch.from_numpy(values(self.ordinal, n, scale, shift).reshape(shape))
        self.ordinal += 1
        return t


def make_params(layers):
    mk = Maker()
    p = {"embed": mk.tensor((V, C), "weight"), "pos": mk.tensor((2048 + 2, C), "weight"),
         "final_w": mk.tensor((C,), "ln_weight"), "final_b": mk.tensor((C,), "ln_bias"), "layers": []}
    for _ in range(layers):
        lp = {}
        for n in ("q", "k", "v", "o"):
            lp[n + "_w"] = mk.tensor((C, C), "weight")
            lp[n + "_b"] = mk.tensor((C,), "bias")
        lp["ln1_w"], lp["ln1_b"] = mk.tensor((C,), "ln_weight"), mk.tensor((C,), "ln_bias")
        lp["fc1_w"], lp["fc1_b"] = mk.tensor((FFN, C), "weight"), mk.tensor((FFN,), "bias")
        lp["fc2_w"], lp["fc2_b"] = mk.tensor((C, FFN), "weight"), mk.tensor((C,), "bias")
        lp["ln2_w"], lp["ln2_b"] = mk.tensor((C,), "ln_weight"), mk.tensor((C,), "ln_bias")
        p["layers"].append(lp)
    return p


def heads(x):  # (B, T, C) -> (B, NH, T, HD)
    return x.view(x.shape[0], x.shape[1], NH, HD).transpose(1, 2)


def forward(p, h, start, cache):
    """h (B, T, C) embeddings at positions start .. start+T-1; cache: list of (k, v) per layer or None."""
    B, T, _ = h.shape
    h = h + p["pos"][start + 2:start + 2 + T]
    new_cache = []
    for i, lp in enumerate(p["layers"]):
        a = F.layer_norm(h, (C,), lp["ln1_w"], lp["ln1_b"], EPS)
        q = heads(F.linear(a, lp["q_w"], lp["q_b"]) * HD ** -0.5)
        k, v = heads(F.linear(a, lp["k_w"], lp["k_b"])), heads(F.linear(a, lp["v_w"], lp["v_b"]))
        if cache is not None:
            k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
        new_cache.append((k, v))
        s = q @ k.transpose(-1, -2)
        if T > 1:
            S = k.shape[2]
            s = s + torch.full((T, S), torch.finfo(s.dtype).min).triu(S - T + 1)
        ctx = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        h = h + F.linear(ctx, lp["o_w"], lp["o_b"])
        a = F.layer_norm(h, (C,), lp["ln2_w"], lp["ln2_b"], EPS)
        h = h + F.linear(F.relu(F.linear(a, lp["fc1_w"], lp["fc1_b"])), lp["fc2_w"], lp["fc2_b"])
    last = F.layer_norm(h[:, -1], (C,), p["final_w"], p["final_b"], EPS)
    return F.linear(last, p["embed"]), new_cache


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    p = make_params(a.layers)
    fill_s = time.perf_counter() - t0
    L = QUERIES + a.prompt
    e = torch.from_numpy(values(IMAGE_ORDINAL, L * C).reshape(1, L, C))
    out = {"torch": torch.__version__, "blas": loaded_blas(), "threads": a.threads, "fill_s": fill_s}
    with torch.no_grad():
        times = []
        for r in range(a.reps + 1):
            t0 = time.perf_counter()
            logits, cache = forward(p, e, 0, None)
            if r:
                times.append(time.perf_counter() - t0)
        out["prefill_ms"] = statistics.median(times) * 1e3
        # batch 1, greedy
        tokens, times = [], []
        logits, cache = forward(p, e, 0, None)
        for k in range(a.tokens):
            tok = int(logits[0].argmax())
            tokens.append(tok)
            t0 = time.perf_counter()
            logits, cache = forward(p, p["embed"][tok].view(1, 1, C), L + k, cache)
            times.append(time.perf_counter() - t0)
        out["decode1_ms"], out["tokens"] = statistics.median(times) * 1e3, tokens
        # batch 5: the prefill's cache repeated, then five rows per step
        times = []
        logits, cache = forward(p, e, 0, None)
        logits = logits.repeat(5, 1)
        cache = [(k.repeat(5, 1, 1, 1), v.repeat(5, 1, 1, 1)) for k, v in cache]
        for k in range(a.tokens):
            toks = [(int(logits[b].argmax()) + b) % V for b in range(5)]
            t0 = time.perf_counter()
            logits, cache = forward(p, p["embed"][toks].view(5, 1, C), L + k, cache)
            times.append(time.perf_counter() - t0)
        out["decode5_ms"] = statistics.median(times) * 1e3
    out["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 * 1e-9
    print(json.dumps(out))


if __name__ == "__main__":
    main()
