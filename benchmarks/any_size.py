"""Editing photos of any size: the ``full`` strategy against ``crop`` (region of interest).

    .venv/bin/python benchmarks/any_size.py                    # 1024, 2048 px and 4000x3000
    .venv/bin/python benchmarks/any_size.py --sizes 1024 --repeats 5 --json out.json

Each (photo size, model, strategy) runs in its own subprocess, so the peak resident memory it
reports (``getrusage(RUSAGE_SELF).ru_maxrss``, the whole process: Python, torch, the photo,
the networks) belongs to that edit alone. The timed call is ``SketchEditor.edit(photo,
sketch, strategy=...)`` on a photo already decoded (PIL), one warm-up call first, the median
of ``--repeats`` calls (``full`` at 1024 px and above: one call, it is slow).

Models:

- ``cnum48``: random weights of the released width (48 channels, the scale of trained weights:
  std 1.5 / sqrt(fan_in), as in ``benchmarks/inference.py``), working size 256 px like the
  official models; ``--official M.pth G.pth`` times the official weights instead.
- ``starter``: the bundled starter checkpoint (16 channels, working size 64 px).

The photo is a bundled photo (kodim23) enlarged to the size; the sketch is one curve of about
a tenth of the photo's width (a local edit). ``full`` is skipped where it would take minutes
(the skip and the estimate are printed); ``--full-max-pixels`` moves that limit.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

SIZES = {"1024": (1024, 1024), "2048": (2048, 2048), "4000x3000": (3000, 4000)}  # (H, W)
MODELS = ("cnum48", "starter")
STRATEGIES = ("full", "crop")


def _load_bench_inference():
    path = Path(__file__).with_name("inference.py")
    spec = importlib.util.spec_from_file_location("bench_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _editor(model: str, official: list[str] | None):
    from sketchedit.editor import SketchEditor

    if model == "starter":
        return SketchEditor.from_pretrained()
    if official:
        return SketchEditor.from_official(*official)
    mask_estimator, generator = _load_bench_inference()._build_networks(None)
    return SketchEditor(mask_estimator, generator, working_size=256)


def _photo_and_sketch(height: int, width: int):
    import numpy as np
    from PIL import Image, ImageDraw

    from sketchedit.data.photos import bundled_photos

    base = next(p for p in bundled_photos() if p.key == "sporco/kodim23").load()
    photo = base.resize((width, height), Image.Resampling.BICUBIC)
    sketch = Image.new("L", (width, height), 0)
    curve = [(0.42, 0.40), (0.45, 0.36), (0.49, 0.35), (0.52, 0.38)]  # about 0.1 W wide
    ImageDraw.Draw(sketch).line([(x * width, y * height) for x, y in curve], fill=255, width=1)
    return photo, np.asarray(sketch)


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    height, width = SIZES[args.size]
    editor = _editor(args.model, args.official)
    photo, sketch = _photo_and_sketch(height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # full's "this is slow" warning
        repeats = 1 if args.strategy == "full" and height * width >= 1024**2 else args.repeats
        if repeats > 1:
            editor.edit(photo, sketch, strategy=args.strategy)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = editor.edit(photo, sketch, strategy=args.strategy)
            times.append(time.perf_counter() - t0)
    return {
        "size": args.size,
        "model": args.model,
        "strategy": result.strategy,
        "median_s": statistics.median(times),
        "repeats": repeats,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "regions": result.describe(),
        "mask_max": float(result.used_mask.max()),
    }


def _run(size: str, model: str, strategy: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--size", size, "--model", model]
    cmd += ["--strategy", strategy, "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if args.official:
        cmd += ["--official", *args.official]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {size} {model} {strategy} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--official", nargs=2, metavar=("M.pth", "G.pth"))
    parser.add_argument(
        "--full-max-pixels",
        type=float,
        default=1.1e6,
        help="skip `full` for cnum48 above this many pixels (starter: 4x more)",
    )
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    from sketchedit.editor import _full_cost

    rows = []
    print(f"{'photo':>10} {'model':>8} {'strategy':>8} {'median s':>9} {'peak MB':>8}  regions")
    for size in args.sizes:
        h, w = SIZES[size]
        for model in args.models:
            by_strategy = {}
            for strategy in STRATEGIES:
                limit = args.full_max_pixels * (4 if model == "starter" else 1)
                if strategy == "full" and h * w > limit:
                    cost = _full_cost(h, w, 16 if model == "starter" else 48)
                    print(
                        f"{size:>10} {model:>8} {'full':>8}   skipped: about {cost} on a 2-core "
                        "CPU (--full-max-pixels)"
                    )
                    continue
                row = _run(size, model, strategy, args)
                rows.append(row)
                by_strategy[strategy] = row
                print(
                    f"{size:>10} {model:>8} {row['strategy']:>8} {row['median_s']:9.3f} "
                    f"{row['peak_mb']:8.0f}  {row['regions']}"
                )
            if len(by_strategy) == 2:
                ratio = by_strategy["full"]["median_s"] / by_strategy["crop"]["median_s"]
                print(f"{'':>10} {model:>8} full / crop time: {ratio:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
