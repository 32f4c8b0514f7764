"""The bad-input matrix (issue 10): every input a user or an attacker may hand us, one row each,
with the outcome we promise: an error of a given type whose message matches a pattern (naming
the input and the rule), or a documented behaviour checked by a predicate.

Rows marked "today:" describe the failure the row reproduced before the fix; the other rows
pin behaviour that already worked. Sections: images, masks, sketches; the editor; checkpoints;
(training rows are added in their own section).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sketchedit.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_official,
    read_checkpoint_metadata,
    save_checkpoint,
)
from sketchedit.editor import EditSession, SketchEditor
from sketchedit.images import as_mask, as_sketch, from_unit_range, load_rgb, to_tensor
from sketchedit.nets import Generator, MaskEstimator

H, W = 24, 32


# --------------------------------------------------------------------------------------------
# The table's vocabulary: what a row expects.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Raises:
    """The call raises ``error`` (or a subclass) with a message matching ``pattern``."""

    error: type[BaseException]
    pattern: str


@dataclass(frozen=True)
class Warns:
    """The call warns with ``category`` matching ``pattern``, and its result passes ``check``."""

    category: type[Warning]
    pattern: str
    check: Callable[[Any], bool]


@dataclass(frozen=True)
class Gives:
    """The call returns a result for which ``check`` is true (the documented behaviour)."""

    check: Callable[[Any], bool]


class Ctx:
    """What a row may need: a scratch folder and a small untrained editor."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self._editor = None

    @property
    def editor(self) -> SketchEditor:
        if self._editor is None:
            self._editor = SketchEditor.random_init(cnum=4)
        return self._editor

    def file(self, name: str, img: Image.Image, **kw):
        path = self.tmp / name
        img.save(path, **kw)
        return path


def pixel(rgb: Image.Image) -> int:
    """The red value of the top-left pixel of a loaded photo."""
    return int(np.asarray(rgb)[0, 0, 0])


def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def line_sketch() -> np.ndarray:
    s = np.zeros((H, W), np.float32)
    s[12, 4:28] = 1.0
    return s


def full(value, dtype, shape=(H, W)):
    return np.full(shape, value, dtype)


# --- images, masks, sketches -----------------------------------------------------------------
def pgm16(ctx, values, maxval=65535):
    """A 16-bit binary PGM file holding one row of ``values``."""
    path = ctx.tmp / "deep.pgm"
    data = np.asarray(values, ">u2").tobytes()
    path.write_bytes(f"P5\n{len(values)} 1\n{maxval}\n".encode() + data)
    return path


