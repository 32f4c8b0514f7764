"""Pictures of held-out edits for a model card: two checkpoints side by side.

Top rows: synthetic edits of one ``evaluate --json`` result (the same samples the table
scored, spread evenly over them): the input with the sketch in red, the true changed region
D, each model's predicted mask and output, and the target. Bottom rows: scripted strokes on
held-out photos (the check with no ground truth, ``sketchedit.real_strokes``): the photo with
the strokes, and each model's edit through the editor (``strategy="auto"``).

    python scripts/card_figure.py --json runs/eval/new_visible_test.json \\
        --model new=sketchedit/assets/starter.safetensors --model old=old.safetensors \\
        --real-photos 3 --out sketchedit/assets/starter_test_edits.png

Needs the photo pack when the JSON was made on it (``make photos``).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from sketchedit import evaluate as E
from sketchedit.editor import SketchEditor
from sketchedit.inference import run_sketchedit
from sketchedit.plotting import show_grid
from sketchedit.real_strokes import scripted_strokes, with_shorter_side
from sketchedit.stream import photo_split


def _red_strokes(image: torch.Tensor, sketch: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` image in [-1, 1] with the ``(1, H, W)`` sketch's strokes in red."""
    out = image.clone()
    out[:, sketch[0] > 0.5] = torch.tensor([1.0, -1.0, -1.0])[:, None]
    return out


def synthetic_rows(result: dict, models: dict, k: int) -> tuple[list, list]:
    samples = E.example_samples(result, k)
    x = torch.stack([s["input"] for s in samples])
    c = torch.stack([s["sketch"] for s in samples])
    runs = {}
    with torch.no_grad():
        for name, (m, g, _) in models.items():
            runs[name] = run_sketchedit(m, g, x, c)
    images, titles = [], []
    for i, s in enumerate(samples):
        images += [_red_strokes(s["input"], s["sketch"]), s["changed"]]
        titles += ["input + sketch", "true D"]
        for name, out in runs.items():
            images += [out.soft_mask[i], out.output[i]]
            titles += [f"{name}: mask", f"{name}: output"]
        images.append(s["target"])
        titles.append("target")
    return images, titles


def real_rows(paths: dict, n: int, size: int, split: str, seed: int) -> tuple[list, list]:
    photos = photo_split("pack", split)
    picks = [photos[int(i)] for i in np.linspace(0, len(photos) - 1, n).round()]
    editors = {name: SketchEditor.from_pretrained(path) for name, path in paths.items()}
    rng = np.random.default_rng(seed)
    images, titles = [], []
    for photo in picks:
        img = with_shorter_side(photo.load(), size)
        strokes = scripted_strokes(img, rng)
        shown = np.asarray(img.convert("RGB")).copy()
        shown[strokes > 0] = (255, 0, 0)
        images.append(shown)
        titles.append("photo + strokes")
        for name, editor in editors.items():
            res = editor.edit(img, strokes, strategy="auto")
            images += [np.asarray(res.soft_mask, dtype=np.float32), res.image]
            titles += [f"{name}: mask", f"{name}: edit"]
    return images, titles


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True, help="an `evaluate --json` result")
    p.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (repeat)")
    p.add_argument("--k", type=int, default=4, help="synthetic samples shown")
    p.add_argument("--real-photos", type=int, default=3)
    p.add_argument("--size", type=int, default=128, help="shorter side of the real photos")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    result = json.loads(open(args.json).read())
    paths = dict(spec.partition("=")[::2] for spec in args.model)
    models = {name: E.load_models(path) for name, path in paths.items()}
    images, titles = synthetic_rows(result, models, args.k)
    ncols = 3 + 2 * len(models)
    fig = show_grid(images, titles, ncols=ncols, size=1.6)
    fig.savefig(args.out.replace(".png", "_synthetic.png"), dpi=80, bbox_inches="tight")
    if args.real_photos:
        split = result["data"].get("split") or "test"
        images, titles = real_rows(paths, args.real_photos, args.size, split, seed=7)
        fig = show_grid(images, titles, ncols=1 + 2 * len(models), size=1.9)
        fig.savefig(args.out.replace(".png", "_real.png"), dpi=80, bbox_inches="tight")
    print("written", args.out.replace(".png", "_*.png"))


if __name__ == "__main__":
    main()
