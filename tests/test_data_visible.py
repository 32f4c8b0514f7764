"""Visible-edit pairs: exact outside D, the unchanged input really does not draw the strokes,
the three kinds do what they say, and the dataset mixes them in deterministically."""

import numpy as np
import pytest

from sketchedit.data.dataset import SketchEditDataset
from sketchedit.data.edges import extract_edges
from sketchedit.data.photos import bundled_photos
from sketchedit.data.visible import VISIBLE_F1, synthesize_visible_pair
from sketchedit.data.warp import dilate
from sketchedit.evaluate import sketch_edge_f1


def _edges01(image):
    return extract_edges(np.clip((image + 1.0) / 2.0, 0.0, 1.0), "canny")


@pytest.fixture(scope="module")
def crops():
    """Five 64-px targets from bundled photos with their Canny edges."""
    ds = SketchEditDataset(bundled_photos(), size=64, seed=1)
    out = []
    for i in range(5):
        rng = ds.sample_rng(i)
        crop, _ = ds._crop(ds.photo_index(i), rng)
        out.append((np.asarray(crop, np.float32) / 127.5 - 1.0, ds._edges(crop, None)))
    return out


@pytest.mark.parametrize("kind", ["shift", "remove", "erase"])
def test_visible_pairs_are_exact_outside_d_and_not_drawn_by_the_input(crops, kind):
    rng = np.random.default_rng(0)
    accepted = 0
    for target, edges in crops:
        pair, got, f1 = synthesize_visible_pair(target, edges, rng, _edges01, kind=kind)
        assert got == kind
        np.testing.assert_array_equal(pair.input[~pair.changed], pair.target[~pair.changed])
        if kind != "erase":
            np.testing.assert_array_equal(pair.target, target)
        else:  # the photo itself is the input inside D; the target is the smooth fill
            np.testing.assert_array_equal(pair.input[pair.changed], target[pair.changed])
            assert not np.array_equal(pair.target, target)
        assert not (pair.sketch.astype(bool) & ~dilate(pair.changed, 2)).any()
        if not pair.ok:
            continue
        accepted += 1
        assert f1 < VISIBLE_F1
        # The evaluation's own metric agrees: the unchanged input scores below 0.5.
        chw = np.ascontiguousarray(pair.input.transpose(2, 0, 1))
        assert sketch_edge_f1(chw, pair.sketch, pair.changed) == pytest.approx(f1, abs=1e-6)
        # ... and the target draws its own strokes.
        chw_t = np.ascontiguousarray(pair.target.transpose(2, 0, 1))
        assert sketch_edge_f1(chw_t, pair.sketch, pair.changed) == 1.0
        if kind in ("remove", "erase"):
            # The filled one of the two is smoother than the photo in R.
            smooth, photo = (pair.input, target) if kind == "remove" else (pair.target, target)
            r = pair.region
            grad_smooth = np.abs(np.diff(smooth, axis=1))[r[:, 1:]].mean()
            grad_photo = np.abs(np.diff(photo, axis=1))[r[:, 1:]].mean()
            assert grad_smooth < grad_photo
    assert accepted >= 3


def test_dataset_mixes_visible_pairs_deterministically():
    photos = bundled_photos()[:6]
    plain = SketchEditDataset(photos, size=64, seed=2)
    mixed = SketchEditDataset(photos, size=64, seed=2, visible_fraction=1.0)
    again = SketchEditDataset(photos, size=64, seed=2, visible_fraction=1.0)
    scores = {"plain": [], "mixed": []}
    for i in range(6):
        a, b = mixed[i], again[i]
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
        for name, s in (("plain", plain[i]), ("mixed", a)):
            scores[name].append(sketch_edge_f1(s["input"], s["sketch"][0], s["changed"][0]))
    assert np.mean(scores["mixed"]) < 0.5 < np.mean(scores["plain"])


def test_dataset_gives_erase_pairs_the_filled_targets_edges():
    """An erase pair's "edges" plane belongs to its (filled) target, and the sketch is cut
    from it: every stroke is an edge of the target the model is asked to paint."""
    photos = bundled_photos()[:8]
    ds = SketchEditDataset(photos, size=64, seed=3, visible_fraction=1.0)
    for i in range(12):
        s = ds[i]
        assert not (s["sketch"].bool() & ~s["edges"].bool()).any()
        target01 = ((s["target"].numpy().transpose(1, 2, 0) + 1) / 2).clip(0, 1)
        np.testing.assert_array_equal(extract_edges(target01, "canny"), s["edges"][0].numpy())


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_visible_fraction_is_checked(bad):
    with pytest.raises(ValueError, match="visible_fraction"):
        SketchEditDataset(bundled_photos()[:2], size=64, visible_fraction=bad)
