"""Random holes: shapes, determinism, and the area bounds documented in sketchedit.data.masks."""

import numpy as np
import pytest

from sketchedit.data.masks import (
    area_statistics,
    blob_mask,
    free_form_mask,
    random_hole,
    sample_areas,
    square_mask,
)

MASKS = [free_form_mask, square_mask, blob_mask, random_hole]


@pytest.mark.parametrize("fn", MASKS)
def test_shape_dtype_values_and_determinism(fn):
    a = fn(48, 80, np.random.default_rng(7))
    b = fn(48, 80, np.random.default_rng(7))
    c = fn(48, 80, np.random.default_rng(8))
    assert a.shape == (48, 80) and a.dtype == np.float32
    assert set(np.unique(a)) <= {0.0, 1.0} and a.sum() > 0
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# Hard bounds from the module docstring (guaranteed by construction); a little slack for the
# pixel grid at 64 px.
@pytest.mark.parametrize(
    "fn, lo, hi",
    [
        (free_form_mask, 0.0019, 1.0),
        (square_mask, 1 / 16, 1 / 4),
        (blob_mask, 0.011 * 0.9, 0.724),
        (random_hole, 0.011 * 0.9, 1.0),
    ],
)
def test_area_within_documented_bounds(fn, lo, hi):
    areas = sample_areas(fn, n=150, size=64, seed=1)
    assert areas.min() >= lo and areas.max() <= hi


def test_square_side_follows_shorter_side(rng):
    for _ in range(50):
        m = square_mask(40, 100, rng)
        rows, cols = np.nonzero(m)
        side = rows.max() - rows.min() + 1
        assert side == cols.max() - cols.min() + 1  # a square
        assert 10 <= side <= 20  # 1/4 .. 1/2 of the shorter side (40)


def test_random_hole_contains_strokes_and_a_shape(rng):
    # With p_blob=0 the hole is strokes + a square, so it is at least 1/16 of the image.
    areas = [random_hole(64, 64, rng, p_blob=0.0).mean() for _ in range(50)]
    assert min(areas) >= 1 / 16


def test_blob_with_center_is_centred_there(rng):
    m = blob_mask(64, 64, rng, radius_fraction=(0.1, 0.1), center=(20, 40))
    rows, cols = np.nonzero(m)
    assert abs(rows.mean() - 20) < 4 and abs(cols.mean() - 40) < 4
    assert m[20, 40] == 1


def test_documented_distribution_is_reproduced():
    """The table in the masks docstring: random_hole at 256 px (1000 samples there; 300 here,
    which moves the mean by well under 0.03)."""
    stats = area_statistics(random_hole, n=300, size=256, seed=0)
    assert abs(stats["mean"] - 0.422) < 0.03
    assert abs(stats["p50"] - 0.417) < 0.04


@pytest.mark.parametrize(
    "call",
    [
        lambda r: free_form_mask(0, 10, r),
        lambda r: free_form_mask(10, 10, r, n_strokes=(0, 2)),
        lambda r: square_mask(10, 10, r, side_fraction=(0.5, 1.5)),
        lambda r: blob_mask(10, 10, r, wobble=1.2),
        lambda r: blob_mask(10, 10, r, aspect=(0.5, 1.0)),
        lambda r: random_hole(10, 10, r, p_blob=2.0),
        lambda r: random_hole(10.5, 10, r),
    ],
)
def test_bad_parameters_raise(call, rng):
    with pytest.raises(ValueError):
        call(rng)
