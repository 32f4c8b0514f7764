"""Held-out evaluation: the metrics and baselines on hand-made examples, then one tiny run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sketchedit import evaluate as E


def disk_mask(size: int, cy: int, cx: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)


def test_mask_iou_hand_made():
    a = np.zeros((8, 8), np.float32)
    a[:4] = 1
    assert E.mask_iou(a, a) == 1.0
    assert E.mask_iou(a, 1 - a) == 0.0
    b = np.zeros((8, 8), np.float32)
    b[2:6] = 1  # overlap 2 rows, union 6 rows
    assert E.mask_iou(a, b) == pytest.approx(2 / 6)
    assert E.mask_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0  # both empty: agree fully
    assert E.mask_iou(a[None] * 0.6, a) == 1.0  # soft masks are thresholded at 0.5
    assert E.mask_iou(a * 0.4, a) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        E.mask_iou(a, np.zeros((4, 4)))


def test_masked_psnr_counts_only_the_region():
    y = torch.zeros(3, 16, 16)
    region = np.zeros((16, 16), np.float32)
    region[4:8, 4:8] = 1
    assert E.masked_psnr(y, y, region) == E.PSNR_CAP  # identical: capped, not inf
    x = y.clone()
    x[:, 4:8, 4:8] += 0.2  # 0.1 on the [0, 1] scale -> MSE 0.01 -> 20 dB
    x[:, 10:, 10:] = 1.0  # a large error outside the region does not count
    assert E.masked_psnr(x, y, region) == pytest.approx(20.0, abs=1e-6)
    assert math.isnan(E.masked_psnr(x, y, np.zeros((16, 16))))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        E.masked_psnr(torch.zeros(16, 16), y, region)


def test_box_ssim_and_region_box():
    rng = np.random.default_rng(0)
    y = torch.from_numpy(rng.uniform(-1, 1, (3, 32, 32)).astype(np.float32))
    region = np.zeros((32, 32), np.float32)
    region[10, 10] = 1  # a single pixel: the box grows to 7x7
    sy, sx = E.region_box(region)
    assert (sy.stop - sy.start, sx.stop - sx.start) == (7, 7) and sy.start == 7
    corner = np.zeros((32, 32), np.float32)
    corner[0, 31] = 1  # clipped at the border, still 7x7
    sy, sx = E.region_box(corner)
    assert (sy.start, sy.stop, sx.start, sx.stop) == (0, 7, 25, 32)
    assert E.box_ssim(y, y, region) == pytest.approx(1.0)
    noisy = y + torch.from_numpy(rng.normal(0, 0.5, (3, 32, 32)).astype(np.float32))
    big = disk_mask(32, 16, 16, 8)
    assert E.box_ssim(noisy.clamp(-1, 1), y, big) < 0.8


def test_stroke_baselines():
    s = np.zeros((21, 21), np.float32)
    s[10, 10] = 1
    assert E.stroke_dilation_mask(s, 0).sum() == 1
    assert E.stroke_dilation_mask(s, 2).sum() == 13  # a radius-2 disk
    t = np.zeros((21, 21), np.float32)
    t[2, 2] = t[2, 18] = t[18, 2] = 1  # three corners: the hull is a triangle
    hull = E.stroke_hull_mask(t, 0)
    assert hull[5, 5] and not hull[18, 18] and hull.sum() > 100
    assert E.stroke_hull_mask(np.zeros((5, 5)), 3).sum() == 0
    assert E.baseline_radii(64) == list(E.BASELINE_RADII_64)
    assert E.baseline_radii(128)[-1] == 32


def test_baseline_radius_is_chosen_by_iou():
    # The changed region is a disk of radius 6 around the only stroke pixel: k = 6 wins.
    d = disk_mask(32, 16, 16, 6)
    s = np.zeros((32, 32), np.float32)
    s[16, 16] = 1
    samples = [{"sketch": torch.from_numpy(s)[None], "changed": torch.from_numpy(d)[None]}]
    k, iou = E.choose_baseline_radius("stroke dilation", samples, E.baseline_radii(64))
    assert k == 6 and iou == pytest.approx(1.0)


def _bar_image(size: int, col: int) -> torch.Tensor:
    """A grey (3, size, size) image in [-1, 1] with a dark vertical bar starting at ``col``."""
    img = torch.full((3, size, size), 0.6)
    img[:, :, col : col + 6] = -0.6
    return img


def test_sketch_edge_f1_hand_made():
    size = 64
    region = np.zeros((size, size), bool)
    region[16:48, 16:48] = True
    target = _bar_image(size, 30)
    from sketchedit.data.edges import extract_edges

    sketch = extract_edges(target, "canny").astype(bool)  # the strokes: both sides of the bar
    assert sketch.any()
    # the target draws its own sketch exactly, with any tolerance
    assert E.sketch_edge_f1(target, sketch, region, margin=0) == 1.0
    assert E.sketch_edge_f1(target, sketch, region, margin=0, tolerance=0) == 1.0
    # the bar moved by 4 px: no edge within 1 px of a stroke -> 0; within 5 px -> 1
    moved = _bar_image(size, 34)
    assert E.sketch_edge_f1(moved, sketch, region, margin=0, tolerance=1) == 0.0
    assert E.sketch_edge_f1(moved, sketch, region, margin=0, tolerance=5) == 1.0
    # a flat image draws nothing: recall 0 -> F1 0; nothing drawn and no strokes -> 1
    flat = torch.full((3, size, size), 0.2)
    assert E.sketch_edge_f1(flat, sketch, region, margin=0) == 0.0
    assert E.sketch_edge_f1(flat, np.zeros_like(sketch), region, margin=0) == 1.0
    # half of the strokes (one side of the bar) with the other side's edge present:
    # precision 1/2 (two edges drawn, one on a stroke), recall 1 -> F1 = 2/3
    half = sketch.copy()
    half[:, 33:] = False
    got = E.sketch_edge_f1(target, half, region, margin=0, tolerance=1)
    assert got == pytest.approx(2 / 3, abs=0.02)
    with pytest.raises(ValueError, match="must match the image"):
        E.sketch_edge_f1(target, sketch[:32], region, margin=0)


def test_sketch_edge_f1_target_scores_one_on_synthetic_edits():
    # with the default margin (the data's sketch margin) the target reproduces its sketch
    samples = E._samples(E.EvalData(image_size=32), 0, 6, 3)
    for s in samples:
        assert E.sketch_edge_f1(s["target"], s["sketch"], s["changed"]) == 1.0


def test_format_table():
    result = {
        "n": 2,
        "image_size": 32,
        "seed": 1,
        "metrics": {
            "input unchanged": {"psnr": [20.0, 1.0], "ssim": [0.5, 0.1]},
            "stroke hull (k=2)": {"mask_iou": [0.25, 0.05]},
        },
    }
    table = E.format_table(result)
    assert "| input unchanged | – | 20.00 ± 1.00 | 0.500 ± 0.100 | – |" in table
    assert "| stroke hull (k=2) | 0.250 ± 0.050 | – | – | – |" in table


def test_evaluate_tiny_model_and_cli(tmp_path, capsys):
    """End to end on 4 held-out samples of the bundled photos, with an untrained tiny model."""
    from sketchedit.checkpoints import save_checkpoint
    from sketchedit.nets import Generator, MaskEstimator

    torch.manual_seed(0)
    m, g = MaskEstimator(cnum=8), Generator(cnum=8)
    data = E.EvalData(image_size=32)
    res = E.evaluate(m, g, n=4, data=data, n_train_for_baselines=4)
    rows = res["metrics"]
    assert res["n"] == 4
    assert {"model", "model (true mask)", "input unchanged"} <= set(rows)
    assert {"psnr", "ssim", "edge_f1"} <= set(rows["model"])
    assert "edge_f1" in rows["model (true mask)"]
    assert any(r.startswith("stroke dilation (k=") for r in rows)
    for row in rows.values():
        for mean, sem in row.values():
            assert math.isfinite(mean) and sem >= 0
    # the "input unchanged" row is exactly the metric of x against y on the same samples
    samples = E._samples(data, 1, 4, E.DEFAULT_EVAL_SEED)
    psnr = np.mean([E.masked_psnr(s["input"], s["target"], s["changed"]) for s in samples])
    assert rows["input unchanged"]["psnr"][0] == pytest.approx(psnr)
    # the same through the command line, on a checkpoint file
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(
        ckpt, {"mask_estimator": m, "generator": g}, metadata={"train_config": {"image_size": 32}}
    )
    out = tmp_path / "res.json"
    assert (
        E.main([str(ckpt), "--n", "4", "--n-train", "4", "--no-perceptual", "--json", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "| model |" in printed and "| input unchanged |" in printed
    saved = json.loads(out.read_text())
    assert saved["image_size"] == 32
    assert saved["metrics"]["model"]["mask_iou"][0] == pytest.approx(rows["model"]["mask_iou"][0])


def test_evaluate_needs_no_trainer(tmp_path):
    """Evaluation reads data and training checkpoints without importing the trainer (issue 9:
    it used the trainer's private helpers and a fake TrainConfig)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from sketchedit.objective import build_networks, make_optimizers
    from sketchedit.presets import get_config
    from sketchedit.train_checkpoints import save_training_checkpoint

    cfg = get_config("tiny", cnum=8, disc_cnum=8, image_size=32)
    nets = build_networks(cfg)
    save_training_checkpoint(
        tmp_path / "ckpt_latest.safetensors", cfg, 0, nets, make_optimizers(cfg, nets)
    )
    script = (
        "import sys\n"
        "from sketchedit import evaluate as E\n"
        f"m, g, cfg = E.load_models({str(tmp_path)!r})\n"
        "assert cfg['cnum'] == 8 and len(E._samples(E.EvalData(image_size=32), 1, 2, 0)) == 2\n"
        "trainer = ('sketchedit.train', 'sketchedit.objective')\n"
        "print(sorted(n for n in sys.modules if n in trainer))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    r = subprocess.run(
        [sys.executable, "-c", script], cwd=repo, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_visible_protocol_and_real_strokes_through_the_cli(tmp_path, capsys):
    """`--protocol visible`: edits the unchanged input does not already draw; `--real-photos`:
    the no-ground-truth check, both in the printed tables and the JSON."""
    from sketchedit.checkpoints import save_checkpoint
    from sketchedit.nets import Generator, MaskEstimator

    torch.manual_seed(0)
    m, g = MaskEstimator(cnum=8), Generator(cnum=8)
    visible = E._samples(E.EvalData(image_size=64, protocol="visible"), 1, 6, 7)
    mild = E._samples(E.EvalData(image_size=64), 1, 6, 7)

    def unchanged_f1(samples):
        return np.mean([E.sketch_edge_f1(s["input"], s["sketch"], s["changed"]) for s in samples])

    assert unchanged_f1(visible) < 0.5 < unchanged_f1(mild)
    with pytest.raises(ValueError, match="protocol must be one of"):
        E._samples(E.EvalData(protocol="huge"), 1, 2, 0)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(
        ckpt, {"mask_estimator": m, "generator": g}, metadata={"train_config": {"image_size": 32}}
    )
    out = tmp_path / "res.json"
    args = ["--n", "3", "--n-train", "3", "--protocol", "visible", "--real-photos", "2"]
    args += ["--no-perceptual"]  # the perceptual columns have their own tests
    assert E.main([str(ckpt), *args, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(visible protocol)" in printed and "| stroke adherence | locality |" in printed
    saved = json.loads(out.read_text())
    assert saved["data"]["protocol"] == "visible"
    real = saved["real_strokes"]["metrics"]
    assert real["model"]["locality"][0] <= 1.0 and 0 <= real["unchanged"]["adherence"][0] <= 1


def test_a_pack_trained_model_is_evaluated_where_the_pack_may_be_missing():
    """A checkpoint trained on the photo pack must still evaluate on a fresh machine (no pack):
    its default source is "auto"; others keep their own source."""
    from sketchedit.evaluate import default_data_source

    assert default_data_source({"data_source": "pack"}) == "auto"
    assert default_data_source({"data_source": "/my/photos"}) == "/my/photos"
    assert default_data_source({}) == "bundled"  # official weights store no training config
