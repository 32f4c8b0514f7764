"""A check with no ground truth: scripted strokes on real photos, scored by adherence and locality.

Synthetic pairs have a target to compare with, but they are not what users do. Here the
strokes are drawn by a script on held-out photos, the way a user sketches a changed contour,
and the edit is scored by two questions that need no target: [ours]

- **stroke adherence**: the share of stroke pixels that have an edge of the output within
  :data:`ADHERENCE_TOLERANCE` px (does the output draw the strokes?). The unchanged photo
  scores whatever share of the strokes happens to lie on its own edges: a model that follows
  the strokes should score well above it.
- **locality**: the share of the changed pixels (output differs from the input by more than
  :data:`CHANGE_LEVELS` 8-bit levels in some channel) that lie inside the strokes' region,
  the strokes' convex hull grown by :data:`LOCALITY_RADIUS` of the photo's side (does the
  edit stay where the user drew?). An edit that changes nothing scores 1.

The scripted strokes (:func:`scripted_strokes`): a smooth curve near a random edge pixel of
the photo, bent by 8-15 % of the side and kept only if it mostly leaves the photo's own
edges, so it asks for a visible change near existing structure (as the paper's examples do).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from sketchedit.data.edges import extract_edges
from sketchedit.data.warp import dilate

#: Stroke pixels count as drawn when an output edge is at most this many pixels away.
ADHERENCE_TOLERANCE = 2
#: A pixel counts as changed when some channel moved by more than this many 8-bit levels.
CHANGE_LEVELS = 4
#: Radius of the strokes' region for locality, as a fraction of the photo's shorter side.
LOCALITY_RADIUS = 0.1
#: A scripted curve is redrawn while more than this share of it lies on the photo's edges.
SCRIPTED_ON_EDGES = 0.25


def _curve(h: int, w: int, centre, rng: np.random.Generator) -> np.ndarray:
    """A 1-px quadratic curve of 25-40 % of the side through ``centre``, bent by 8-15 %."""
    side = min(w, h)
    cy, cx = centre
    length = rng.uniform(0.25, 0.4) * side
    angle = rng.uniform(0, math.pi)
    bend = rng.uniform(0.08, 0.15) * side * rng.choice([-1, 1])
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    a, b = np.array((cx - dx, cy - dy)), np.array((cx + dx, cy + dy))
    ctrl = np.array((cx - math.sin(angle) * bend * 2, cy + math.cos(angle) * bend * 2))
    t = np.linspace(0.0, 1.0, 48)[:, None]
    curve = (1 - t) ** 2 * a + 2 * (1 - t) * t * ctrl + t**2 * b
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).line([tuple(p) for p in curve], fill=255, width=1)
    return (np.asarray(canvas) > 0).astype(np.float32)


def scripted_strokes(photo: Image.Image, rng: np.random.Generator, tries: int = 20) -> np.ndarray:
    """A partial sketch for ``photo``: ``(H, W)`` float32 ``{0, 1}``, one 1-px curve.

    The curve passes near a random edge pixel of the photo (inside the central 60 %), so it
    reshapes existing structure. Up to ``tries`` curves are drawn and the first that mostly
    leaves the photo's own edges (at most :data:`SCRIPTED_ON_EDGES` of its pixels within the
    adherence tolerance of one) is kept, else the one that leaves them most: a stroke that
    retraces a contour asks for no change, and would let the unchanged photo score as if it
    followed the sketch.
    """
    w, h = photo.size
    edges = extract_edges(photo, "canny") > 0
    near = dilate(edges, ADHERENCE_TOLERANCE)
    margin = int(0.2 * min(w, h))
    inner = np.zeros_like(edges)
    inner[margin : h - margin, margin : w - margin] = True
    points = np.argwhere(edges & inner)
    if not len(points):
        points = np.array([[h // 2, w // 2]])
    best, best_share = None, 2.0
    for _ in range(tries):
        strokes = _curve(h, w, points[rng.integers(len(points))], rng)
        share = float(near[strokes > 0].mean()) if strokes.any() else 2.0
        if share < best_share:
            best, best_share = strokes, share
        if share <= SCRIPTED_ON_EDGES:
            break
    return best


def stroke_adherence(image, strokes: np.ndarray, tolerance: int = ADHERENCE_TOLERANCE) -> float:
    """Share of stroke pixels with an edge of ``image`` (Canny) within ``tolerance`` px."""
    s = strokes > 0
    if not s.any():
        raise ValueError("stroke adherence needs at least one stroke pixel")
    edges = extract_edges(image, "canny") > 0
    return float((s & dilate(edges, tolerance)).sum() / s.sum())


def strokes_region(strokes: np.ndarray, radius_fraction: float = LOCALITY_RADIUS) -> np.ndarray:
    """The strokes' convex hull grown by ``radius_fraction`` of the shorter side. ``(H, W)``."""
    from skimage.morphology import convex_hull_image

    s = strokes > 0
    return dilate(convex_hull_image(s), radius_fraction * min(s.shape))


def locality(output, original, strokes: np.ndarray) -> float:
    """Share of changed pixels inside :func:`strokes_region` (1.0 when nothing changed)."""
    a = np.asarray(output, dtype=np.int16)
    b = np.asarray(original, dtype=np.int16)
    if a.shape != b.shape:
        raise ValueError(f"output {a.shape} and original {b.shape} differ in size")
    changed = np.abs(a - b).max(axis=-1) > CHANGE_LEVELS
    if not changed.any():
        return 1.0
    return float((changed & strokes_region(strokes)).sum() / changed.sum())


def with_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """``img`` resized (Lanczos) so that its shorter side is ``size`` px, aspect kept."""
    scale = size / min(img.size)
    return img.resize(
        (max(size, round(img.width * scale)), max(size, round(img.height * scale))),
        Image.Resampling.LANCZOS,
    )


def real_stroke_check(editor, photos, *, size: int, seed: int = 0, strategy: str = "auto"):
    """Edit each photo (resized so its shorter side is ``size`` px) with scripted strokes.

    Returns ``{"model": {"adherence": [...], "locality": [...]}, "unchanged": {...}}``, one
    value per photo, for the editor's output and for leaving the photo unchanged.
    """
    rng = np.random.default_rng(seed)
    out = {"model": {"adherence": [], "locality": []}, "unchanged": {"adherence": []}}
    for photo in photos:
        img = with_shorter_side(photo.load() if hasattr(photo, "load") else photo, size)
        strokes = scripted_strokes(img, rng)
        result = editor.edit(img, strokes, strategy=strategy)
        out["model"]["adherence"].append(stroke_adherence(result.image, strokes))
        out["model"]["locality"].append(locality(result.image, img, strokes))
        out["unchanged"]["adherence"].append(stroke_adherence(img, strokes))
    return out
