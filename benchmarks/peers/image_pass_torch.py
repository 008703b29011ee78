#!/usr/bin/python3
"""The PyTorch peer of bench_image_pass: the Q-Former image pass, written from scratch in torch.

The same computation as blip2cpp's encode_image_kv + qformer_forward(queries only): the cross-attention
keys/values of the image (every cross layer), the learned queries through the embedding LayerNorm, then
12 post-LN BERT layers (self-attention, cross-attention on layers 0, 2, ..., the query FFN). Eval mode
(no dropout), no_grad, float32, batch-major (B, Q, C) as PyTorch code would write it.

Weights and images are not loaded: both programs generate them from the same counter-based hash
(peer_common.values here, bench_common.hpp's unit and fill_hashed on the C++ side), so their outputs can be
compared element by element.

Run with /usr/bin/python3 (Debian's python3-torch). Prints one JSON object (rows one per line) on stdout.
  image_pass_torch.py --threads 2 --batches 1,8 --reps 10 [--bf16 [--bf16-batches 1] [--bf16-reps 3]] [--dump DIR]
                      [--device cuda]
--dump writes the B = 1 outputs as raw float32 (Q x C): torch_f32.bin and, with --bf16, torch_bf16.bin.
--device cuda runs on the GPU (bench_gpu's peer): weights and images moved there once, TF32 off (float32 is
float32, as the C++ side's default), bf16 autocast on cuda, every timed call ended by torch.cuda.synchronize().
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
import torch.nn.functional as F

from peer_common import IMAGE_ORDINAL, loaded_blas, ms_summary, values

# BLIP-2 sizes (Blip2QFormerConfig defaults, EVA ViT-g image tokens)
L, C, NH, FFN, Q, N, E, FREQ, EPS = 12, 768, 12, 3072, 32, 257, 1408, 2, 1e-12

class Maker:
    """Parameters in blip2cpp's for_each_parameter order (no text side); ordinal = position in that order."""

    def __init__(self):
        self.ordinal = 0

    def tensor(self, shape, kind):
        n = math.prod(shape)
        v = values(self.ordinal, n)
        self.ordinal += 1
        if kind == "weight":
            v = v * 0.05
        elif kind == "bias":
            v = v * 0.02
        elif kind == "ln_weight":
            v = 1.0 + v * 0.1
        elif kind == "ln_bias":
            v = v * 0.02
        return torch.from_numpy(v.reshape(shape).copy())

    def linear(self, n, k):
        return (self.tensor((n, k), "weight"), self.tensor((n,), "bias"))

    def norm(self):
        return (self.tensor((C,), "ln_weight"), self.tensor((C,), "ln_bias"))

    def attention(self, kv_width):
        return dict(query=self.linear(C, C), key=self.linear(C, kv_width), value=self.linear(C, kv_width),
                    dense=self.linear(C, C), norm=self.norm())


def make_model():
    mk = Maker()
    m = dict(query_tokens=mk.tensor((1, Q, C), "unit"), embed_norm=mk.norm(), layers=[])
    for l in range(L):
        layer = dict(self=mk.attention(C))
        if l % FREQ == 0:
            layer["cross"] = mk.attention(E)
        layer["intermediate"] = mk.linear(FFN, C)
        layer["output"] = mk.linear(C, FFN)
        layer["norm"] = mk.norm()
        m["layers"].append(layer)
    m["vision_projection"] = mk.linear(256, C)  # made for the ordinal order; not part of the pass
    return m


def make_images(b):
    """(b, N, E) from IMAGE_ORDINAL, flattened: image 0 is the same for every b."""
    return torch.from_numpy(values(IMAGE_ORDINAL, b * N * E).reshape(b, N, E).copy())


def attention(q, k, v):
    """multi-head softmax(q k^T / sqrt(HS)) v; q (B, T, C), k and v (B, S, C)."""
    B, T, _ = q.shape
    S = k.shape[1]
    hs = C // NH
    qh = q.view(B, T, NH, hs).transpose(1, 2)  # (B, NH, T, HS)
    kh = k.view(B, S, NH, hs).transpose(1, 2)  # (B, NH, S, HS)
    vh = v.view(B, S, NH, hs).transpose(1, 2)
    probs = torch.softmax(torch.matmul(qh, kh.transpose(-1, -2)) * (1.0 / math.sqrt(hs)), dim=-1)
    return torch.matmul(probs, vh).transpose(1, 2).reshape(B, T, C)  # (B, T, C)


