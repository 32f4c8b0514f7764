"""Seeded random square crops, resized to the training size.

The paper trains on 256 px crops [code]; how they were cut is not published. [ours] A square
whose side is a random fraction ``scale`` of the photo's shorter side, at a uniformly random
position, resized with an antialiasing filter (Lanczos by default) to ``size x size``. A crop
smaller than ``size`` is *upscaled* (documented behaviour: small photos such as the 92x112 ORL
faces still give 256 px samples, only blurrier). Photos whose shorter side is below
:data:`MIN_SIDE` pixels raise ``ValueError``: a 1x1 or 3x5 "photo" has nothing to sketch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Shorter side (px) below which a photo is rejected as too small to crop [ours].
MIN_SIDE = 8
#: Default range of the crop side as a fraction of the photo's shorter side [ours].
DEFAULT_SCALE = (0.5, 1.0)

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in pixels


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return int(size)


def _check_photo(img: Image.Image, min_side: int) -> None:
    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(img).__name__}")
    if min(img.size) < min_side:
        raise ValueError(
            f"image of {img.width}x{img.height} px is too small to crop: the shorter side "
            f"must be at least {min_side} px"
        )


def random_crop_box(
    width: int, height: int, rng: np.random.Generator, scale: tuple[float, float] = DEFAULT_SCALE
) -> Box:
    """A random square ``(left, top, right, bottom)`` inside a ``width x height`` image.

    Side ``= u * min(width, height)`` with ``u ~ U(scale)``; the corner is uniform over the
    positions where the square fits. Coordinates are floats (PIL resizes from sub-pixel boxes).
    """
    lo, hi = scale
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    side = rng.uniform(lo, hi) * min(width, height)
    left = rng.uniform(0.0, width - side)
    top = rng.uniform(0.0, height - side)
    return (left, top, left + side, top + side)


def crop_resize(
    img: Image.Image,
    box: Box,
    size: int,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> Image.Image:
    """Cut ``box`` out of ``img`` and resize it to ``size x size``, antialiased.

    ``reducing_gap=3``: PIL first shrinks by an integer factor with a box filter while the
    result stays at least 3x the target size, then applies ``resample``; per PIL's
    documentation this is indistinguishable from a direct Lanczos resize, and several times
    faster when a 500 px box becomes a 64 px crop.
    """
    size = _check_size(size)
    return img.resize((size, size), resample, box=tuple(float(v) for v in box), reducing_gap=3.0)


def random_crop_resize(
    img: Image.Image,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = DEFAULT_SCALE,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
    min_side: int = MIN_SIDE,
) -> Image.Image:
    """A random square crop of ``img`` resized to ``size x size`` (PIL in, PIL out).

    The crop's side is a fraction ``scale = (min, max)`` of the shorter side; when it is
    smaller than ``size`` the crop is upscaled. Raises ``ValueError`` when the shorter side is
    below ``min_side`` px (e.g. a 1x1 image) and ``TypeError`` for a non-PIL input.
    """
    _check_photo(img, min_side)
    box = random_crop_box(img.width, img.height, rng, scale)
    return crop_resize(img, box, size, resample)


def center_crop_resize(
    img: Image.Image,
    size: int,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
    min_side: int = MIN_SIDE,
) -> Image.Image:
    """The largest centred square of ``img`` resized to ``size x size`` (for evaluation)."""
    _check_photo(img, min_side)
    side = min(img.size)
    left, top = (img.width - side) / 2, (img.height - side) / 2
    return crop_resize(img, (left, top, left + side, top + side), size, resample)


def limit_max_side(img: Image.Image, max_side: int | None) -> Image.Image:
    """Downscale ``img`` (antialiased) so its longer side is at most ``max_side``; never upscale.

    The dataset caches photos at this size, so crops of a 5000 px photo stay fast.
    """
    if max_side is None or max(img.size) <= max_side:
        return img
    factor = max_side / max(img.size)
    new = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    return img.resize(new, Image.Resampling.LANCZOS)
