"""Inference speed and memory of the full pipeline (mask estimator + generator) on the CPU.

    .venv/bin/python benchmarks/inference.py      # 256 and 512 px timings, 1024 px memory
    .venv/bin/python benchmarks/inference.py --sizes 256 --repeats 9 --json out.json

Every measurement runs in its own subprocess, so the peak resident memory it reports
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that size and mode alone; "baseline" is the
process after importing torch and building the networks, before the first image.

Modes (all at the released width ``cnum = 48``, batch 1, ``torch.set_num_threads(threads)``):

- ``official-style``: what the official demo computes, with our networks: the full mask
  estimator (both heads), ``torch.no_grad``, NCHW, denormal floats *not* flushed.
- ``exact``: :func:`sketchedit.inference.run_sketchedit` with its defaults (inference mode,
  the auxiliary RGB head skipped, denormals flushed, in-place gating).
- ``fast``: ``run_sketchedit(channels_last=True, subpixel=True)``; same numbers up to float
  rounding (the max difference to ``exact`` is printed).
- ``bf16``: ``fast`` under bfloat16 autocast: *not* exact (its error is printed). Only fast on
  CPUs with native bf16 (AVX-512 BF16 / AMX); on others it is about 100x *slower* than fp32,
  so it is skipped there unless ``--modes`` names it.

Arithmetic floor: each worker also counts the floating-point operations of one pass
(``torch.utils.flop_counter``: convolutions and matrix products, 2 per multiply-add) and
measures this machine's matrix-multiply peak (a 2048^3 ``torch.mm`` on the same threads). "GFLOP/s"
is what the pass achieves; "floor s" is the pass's operations at that peak, the time no
implementation that computes the same products can beat (fast-convolution algorithms such as
Winograd compute fewer products; the README says why we ship none).

Weights: random, with the scale of trained weights (std 1.5 / sqrt(fan_in)); with the official
init (gain 0.02) every activation is ~1e-30, a denormal-float workload that is unrealistically
slow. ``--checkpoint`` times a real checkpoint instead (its own width).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = ("official-style", "exact", "fast", "bf16")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _build_networks(checkpoint: str | None, seed: int = 0):
    import torch

    from sketchedit.nets import Generator, MaskEstimator

    if checkpoint:
        from sketchedit.checkpoints import load_checkpoint

        nets = load_checkpoint(checkpoint)
        return nets["mask_estimator"].eval(), nets["generator"].eval()
    g = torch.Generator().manual_seed(seed)
    nets = (MaskEstimator(cnum=48), Generator(cnum=48))
    with torch.no_grad():
        for net in nets:
            for name, p in net.named_parameters():
                if name.endswith("weight"):
                    fan_in = p[0].numel()
                    p.copy_(torch.randn(p.shape, generator=g) * 1.5 / fan_in**0.5)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return nets[0].eval(), nets[1].eval()


def _inputs(size: int):
    """A real photo and a partial sketch (its edges in a square region), ``size x size``."""
    import numpy as np
    import torch

    from sketchedit.data import bundled_photos, center_crop_resize, extract_edges
    from sketchedit.images import to_tensor

    photo = {p.key: p for p in bundled_photos(include_optional=False)}["skimage/astronaut"]
    img = center_crop_resize(photo.load(), size)
    edges = extract_edges(img, "canny").astype(np.float32)
    region = np.zeros_like(edges)
    region[size // 4 : size // 2, size // 3 : size * 2 // 3] = 1
    sketch = torch.from_numpy(edges * region)[None, None]
    return to_tensor(img)[None], sketch


def _run(mode: str, m, g, image, sketch):
    """One full edit in the given mode; returns the output image."""
    import torch

    from sketchedit.inference import run_sketchedit

    if mode == "official-style":
        with torch.no_grad():
            soft, _ = m(image, sketch)  # both heads, as the official model's forward
            hard = (soft > 0.5).float()
            _, fine = g(image, sketch, hard, hard)
            return fine * soft + image * (1 - soft)
    if mode == "exact":
        return run_sketchedit(m, g, image, sketch).output
    return run_sketchedit(
        m, g, image, sketch, channels_last=True, subpixel=True, bf16=mode == "bf16"
    ).output


def _count_flops(mode: str, m, g, image, sketch) -> float:
    """Floating-point operations of one pass in ``mode`` (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _run(mode, m, g, image, sketch)
    return float(counter.get_total_flops())


def _matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an ``n x n`` float32 matrix product on the current threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def worker(args) -> dict:
    """Measure one (size, mode) in this process; print a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    if args.mode == "official-style":
        torch.set_flush_denormal(False)
    m, g = _build_networks(args.checkpoint)
    image, sketch = _inputs(args.size)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    output = None
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        output = _run(args.mode, m, g, image, sketch)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before counting
    result = {
        "gflop": _count_flops(args.mode, m, g, image, sketch) / 1e9 if args.count_flops else None,
        "peak_gflops": _matmul_peak_gflops() if args.count_flops else None,
        "size": args.size,
        "mode": args.mode,
        "median_s": statistics.median(times) if times else None,
        "min_s": min(times) if times else None,
        "baseline_mib": baseline / 1024,
        "peak_mib": peak_mib,
    }
    if args.compare_to_exact and args.mode != "exact":
        reference = _run("exact", m, g, image, sketch)
        result["max_abs_diff_to_exact"] = (output - reference).abs().max().item()
        result["mean_abs_diff_to_exact"] = (output - reference).abs().mean().item()
    print(json.dumps(result))
    return result


def _spawn(size, mode, args, repeats, warmup, compare, count_flops=True):
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--size",
        str(size),
        "--mode",
        mode,
        "--threads",
        str(args.threads),
        "--repeats",
        str(repeats),
        "--warmup",
        str(warmup),
    ]
    if compare:
        cmd.append("--compare-to-exact")
    if count_flops:
        cmd.append("--count-flops")
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {size} px / {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[1024])
    parser.add_argument("--modes", nargs="+", default=None, choices=MODES)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    # worker-only arguments
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--compare-to-exact", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return None

    import torch

    from sketchedit.nets.blocks import cpu_low_precision_is_fast

    if args.modes is None:
        native_bf16 = cpu_low_precision_is_fast(torch.bfloat16)
        args.modes = [m for m in MODES if m != "bf16" or native_bf16]
        if not native_bf16:
            print("bf16 skipped: this CPU has no native bfloat16 (pass --modes ... bf16 to force)")
    load_before = os.getloadavg()
    print(
        f"CPU: {_cpu_name()}, {os.cpu_count()} logical cores; torch {torch.__version__}, "
        f"{args.threads} threads; load average before: {load_before[0]:.2f}"
    )
    results = []
    for size in args.sizes:
        for mode in args.modes:
            results.append(_spawn(size, mode, args, args.repeats, args.warmup, mode != "exact"))
    for size in args.memory_sizes:
        results.append(_spawn(size, "exact", args, 1, 0, False, count_flops=False))
    load_after = os.getloadavg()

    print()
    print(
        f"{'size':>5s}  {'mode':15s} {'median s':>9s} {'min s':>7s} {'peak MiB':>9s} "
        f"{'base MiB':>9s} {'max |diff| to exact':>20s} {'GFLOP':>6s} {'GFLOP/s':>8s} "
        f"{'mm peak':>8s} {'floor s':>8s}"
    )
    for r in results:
        diff = r.get("max_abs_diff_to_exact")
        roofline = ""
        if r["gflop"] is not None:
            roofline = (
                f" {r['gflop']:6.1f} {r['gflop'] / r['min_s']:8.1f} {r['peak_gflops']:8.1f} "
                f"{r['gflop'] / r['peak_gflops']:8.3f}"
            )
        print(
            f"{r['size']:5d}  {r['mode']:15s} {r['median_s']:9.3f} {r['min_s']:7.3f} "
            f"{r['peak_mib']:9.0f} {r['baseline_mib']:9.0f} "
            f"{'' if diff is None else f'{diff:.2e}':>20s}{roofline}"
        )
    print(f"\nload average after: {load_after[0]:.2f} (other jobs on this machine inflate times)")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": _cpu_name(), "results": results}, indent=2))
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
