"""Random hole masks for the joint-inpainting mode (docs/method.md section 4).

The official training draws, per batch, 1-5 free-form brush strokes (width 10-40 % of the
side) united with either an object-shaped mask or a square of side 1/4-1/2 of the image
[code]. The object shapes came from an 82k-file saliency-mask set that is not available here;
[ours] :func:`blob_mask` draws object-like blobs instead: a star-shaped region whose radius is a
smooth random function of the angle (a short Fourier series), so outlines are rounded, lumpy,
sometimes elongated or kidney-shaped, like object silhouettes.

All masks are ``(H, W)`` float32 in ``{0, 1}``, 1 = hole; sizes are fractions of the shorter
side ``min(H, W)``. Every draw comes from the ``rng`` passed in (``np.random.Generator``).

Hard bounds (guaranteed by construction, tested) and the measured distribution of the area
fraction over 1000 samples each at 256x256 (default parameters), reproduced by
``area_statistics(random_hole, n=1000, size=256, seed=0)`` (:func:`area_statistics`):

==================  ===============  =====  =====  =====  =====  =====  =====
mask                hard bounds      min    p5     p50    mean   p95    max
==================  ===============  =====  =====  =====  =====  =====  =====
``free_form_mask``  [0.0019, 1]      0.018  0.063  0.310  0.317  0.578  0.741
``square_mask``     [1/16, 1/4]      0.062  0.068  0.144  0.147  0.238  0.250
``blob_mask``       [0.011, 0.724]   0.049  0.057  0.167  0.174  0.318  0.342
``random_hole``     [0.011, 1]       0.092  0.190  0.417  0.422  0.652  0.860
==================  ===============  =====  =====  =====  =====  =====  =====

Where the bounds come from: a stroke's round cap (diameter >= 10 % of the side) is centred in
the image, so at least a quarter of it is visible; a square's side is 1/4-1/2 of the side; a
blob's radius stays within ``[0.5, 1.5] x r0`` with ``r0`` in 12-32 % of the side and its
stretch preserves area; ``random_hole`` contains a blob or a square. Cost at 256 px: about
0.7 ms (strokes), 0.8 ms (blob), 1.8 ms (``random_hole``) on this CPU.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

#: [code] 1-5 strokes, width 10-40 % of the side.
STROKES = (1, 5)
STROKE_WIDTH = (0.10, 0.40)
#: [ours] Each stroke is a polyline of 1-4 segments, each 10-30 % of the side long, turning by
#: a normal random angle (std 60 degrees) at each vertex: a brush moving in arcs.
STROKE_SEGMENTS = (1, 4)
SEGMENT_LENGTH = (0.10, 0.30)
#: [code] Square side 1/4-1/2 of the side.
SQUARE_SIDE = (0.25, 0.50)
#: [ours] Blob base radius as a fraction of the side; the radius varies in [0.5, 1.5] x base.
BLOB_RADIUS = (0.12, 0.32)
#: [ours] Number of Fourier harmonics of the blob outline and their total relative amplitude.
BLOB_HARMONICS = 5
BLOB_WOBBLE = 0.5
BLOB_VERTICES = 256
#: [ours] Area-preserving elongation of the blob (length / width ratio range).
BLOB_ASPECT = (1.0, 2.0)


def _check_hw(height: int, width: int) -> tuple[int, int]:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(height), int(width)


def _check_range(name: str, r: tuple[float, float]) -> tuple[float, float]:
    lo, hi = r
    if not 0 <= lo <= hi:
        raise ValueError(f"{name} must satisfy 0 <= min <= max, got {r}")
    return float(lo), float(hi)


def free_form_mask(
    height: int,
    width: int,
    rng: np.random.Generator,
    n_strokes: tuple[int, int] = STROKES,
    width_fraction: tuple[float, float] = STROKE_WIDTH,
    n_segments: tuple[int, int] = STROKE_SEGMENTS,
    segment_fraction: tuple[float, float] = SEGMENT_LENGTH,
) -> np.ndarray:
    """Free-form brush strokes: ``(H, W)`` float32 in ``{0, 1}``.

    ``n_strokes`` (inclusive range) strokes, each a polyline with round joints and caps, of a
    brush width drawn from ``width_fraction`` x the shorter side. Vertices are clipped to the
    image, so every stroke is visible.
    """
    h, w = _check_hw(height, width)
    lo_n, hi_n = n_strokes
    if not 1 <= lo_n <= hi_n:
        raise ValueError(f"n_strokes must satisfy 1 <= min <= max, got {n_strokes}")
    wlo, whi = _check_range("width_fraction", width_fraction)
    slo, shi = _check_range("segment_fraction", segment_fraction)
    side = min(h, w)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(lo_n, hi_n + 1))):
        brush = max(1.0, rng.uniform(wlo, whi) * side)
        x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        angle = rng.uniform(0, 2 * math.pi)
        points = [(x, y)]
        for _ in range(int(rng.integers(n_segments[0], n_segments[1] + 1))):
            angle += rng.normal(0.0, math.pi / 3)
            length = rng.uniform(slo, shi) * side
            x = float(np.clip(x + length * math.cos(angle), 0, w - 1))
            y = float(np.clip(y + length * math.sin(angle), 0, h - 1))
            points.append((x, y))
        draw.line(points, fill=255, width=max(1, round(brush)), joint="curve")
        r = brush / 2
        for px, py in (points[0], points[-1]):  # round caps
            draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
    return (np.asarray(canvas) > 0).astype(np.float32)


def square_mask(
    height: int,
    width: int,
    rng: np.random.Generator,
    side_fraction: tuple[float, float] = SQUARE_SIDE,
) -> np.ndarray:
    """One axis-aligned square hole, side ``side_fraction`` x the shorter side, fully inside."""
    h, w = _check_hw(height, width)
    lo, hi = _check_range("side_fraction", side_fraction)
    if hi > 1:
        raise ValueError(f"side_fraction must be at most 1, got {side_fraction}")
    s = int(np.clip(round(rng.uniform(lo, hi) * min(h, w)), 1, min(h, w)))
    top = int(rng.integers(0, h - s + 1))
    left = int(rng.integers(0, w - s + 1))
    mask = np.zeros((h, w), dtype=np.float32)
    mask[top : top + s, left : left + s] = 1.0
    return mask


def blob_mask(
    height: int,
    width: int,
    rng: np.random.Generator,
    radius_fraction: tuple[float, float] = BLOB_RADIUS,
    center: tuple[float, float] | None = None,
    harmonics: int = BLOB_HARMONICS,
    wobble: float = BLOB_WOBBLE,
    aspect: tuple[float, float] = BLOB_ASPECT,
) -> np.ndarray:
    """An object-like blob [ours]: ``(H, W)`` float32 in ``{0, 1}``.

    In polar coordinates around ``center`` the outline is
    ``r(theta) = r0 * (1 + sum_k a_k cos(k theta + phi_k))``, ``k = 1..harmonics``, with random
    phases and amplitudes ``~ 1/k`` rescaled so that ``sum |a_k| = wobble``: the radius stays in
    ``[(1 - wobble) r0, (1 + wobble) r0]`` and the outline is smooth. ``r0`` is
    ``radius_fraction`` x the shorter side. The shape is then stretched by a random area-preserving
    ``aspect`` ratio along a random direction (elongated objects). Without ``center`` the blob
    is placed inside the image where it fits (centred and cut by the border where it cannot);
    with one (``(row, col)`` in pixels) it may be cut by the border.
    """
    h, w = _check_hw(height, width)
    lo, hi = _check_range("radius_fraction", radius_fraction)
    if not 0 <= wobble < 1:
        raise ValueError(f"wobble must be in [0, 1), got {wobble}")
    side = min(h, w)
    r0 = rng.uniform(lo, hi) * side
    k = np.arange(1, harmonics + 1)
    amps = rng.uniform(0.2, 1.0, size=harmonics) / k
    amps *= wobble / amps.sum() if harmonics else 0.0
    phases = rng.uniform(0, 2 * math.pi, size=harmonics)
    lo_a, hi_a = _check_range("aspect", aspect)
    if lo_a < 1:
        raise ValueError(f"aspect must be >= 1, got {aspect}")
    stretch = math.sqrt(rng.uniform(lo_a, hi_a))
    tilt = rng.uniform(0, math.pi)
    reach = (1 + wobble) * r0 * stretch  # the farthest the outline goes from the centre
    if center is None:
        cy = rng.uniform(min(reach, h / 2), max(h - reach, h / 2))
        cx = rng.uniform(min(reach, w / 2), max(w - reach, w / 2))
    else:
        cy, cx = float(center[0]), float(center[1])
    # Rasterise the outline as a 256-gon: far cheaper than testing every pixel's angle.
    theta = np.linspace(0, 2 * math.pi, BLOB_VERTICES, endpoint=False)
    radius = r0 * (1 + (amps[:, None] * np.cos(k[:, None] * theta + phases[:, None])).sum(0))
    u, v = radius * np.cos(theta) * stretch, radius * np.sin(theta) / stretch
    ct, st = math.cos(tilt), math.sin(tilt)
    outline = np.stack([cx + ct * u - st * v, cy + st * u + ct * v], axis=1)
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in outline.tolist()], fill=255)
    mask = np.asarray(canvas) > 0
    if not mask.any():  # a sub-pixel blob: keep at least its centre pixel
        mask = mask.copy()
        mask[int(np.clip(round(cy), 0, h - 1)), int(np.clip(round(cx), 0, w - 1))] = True
    return mask.astype(np.float32)


def random_hole(
    height: int,
    width: int,
    rng: np.random.Generator,
    p_blob: float = 0.5,
) -> np.ndarray:
    """The joint-inpainting hole: free-form strokes UNION (a blob with probability ``p_blob``,
    else a square) [code][ours: blob for the unavailable saliency masks; ``p_blob = 0.5``
    because the split is not published]. ``(H, W)`` float32 in ``{0, 1}``, 1 = hole."""
    h, w = _check_hw(height, width)
    if not 0 <= p_blob <= 1:
        raise ValueError(f"p_blob must be in [0, 1], got {p_blob}")
    strokes = free_form_mask(h, w, rng)
    other = blob_mask(h, w, rng) if rng.random() < p_blob else square_mask(h, w, rng)
    return np.maximum(strokes, other)


def area_fraction(mask: np.ndarray) -> float:
    """Share of hole pixels in a ``{0, 1}`` mask."""
    return float(np.asarray(mask, dtype=np.float64).mean())


def sample_areas(mask_fn, n: int = 1000, size: int = 256, seed: int = 0) -> np.ndarray:
    """Area fractions of ``n`` masks ``mask_fn(size, size, rng)`` drawn with one seeded rng."""
    rng = np.random.default_rng(seed)
    return np.array([area_fraction(mask_fn(size, size, rng)) for _ in range(n)])


def area_statistics(mask_fn, n: int = 1000, size: int = 256, seed: int = 0) -> dict[str, float]:
    """min / p5 / p50 / mean / p95 / max of the area fraction (the table in the docstring)."""
    a = sample_areas(mask_fn, n, size, seed)
    return {
        "min": float(a.min()),
        "p5": float(np.percentile(a, 5)),
        "p50": float(np.median(a)),
        "mean": float(a.mean()),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }
