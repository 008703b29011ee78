"""What the PyTorch peers of the benchmarks share (image_pass_torch.py, stage1_step_torch.py).

- bits24 / values: the counter-based hash from which both sides generate weights, images and text, bit for
  bit as bench_common.hpp's bits24 / unit (splitmix64 of (ordinal << 32) + i, its top 24 bits);
- IMAGE_ORDINAL / TEXT_ORDINAL: the ordinals of the inputs (bench_common.hpp's image_ordinal, text_ordinal);
- loaded_blas: which BLAS library this process has mapped (Debian's torch calls whatever libblas.so.3
  resolves to: the netlib reference BLAS makes a peer ~30x slower);
- ms_summary, load_average: timing figures as the C++ side reads them.
"""
import os
import statistics

import numpy as np

IMAGE_ORDINAL, TEXT_ORDINAL = 1 << 20, 2 << 20


def bits24(ordinal, start, count):
    """The top 24 bits of splitmix64((ordinal << 32) + i) for i in [start, start + count)."""
    x = (np.uint64(ordinal) << np.uint64(32)) + np.arange(start, start + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x >> np.uint64(40)


def values(ordinal, count, scale=1.0, shift=0.0):
    """shift + scale * u, u = 2 bits24 / 2^24 - 1 in [-1, 1), in float32 as the C++ side rounds it; chunked."""
    out = np.empty(count, dtype=np.float32)
    step = 1 << 22
    for s in range(0, count, step):
        n = min(step, count - s)
        u = (2.0 * bits24(ordinal, s, n).astype(np.float64) / float(1 << 24) - 1.0).astype(np.float32)
        out[s:s + n] = u * np.float32(scale) + np.float32(shift)
    return out


def loaded_blas():
    """The BLAS libraries this process has mapped, resolved, sorted."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "blas" in os.path.basename(path).lower():
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(libs)


def ms_summary(seconds):
    """median_ms, runs, min_ms, max_ms of a list of times in seconds (the keys the C++ side reads)."""
    return dict(median_ms=statistics.median(seconds) * 1e3, runs=len(seconds),
                min_ms=min(seconds) * 1e3, max_ms=max(seconds) * 1e3)


def load_average():
    """'1 5 15': the load averages, as /proc/loadavg writes them."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