def bomb(ctx):
    path = ctx.file("huge.png", Image.new("L", (64, 64)))
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 64 * 64 // 4  # above twice the limit: Pillow's error, not warning
    try:
        return load_rgb(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def alpha_layer(value_at_line: int, colour=(0, 0, 0)) -> Image.Image:
    """Strokes/region drawn in the alpha channel of a transparent RGBA layer."""
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[12, 4:28, 3] = value_at_line
    return Image.fromarray(rgba, mode="RGBA")


def antialiased_line() -> np.ndarray:
    """A 1-px stroke at 255 with a 64-valued antialiasing halo above and below it."""
    s = np.zeros((H, W), np.uint8)
    s[11, 4:28] = s[13, 4:28] = 64
    s[12, 4:28] = 255
    return s


def jpeg_like_line() -> np.ndarray:
    """The antialiased line plus the low-level noise JPEG compression leaves around it."""
    noise = np.random.default_rng(0).integers(0, 20, (H, W))
    return np.clip(antialiased_line() + noise, 0, 255).astype(np.uint8)


def text_file(ctx, name: str):
    (ctx.tmp / name).write_text("not an image")
    return ctx.tmp / name


def red_strokes() -> Image.Image:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = antialiased_line()
    return Image.fromarray(rgb, mode="RGB")


def is_line(s: np.ndarray) -> bool:
    return np.array_equal(s, line_sketch())


# fmt: off
IMAGE_ROWS = [
    # Photos: numpy arrays, one convention per dtype (HWC).
    ("float HWC in [0, 1]", lambda c: load_rgb(full(0.5, np.float32, (H, W, 3))),
     Gives(lambda r: pixel(r) == 128)),
    # today: 99 % white
    ("float HWC in 0..255", lambda c: load_rgb(full(200.0, np.float32, (H, W, 3))),
     Raises(ValueError, r"\[0, 1\].*looks like 0\.\.255: divide by 255 or pass a uint8")),
    # today: negatives clipped
    ("float HWC in [-1, 1]", lambda c: load_rgb(np.linspace(-1, 1, H * W * 3).reshape(H, W, 3)),
     Raises(ValueError, r"\[0, 1\].*looks like \[-1, 1\]: pass \(x \+ 1\) / 2")),
    ("float HWC with NaN", lambda c: load_rgb(full(np.nan, np.float32)),
     Raises(ValueError, "NaN")),
    ("uint8 HWC", lambda c: load_rgb(full(200, np.uint8, (H, W, 3))),
     Gives(lambda r: pixel(r) == 200)),
    ("uint16 HWC is 0..65535", lambda c: load_rgb(full(65535, np.uint16, (H, W, 3))),
     Gives(lambda r: pixel(r) == 255)),
    ("bool array", lambda c: load_rgb(full(True, bool)), Gives(lambda r: pixel(r) == 255)),
    ("int64 array is 0..255", lambda c: load_rgb(full(200, np.int64)),
     Gives(lambda r: pixel(r) == 200)),
    # today: clipped to 255
    ("int64 array above 255", lambda c: load_rgb(full(300, np.int64)),
     Raises(ValueError, r"int64 values must lie in 0\.\.255.*uint16")),
    # today: the same error without the hint
    ("float CHW array", lambda c: load_rgb(full(0.5, np.float32, (3, H, W))),
     Raises(ValueError, r"HWC: pass arr\.transpose\(1, 2, 0\)")),
    ("array with 5 channels", lambda c: load_rgb(full(0, np.uint8, (H, W, 5))),
     Raises(ValueError, "shape")),
    # Photos: tensors are the package's [-1, 1] CHW.
    ("tensor in [-1, 1]", lambda c: load_rgb(to_tensor(photo())),
     Gives(lambda r: np.array_equal(np.asarray(r), photo()))),
    # today: read as [-1, 1] and washed out without a word
    ("tensor in [0, 1] (torchvision)", lambda c: load_rgb(torch.full((3, H, W), 0.5)),
     Warns(UserWarning, r"\[-1, 1\] convention.*from_unit_range", lambda r: pixel(r) == 191)),
    ("from_unit_range of a [0, 1] tensor",
     lambda c: load_rgb(from_unit_range(torch.full((3, H, W), 0.5))),
     Gives(lambda r: pixel(r) == 128)),
    ("tensor outside [-1, 1]", lambda c: load_rgb(torch.full((3, H, W), 3.0)),
     Raises(ValueError, r"\[-1, 1\]")),
    # today: zeros read as mid-grey, 0..255 values a range error without a hint
    ("uint8 tensor (read_image)", lambda c: load_rgb(torch.zeros(3, H, W, dtype=torch.uint8)),
     Raises(ValueError, r"float in \[-1, 1\].*t\.float\(\) / 127\.5 - 1")),
    ("NaN tensor", lambda c: load_rgb(torch.full((3, H, W), float("nan"))),
     Raises(ValueError, "NaN")),
    ("batch of two", lambda c: load_rgb(torch.zeros(2, 3, H, W)),
     Raises(ValueError, r"shape \(2, 3, 24, 32\)")),
    ("not an image", lambda c: load_rgb(7), Raises(TypeError, "int")),
    # Photos: Pillow's deep modes, one rule per mode (no guess from the values).
    ("PIL I;16 is 0..65535", lambda c: load_rgb(Image.fromarray(full(65535, np.uint16))),
     Gives(lambda r: pixel(r) == 255)),
    # today: max <= 255 read as 8-bit, 257x too bright
    ("PIL I, dark", lambda c: load_rgb(Image.fromarray(full(200, np.int32))),
     Gives(lambda r: pixel(r) == 1)),
    # today: 200 (read as 8-bit); one pixel above 255 switched all to the 16-bit scale
    ("16-bit PGM file, dark", lambda c: load_rgb(pgm16(c, [200, 200, 200])),
     Gives(lambda r: pixel(r) == 1)),
    ("16-bit PGM file, one bright pixel", lambda c: load_rgb(pgm16(c, [200, 200, 60000])),
     Gives(lambda r: pixel(r) == 1)),
    # today: clipped silently
    ("PIL I above 65535 (32-bit TIFF)", lambda c: load_rgb(Image.fromarray(full(70000, np.int32))),
     Raises(ValueError, r"mode 'I'.*0\.\.65535")),
    # today: 127 (truncated, not rounded)
    ("PIL F in [0, 1]", lambda c: load_rgb(Image.fromarray(full(0.5, np.float32))),
     Gives(lambda r: pixel(r) == 128)),
    # today: a guessed 0..255 scale
    ("PIL F in 0..255", lambda c: load_rgb(Image.fromarray(full(100.0, np.float32))),
     Raises(ValueError, r"mode 'F'.*\[0, 1\].*looks like 0\.\.255")),
    # today: NaN became black
    ("PIL F with NaN", lambda c: load_rgb(Image.fromarray(full(np.nan, np.float32))),
     Raises(ValueError, r"mode 'F'.*NaN")),
    # Photos: files.
    ("missing file", lambda c: load_rgb(c.tmp / "absent.png"),
     Raises(FileNotFoundError, "absent.png")),
    # today: "no image file at ..."
    ("a folder", lambda c: load_rgb(c.tmp), Raises(IsADirectoryError, "is a folder")),
    # today: Pillow's raw DecompressionBombError
    ("decompression bomb", bomb, Raises(ValueError, r"cannot read image .*huge\.png.*too large")),
    ("text named .jpg", lambda c: load_rgb(text_file(c, "x.jpg")),
     Raises(ValueError, r"cannot read image .*x\.jpg")),
    # Sketches: a stroke is above half of full scale, one rule for every type.
    ("float sketch 0.3 / 0.6", lambda c: as_sketch(np.array([[0.3, 0.6]])),
     Gives(lambda s: s.tolist() == [[0.0, 1.0]])),
    # today: 3 times as many strokes as the float drawing (halo counted)
    ("uint8 antialiased sketch", lambda c: as_sketch(antialiased_line()), Gives(is_line)),
    # today: the noise counted as strokes too
    ("uint8 sketch with JPEG noise", lambda c: as_sketch(jpeg_like_line()), Gives(is_line)),
    ("uint8 {0, 1} sketch", lambda c: as_sketch(line_sketch().astype(np.uint8)), Gives(is_line)),
    ("uint8 {0, 255} sketch", lambda c: as_sketch(line_sketch().astype(np.uint8) * 255),
     Gives(is_line)),
    # today: halo counted
    ("PIL L antialiased sketch", lambda c: as_sketch(Image.fromarray(antialiased_line())),
     Gives(is_line)),
    ("RGBA strokes in alpha, halo 64", lambda c: as_sketch(alpha_layer(255)), Gives(is_line)),
    # today: the halo counted (any non-zero grey)
    ("RGB red strokes on black", lambda c: as_sketch(red_strokes()), Gives(is_line)),
    # today: every pixel a stroke (opaque alpha)
    ("RGBA opaque: greyscale read", lambda c: as_sketch(
        Image.fromarray(antialiased_line()).convert("RGBA")), Gives(is_line)),
    # today: any non-zero value a stroke
    ("uint16 sketch", lambda c: as_sketch((line_sketch() * 40000 + 1000).astype(np.uint16)),
     Gives(is_line)),
    ("bool tensor sketch", lambda c: as_sketch(torch.from_numpy(line_sketch() > 0)[None]),
     Gives(is_line)),
    ("PIL F sketch in [0, 1]", lambda c: as_sketch(Image.fromarray(line_sketch())), Gives(is_line)),
    # today: the same error without the hint
    ("float sketch in 0..255", lambda c: as_sketch(line_sketch() * 255),
     Raises(ValueError, r"sketch: float values must lie in \[0, 1\].*0\.\.255")),
    ("NaN sketch", lambda c: as_sketch(full(np.nan, np.float32)),
     Raises(ValueError, "sketch contains NaN")),
    ("RGB array sketch", lambda c: as_sketch(np.zeros((H, W, 3))),
     Raises(ValueError, "single-channel")),
    # today: any non-zero value a stroke
    ("int sketch above 255", lambda c: as_sketch(full(300, np.int32)),
     Raises(ValueError, r"sketch: int32 values must lie in 0\.\.255")),
    # Masks: the same reading, soft values kept.
    # today: read as empty (the greyscale of a black layer)
    ("RGBA mask in alpha", lambda c: as_mask(alpha_layer(255)),
     Gives(lambda m: is_line(m))),
    # today: empty, as above
    ("RGBA mask, soft alpha", lambda c: as_mask(alpha_layer(51)),
     Gives(lambda m: np.isclose(m.max(), 0.2) and m.min() == 0)),
    ("uint8 {0, 1} mask", lambda c: as_mask(line_sketch().astype(np.uint8)), Gives(is_line)),
    ("uint8 0..255 mask", lambda c: as_mask(full(51, np.uint8)),
     Gives(lambda m: np.allclose(m, 0.2))),
    ("float soft mask", lambda c: as_mask(full(0.25, np.float32)),
     Gives(lambda m: np.allclose(m, 0.25))),
    # today: the same error without the hint
    ("float mask in 0..255", lambda c: as_mask(full(200.0, np.float32)),
     Raises(ValueError, r"mask: float values must lie in \[0, 1\].*0\.\.255")),
    # today: NaN became 0
    ("PIL F mask with NaN", lambda c: as_mask(Image.fromarray(full(np.nan, np.float32))),
     Raises(ValueError, "NaN")),
]
# fmt: on


# --- the editor --------------------------------------------------------------------------------
def nan_checkpoint(ctx, network: str):
    """An editor loaded from a checkpoint whose ``network`` has NaN weights."""
    nets = {"mask_estimator": MaskEstimator(cnum=4), "generator": Generator(cnum=4)}
    with torch.no_grad():
        for p in nets[network].parameters():
            p.fill_(float("nan"))
    path = ctx.tmp / f"nan-{network}.safetensors"
    save_checkpoint(path, nets)
    return SketchEditor.from_pretrained(path)


def draw_on_current(ctx):
    session = EditSession(ctx.editor, photo())
    result = session.edit(line_sketch())
    before = result.image.tobytes()
    ImageDraw.Draw(session.current).rectangle((0, 0, 9, 9), fill=(255, 0, 255))
    session.undo()
    return session.redo().tobytes() == before and session.current.tobytes() == before


# fmt: off
EDITOR_ROWS = [
    # today: scipy's OverflowError
    ("feather=inf", lambda c: c.editor.edit(photo(), line_sketch(), feather=float("inf")),
     Raises(ValueError, "feather must be a finite number")),
    # today: silently ignored
    ("feather=nan", lambda c: c.editor.edit(photo(), line_sketch(), feather=float("nan")),
     Raises(ValueError, "feather must be a finite number")),
    ("feather=-1", lambda c: c.editor.edit(photo(), line_sketch(), feather=-1),
     Raises(ValueError, "feather")),
    ("inverted sketch", lambda c: c.editor.edit(photo(), 1 - line_sketch()),
     Raises(ValueError, "invert")),
    ("sketch of another size", lambda c: c.editor.edit(photo(), np.zeros((H, W + 1))),
     Raises(ValueError, rf"sketch size {W + 1}x{H} \(W x H\) does not match")),
    ("mask of another size",
     lambda c: c.editor.edit(photo(), line_sketch(), mask=np.zeros((H + 1, W))),
     Raises(ValueError, r"mask size .* does not match")),
    # today: an all-black result behind a numpy cast warning
    ("NaN mask-estimator weights",
     lambda c: nan_checkpoint(c, "mask_estimator").edit(photo(), line_sketch()),
     Raises(RuntimeError, r"mask estimator produced NaN.*nan-mask_estimator\.safetensors")),
    # today: a NaN mask preview
    ("NaN mask-estimator weights, preview",
     lambda c: nan_checkpoint(c, "mask_estimator").predict_mask(photo(), line_sketch()),
     Raises(RuntimeError, r"mask estimator produced NaN.*nan-mask_estimator\.safetensors")),
    # today: "features contain NaN or inf" without naming the checkpoint
    ("NaN generator weights", lambda c: nan_checkpoint(c, "generator").edit(
        photo(), line_sketch(), mask=np.ones((H, W))),
     Raises(RuntimeError, r"generator produced .*NaN.*nan-generator\.safetensors")),
    # today: drawing on it changed what undo and redo give back
    ("draw on EditSession.current", draw_on_current, Gives(lambda same: same is True)),
]
# fmt: on


# --- checkpoints -------------------------------------------------------------------------------
def small_checkpoint(ctx) -> object:
    path = ctx.tmp / "small.safetensors"
    save_checkpoint(path, {"mask_estimator": MaskEstimator(cnum=8), "generator": Generator(8)})
    return path


def rewrite_metadata(ctx, edit) -> object:
    """A copy of a small checkpoint whose metadata ``edit(header)`` changed."""
    from safetensors.torch import load_file, save_file

    src = small_checkpoint(ctx)
    header = read_checkpoint_metadata(src)
    edit(header)
    dst = ctx.tmp / "edited.safetensors"
    save_file(load_file(str(src)), str(dst), metadata={"sketchedit": json.dumps(header)})
    return dst


def claim_width(ctx, cnum):
    def edit(h):
        h["networks"]["generator"]["config"]["cnum"] = cnum

    path = rewrite_metadata(ctx, edit)
    start = time.perf_counter()
    try:
        load_checkpoint(path)
    finally:
        assert time.perf_counter() - start < 2.0, "refused, but only after building the network"


def official_wrong_conv1(ctx):
    layout = json.loads((pytest_data_dir() / "official-checkpoint-layout.json").read_text())
    sd = {k: torch.zeros(v) for k, v in layout["latest_net_M.pth"]["tensors"].items()}
    sd["conv1.weight"], sd["conv1.bias"] = torch.zeros(50, 4, 5, 5), torch.zeros(50)
    return MaskEstimator.from_official(sd)


def pytest_data_dir():
    from pathlib import Path

    return Path(__file__).parent / "data"


class Payload:  # an arbitrary class: weights_only loading must refuse to unpickle it
    pass


def evil_pickle(ctx):
    path = ctx.tmp / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": Payload()}, path)
    return load_official(path)


# fmt: off
CHECKPOINT_ROWS = [
    # today: 7 s and 2.6 GB before the shapes were compared
    ("metadata claims cnum 512", lambda c: claim_width(c, 512),
     Raises(CheckpointError, r"'generator' \(its metadata config \{'cnum': 512.*has shape")),
    # today: a raw allocator error
    ("metadata claims cnum 4096", lambda c: claim_width(c, 4096),
     Raises(CheckpointError, r"'generator' \(its metadata config \{'cnum': 4096.*has shape")),
    ("metadata cnum -4", lambda c: load_checkpoint(rewrite_metadata(
        c, lambda h: h["networks"]["generator"]["config"].update(cnum=-4))),
     Raises(CheckpointError, r"cannot rebuild 'generator' from its config")),
    ("metadata unknown class", lambda c: load_checkpoint(rewrite_metadata(
        c, lambda h: h["networks"]["generator"].update({"class": "os.system"}))),
     Raises(CheckpointError, "unknown class")),
    ("metadata format version 2", lambda c: load_checkpoint(rewrite_metadata(
        c, lambda h: h.update(format_version=2))),
     Raises(CheckpointError, "format version 2")),
    # today: "cnum must be a positive multiple of 4, got 50"
    ("official conv1 of width 50", official_wrong_conv1,
     Raises(CheckpointError, r"conv1\.weight has 50 output channels.*cnum=48")),
    ("official .pth with a pickled object", evil_pickle, Raises(CheckpointError, "cannot read")),
    ("truncated checkpoint", lambda c: load_checkpoint(
        (c.tmp / "t.safetensors").write_bytes(small_checkpoint(c).read_bytes()[:1000])
        and c.tmp / "t.safetensors"),
     Raises(CheckpointError, "corrupt or truncated")),
    ("missing checkpoint", lambda c: SketchEditor.from_pretrained(c.tmp / "absent.safetensors"),
     Raises(FileNotFoundError, "absent.safetensors")),
]
# fmt: on


# --- training ----------------------------------------------------------------------------------
# The trainer's rows (settings, resume, run folders) are in tests/test_bad_inputs_training.py;
# rows that need no training run can join this table here.
TRAINING_ROWS: list = []


ROWS = [
    pytest.param(run, expect, id=f"{section}: {name}")
    for section, rows in (
        ("images", IMAGE_ROWS),
        ("editor", EDITOR_ROWS),
        ("checkpoints", CHECKPOINT_ROWS),
        ("training", TRAINING_ROWS),
    )
    for name, run, expect in rows
]


@pytest.mark.parametrize(("run", "expect"), ROWS)
def test_bad_input(run, expect, tmp_path):
    ctx = Ctx(tmp_path)
    with warnings.catch_warnings():
        # A numpy cast warning on the way to a picture is exactly the silent failure we guard.
        warnings.simplefilter("error", RuntimeWarning)
        if not isinstance(expect, Warns):
            warnings.simplefilter("error", UserWarning)  # no unexpected "ambiguous" warnings
        if isinstance(expect, Raises):
            with pytest.raises(expect.error, match=expect.pattern):
                run(ctx)
        elif isinstance(expect, Warns):
            with pytest.warns(expect.category, match=expect.pattern):
                result = run(ctx)
            assert expect.check(result)
        else:
            assert expect.check(run(ctx))
