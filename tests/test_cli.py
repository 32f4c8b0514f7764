"""The command line: `python -m sketchedit edit` on real files with the starter checkpoint.

Every edit test runs `main([...])` in-process and compares what it wrote with the editing API
run on the same inputs; two tests run the real entry point in a subprocess.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sketchedit.cli import main
from sketchedit.editor import SketchEditor
from sketchedit.images import load_rgb

W, H = 240, 200  # larger than the starter's 64 px: `auto` edits a crop around the strokes
STROKE = [(140, 150), (150, 130), (170, 120), (190, 122)]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def starter():
    return SketchEditor.from_pretrained()


def _strokes(size=(W, H), points=STROKE) -> Image.Image:
    """White 2-px strokes on black, mode L."""
    img = Image.new("L", size, 0)
    ImageDraw.Draw(img).line(points, fill=255, width=2)
    return img


@pytest.fixture
def photo(tmp_path):
    from skimage import data

    path = tmp_path / "photo.png"
    Image.fromarray(data.astronaut()).resize((W, H), Image.Resampling.LANCZOS).save(path)
    return path


@pytest.fixture
def sketch(tmp_path):
    path = tmp_path / "white_on_black.png"
    _strokes().save(path)
    return path


def _run(capsys, *args):
    """``main(args)`` -> (exit status, stdout, stderr)."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _edit(capsys, photo, sketch, out, *extra):
    return _run(capsys, "edit", photo, "--sketch", sketch, "-o", out, *extra)


def _png(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).copy()


def _mask_png(used_mask: np.ndarray) -> np.ndarray:
    return np.round(used_mask * 255.0).astype(np.uint8)


# --- what an edit writes ---------------------------------------------------------------------
def test_edit_writes_the_api_result_and_its_mask(capsys, tmp_path, photo, sketch, starter):
    out, mask_out = tmp_path / "out.png", tmp_path / "mask.png"
    rc, stdout, stderr = _edit(capsys, photo, sketch, out, "--mask-out", mask_out)
    assert rc == 0, stderr
    expected = starter.edit(load_rgb(photo), _strokes())
    assert expected.strategy == "crop" and expected.used_mask.max() > 0.5  # a real edit
    result = _png(out)
    np.testing.assert_array_equal(result, np.asarray(expected.image))
    # The mask file is the used mask, 8-bit greyscale.
    with Image.open(mask_out) as m:
        assert m.mode == "L" and m.size == (W, H)
    np.testing.assert_array_equal(_png(mask_out), _mask_png(expected.used_mask))
    # Outside the blended region the output is the input, bit for bit; inside it changed.
    untouched = expected.used_mask == 0
    assert untouched.any() and not untouched.all()
    np.testing.assert_array_equal(result[untouched], _png(photo)[untouched])
    assert (result != _png(photo)).any()
    # One summary line: path, size, what ran, time.
    (line,) = stdout.splitlines()
    assert str(out) in line and f"{W}x{H}" in line and expected.describe() in line
    assert line.rstrip().split(", ")[2].endswith(" s")
    assert "warning" not in stderr and not list(tmp_path.glob(".*.tmp"))  # no temporary left


def test_dark_strokes_on_white_are_detected_and_inverted(capsys, tmp_path, photo, sketch):
    inverted = tmp_path / "black_on_white.png"
    Image.eval(_strokes(), lambda v: 255 - v).save(inverted)
    assert (
        _edit(capsys, photo, sketch, tmp_path / "a.png", "--mask-out", tmp_path / "a_m.png")[0] == 0
    )
    rc, _, stderr = _edit(
        capsys, photo, inverted, tmp_path / "b.png", "--mask-out", tmp_path / "b_m.png"
    )
    assert rc == 0
    assert "mostly light" in stderr and "inverted" in stderr and str(inverted) in stderr
    np.testing.assert_array_equal(_png(tmp_path / "b.png"), _png(tmp_path / "a.png"))
    np.testing.assert_array_equal(_png(tmp_path / "b_m.png"), _png(tmp_path / "a_m.png"))


def test_invert_forces_the_inversion_without_guessing(capsys, tmp_path, photo, sketch):
    inverted = tmp_path / "black_on_white.png"
    Image.eval(_strokes(), lambda v: 255 - v).save(inverted)
    assert _edit(capsys, photo, sketch, tmp_path / "a.png")[0] == 0
    rc, _, stderr = _edit(capsys, photo, inverted, tmp_path / "b.png", "--invert")
    assert rc == 0 and "mostly light" not in stderr
    np.testing.assert_array_equal(_png(tmp_path / "b.png"), _png(tmp_path / "a.png"))


