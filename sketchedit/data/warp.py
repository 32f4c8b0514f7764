"""Mask-free training pairs: a photo, a locally warped copy, and the partial sketch.

SketchEdit's mask estimator and generator learn from pairs (input x, target y) that differ only
inside the region to edit, with a partial sketch c that describes y there (docs/method.md section
4) [code]. How x was made is not published; the later official demo names the sample type
"warp". This module is our reconstruction [ours]:

1. **Region R.** A blob (see :func:`sketchedit.data.masks.blob_mask`) centred on a random
   *edge pixel* of y [ours: a warp of a flat region changes nothing, so R must hold contours].
2. **Smooth displacement.** A few control points inside R are moved by random vectors; the
   displacement field is their Gaussian-weighted sum (a free-form deformation), multiplied by
   a weight that is 1 on R and falls smoothly (smoothstep of the distance to R) to *exactly*
   0 at ``margin`` pixels from R. Fields that would fold the image (Jacobian determinant below
   ``min_jacobian``) are scaled down until they do not.
3. **Warp.** ``x(p) = y(p + d(p))`` (cubic spline interpolation [ours: bilinear blurs the
   warped area, a cue the mask estimator could learn instead of reading the sketch]), rounded
   to the 8-bit grid [ours: the same reason: off-grid values would betray the warp].
4. **Changed region** ``D = {max_c |x - y| > tau} union R``, closed by a small disk and with
   holes filled [ours: a tidy region, closer to what a mask estimator can predict]. Pixels
   outside D are restored to y *bitwise* [ours: changes below ``tau`` are invisible, and
   this makes "x == y outside D" exact, which the mask estimator's composite loss relies on].
5. **Partial sketch** ``c = E(y) * dilate(D, sketch_margin)``: the target's edges in and just
   around the changed region [ours: the margin lets strokes continue a little past D, as a
   user's strokes do].

Degenerate crops: if a try changes no pixel by more than ``tau`` (flat area) or leaves the
sketch empty, a new region is drawn, up to ``max_tries`` times; after that the last try is
returned with ``ok = False`` (the dataset then takes a new crop). A crop with no edges at all
puts R at a uniformly random point; its sketch is empty (nothing to draw), which we accept.

Not done here: docs/method.md also mentions the reverse pair (y -> x) for training the mask
estimator alone. It is a pair with ``input`` and ``target`` swapped (D stays the same), and the
sketch cut from the edges of the new target instead.

Images here are numpy ``(H, W, 3)`` float32 in ``[-1, 1]``; masks ``(H, W)`` bool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sketchedit.data.masks import blob_mask


@dataclass(frozen=True)
class WarpConfig:
    """Parameters of the warp pairs; lengths are fractions of the crop side. All [ours]."""

    #: Base radius of the region R, a blob (:func:`~sketchedit.data.masks.blob_mask`).
    region_radius: tuple[float, float] = (0.08, 0.18)
    #: Relative radius variation of R's outline (radius in [1 - w, 1 + w] x base) ...
    region_wobble: float = 0.3
    #: ... and its area-preserving elongation range.
    region_aspect: tuple[float, float] = (1.0, 1.5)
    #: Width of the zone around R where the displacement fades to 0.
    margin: float = 0.08
    #: How many control points are moved (inclusive range).
    n_control: tuple[int, int] = (1, 3)
    #: Length of each control point's displacement.
    displacement: tuple[float, float] = (0.04, 0.10)
    #: Spread of each control point's influence, as a multiple of R's equivalent radius.
    spread: float = 0.7
    #: Smallest allowed Jacobian determinant of p -> p + d(p) (1 = rigid, 0 = fold).
    min_jacobian: float = 0.2
    #: |x - y| threshold (in [-1, 1] units; 0.04 is about 5 grey levels) for the changed region.
    tau: float = 0.04
    #: Radius of the closing that tidies D (pinholes, hairline gaps); 0 = off.
    close_radius: float = 0.02
    #: Radius of the dilation of D inside which the target's edges form the partial sketch.
    sketch_margin: float = 0.03
    #: Spline order of the warp's interpolation (1 = bilinear, 3 = cubic).
    order: int = 3
    #: Regions tried before giving up on a crop.
    max_tries: int = 5

    def __post_init__(self):
        lo, hi = self.region_radius
        if not 0 < lo <= hi <= 0.5:
            raise ValueError(
                f"region_radius must satisfy 0 < min <= max <= 0.5, got {self.region_radius}"
            )
        if not 0 <= self.displacement[0] <= self.displacement[1]:
            raise ValueError(f"displacement must satisfy 0 <= min <= max, got {self.displacement}")
        if not 1 <= self.n_control[0] <= self.n_control[1]:
            raise ValueError(f"n_control must satisfy 1 <= min <= max, got {self.n_control}")
        if self.margin <= 0 or self.tau < 0 or self.sketch_margin < 0 or self.max_tries < 1:
            raise ValueError("margin must be > 0, tau and sketch_margin >= 0, max_tries >= 1")
        if self.order not in (0, 1, 2, 3, 4, 5):
            raise ValueError(f"order must be a spline order 0..5, got {self.order}")
        if not 0 <= self.min_jacobian < 1:
            raise ValueError(f"min_jacobian must be in [0, 1), got {self.min_jacobian}")


@dataclass
class WarpPair:
    """One synthesized pair. ``input`` equals ``target`` bitwise wherever ``changed`` is False.

    ``target``, ``input``: ``(H, W, 3)`` float32 in ``[-1, 1]``; ``region`` (R), ``changed``
    (D): ``(H, W)`` bool; ``sketch``: ``(H, W)`` uint8 in ``{0, 1}``; ``displacement``:
    ``(H, W, 2)`` float32 (row, col) in pixels; ``ok``: the pair changed something and has a
    non-empty sketch; ``tries``: regions drawn.
    """

    target: np.ndarray
    input: np.ndarray
    region: np.ndarray
    changed: np.ndarray
    sketch: np.ndarray
    displacement: np.ndarray = field(repr=False)
    ok: bool
    tries: int


def _window(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """Bounding box of ``mask`` grown by ``pad`` pixels on every side, clipped to the image."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    h, w = mask.shape
    return (
        slice(max(0, rows[0] - pad), min(h, rows[-1] + pad + 1)),
        slice(max(0, cols[0] - pad), min(w, cols[-1] + pad + 1)),
    )


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation of ``(H, W)`` bool by a Euclidean disk of ``radius`` pixels.

    Computed with a distance transform inside the mask's grown bounding box, so the cost
    follows the mask's size, not the image's.
    """
    out = mask.copy()
    if radius <= 0 or not mask.any():
        return out
    win = _window(mask, math.ceil(radius) + 1)
    out[win] = ndimage.distance_transform_edt(~mask[win]) <= radius
    return out


def close_holes(mask: np.ndarray, radius: float) -> np.ndarray:
    """Morphological closing by a disk of ``radius`` px, then hole filling: a superset of
    ``mask`` without pinholes or hairline gaps (used to tidy the changed region)."""
    if not mask.any():
        return mask.copy()
    pad = math.ceil(radius) + 2
    win = _window(mask, pad)
    # Pad with False so that the closing is not clipped by the window or the image border.
    sub = np.pad(mask[win], pad)
    grown = ndimage.distance_transform_edt(~sub) <= radius
    closed = ~(ndimage.distance_transform_edt(grown) <= radius)  # erode = complement-dilate
    closed = ndimage.binary_fill_holes(closed | sub)[pad:-pad, pad:-pad]
    out = mask.copy()
    out[win] |= closed
    return out


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def fade_weight(region: np.ndarray, margin_px: float) -> np.ndarray:
    """``(H, W)`` float64: 1 on ``region``, smoothstep down to exactly 0 at ``margin_px`` away."""
    distance = ndimage.distance_transform_edt(~region)
    return _smoothstep(1.0 - distance / margin_px)


def random_displacement(
    region: np.ndarray, rng: np.random.Generator, cfg: WarpConfig
) -> np.ndarray:
    """A smooth random displacement field ``(H, W, 2)`` (row, col), zero outside dilate(R).

    ``d(p) = w(p) * sum_j v_j * exp(-|p - c_j|^2 / (2 s^2))`` with control points ``c_j``
    in R, random vectors ``v_j`` and ``w`` from :func:`fade_weight`. Scaled down (halved, up
    to 6 times) while the map ``p -> p + d(p)`` would fold (Jacobian below ``min_jacobian``).
    Everything is computed in the window where ``w > 0``.
    """
    h, w = region.shape
    side = min(h, w)
    margin_px = max(1.0, cfg.margin * side)
    win = _window(region, math.ceil(margin_px) + 1)
    weight = fade_weight(region[win], margin_px)
    inside = np.argwhere(region[win])
    r_eq = math.sqrt(len(inside) / math.pi)  # radius of a disk with R's area
    s = max(1.0, cfg.spread * r_eq)
    rows, cols = np.mgrid[0 : weight.shape[0], 0 : weight.shape[1]].astype(np.float64)
    local = np.zeros(weight.shape + (2,))
    for _ in range(int(rng.integers(cfg.n_control[0], cfg.n_control[1] + 1))):
        cy, cx = inside[rng.integers(len(inside))]
        length = rng.uniform(*cfg.displacement) * side
        angle = rng.uniform(0, 2 * math.pi)
        bump = np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * s * s))
        local[..., 0] += length * math.sin(angle) * bump
        local[..., 1] += length * math.cos(angle) * bump
    local *= weight[..., None]
    for _ in range(6):
        if _min_jacobian(local) >= cfg.min_jacobian:
            break
        local *= 0.5
    field_ = np.zeros((h, w, 2))
    field_[win] = local
    return field_


def _min_jacobian(d: np.ndarray) -> float:
    """Smallest determinant of the Jacobian of ``p -> p + d(p)`` (finite differences)."""
    if min(d.shape[:2]) < 2:
        return 1.0
    drr, drc = np.gradient(d[..., 0])
    dcr, dcc = np.gradient(d[..., 1])
    return float(((1 + drr) * (1 + dcc) - drc * dcr).min())


def warp_image(image: np.ndarray, displacement: np.ndarray, order: int = 3) -> np.ndarray:
    """Backward warp ``x(p) = image(p + d(p))`` of ``(H, W, C)`` float; ``d`` is ``(H, W, 2)``.

    Only pixels with a non-zero displacement are resampled (from a window around them, with
    the image border replicated); all others are copied, so the result equals ``image``
    bitwise there.
    """
    out = image.copy()
    moved = np.any(displacement != 0, axis=-1)
    if not moved.any():
        return out
    reach = math.ceil(float(np.abs(displacement).max())) + 4  # + the cubic spline's support
    win = _window(moved, reach)
    pr, pc = np.nonzero(moved)
    coords = np.stack(
        [
            pr + displacement[pr, pc, 0] - win[0].start,
            pc + displacement[pr, pc, 1] - win[1].start,
        ]
    )
    for ch in range(image.shape[2]):
        out[pr, pc, ch] = ndimage.map_coordinates(
            image[win][..., ch].astype(np.float64), coords, order=order, mode="nearest"
        )
    return out


def quantize(image: np.ndarray) -> np.ndarray:
    """Round a ``[-1, 1]`` image to the 8-bit grid (``k / 127.5 - 1``), clipped to range."""
    levels = np.clip(np.round((image.astype(np.float64) + 1.0) * 127.5), 0, 255)
    return (levels / 127.5 - 1.0).astype(np.float32)


def _pick_center(edges: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    points = np.argwhere(edges > 0)
    if len(points):
        r, c = points[rng.integers(len(points))]
        return int(r), int(c)
    h, w = edges.shape
    return int(rng.integers(h)), int(rng.integers(w))


def random_region(edge_mask: np.ndarray, rng: np.random.Generator, cfg: WarpConfig) -> np.ndarray:
    """Step 1: the region R, a blob centred on a random edge pixel. ``(H, W)`` bool."""
    h, w = edge_mask.shape
    blob = blob_mask(
        h,
        w,
        rng,
        radius_fraction=cfg.region_radius,
        center=_pick_center(edge_mask, rng),
        wobble=cfg.region_wobble,
        aspect=cfg.region_aspect,
    )
    return blob > 0


def synthesize_warp_pair(
    target: np.ndarray,
    edges: np.ndarray,
    rng: np.random.Generator,
    config: WarpConfig | None = None,
) -> WarpPair:
    """Make ``(x, D, c)`` for a target ``y`` (see the module docstring for the recipe).

    ``target``: ``(H, W, 3)`` float32 in ``[-1, 1]`` (values on the 8-bit grid, as
    :func:`sketchedit.images.to_tensor` gives); ``edges``: ``(H, W)`` {0, 1} edge map of it.
    """
    cfg = config or WarpConfig()
    target = np.asarray(target, dtype=np.float32)
    if target.ndim != 3 or target.shape[2] != 3:
        raise ValueError(f"target must be (H, W, 3), got {target.shape}")
    if edges.shape != target.shape[:2]:
        raise ValueError(f"edges {edges.shape} do not match the target {target.shape[:2]}")
    edge_mask = edges > 0
    pair = None
    for attempt in range(1, cfg.max_tries + 1):
        region = random_region(edge_mask, rng, cfg)
        disp = random_displacement(region, rng, cfg)
        moved = np.any(disp != 0, axis=-1) | region
        win = _window(moved, 0)  # everything that can change lies in here
        warped = target.copy()
        warped[win] = quantize(warp_image(target, disp, cfg.order)[win])
        pair = finish_pair(target, warped, region, edge_mask, cfg, win, disp, attempt)
        if pair.ok:
            break
    return pair


def finish_pair(
    target: np.ndarray,
    candidate: np.ndarray,
    region: np.ndarray,
    edge_mask: np.ndarray,
    cfg: WarpConfig,
    win: tuple[slice, slice],
    displacement: np.ndarray | None = None,
    tries: int = 1,
) -> WarpPair:
    """Steps 4 and 5 of the recipe for any changed copy ``candidate`` of ``target``.

    The changed region ``D`` (pixels that differ by more than ``tau``, plus ``region``,
    closed), the input ``x`` (``candidate`` inside ``D``, ``target`` bitwise outside) and the
    partial sketch (the target's edges in and around ``D``). Only the window ``win`` may differ.
    """
    h, w = edge_mask.shape
    side = min(h, w)
    diff = np.zeros((h, w), dtype=np.float32)
    diff[win] = np.abs(candidate[win] - target[win]).max(axis=-1)
    changed = close_holes((diff > cfg.tau) | region, cfg.close_radius * side)
    x = target.copy()
    x[win] = np.where(changed[win][..., None], candidate[win], target[win])  # bitwise y outside D
    sketch = (edge_mask & dilate(changed, round(cfg.sketch_margin * side))).astype(np.uint8)
    ok = bool((diff > cfg.tau).any()) and bool(sketch.any() or not edge_mask.any())
    if displacement is None:
        displacement = np.zeros((h, w, 2), np.float32)
    return WarpPair(target, x, region, changed, sketch, displacement.astype(np.float32), ok, tries)
