"""The one image loader: every input mode becomes correct 8-bit RGB; tensors live in [-1, 1]."""

import numpy as np
import pytest
import torch
from PIL import Image

from sketchedit.fileio import atomic_path, atomic_write_text
from sketchedit.images import load_rgb, to_numpy01, to_pil, to_tensor


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_greyscale_rgba_palette_cmyk_become_rgb(tmp_path):
    grey = _save(Image.new("L", (5, 4), 100), tmp_path / "g.png")
    rgba = Image.new("RGBA", (5, 4), (200, 10, 20, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent -> the white background
    rgba_path = _save(rgba, tmp_path / "a.png")
    pal = Image.new("RGB", (5, 4), (12, 34, 56)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal_path = _save(pal, tmp_path / "p.png")
    cmyk_path = _save(Image.new("CMYK", (5, 4), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=100)

    g = np.asarray(load_rgb(grey))
    assert g.shape == (4, 5, 3) and (g == 100).all()
    a = np.asarray(load_rgb(rgba_path))
    assert tuple(a[0, 0]) == (255, 255, 255) and tuple(a[1, 1]) == (200, 10, 20)
    assert tuple(np.asarray(load_rgb(pal_path))[2, 2]) == (12, 34, 56)
    c = np.asarray(load_rgb(cmyk_path)).astype(int)
    assert c[..., 0].min() > 240 and c[..., 1].max() < 15 and c[..., 2].max() < 15  # pure red


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.full((3, 4), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    arr[1, 1] = 32896  # ~ half scale
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(load_rgb(path))
    assert out[0, 0, 0] == 0 and out[2, 2, 0] == 255 and abs(int(out[1, 1, 0]) - 128) <= 1


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (6, 3), (0, 0, 0))
    img.putpixel((0, 0), (255, 255, 255))  # marks the top-left corner before rotation
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=100)
    out = load_rgb(path)
    assert out.size == (3, 6)  # width and height swapped
    arr = np.asarray(out).astype(int)
    assert arr[0, 2].sum() > 600  # the marked corner is now top-right


def test_corrupt_and_missing_files_raise_clear_errors(tmp_path):
    good = tmp_path / "good.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good)
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.jpg"):
        load_rgb(bad)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.jpg"):
        load_rgb(text)
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "missing.png")


@pytest.mark.parametrize(
    ("arr", "expected"),
    [
        (np.full((2, 2), 255, np.uint8), 255),
        (np.full((2, 2, 1), 0.5, np.float32), 128),
        (np.full((2, 2, 3), 65535, np.uint16), 255),
        (np.ones((2, 2), bool), 255),
        (np.full((2, 2, 4), 255, np.uint8), 255),
    ],
)
def test_arrays_of_any_dtype(arr, expected):
    out = np.asarray(load_rgb(arr))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8 and (out == expected).all()


def test_bad_arrays_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        load_rgb(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        load_rgb(np.full((2, 2), np.nan, np.float32))


def test_tensor_round_trip_and_range():
    arr = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    t = to_tensor(arr)
    assert t.shape == (3, 7, 9) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert t[0, 0, 0].item() == pytest.approx(arr[0, 0, 0] / 127.5 - 1)
    assert (np.asarray(to_pil(t)) == arr).all()
    assert (np.asarray(to_pil(t[None])) == arr).all()
    assert to_numpy01(t).shape == (7, 9, 3)
    with pytest.raises(ValueError, match="batch"):
        to_pil(torch.zeros(2, 3, 4, 4))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "ckpt.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.txt"]  # no temporary left behind
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    import os
    import stat

    target = tmp_path / "asset.bin"
    atomic_write_text(target, "x")
    old = os.umask(0o022)
    os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~old


def test_tensors_go_through_the_same_loader():
    arr = np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    t = to_tensor(arr)
    for variant in (t, t[None]):
        assert (np.asarray(load_rgb(variant)) == arr).all()
    grey = np.asarray(load_rgb(t[:1]))
    assert grey.shape == (5, 6, 3) and (grey[..., 0] == grey[..., 2]).all()
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        load_rgb(t * 3)
    with pytest.raises(ValueError, match="NaN"):
        load_rgb(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        load_rgb(torch.zeros(2, 3, 4, 4))
    with pytest.raises(TypeError, match="int"):
        load_rgb(7)
