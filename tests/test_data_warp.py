"""Mask-free pair synthesis: x == y outside D bitwise, x != y inside, sketch inside dilate(D)."""

import math

import numpy as np
import pytest
from scipy import ndimage

from sketchedit.data.crops import center_crop_resize
from sketchedit.data.edges import extract_edges
from sketchedit.data.photos import bundled_photos
from sketchedit.data.warp import (
    WarpConfig,
    _min_jacobian,
    close_holes,
    dilate,
    quantize,
    synthesize_warp_pair,
    warp_image,
)


def _crop(key="skimage/astronaut", size=64):
    photo = next(p for p in bundled_photos(sources=("skimage",)) if p.key == key)
    img = center_crop_resize(photo.load(), size)
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0, extract_edges(img)


@pytest.fixture(scope="module")
def crops():
    return [_crop(k) for k in ("skimage/astronaut", "skimage/coffee", "skimage/chelsea")]


def test_pair_guarantees(crops):
    cfg = WarpConfig()
    for seed in range(12):
        y, e = crops[seed % len(crops)]
        pair = synthesize_warp_pair(y, e, np.random.default_rng(seed), cfg)
        x, d = pair.input, pair.changed
        assert pair.ok
        assert x.shape == y.shape and x.dtype == np.float32 and d.dtype == bool
        assert -1 <= x.min() and x.max() <= 1
        assert np.array_equal(x[~d], y[~d]), "x must equal y bitwise outside D"
        assert (np.abs(x - y).max(-1)[d] > cfg.tau).any(), "x must differ from y inside D"
        assert np.array_equal(pair.target, y)
        assert pair.region.any() and not (pair.region & ~d).any(), "R is part of D"
        sketch = pair.sketch.astype(bool)
        assert sketch.any() and not (sketch & ~(e > 0)).any(), "the sketch is y's edges"
        grown = ndimage.binary_dilation(d, iterations=round(cfg.sketch_margin * 64) + 1)
        assert not (sketch & ~grown).any(), "sketch only inside dilate(D)"
        # the displacement is exactly zero beyond the fade zone around R
        far = ndimage.distance_transform_edt(~pair.region) > cfg.margin * 64 + 1
        assert not pair.displacement[far].any()
        assert _min_jacobian(pair.displacement.astype(np.float64)) >= cfg.min_jacobian
        # on the 8-bit grid, like a real photo
        levels = (x + 1) * 127.5
        assert np.allclose(levels, np.round(levels), atol=1e-3)


def test_pair_is_deterministic(crops):
    y, e = crops[0]
    a = synthesize_warp_pair(y, e, np.random.default_rng(3))
    b = synthesize_warp_pair(y, e, np.random.default_rng(3))
    c = synthesize_warp_pair(y, e, np.random.default_rng(4))
    assert np.array_equal(a.input, b.input) and np.array_equal(a.changed, b.changed)
    assert np.array_equal(a.sketch, b.sketch)
    assert not np.array_equal(a.changed, c.changed)


def test_region_is_centred_on_an_edge(crops):
    y, e = crops[1]
    for seed in range(5):
        pair = synthesize_warp_pair(y, e, np.random.default_rng(seed))
        assert (pair.region & (e > 0)).any()


def test_flat_crop_gives_up_after_max_tries():
    y = np.full((32, 32, 3), 0.2, np.float32)
    e = np.zeros((32, 32), np.uint8)
    pair = synthesize_warp_pair(y, e, np.random.default_rng(0), WarpConfig(max_tries=3))
    assert not pair.ok and pair.tries == 3
    assert np.array_equal(pair.input, y) and pair.sketch.sum() == 0
    assert pair.changed.any()  # D still holds R


def test_texture_without_edges_is_accepted_with_an_empty_sketch():
    rng = np.random.default_rng(0)
    y = quantize(rng.uniform(-1, 1, (32, 32, 3)).astype(np.float32))
    e = np.zeros((32, 32), np.uint8)
    pair = synthesize_warp_pair(y, e, np.random.default_rng(1))
    assert pair.ok and pair.tries == 1 and pair.sketch.sum() == 0
    assert np.array_equal(pair.input[~pair.changed], y[~pair.changed])


def test_bad_inputs():
    y = np.zeros((16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="edges"):
        synthesize_warp_pair(y, np.zeros((8, 8), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        synthesize_warp_pair(y[..., 0], np.zeros((16, 16), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="region_radius"):
        WarpConfig(region_radius=(0.3, 0.1))
    with pytest.raises(ValueError, match="min_jacobian"):
        WarpConfig(min_jacobian=1.5)


def test_warp_image_identity_and_shift():
    img = np.random.default_rng(0).uniform(-1, 1, (20, 20, 3))
    assert np.array_equal(warp_image(img, np.zeros((20, 20, 2))), img)
    d = np.zeros((20, 20, 2))
    d[5:10, 5:10, 1] = 1.0  # read one pixel to the right
    out = warp_image(img, d, order=1)
    assert np.allclose(out[5:10, 5:10], img[5:10, 6:11])
    assert np.array_equal(out[:5], img[:5])


def test_dilate_and_close_holes():
    m = np.zeros((30, 30), bool)
    m[15, 15] = True
    grown = dilate(m, 3)
    assert grown[15, 18] and grown[12, 15] and not grown[15, 19]
    assert grown.sum() == pytest.approx(math.pi * 9, rel=0.25)
    ring = ndimage.binary_dilation(m, iterations=6) & ~ndimage.binary_dilation(m, iterations=3)
    ring[15, 10] = False  # a hairline gap and a hole in the middle
    closed = close_holes(ring, 1.5)
    assert not (ring & ~closed).any() and closed[15, 15] and closed[15, 10]


def test_quantize_is_on_the_grid():
    q = quantize(np.array([[-1.2, -0.5, 0.001, 0.999, 1.7]], np.float32))
    assert q.min() == -1 and q.max() == 1
    assert np.allclose((q + 1) * 127.5, np.round((q + 1) * 127.5), atol=1e-4)


def test_warp_changes_a_real_photo_visibly():
    """The warp moves content by pixels, not a sub-grey-level shimmer."""
    y, e = _crop("skimage/coffee", 64)
    pair = synthesize_warp_pair(y, e, np.random.default_rng(0))
    diff = np.abs(pair.input - y).max(-1)
    assert diff.max() > 0.3  # at least ~40 grey levels somewhere
