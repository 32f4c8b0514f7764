"""How long the sketching widget's "apply" takes, end to end, on this CPU.

Times :meth:`sketchedit.widget.SketchWidget.apply` on a bundled photo resized to ``--size``
pixels (longest side): rasterising the strokes, the mask estimator and the generator, the
blend, and redrawing the three canvas layers (the PNG encoding of the photo and the mask overlay
that ipycanvas sends to the browser). The target is under 0.5 s at 256 px with the starter
checkpoint. Also times the model alone (``SketchEditor.edit``) to show where the time goes.

Run: ``.venv/bin/python benchmarks/editor.py [--size 256] [--runs 7] [--threads N]``.
Uses the bundled starter checkpoint, or untrained networks of the same width (``cnum=16``)
when it is missing, and says so (the timing is the same, the edits are meaningless).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="longest side of the photo (px)")
    parser.add_argument("--runs", type=int, default=7, help="timed applies (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default: the starter)")
    parser.add_argument("--photo", default="skimage/astronaut", help="bundled photo key")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sketchedit.data.photos import bundled_photos
    from sketchedit.editor import SketchEditor
    from sketchedit.widget import SketchWidget

    try:
        editor = SketchEditor.from_pretrained(args.checkpoint)
        weights = "starter checkpoint" if args.checkpoint is None else args.checkpoint
    except FileNotFoundError:
        editor = SketchEditor.random_init(cnum=16, seed=0)
        weights = "NO CHECKPOINT FOUND: untrained networks of the starter's size (cnum=16)"
    cnum = getattr(editor.generator, "config", lambda: {})().get("cnum")

    photo = next(p for p in bundled_photos() if p.key == args.photo).load()
    scale = args.size / max(photo.size)
    photo = photo.resize(
        (round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS
    )
    w = SketchWidget(editor, photo, display_size=512, max_side=None)
    width, height = photo.size
    stroke = [
        (0.30 * width, 0.50 * height),
        (0.50 * width, 0.42 * height),
        (0.70 * width, 0.5 * height),
    ]

    def one_apply() -> tuple[float, float, float]:
        w.drag(stroke, tool="sketch", width=1)
        model_time = []
        edit = editor.edit

        def timed_edit(*a, **k):
            t = time.perf_counter()
            try:
                return edit(*a, **k)
            finally:
                model_time.append(time.perf_counter() - t)

        editor.edit = timed_edit
        try:
            start, cpu_start = time.perf_counter(), time.process_time()
            result = w.apply()
            total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        finally:
            del editor.edit  # back to the class method
        assert result is not None and result.ran_model
        w.undo_edit()  # same photo for every run
        return total, model_time[0], cpu

    one_apply()  # warm-up: first-call allocations, oneDNN kernel selection
    totals, models, cpus = zip(*(one_apply() for _ in range(args.runs)), strict=True)
    print(f"photo {width}x{height}, canvas {w.canvas.width}x{w.canvas.height}, weights: {weights}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"networks cnum={cnum}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{os.cpu_count()} CPU(s), load average {load:.1f}"
    )
    print(
        f"apply() end to end over {args.runs} runs: median {statistics.median(totals):.3f} s, "
        f"min {min(totals):.3f} s  (target < 0.5 s at 256 px)"
    )
    print(
        f"  of which SketchEditor.edit:   median {statistics.median(models):.3f} s, "
        f"min {min(models):.3f} s"
    )
    print(
        f"  CPU time of apply() (all threads): median {statistics.median(cpus):.3f} s, "
        f"min {min(cpus):.3f} s  (with --threads 1 this is what the wall time would be on an "
        f"otherwise idle core; wall times above include waiting for a busy machine)"
    )
    overhead = np.array(totals) - np.array(models)
    print(
        f"  widget overhead (raster + redraw): median {np.median(overhead):.3f} s, "
        f"min {overhead.min():.3f} s"
    )


if __name__ == "__main__":
    main()
