"""The no-ground-truth check: adherence and locality on hand-made cases, scripted strokes."""

import numpy as np
import pytest
from PIL import Image

from sketchedit.data.edges import extract_edges
from sketchedit.data.warp import dilate
from sketchedit.real_strokes import (
    ADHERENCE_TOLERANCE,
    SCRIPTED_ON_EDGES,
    locality,
    scripted_strokes,
    stroke_adherence,
    strokes_region,
)


def _flat(h=64, w=64, value=128):
    return np.full((h, w, 3), value, np.uint8)


def test_adherence_is_one_when_the_output_draws_the_strokes_and_zero_on_a_flat_image():
    strokes = np.zeros((64, 64), np.float32)
    strokes[32, 10:50] = 1
    drawn = _flat()
    drawn[30:, :] = 20  # a dark lower half: its edge runs along row 30-31, within 2 px of row 32
    assert stroke_adherence(drawn, strokes) == 1.0
    assert stroke_adherence(_flat(), strokes) == 0.0
    far = _flat()
    far[50:, :] = 20  # an edge 18 px away
    assert stroke_adherence(far, strokes) == 0.0
    with pytest.raises(ValueError, match="at least one stroke"):
        stroke_adherence(drawn, np.zeros((64, 64)))


def test_locality_counts_changes_outside_the_strokes_region():
    strokes = np.zeros((100, 100), np.float32)
    strokes[50, 40:60] = 1
    region = strokes_region(strokes)
    assert region[50, 30] and not region[5, 5]  # hull grown by 10 px
    original = _flat(100, 100)
    assert locality(original, original, strokes) == 1.0
    inside = original.copy()
    inside[45:55, 40:60] = 0
    assert locality(inside, original, strokes) == 1.0
    both = inside.copy()
    both[0:10, 0:20] = 0  # 200 changed pixels far away, 200 inside
    assert locality(both, original, strokes) == pytest.approx(0.5)
    tiny = original.copy()
    tiny[0:10, 0:20] += 3  # below the change threshold: not a change
    assert locality(tiny, original, strokes) == 1.0


def test_scripted_strokes_are_deterministic_thin_and_mostly_off_the_photos_edges():
    from sketchedit.data.photos import bundled_photos

    photo = next(p for p in bundled_photos() if p.key == "skimage/astronaut").load()
    photo = photo.resize((128, 128), Image.Resampling.LANCZOS)
    a = scripted_strokes(photo, np.random.default_rng(3))
    b = scripted_strokes(photo, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert 20 <= a.sum() <= 0.05 * a.size  # a curve of 25-40 % of the side, 1 px wide
    near = dilate(extract_edges(photo, "canny") > 0, ADHERENCE_TOLERANCE)
    assert near[a > 0].mean() <= SCRIPTED_ON_EDGES
