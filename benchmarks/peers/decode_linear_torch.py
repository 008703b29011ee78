#!/usr/bin/python3
"""The PyTorch peer of decode_bandwidth: torch.nn.functional.linear at OPT-2.7B's decode shapes.

For each shape (q/k/v/out 2560x2560, fc1 10240x2560, fc2 2560x10240, lm_head 50272x2560) and M = 1, 5
rows: the median time of F.linear(x, W, b) in float32, and in bfloat16 (x, W and b all bf16, as a
model cast with .bfloat16() runs) when this torch runs it. Like decode_bandwidth, each call takes its
weight from another slot of a pool of about --pool-mib MiB (slots in turn), so weights come from memory
and not from the cache. Then the whole-model estimate (six linears x 32 layers + lm_head per step).
With --ours FILE (decode_bandwidth --results FILE) it prints ours/torch for every row: ours f32 is
blip2's oneDNN linear_forward, ours bf16 is linear_bf16_forward; a ratio below 1 means ours is faster.

Debian's torch calls whatever libblas.so.3 resolves to: the netlib reference BLAS unless
libopenblas0-openmp is installed (then OpenBLAS); this prints which one it loaded.
Run with /usr/bin/python3 (Debian's python3-torch):
  decode_linear_torch.py [--threads 2] [--reps 21] [--pool-mib 2048] [--no-bf16] [--ours FILE]
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from peer_common import load_average, loaded_blas

SHAPES = [("q/k/v/out", 2560, 2560, 4), ("fc1", 10240, 2560, 1), ("fc2", 2560, 10240, 1), ("lm_head", 50272, 2560, 0)]
LAYERS = 32


def make_pool(pool_bytes, dtype):
    """A flat tensor of about pool_bytes of values in [-0.05, 0.05): 16 Mi random values, repeated."""
    elem = torch.tensor([], dtype=dtype).element_size()
    n = pool_bytes // elem
    base = torch.empty(min(n, 1 << 24), dtype=dtype).uniform_(-0.05, 0.05, generator=torch.Generator().manual_seed(3))
    pool = torch.empty(n, dtype=dtype)
    for s in range(0, n, base.numel()):
        e = min(n, s + base.numel())
        pool[s:e] = base[:e - s]
    return pool


def time_rotating(pool, n, k, m, reps):
    """Median seconds of F.linear(x (m, k), W (n, k), b (n)), W taken in turn from the pool's slots."""
    slots = max(1, pool.numel() // (n * k))
    weights = [pool[i * n * k:(i + 1) * n * k].view(n, k) for i in range(slots)]
    gen = torch.Generator().manual_seed(n * 7 + k)
    bias = (torch.rand(n, generator=gen) * 0.04 - 0.02).to(pool.dtype)
    x = (torch.rand(m, k, generator=gen) * 2 - 1).to(pool.dtype)
    times = []
    with torch.no_grad():
        F.linear(x, weights[0], bias)  # untimed: first touch, any one-off setup
        for r in range(reps):
            w = weights[(r + 1) % slots]
            t0 = time.perf_counter()
            F.linear(x, w, bias)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bf16_supported():
    """Whether F.linear runs in bfloat16 here, and how long one small call takes (a slow path shows)."""
    try:
        x = torch.ones(1, 256, dtype=torch.bfloat16)
        w = torch.ones(256, 256, dtype=torch.bfloat16)
        t0 = time.perf_counter()
        F.linear(x, w)
        return True, time.perf_counter() - t0
    except RuntimeError as e:
        return False, str(e)


def read_ours(path):
    """{(name, M): (f32_ms, bf16_ms)} from decode_bandwidth --results."""
    ours = {}
    with open(path) as f:
        for line in f:
            name, m, f32, bf16 = line.split()  # "q/k/v/out 1 0.81 0.38"
            ours[(name, int(m))] = (float(f32), float(bf16))
    return ours


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--pool-mib", type=int, default=2048)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--ours", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pool_bytes = a.pool_mib << 20
    blas = loaded_blas()
    capability = [l.strip(" -") for l in torch.__config__.show().splitlines() if "CPU capability" in l]
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, BLAS {blas or 'none mapped yet'}, "
          f"{capability[0] if capability else 'CPU capability unknown'}, load average {load_average()}")
    bf16 = not a.no_bf16
    if bf16:
        ok, how = bf16_supported()
        if not ok:
            print(f"bf16: F.linear fails here ({how}); float32 only")
            bf16 = False
    ours = read_ours(a.ours) if a.ours else {}
    print(f"each case: 1 untimed call, then {a.reps} timed; medians; weights rotate over a {a.pool_mib} MiB pool")
    print(f"{'linear':<10} {'M':>2} | {'torch f32 ms':>12} {'GB/s':>6} | {'torch bf16 ms':>13} {'GB/s':>6}"
          + (" | ours/torch f32  bf16" if ours else ""))
    times = {}  # (name, m, dtype) -> seconds; one pool at a time (each is --pool-mib)
    for dtype in [torch.float32] + ([torch.bfloat16] if bf16 else []):
        pool = make_pool(pool_bytes, dtype)
        for name, n, k, _ in SHAPES:
            for m in (1, 5):
                times[(name, m, dtype)] = time_rotating(pool, n, k, m, a.reps)
        del pool
    model = {}
    for name, n, k, per_layer in SHAPES:
        for m in (1, 5):
            f32 = times[(name, m, torch.float32)]
            b16 = times.get((name, m, torch.bfloat16), float("nan"))
            count = per_layer * LAYERS if per_layer else 1
            mf, mb = model.get(m, (0.0, 0.0))
            model[m] = (mf + count * f32, mb + count * b16)
            line = (f"{name:<10} {m:>2} | {f32 * 1e3:12.3f} {n * k * 4 / f32 * 1e-9:6.1f} | "
                    f"{b16 * 1e3:13.3f} {n * k * 2 / b16 * 1e-9:6.1f}")
            if (name, m) in ours:
                of, ob = ours[(name, m)]
                line += f" | {of / (f32 * 1e3):14.2f} {ob / (b16 * 1e3):5.2f}"
            print(line, flush=True)
    print("whole model (six linears x 32 layers + lm_head per step):")
    for m, (f32, b16) in model.items():
        line = f"  M = {m}: torch f32 {f32 * 1e3:.1f} ms/step = {1 / f32:.2f} steps/s; bf16 {b16 * 1e3:.1f} ms/step = {1 / b16:.2f} steps/s"
        if ("model", m) in ours:
            of, ob = ours[("model", m)]
            line += (f"; ours/torch: f32 {of / (f32 * 1e3):.2f}, bf16 {ob / (b16 * 1e3):.2f} "
                     f"(ours bf16 vs torch f32: {ob / (f32 * 1e3):.2f})")
        print(line)
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    sys.exit(main())