def _layer(mode: str) -> Image.Image:
    """The test strokes on a transparent layer: RGB under the alpha is black everywhere, so
    only the alpha channel tells strokes from background."""
    alpha = _strokes()
    if mode == "RGBA-black":
        return Image.merge("RGBA", (Image.new("L", (W, H), 0),) * 3 + (alpha,))
    if mode == "RGBA-white":  # white ink: the grey values would show strokes too
        white = Image.new("L", (W, H), 255)
        return Image.merge("RGBA", (white, white, white, alpha))
    return Image.merge("LA", (Image.new("L", (W, H), 0), alpha))


@pytest.mark.parametrize("mode", ["RGBA-black", "RGBA-white", "LA"])
def test_strokes_on_a_transparent_layer_come_from_the_alpha(capsys, tmp_path, photo, mode):
    layer = tmp_path / "layer.png"
    _layer(mode).save(layer)
    rc, _, stderr = _edit(
        capsys, photo, layer, tmp_path / "out.png", "--mask-out", tmp_path / "m.png"
    )
    assert rc == 0, stderr
    assert "inverted" not in stderr
    reference = tmp_path / "wob.png"
    _strokes().save(reference)
    _edit(capsys, photo, reference, tmp_path / "ref.png", "--mask-out", tmp_path / "ref_m.png")
    np.testing.assert_array_equal(_png(tmp_path / "m.png"), _png(tmp_path / "ref_m.png"))


def test_user_mask_and_feather_reach_the_editor(capsys, tmp_path, photo, sketch, starter):
    user = np.zeros((H, W), np.uint8)
    user[115:160, 130:200] = 255
    mask_path = tmp_path / "user.png"
    Image.fromarray(user).save(mask_path)
    out, mask_out = tmp_path / "out.png", tmp_path / "m.png"
    args = ("--mask", mask_path, "--feather", "2", "--mask-out", mask_out)
    rc, _, stderr = _edit(capsys, photo, sketch, out, *args)
    assert rc == 0, stderr
    expected = starter.edit(load_rgb(photo), _strokes(), Image.fromarray(user), feather=2)
    np.testing.assert_array_equal(_png(out), np.asarray(expected.image))
    np.testing.assert_array_equal(_png(mask_out), _mask_png(expected.used_mask))


def test_strategy_reaches_the_editor(capsys, tmp_path, photo, sketch):
    rc, stdout, _ = _edit(capsys, photo, sketch, tmp_path / "out.png", "--strategy", "resize")
    assert rc == 0 and "resize: the whole photo at" in stdout


def test_empty_predicted_mask_is_reported(capsys, tmp_path, photo):
    dot = tmp_path / "dot.png"
    _strokes(points=[(140, 150), (141, 150)]).save(dot)  # too short for the starter
    rc, stdout, stderr = _edit(capsys, photo, dot, tmp_path / "out.png")
    assert rc == 0 and len(stdout.splitlines()) == 1
    assert "warning: the predicted mask is empty: nothing visibly changed" in stderr


def test_overwrite_replaces_an_existing_output(capsys, tmp_path, photo, sketch):
    out = tmp_path / "out.png"
    out.write_bytes(b"old work")
    rc, _, stderr = _edit(capsys, photo, sketch, out)
    assert rc == 2 and "--overwrite" in stderr and out.read_bytes() == b"old work"
    assert _edit(capsys, photo, sketch, out, "--overwrite")[0] == 0
    assert _png(out).shape == (H, W, 3)


def test_output_format_follows_the_suffix(capsys, tmp_path, photo, sketch):
    for name, fmt in (("out.jpg", "JPEG"), ("out.webp", "WEBP"), ("no_suffix", "PNG")):
        assert _edit(capsys, photo, sketch, tmp_path / name)[0] == 0
        with Image.open(tmp_path / name) as img:
            assert img.format == fmt and img.size == (W, H)


def test_exif_rotated_photo_is_edited_upright(capsys, tmp_path, photo, sketch, starter):
    """A phone photo stored sideways with EXIF orientation 6: the sketch is drawn on the
    upright photo (W x H), and the output is upright too."""
    upright = Image.open(photo).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what orientation 6 turns back
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "phone.jpg"
    stored.save(rotated, quality=95, exif=exif.tobytes())
    out = tmp_path / "out.png"
    rc, _, stderr = _edit(capsys, rotated, sketch, out)
    assert rc == 0, stderr
    expected = starter.edit(load_rgb(rotated), _strokes())
    assert expected.image.size == (W, H)
    np.testing.assert_array_equal(_png(out), np.asarray(expected.image))
    # A sketch drawn on the sideways stored pixels is refused, and the message says why.
    sideways = tmp_path / "sideways.png"
    _strokes(size=(H, W)).save(sideways)
    rc, _, stderr = _edit(capsys, rotated, sideways, tmp_path / "o2.png")
    assert rc == 2 and f"{H}x{W}" in stderr and f"{W}x{H}" in stderr and "EXIF" in stderr


