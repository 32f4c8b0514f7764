"""`sketchedit reproduce`: the official test protocol on a synthetic samples folder.

The official weights are not reachable offline, so the whole path runs on synthetic
official-format weights (random tensors with the official names and shapes, in a synthetic
``celeb.zip``) and a synthetic samples folder laid out like the official release's
(``list.txt``, ``images/``, ``edges/``, ``results/``). What is checked: the outputs' names,
sizes and formats; that they are the official protocol's (same loading, soft blend,
truncation to 8 bits); the agreement table against a ``results/`` folder; bad inputs.
"""

import shutil
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from test_official_release import official_files, write_archive

from sketchedit.cli import main
from sketchedit.editor import SketchEditor
from sketchedit.reproduce import Agreement, format_table, load_sample, read_samples

#: name -> (width, height): sides multiples of 8, as the official test needs.
SAMPLES = {"11.png": (32, 24), "556.png": (24, 32), "602_images_celeb_00033.png": (32, 32)}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    members = {f"celeb/{n}": d for n, d in official_files(seed=1).items()}
    return write_archive(root / "celeb.zip", members, zipfile.ZIP_DEFLATED)


def make_samples(folder, samples=SAMPLES):
    """Photos (RGBA for one: the official loader drops alpha), white-on-black sketches whose
    strokes are grey 1..255 (any non-zero value is a stroke), and list.txt."""
    from skimage import data

    (folder / "images").mkdir(parents=True)
    (folder / "edges").mkdir()
    photos = [data.astronaut(), data.chelsea(), data.coffee()]
    for (name, size), photo in zip(samples.items(), photos, strict=False):
        img = Image.fromarray(photo).resize(size, Image.Resampling.LANCZOS)
        if name == "556.png":  # transparent top-left corner: the official loader ignores alpha
            alpha = Image.new("L", size, 255)
            alpha.paste(0, (0, 0, 8, 8))
            img.putalpha(alpha)
        img.save(folder / "images" / name)
        edge = Image.new("L", size, 0)
        ImageDraw.Draw(edge).line([(4, 4), (size[0] - 6, size[1] // 2)], fill=1, width=1)
        ImageDraw.Draw(edge).line([(6, size[1] - 5), (size[0] // 2, 8)], fill=255, width=2)
        edge.save(folder / "edges" / name)
    # The official lists name the files with their suffix; a name without one works too.
    names = [n if n != "556.png" else "556" for n in samples]
    (folder / "list.txt").write_text("\n".join(names) + "\n")
    return folder


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _reproduce(capsys, archive, samples, out, *extra):
    return _run(
        capsys, "reproduce", "--checkpoints", archive, "--samples", samples, "--out", out, *extra
    )


def _png(path):
    with Image.open(path) as img:
        return img.mode, np.asarray(img).copy()


@pytest.fixture(scope="module")
def editor(archive):
    return SketchEditor.from_official(archive)


# --------------------------------------------------------------------------------------------
# What the official protocol writes.
# --------------------------------------------------------------------------------------------
def test_reproduce_writes_results_and_masks_by_the_official_protocol(
    capsys, tmp_path, archive, editor
):
    samples = make_samples(tmp_path / "samples")
    out = tmp_path / "out"
    rc, stdout, stderr = _reproduce(capsys, archive, samples, out)
    assert rc == 0, stderr
    assert "nothing to compare with" in stdout
    assert editor.official_sha256["M"][:16] in stdout  # the weights' digests are reported
    for name, (w, h) in SAMPLES.items():
        mode, result = _png(out / "results" / name)
        assert (mode, result.shape) == ("RGB", (h, w, 3)), name
        mode, mask = _png(out / "masks" / name)
        assert (mode, mask.shape) == ("L", (h, w)), name

    # The result is the official formula, computed independently here: soft mask m from the
    # mask estimator, generator on the hard mask, fine * m + image * (1 - m), truncated.
    sample = read_samples(samples)[0]
    image, sketch = load_sample(sample)
    with torch.no_grad():
        m = editor.mask_estimator.predict_mask(image, sketch)
        hard = (m > 0.5).float()
        _, fine = editor.generator(image, sketch, hard, hard)
    composed = fine * m + image * (1 - m)
    expected = ((composed + 1) / 2 * 255).numpy().astype(np.uint8)[0].transpose(1, 2, 0)
    _, result = _png(out / "results" / sample.name)
    assert np.array_equal(result, expected)
    _, mask = _png(out / "masks" / sample.name)
    assert np.array_equal(mask, (m * 255).numpy().astype(np.uint8)[0, 0])


def test_inputs_are_read_as_the_official_loader_reads_them(tmp_path):
    samples = make_samples(tmp_path / "samples")
    by_name = {s.name: s for s in read_samples(samples)}
    assert list(by_name) == list(SAMPLES)  # "556" without suffix names 556.png
    image, sketch = load_sample(by_name["556.png"])
    rgba = np.asarray(Image.open(samples / "images" / "556.png"))
    assert rgba.shape[2] == 4 and rgba[0, 0, 3] == 0
    rgb = rgba[..., :3]  # the colour channels as stored, not composited onto white
    np.testing.assert_allclose(image[0].permute(1, 2, 0).numpy(), rgb / 127.5 - 1, atol=1e-6)
    grey = np.asarray(Image.open(samples / "edges" / "556.png"))
    assert sketch.shape == (1, 1, 32, 24)
    assert np.array_equal(sketch[0, 0].numpy(), (grey > 0).astype(np.float32))
    assert (grey == 1).any()  # a faint stroke value is still a stroke


# --------------------------------------------------------------------------------------------
# The agreement table.
# --------------------------------------------------------------------------------------------
def test_agreement_table_reports_levels_and_psnr(capsys, tmp_path, archive):
    samples = make_samples(tmp_path / "samples")
    first = tmp_path / "first"
    rc, _, stderr = _reproduce(capsys, archive, samples, first)
    assert rc == 0, stderr
    # "Official" results: our own, with one sample moved by 2 levels in one pixel channel.
    shutil.copytree(first / "results", samples / "results")
    perturbed = samples / "results" / "556.png"
    _, pixels = _png(perturbed)
    pixels = pixels.copy()
    pixels[3, 5, 1] = pixels[3, 5, 1] + 2 if pixels[3, 5, 1] < 250 else pixels[3, 5, 1] - 2
    Image.fromarray(pixels).save(perturbed)

    rc, stdout, stderr = _reproduce(capsys, archive, samples, tmp_path / "second")
    assert rc == 1, stderr  # one sample is more than 1 level off
    rows = {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if ".png" in line}
    assert rows["11.png"] == ["0", "inf"]
    assert rows["602_images_celeb_00033.png"] == ["0", "inf"]
    diff, psnr = rows["556.png"]
    assert diff == "2"
    # PSNR of one channel of one pixel off by 2: 10 log10(255^2 / (4 / (32 * 24 * 3))).
    assert float(psnr) == pytest.approx(10 * np.log10(255**2 * 32 * 24 * 3 / 4), abs=0.01)
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith("agreement: 2 of 3 compared samples within 1 level")
    assert "largest difference 2 levels, 556.png" in summary


def test_summary_counts_samples_without_an_official_result():
    rows = [
        Agreement("a.png", 1, 60.0),
        Agreement("b.png", None, None, "no official result"),
    ]
    lines = format_table(rows)
    assert lines[2].split(None, 1) == ["b.png", "no official result"]
    assert lines[-1].startswith("agreement: 1 of 1 compared samples within 1 level")
    assert lines[-1].endswith("; 1 not compared")


# --------------------------------------------------------------------------------------------
# Bad inputs: one line, exit 2, before the networks run.
# --------------------------------------------------------------------------------------------
def _break(case, samples):
    if case == "missing list.txt":
        (samples / "list.txt").unlink()
        return "list.txt does not exist"
    if case == "listed image missing":
        (samples / "images" / "11.png").unlink()
        return "photo of"
    if case == "listed edge missing":
        (samples / "edges" / "11.png").unlink()
        return "edges/11.png"
    if case == "edge of another size":
        Image.new("L", (16, 16), 0).save(samples / "edges" / "11.png")
        return "is 16x16 px but photo"
    if case == "side not a multiple of 8":
        Image.new("RGB", (30, 24)).save(samples / "images" / "11.png")
        Image.new("L", (30, 24)).save(samples / "edges" / "11.png")
        return "multiples of 8"
    if case == "unreadable image":
        (samples / "images" / "11.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
        return "cannot read the photo"
    if case == "name with a folder":
        (samples / "list.txt").write_text("../11.png\n")
        return "not a plain file name"
    if case == "list not text":
        (samples / "list.txt").write_bytes(b"\xff\xfe\x00binary")
        return "cannot read"
    if case == "empty list":
        (samples / "list.txt").write_text("\n\n")
        return "lists no sample"
    raise AssertionError(case)


BAD = [
    "missing list.txt",
    "listed image missing",
    "listed edge missing",
    "edge of another size",
    "side not a multiple of 8",
    "unreadable image",
    "name with a folder",
    "empty list",
    "list not text",
]


def _assert_one_error_line(rc, stdout, stderr, needle):
    assert rc == 2
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert needle in lines[0], lines[0]


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the weights were loaded before the inputs were checked")

    monkeypatch.setattr("sketchedit.cli.load_official_editor", refuse)


@pytest.mark.parametrize("case", BAD)
def test_bad_samples_are_one_error_line_and_exit_2(capsys, tmp_path, archive, no_model, case):
    samples = make_samples(tmp_path / "samples")
    needle = _break(case, samples)
    out = tmp_path / "out"
    _assert_one_error_line(*_reproduce(capsys, archive, samples, out), needle)
    assert not out.exists()


def test_outputs_are_never_overwritten_without_overwrite(capsys, tmp_path, archive, no_model):
    samples = make_samples(tmp_path / "samples")
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "556.png").write_bytes(b"keep me")
    _assert_one_error_line(*_reproduce(capsys, archive, samples, out), "--overwrite")
    assert (out / "masks" / "556.png").read_bytes() == b"keep me"
    # Writing into the samples folder itself would replace the official results/.
    rc, stdout, stderr = _reproduce(capsys, archive, samples, samples, "--overwrite")
    _assert_one_error_line(rc, stdout, stderr, "is the samples folder")


def test_bad_checkpoints_are_one_error_line(capsys, tmp_path):
    samples = make_samples(tmp_path / "samples")
    fake = tmp_path / "celeb.zip"
    fake.write_bytes(b"<html>sign in</html>")
    rc, stdout, stderr = _reproduce(capsys, fake, samples, tmp_path / "out")
    _assert_one_error_line(rc, stdout, stderr, "is not a zip archive")
    rc, stdout, stderr = _reproduce(capsys, tmp_path / "none.zip", samples, tmp_path / "out")
    _assert_one_error_line(rc, stdout, stderr, "none.zip does not exist")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_error_line(capsys, tmp_path, archive, no_model):
    samples = make_samples(tmp_path / "samples")
    rc, stdout, stderr = _reproduce(capsys, archive, samples, tmp_path / "out", "--device", "cuda")
    _assert_one_error_line(rc, stdout, stderr, "CUDA is not available")