def image_pass(m, images):
    B = images.shape[0]
    ln = lambda x, wb: F.layer_norm(x, (C,), wb[0], wb[1], EPS)
    lin = lambda x, wb: F.linear(x, wb[0], wb[1])
    # the image side once: cross-attention keys/values of every cross layer, (B, N, C)
    kv = [(lin(images, ly["cross"]["key"]), lin(images, ly["cross"]["value"])) if "cross" in ly else None
          for ly in m["layers"]]
    x = ln(m["query_tokens"].expand(B, Q, C), m["embed_norm"])  # (B, Q, C)
    for ly, ckv in zip(m["layers"], kv):
        a = ly["self"]
        ctx = attention(lin(x, a["query"]), lin(x, a["key"]), lin(x, a["value"]))
        h = ln(lin(ctx, a["dense"]) + x, a["norm"])
        if ckv is not None:
            c = ly["cross"]
            cctx = attention(lin(h, c["query"]), ckv[0], ckv[1])
            h = ln(lin(cctx, c["dense"]) + h, c["norm"])
        x = ln(lin(F.gelu(lin(h, ly["intermediate"])), ly["output"]) + h, ly["norm"])
    return x  # (B, Q, C)


def to_device(obj, device):
    """the model's nested dicts, lists and tuples of tensors, moved to device"""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, reps, warmup, device="cpu"):
    """median and all times of reps calls after warmup untimed ones, and the last call's result"""
    for _ in range(warmup):
        fn()
    sync(device)
    t = []
    out = None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        t.append(time.perf_counter() - t0)
    return statistics.median(t), t, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="also time torch.autocast('cpu', bfloat16)")
    ap.add_argument("--bf16-reps", type=int, default=0, help="reps for bf16 (default: --reps)")
    ap.add_argument("--bf16-batches", default="", help="batch sizes for bf16 (default: --batches)")
    ap.add_argument("--dump", default="")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (the GPU peer of bench_gpu)")
    ap.add_argument("--matmul-probe", type=int, default=0,
                    help="also time one n^3 torch.mm in float32 and in bfloat16 (f32 accumulation inside)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device
    if dev.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    m = to_device(make_model(), dev)
    rows = []
    outs = {}
    batches = [int(b) for b in args.batches.split(",") if b]
    bf16_batches = [int(b) for b in (args.bf16_batches or args.batches).split(",") if b] if args.bf16 else []
    # float32 first (the comparison that counts, close in time to the caller's own runs), bf16 after
    cases = [("float32", None, B) for B in batches] + [("bf16 autocast", torch.bfloat16, B) for B in bf16_batches]
    for name, dt, B in cases:
        images = make_images(B).to(dev)

        def run():
            with torch.no_grad():
                if dt is None:
                    return image_pass(m, images)
                with torch.autocast(device_type="cuda" if dev.startswith("cuda") else "cpu", dtype=dt):
                    return image_pass(m, images).float()
        reps = args.reps if dt is None or args.bf16_reps <= 0 else args.bf16_reps
        # bf16 runs for seconds on CPUs without native bf16: no untimed warm-up there
        _, samples, out = timed(run, reps, args.warmup if dt is None or dev != "cpu" else 0, dev)
        rows.append(dict(dtype=name, B=B, **ms_summary(samples)))
        if B == 1:
            outs[name] = out.float().contiguous().cpu()
    probe = None
    if args.matmul_probe > 0:
        n = args.matmul_probe
        a, b = (torch.rand(n, n) - 0.5).to(dev), (torch.rand(n, n) - 0.5).to(dev)
        probe = {}
        for name, x, y in [("float32", a, b), ("bfloat16", a.bfloat16(), b.bfloat16())]:
            med, _, _ = timed(lambda: torch.mm(x, y), 3 if name == "float32" or dev != "cpu" else 1, 1, dev)
            probe[name] = dict(n=n, ms=med * 1e3, gflops=2.0 * n ** 3 / med * 1e-9)
    err = None
    if "bf16 autocast" in outs:
        d = (outs["bf16 autocast"] - outs["float32"]).abs()
        ref = outs["float32"].abs().max().item()
        err = dict(max_abs=d.max().item(), max_abs_over_max_ref=d.max().item() / ref,
                   rms_rel=(d.pow(2).mean().sqrt() / outs["float32"].pow(2).mean().sqrt()).item())
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
        if "float32" in outs:
            outs["float32"].numpy().astype(np.float32).tofile(os.path.join(args.dump, "torch_f32.bin"))
        if "bf16 autocast" in outs:
            outs["bf16 autocast"].numpy().astype(np.float32).tofile(os.path.join(args.dump, "torch_bf16.bin"))
    # one row per line, so a line-oriented reader (bench_image_pass.cpp) finds them; still one JSON object
    head = dict(peer="pytorch", torch=torch.__version__, threads=torch.get_num_threads(), device=dev,
                gpu=torch.cuda.get_device_name() if dev.startswith("cuda") else "",
                blas=loaded_blas(), cpu_capability=torch.backends.cpu.get_cpu_capability()
                if hasattr(torch.backends, "cpu") and hasattr(torch.backends.cpu, "get_cpu_capability") else "",
                bf16_error_vs_f32=err, matmul_probe=probe)
    print("{")
    for k, v in head.items():
        print(f'  "{k}": {json.dumps(v)},')
    print('  "rows": [')
    for i, r in enumerate(rows):
        print("    " + json.dumps(r) + ("," if i + 1 < len(rows) else ""))
    print("  ]")
    print("}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