# --- every bad input: one line, exit 2, nothing written ---------------------------------------
def _files(tmp_path):
    """Bad and good inputs for the table below, created on demand."""
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    _strokes(size=(W // 2, H // 2), points=[(10, 10), (50, 40)]).save(tmp_path / "small.png")
    Image.new("L", (W, H), 0).save(tmp_path / "black.png")
    Image.new("L", (W, H), 255).save(tmp_path / "white.png")
    Image.new("L", (W, H), 60).save(tmp_path / "dark_grey.png")  # all ink, or none: refused
    Image.new("L", (W, H), 200).save(tmp_path / "light_grey.png")
    veil = Image.merge("LA", (Image.new("L", (W, H), 0), Image.new("L", (W, H), 200)))
    veil.save(tmp_path / "veil.png")  # a semi-transparent fill: every pixel is ink
    (tmp_path / "exists.png").write_bytes(b"keep me")
    (tmp_path / "fake.zip").write_bytes(b"<html>sign in</html>")  # a failed download


#: case -> (the arguments before -o, a word the error line must contain)
BAD = {
    "missing photo": ("nope.png --sketch {sketch}", "nope.png"),
    "unreadable photo": ("{tmp}/garbage.png --sketch {sketch}", "garbage.png"),
    "photo is a folder": ("{tmp} --sketch {sketch}", "{tmp}"),
    "missing sketch": ("{photo} --sketch {tmp}/nope.png", "nope.png"),
    "unreadable sketch": ("{photo} --sketch {tmp}/garbage.png", "garbage.png"),
    "sketch of another size": ("{photo} --sketch {tmp}/small.png", "120x100"),
    "empty sketch": ("{photo} --sketch {tmp}/black.png", "no strokes"),
    "empty after inversion": ("{photo} --sketch {tmp}/white.png", "no strokes"),
    "dark grey sketch": ("{photo} --sketch {tmp}/dark_grey.png", "grey values"),
    "light grey sketch": ("{photo} --sketch {tmp}/light_grey.png", "mostly light"),
    "all-stroke layer": ("{photo} --sketch {tmp}/veil.png", "100%"),
    "all-stroke inverted": ("{photo} --sketch {sketch} --invert", "drop --invert"),
    "missing mask": ("{photo} --sketch {sketch} --mask {tmp}/m.png", "m.png"),
    "unreadable mask": ("{photo} --sketch {sketch} --mask {tmp}/garbage.png", "garbage.png"),
    "mask of another size": ("{photo} --sketch {sketch} --mask {tmp}/small.png", "120x100"),
    "missing checkpoint": ("{photo} --sketch {sketch} --checkpoint {tmp}/c.pt", "c.pt"),
    "corrupt checkpoint": ("{photo} --sketch {sketch} --checkpoint {tmp}/garbage.png", "garbage"),
    "missing official": ("{photo} --sketch {sketch} --official {tmp}/m.pth {tmp}/g.pth", "m.pth"),
    "corrupt official": (
        "{photo} --sketch {sketch} --official {tmp}/garbage.png {tmp}/garbage.png",
        "garbage.png",
    ),
    "three official paths": ("{photo} --sketch {sketch} --official a b c", "two files"),
    "official archive not a zip": (
        "{photo} --sketch {sketch} --official {tmp}/fake.zip",
        "not a zip archive",
    ),
    "both model options": (
        "{photo} --sketch {sketch} --checkpoint c --official m g",
        "not allowed with",
    ),
    "bad strategy": ("{photo} --sketch {sketch} --strategy tile", "tile"),
    "negative feather": ("{photo} --sketch {sketch} --feather -1", "--feather"),
    "no sketch": ("{photo}", "--sketch"),
}
OUTPUT_BAD = {
    "output exists": ("{tmp}/exists.png", [], "--overwrite"),
    "mask-out exists": ("{tmp}/o.png", ["--mask-out", "{tmp}/exists.png"], "--overwrite"),
    "output folder missing": ("{tmp}/no/such/dir/o.png", [], "does not exist"),
    "output is a folder": ("{tmp}", ["--overwrite"], "is a folder"),
    "unknown output suffix": ("{tmp}/o.pngg", [], ".pngg"),
    "mask-out not png": ("{tmp}/o.png", ["--mask-out", "{tmp}/m.jpg"], "PNG"),
    "mask-out is the output": ("{tmp}/o.png", ["--mask-out", "{tmp}/o.png"], "same file"),
}


def _fill(items, tmp_path, photo, sketch):
    return [str(i).format(tmp=tmp_path, photo=photo, sketch=sketch) for i in items]


def _assert_one_error_line(rc, stdout, stderr, needle):
    assert rc == 2
    assert stdout == ""
    lines = [line for line in stderr.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_line_and_exit_2(capsys, tmp_path, photo, sketch, case):
    _files(tmp_path)
    args, needle = BAD[case]
    out = tmp_path / "out.png"
    [needle, *args] = _fill([needle, *args.split()], tmp_path, photo, sketch)
    _assert_one_error_line(*_run(capsys, "edit", *args, "-o", out), needle)
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(OUTPUT_BAD))
def test_bad_output_is_refused_before_the_model_runs(
    capsys, tmp_path, photo, sketch, case, monkeypatch
):
    def no_model(*_):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr("sketchedit.cli.load_editor", no_model)
    _files(tmp_path)
    out, extra, needle = OUTPUT_BAD[case]
    [out, needle, *extra] = _fill([out, needle, *extra], tmp_path, photo, sketch)
    _assert_one_error_line(*_edit(capsys, photo, sketch, out, *extra), needle)
    assert (tmp_path / "exists.png").read_bytes() == b"keep me"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_error_line(capsys, tmp_path, photo, sketch):
    rc, stdout, stderr = _edit(capsys, photo, sketch, tmp_path / "o.png", "--device", "cuda")
    _assert_one_error_line(rc, stdout, stderr, "CUDA is not available")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_edit_matches_the_cpu_edit(capsys, tmp_path, photo, sketch):
    for device in ("cpu", "cuda"):
        extra = ("--device", device, "--mask-out", tmp_path / f"{device}_mask.png")
        rc, _, stderr = _edit(capsys, photo, sketch, tmp_path / f"{device}.png", *extra)
        assert rc == 0, stderr
    cpu, cuda = (_png(tmp_path / f"{d}_mask.png").astype(int) for d in ("cpu", "cuda"))
    assert np.abs(cpu - cuda).max() <= 2  # float32 on another device: rounding only


# --- the official weights as downloaded -------------------------------------------------------
def test_edit_official_takes_the_archive_its_folder_or_the_two_files(capsys, tmp_path):
    from test_official_release import FILES, official_files, write_archive, write_folder

    files = official_files(seed=2)
    archive = write_archive(tmp_path / "celeb.zip", {f"celeb/{n}": d for n, d in files.items()})
    folder = write_folder(tmp_path / "checkpoints" / "celeb", files)
    size, points = (48, 40), [(8, 30), (20, 12), (40, 10)]
    photo, sketch = tmp_path / "photo.png", tmp_path / "sketch.png"
    from skimage import data

    Image.fromarray(data.astronaut()).resize(size).save(photo)
    _strokes(size, points).save(sketch)
    expected = SketchEditor.from_official(archive).edit(load_rgb(photo), _strokes(size, points))
    forms = {"zip": [archive], "folder": [folder], "files": [folder / f for f in FILES]}
    for form, paths in forms.items():
        out = tmp_path / f"{form}.png"
        rc, stdout, stderr = _edit(capsys, photo, sketch, out, "--official", *paths)
        assert rc == 0, (form, stderr)
        np.testing.assert_array_equal(_png(out), np.asarray(expected.image), err_msg=form)


def test_reproduce_is_a_subcommand(capsys):
    assert main(["reproduce", "--help"]) == 0
    assert "--checkpoints" in capsys.readouterr().out


# --- train and evaluate are passed through ----------------------------------------------------
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_and_evaluate_help_pass_through(capsys, command):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    assert f"python -m sketchedit.{command}" in capsys.readouterr().out


def test_evaluate_errors_come_from_the_evaluator(capsys, tmp_path):
    assert main(["evaluate", str(tmp_path / "none.safetensors")]) == 2
    assert "none.safetensors" in capsys.readouterr().err


# --- the real entry point ----------------------------------------------------------------------
def _python_m(*args):
    return subprocess.run(
        [sys.executable, "-m", "sketchedit", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_python_m_sketchedit_help_lists_every_subcommand():
    proc = _python_m("--help")
    assert proc.returncode == 0
    for command in ("edit", "train", "evaluate"):
        assert f"    {command} " in proc.stdout


def test_python_m_sketchedit_edit(tmp_path, photo, sketch):
    out = tmp_path / "out.png"
    proc = _python_m("edit", photo, "--sketch", sketch, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert _png(out).shape == (H, W, 3) and str(out) in proc.stdout
    proc = _python_m("edit", photo, "--sketch", sketch, "-o", out)  # exists now
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr
