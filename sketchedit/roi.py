"""Region-of-interest editing: where on a photo of any size the networks run, and at what scale.

A SketchEdit model learns at one resolution (its *working size*: 256 px for the official
models, 64 px for our starter) and its mask estimator only works near that scale: the same
strokes on the same photo, shown to it at 4x its training resolution, give an almost empty
mask (the edited region covers 16x fewer of its receptive fields than it learned on). And the
cost of the networks grows with the pixel count: a 12-megapixel photo at full resolution takes
tens of minutes on a laptop CPU. So the editor decides, before running anything, which
*regions* of the photo the networks see and at which size. [ours] (The paper and the official
demo always run on a 256 px image; IOPaint-style inpainting tools offer the same three choices
under the names Original / Resize / Crop.)

Strategies (:data:`STRATEGIES`):

``full``
    The whole photo at its own resolution (padded to a multiple of 8): the behaviour before
    this module existed, bit for bit. Slow and out of scale on large photos.
``resize``
    The whole photo, scaled down so its longer side is the working size; the generated
    content and the mask are scaled back up and blended into the full-resolution photo.
``crop``
    One square box around each group of strokes, with context around it (the rule below),
    scaled down to the working size, edited there, and blended back at full resolution.
``auto`` (the default)
    ``crop`` when the photo's longer side is larger than the working size, else ``full``.

**The crop rule.** [ours] For a group of strokes whose bounding box has longer side ``L``,
the crop is a square of side ``S = f * working_size`` centred on the strokes, where the
integer reduction factor ``f >= 1`` is the one that brings ``(1 + 2 * CONTEXT) * L`` closest
to the working size. With ``CONTEXT = 0.75`` the strokes span about 40 % of the crop's side,
the share they have in the training pairs (measured on 150 synthetic pairs at 64 px: crop
side / stroke-box side has median 2.56, quartiles 2.3 and 3.05). The crop is then reduced by
``f``; ``f`` is an integer so that each working pixel is the mean of one ``f x f`` block of
photo pixels (the crop's corner lies on that block grid), and ``f = 1`` means the crop runs at
its own resolution (never enlarged). A square that does not fit is shifted inside the photo;
where the photo is narrower than ``S`` the crop takes the photo's whole extent on that axis,
and a crop cut to the photo on both axes is reduced to the working size like ``resize``
(there is no more context to show). Each connected group of strokes gets its own crop, and
groups whose crops overlap are merged into one group (so two edits on opposite sides of a
12 MP photo are two small crops, not one box covering the photo). Every box also covers the
mask a user gave or added (:func:`plan_regions`, ``extra``).

Nothing outside the boxes is touched: there the output is the input, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "CONTEXT",
    "STRATEGIES",
    "Box",
    "Region",
    "choose_strategy",
    "crop_box",
    "plan_regions",
]

STRATEGIES = ("auto", "full", "resize", "crop")

#: Context on each side of a stroke group, in units of its bounding box's longer side: the
#: training pairs' median proportion (module docstring). [ours]
CONTEXT = 0.75

#: The networks need sides that are multiples of this, at least ``2 * MULTIPLE``. [code]
MULTIPLE = 8


@dataclass(frozen=True)
class Box:
    """Rows ``top:bottom`` and columns ``left:right`` of a photo (end exclusive), in pixels."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def slices(self) -> tuple[slice, slice]:
        """``array[box.slices]`` is the box's part of an ``(H, W, ...)`` array."""
        return slice(self.top, self.bottom), slice(self.left, self.right)

    @property
    def pil(self) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)``, the order ``PIL.Image.crop`` takes."""
        return self.left, self.top, self.right, self.bottom

    def overlaps(self, other: Box) -> bool:
        return (
            self.top < other.bottom
            and other.top < self.bottom
            and self.left < other.right
            and other.left < self.right
        )

    def union(self, other: Box) -> Box:
        return Box(
            min(self.top, other.top),
            min(self.left, other.left),
            max(self.bottom, other.bottom),
            max(self.right, other.right),
        )


@dataclass(frozen=True)
class Region:
    """One place the networks run: ``box`` of the photo, scaled to ``work_size`` ``(h, w)``.

    ``work_size == (box.height, box.width)`` means "at the photo's own resolution" (the
    networks then pad to a multiple of 8 themselves, as the ``full`` strategy always did).
    """

    box: Box
    work_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Working pixels per photo pixel (1.0: not resampled)."""
        return self.work_size[0] / self.box.height

    @property
    def resampled(self) -> bool:
        return self.work_size != (self.box.height, self.box.width)


def choose_strategy(strategy: str, image_hw: tuple[int, int], working_size: int) -> str:
    """Resolve ``"auto"``: ``"crop"`` when the photo's longer side exceeds ``working_size``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy != "auto":
        return strategy
    return "crop" if max(image_hw) > working_size else "full"


def _region(box: Box, factor: int) -> Region:
    """``box`` reduced by the integer ``factor``, each side rounded to a multiple of 8."""
    if factor == 1:
        return Region(box, (box.height, box.width))

    def side(n: int) -> int:
        return max(2 * MULTIPLE, int(round(n / factor / MULTIPLE)) * MULTIPLE)

    return Region(box, (side(box.height), side(box.width)))


def reduction(side: float, working_size: int) -> int:
    """The integer factor that brings ``side`` photo pixels nearest to ``working_size``.

    [ours] Integer factors only: each working pixel is then the mean of one ``f x f`` block
    of photo pixels (with the crop's corner on that block grid), so a photo that is an exact
    enlargement of another is seen exactly as that other one. At least 1: never enlarged.
    """
    return max(1, int(round(side / working_size)))


def whole_photo(image_hw: tuple[int, int], working_size: int, resize: bool) -> Region:
    """The whole photo: at its own resolution, or (``resize``) scaled to ``working_size``."""
    box = Box(0, 0, image_hw[0], image_hw[1])
    return _region(box, reduction(max(image_hw), working_size) if resize else 1)


def crop_factor(strokes: Box, working_size: int) -> int:
    """The reduction factor ``f`` of the crop around a stroke group (module docstring)."""
    side = max(float(working_size), (1.0 + 2.0 * CONTEXT) * max(strokes.height, strokes.width))
    return reduction(side, working_size)


def crop_box(strokes: Box, image_hw: tuple[int, int], working_size: int) -> Box:
    """The crop for a group of strokes with bounding box ``strokes`` (the rule above)."""
    factor = crop_factor(strokes, working_size)
    side = factor * working_size

    def axis(lo: int, hi: int, size: int) -> tuple[int, int]:
        if side >= size:
            return 0, size
        start = int(round(((lo + hi) / 2 - side / 2) / factor)) * factor  # on the block grid
        start = min(max(start, 0), size - side)
        return start, start + side

    top, bottom = axis(strokes.top, strokes.bottom, image_hw[0])
    left, right = axis(strokes.left, strokes.right, image_hw[1])
    return Box(top, left, bottom, right)


def crop_region(strokes: Box, image_hw: tuple[int, int], working_size: int) -> Region:
    """The crop around a stroke group and the size the networks see it at."""
    box = crop_box(strokes, image_hw, working_size)
    factor = crop_factor(strokes, working_size)
    if box.height < factor * working_size and box.width < factor * working_size:
        # Cut to the photo on both axes: nothing more to show, so show it at the working size.
        factor = reduction(max(box.height, box.width), working_size)
    return _region(box, factor)


def _as_tuple(box: Box) -> tuple[int, int, int, int]:
    return box.top, box.left, box.bottom, box.right


def _component_boxes(marks: np.ndarray) -> list[Box]:
    """Bounding boxes of the 8-connected groups of non-zero pixels of ``marks``."""
    labels, _ = ndimage.label(marks, structure=np.ones((3, 3), bool))
    return [
        Box(rows.start, cols.start, rows.stop, cols.stop)
        for rows, cols in ndimage.find_objects(labels)
    ]


def plan_regions(
    strategy: str,
    sketch: np.ndarray,
    working_size: int,
    extra: np.ndarray | None = None,
) -> tuple[str, list[Region]]:
    """Where the networks run for one edit: ``(resolved strategy, regions)``.

    Args:
        strategy: one of :data:`STRATEGIES`.
        sketch: ``(H, W)`` strokes, non-zero = stroke (must not be empty for ``crop``).
        working_size: the model's training resolution in pixels.
        extra: optional ``(H, W)`` pixels every crop must also cover (a user's mask, or the
            region a mask revision adds), grouped with the strokes they touch.

    Returns ``full`` and ``resize`` as one region; ``crop`` as one region per group of
    strokes, merged until no two crops overlap (so each photo pixel belongs to at most one).
    """
    image_hw = sketch.shape
    strategy = choose_strategy(strategy, image_hw, working_size)
    if strategy in ("full", "resize"):
        return strategy, [whole_photo(image_hw, working_size, resize=strategy == "resize")]

    marks = sketch != 0
    if extra is not None:
        marks = marks | (extra != 0)
    groups = _component_boxes(marks)
    if not groups:
        raise ValueError("the crop strategy needs at least one stroke")
    # Merge groups whose crops overlap until none do: one pass joins every connected set of
    # overlapping crops (a graph's connected components); a merged group has a larger crop,
    # which may reach another group, hence the loop. Each pass removes groups, so it ends.
    while len(groups) > 1:
        crops = np.array([_as_tuple(crop_box(g, image_hw, working_size)) for g in groups])
        top, left, bottom, right = crops.T
        touch = (
            (top[:, None] < bottom[None, :])
            & (top[None, :] < bottom[:, None])
            & (left[:, None] < right[None, :])
            & (left[None, :] < right[:, None])
        )
        count, label = connected_components(csr_matrix(touch), directed=False)
        if count == len(groups):
            break
        joined: dict[int, Box] = {}
        for g, k in zip(groups, label, strict=True):
            joined[k] = joined[k].union(g) if k in joined else g
        groups = list(joined.values())
    regions = [crop_region(g, image_hw, working_size) for g in groups]
    return strategy, sorted(regions, key=lambda r: (r.box.top, r.box.left))
