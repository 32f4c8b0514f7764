"""Time and peak memory of contextual attention at 256, 512 and 1024 px images (CPU, fp32).

    .venv/bin/python benchmarks/attention.py                 # the default table, about a minute
    .venv/bin/python benchmarks/attention.py --sizes 256 512 --threads 2 --naive-sizes 256

Compared implementations (inference, ``torch.no_grad``):

- ``ours``: :func:`sketchedit.nets.contextual_attention.contextual_attention` with automatic
  chunking over query positions (score tensor per chunk <= ``SCORE_CHUNK_BYTES``);
- ``ours, 1 chunk``: the same with all query positions in one chunk (``--unchunked-sizes``);
- ``naive``: the official formulation, written here: per sample a ``conv2d`` with the L key
  patches as kernels, the full ``(1, L, hq, wq)`` score tensor, softmax, ``conv_transpose2d``.

Features are ``(1, C=96, H/4, W/4)`` (the attention branch at cnum 48), the hole a centred square
covering a quarter of the image.

How memory is measured, and why: torch's CPU allocations are invisible to ``tracemalloc``, and
``ru_maxrss`` only ever grows within a process. Linux lets a process reset its own peak-RSS mark
(writing ``5`` to ``/proc/self/clear_refs``), so for each call we trim the C heap, reset the mark,
read the current RSS, run the call, and report ``VmHWM - RSS before``: the extra resident memory
at the call's peak, everything included (patch matrices, scores, softmax, output, allocator
slack). The first run of each configuration is the measured one; a warm-up on a tiny input runs
first so one-time library initialisation is not counted.

Times are medians of up to ``--repeats`` runs within ``--time-budget`` seconds per
configuration (the 1024 px run is a single run by default). The machine this was written on has
2 cores shared with other jobs, so the times are noisy; compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sketchedit.nets.contextual_attention import contextual_attention, patch_grid_shape

MIB = 2**20


def naive_attention(features: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """The official formulation, unchunked, one sample at a time (steps 1-6 of docs/method.md)."""
    outputs = []
    for b in range(features.shape[0]):
        x = features[b : b + 1]
        c = x.shape[1]
        norm = torch.sqrt(x.square().sum(dim=(2, 3), keepdim=True) + 1e-8)
        keys = F.unfold(x / norm, 4, stride=2)[0].T.reshape(-1, c, 4, 4)  # (L, C, 4, 4)
        values = F.unfold(x, 4, stride=2)[0].T.reshape(-1, c, 4, 4)
        scores = F.conv2d(x, keys, stride=2)  # (1, L, hq, wq): all of it at once
        valid = (F.avg_pool2d(1 - hole[b : b + 1], 4, 2) > 0.1).to(x.dtype).view(1, -1, 1, 1)
        weights = torch.softmax(scores * valid * 10.0, dim=1)
        outputs.append(F.conv_transpose2d(weights, values, stride=2))
    return torch.cat(outputs)


IMPLEMENTATIONS = {
    "ours": lambda f, hole: contextual_attention(f, hole),
    "ours, 1 chunk": lambda f, hole: contextual_attention(
        f, hole, chunk_size=f.shape[2] * f.shape[3]
    ),
    "naive": naive_attention,
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _trim_heap() -> None:
    """Return freed C-heap memory to the OS so the next baseline is honest (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_extra_mib(fn) -> tuple[float, float]:
    """Run ``fn()`` once; return (seconds, extra resident MiB at its peak)."""
    _trim_heap()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return seconds, (_status_kib("VmHWM") - before) / 1024


def make_inputs(image_size: int, channels: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    h = image_size // 4
    gen = torch.Generator().manual_seed(0)
    features = torch.relu(torch.randn(batch, channels, h, h, generator=gen))  # post-ReLU branch
    mask = torch.zeros(batch, 1, image_size, image_size)
    mask[..., image_size // 4 : 3 * image_size // 4, image_size // 4 : 3 * image_size // 4] = 1
    return features, F.avg_pool2d(mask, 4, 4)  # hole at feature resolution, as the caller does


def measure(name, image_size, channels, batch, repeats, time_budget):
    features, hole = make_inputs(image_size, channels, batch)
    fn = IMPLEMENTATIONS[name]
    with torch.no_grad():
        first, peak = peak_extra_mib(lambda: fn(features, hole))
        times = [first]
        while len(times) < repeats and sum(times) + times[-1] < time_budget:
            start = time.perf_counter()
            fn(features, hole)
            times.append(time.perf_counter() - start)
    hq, wq = patch_grid_shape(image_size // 4, image_size // 4)
    num_patches = hq * wq
    flops = 4 * batch * num_patches * num_patches * channels * 16  # scores + reconstruction
    seconds = statistics.median(times)
    return {
        "impl": name,
        "image": image_size,
        "L": num_patches,
        "runs": len(times),
        "median_s": seconds,
        "gflops": flops / seconds / 1e9,
        "peak_mib": peak,
        "scores_mib": batch * num_patches * num_patches * 4 / MIB,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024])
    parser.add_argument("--naive-sizes", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--unchunked-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--channels", type=int, default=96)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--time-budget", type=float, default=6.0, help="seconds per configuration")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    # Warm-up on a tiny input: library initialisation must not count as the first call's memory.
    with torch.no_grad():
        for fn in IMPLEMENTATIONS.values():
            fn(*make_inputs(32, 8, 1))

    jobs = [("ours", s) for s in args.sizes]
    jobs += [("ours, 1 chunk", s) for s in args.unchunked_sizes]
    jobs += [("naive", s) for s in args.naive_sizes]
    print(
        f"contextual attention, fp32, C={args.channels}, batch {args.batch}, "
        f"{args.threads} thread(s), torch {torch.__version__}"
    )
    header = f"{'impl':<14}{'image':>7}{'L':>7}{'runs':>6}{'median s':>10}{'GFLOP/s':>9}"
    header += f"{'peak MiB':>10}{'L^2 scores MiB':>16}"
    print(header)
    for name, size in jobs:
        r = measure(name, size, args.channels, args.batch, args.repeats, args.time_budget)
        print(
            f"{r['impl']:<14}{r['image']:>7}{r['L']:>7}{r['runs']:>6}{r['median_s']:>10.3f}"
            f"{r['gflops']:>9.1f}{r['peak_mib']:>10.0f}{r['scores_mib']:>16.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
