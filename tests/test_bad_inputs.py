"""The bad-input matrix (issue 10): every input a user or an attacker may hand us, one row each,
with the outcome we promise: an error of a given type whose message matches a pattern (naming
the input and the rule), a documented behaviour checked by a predicate, or, for the trainer's
command line, an exit code and its one ``error:`` line.

Rows marked "today:" describe the failure the row reproduced before the fix; the other rows
pin behaviour that already worked ("already works"). Sections: images, masks, sketches; the
editor; checkpoints; training (settings, resume, run folders: issue 10, items 7-14).

Training rows run ``python -m sketchedit.train`` in-process (its ``main()``) on 32 px, cnum 8,
batch 2 and one to four steps on six small photos (test_train's settings and photos).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_train  # tests/ is on sys.path (no __init__.py): its settings and photos
import torch
from PIL import Image, ImageDraw

from sketchedit import run_folder as R
from sketchedit import train as T
from sketchedit import train_checkpoints as C
from sketchedit.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_networks,
    load_official,
    read_checkpoint_metadata,
    read_training_metadata,
    save_checkpoint,
)
from sketchedit.editor import EditSession, SketchEditor
from sketchedit.images import as_mask, as_sketch, from_unit_range, load_rgb, to_tensor
from sketchedit.nets import Generator, MaskEstimator
from sketchedit.presets import TrainConfig, get_config

H, W = 24, 32
REPO = Path(__file__).resolve().parents[1]


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


@dataclass(frozen=True)
class Exits:
    """The trainer's ``main()`` returns ``code``: 0, or 2 with exactly one ``error:`` line that
    contains ``fragment`` and no traceback. The row's scenario returns (exit code, stderr)
    and checks the run folder itself."""

    code: int
    fragment: str = ""


OK = Exits(0)


def error(fragment: str) -> Exits:
    return Exits(2, fragment)


class Ctx:
    """What a row may need: a scratch folder, a small untrained editor, a training run."""

    def __init__(self, tmp_path, request):
        self.tmp = tmp_path
        self._request = request
        self._editor = None
        self._run = None

    @property
    def editor(self) -> SketchEditor:
        if self._editor is None:
            self._editor = SketchEditor.random_init(cnum=4)
        return self._editor

    @property
    def run(self) -> Run:
        """A run folder (not created yet) and the trainer's command line, single-threaded."""
        if self._run is None:
            fixture = self._request.getfixturevalue
            fixture("monkeypatch").setenv("OMP_NUM_THREADS", "1")
            self._run = Run(
                self.tmp / "run", fixture("photo_dir"), fixture("monkeypatch"), fixture("capsys")
            )
        return self._run

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


def lying_training_checkpoint(ctx, mutate) -> object:
    """A real training checkpoint (M, G, D of width 8) whose metadata ``mutate(meta)`` changed."""
    from safetensors.torch import load_file, save_file

    from sketchedit.objective import build_networks, make_optimizers

    cfg = get_config("tiny", cnum=8, disc_cnum=8, image_size=32)
    nets = build_networks(cfg)
    path = C.save_training_checkpoint(
        ctx.tmp / "train.safetensors", cfg, 3, nets, make_optimizers(cfg, nets)
    )
    meta = read_training_metadata(path)
    mutate(meta)
    save_file(load_file(str(path)), str(path), metadata={"sketchedit_train": json.dumps(meta)})
    return path


def load_training_claiming_width(ctx, cnum):
    path = lying_training_checkpoint(ctx, lambda m: m["networks"]["G"]["config"].update(cnum=cnum))
    start = time.perf_counter()
    try:
        load_networks(path)
    finally:
        assert time.perf_counter() - start < 2.0, "refused, but only after building the network"


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
    # Training checkpoints (evaluate.load_models, --export, the trainer read them).
    # today: Generator(cnum=4096) built from the metadata: a raw allocator error after 6 s
    ("training metadata claims cnum 4096", lambda c: load_training_claiming_width(c, 4096),
     Raises(CheckpointError, r"network 'G' \(its metadata config \{'cnum': 4096.*has shape")),
    # today: AttributeError from getattr(sketchedit.nets, name)
    ("training metadata unknown class", lambda c: load_networks(lying_training_checkpoint(
        c, lambda m: m["networks"]["D"].update({"class": "NotANetwork"}))),
     Raises(CheckpointError, r"network 'D' has an unknown class.*NotANetwork")),
    # today: whatever sketchedit.nets exports was called with the file's arguments
    ("training metadata names a non-network", lambda c: load_networks(lying_training_checkpoint(
        c, lambda m: m["networks"]["D"].update({"class": "init_weights"}))),
     Raises(CheckpointError, r"network 'D' has an unknown class.*init_weights")),
    ("training metadata version 99", lambda c: load_networks(lying_training_checkpoint(
        c, lambda m: m.update(version=99))),
     Raises(CheckpointError, r"format 'sketchedit-train-checkpoint' v99 is not supported")),
]
# fmt: on


# --- training ----------------------------------------------------------------------------------
#: The small settings of every run (strings, as on the command line): those of test_train,
#: without samples and intermediate checkpoints unless a case asks for them.
SMALL = {**test_train.SMALL, "sample_every": "0", "ckpt_every": "0"}
photo_dir = test_train.photo_dir  # the fixture: six 64x64 photos, a tiny, fast training folder

#: Every float setting of TrainConfig (tuples of floats included): none may be NaN or inf.
FLOAT_FIELDS = [
    f.name
    for f in dataclasses.fields(TrainConfig)
    if typing.get_type_hints(TrainConfig)[f.name] is float
    or typing.get_origin(typing.get_type_hints(TrainConfig)[f.name]) is tuple
]


@dataclass
class Run:
    """One case's run folder and the trainer's command line, in-process."""

    out: Path
    photo_dir: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture

    def settings(self, **extra) -> list[str]:
        out = []
        for k, v in {**SMALL, "data_source": str(self.photo_dir), **extra}.items():
            out += ["--set", f"{k}={v}"]
        return out

    def main(self, *args: str) -> tuple[int, str]:
        """``main(args)`` -> (exit code, its stderr); earlier output is discarded."""
        self.capsys.readouterr()
        code = T.main([*args, "--no-progress"])
        return code, self.capsys.readouterr().err

    def fresh(self, steps: int = 1, *extra: str, **settings) -> tuple[int, str]:
        """A new tiny run of ``steps`` steps into ``self.out``."""
        args = ["--preset", "tiny", "--steps", str(steps), "--out-dir", str(self.out)]
        return self.main(*args, *self.settings(**settings), *extra)

    def resume(self, steps: int, *extra: str) -> tuple[int, str]:
        return self.main("--resume", str(self.out), "--steps", str(steps), *extra)

    def trained(self, steps: int = 1, **settings) -> None:
        code, err = self.fresh(steps, **settings)
        assert code == 0, err

    def log_steps(self) -> list[int]:
        return [int(s) for s in R.read_log(self.out / "log.csv")["step"]]

    def stored_config(self) -> dict:
        return json.loads((self.out / "config.json").read_text())


# Scenarios: each does something to a run and returns main()'s (exit code, stderr).
def killed_after_a_checkpoint(run: Run):
    """Item 7: a kill (no flush, no clean-up) at step 4, after the checkpoint of step 2, with
    the log flushed only every 100 steps: the log must still hold steps 1 and 2."""
    killer = (
        "import os, sys\n"
        "import sketchedit.train as T\n"
        "step_fn = T.gan_step\n"
        "def dying(cfg, step, *a, **k):\n"
        "    if step == 3:\n"
        "        os._exit(9)\n"
        "    return step_fn(cfg, step, *a, **k)\n"
        "T.gan_step = dying\n"
        "sys.exit(T.main(sys.argv[1:]))\n"
    )
    args = ["--preset", "tiny", "--steps", "6", "--out-dir", str(run.out), "--no-progress"]
    args += run.settings(ckpt_every=2, keep_last=0, log_every=100)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, "-c", killer, *args], env=env, capture_output=True, timeout=300
    )
    assert r.returncode == 9, r.stderr.decode()[-2000:]
    assert C.read_training_metadata(run.out)["step"] == 2
    result = run.resume(4)
    assert run.log_steps() == [1, 2, 3, 4]
    return result


def torn_last_log_row(run: Run):
    """Item 7: the last row was cut after one character (``1`` of ``12,joint,...``): it is
    dropped on resume, not kept as a second, empty step 1."""
    run.trained(2)
    with open(run.out / "log.csv", "a") as f:
        f.write("1")
    result = run.resume(3)
    assert run.log_steps() == [1, 2, 3]
    return result


def resume_from_an_older_checkpoint(run: Run):
    """Item 7 (already works): rows after the resumed step are dropped."""
    run.trained(4, ckpt_every=2, keep_last=2)
    result = run.main("--resume", str(run.out / "ckpt_step_000002.safetensors"), "--steps", "3")
    assert run.log_steps() == [1, 2, 3]
    return result


def resume_with_a_conflicting_preset(run: Run):
    """Item 8: ``--preset paper --resume RUN`` (a tiny run) is refused; config.json stays."""
    run.trained(1)
    before = (run.out / "config.json").read_bytes()
    result = run.main("--preset", "paper", "--resume", str(run.out), "--steps", "2")
    assert (run.out / "config.json").read_bytes() == before
    return result


def resume_with_its_own_preset_and_a_set(run: Run):
    """Item 8: ``--preset tiny --resume RUN --set lr_g=5e-5`` keeps the run's stored settings
    (32 px, cnum 8; the tiny preset says 64 px, cnum 16) and reports the one it changes."""
    run.trained(1)
    code, err = run.main(
        "--preset", "tiny", "--resume", str(run.out), "--steps", "2", "--set", "lr_g=5e-5"
    )
    assert "resume: changing lr_g from 0.0001 to 5e-05" in err
    stored = run.stored_config()
    assert (stored["image_size"], stored["cnum"], stored["lr_g"]) == (32, 8, 5e-5)
    assert "changing lr_g" in (run.out / "config_changes.txt").read_text()
    assert C.read_training_metadata(run.out)["step"] == 2
    return code, err


def resume_without_changes(run: Run):
    """Item 8 (already works, now quiet): a plain resume changes and reports nothing."""
    run.trained(1)
    code, err = run.resume(2)
    assert "resume: changing" not in err and not (run.out / "config_changes.txt").exists()
    return code, err


def checkpoints_past_step_999999(run: Run):
    """Item 9: after step 999,999 the newest step checkpoints must be kept, not deleted."""
    run.out.mkdir()
    steps = (999_998, 999_999, 1_000_000, 1_000_001)
    for s in steps:
        (run.out / f"ckpt_step_{s:06d}.safetensors").write_bytes(b"fake")
    assert C.step_checkpoints(run.out)[-1].name == "ckpt_step_1000001.safetensors"
    C.rotate_step_checkpoints(run.out, keep_last=2)
    kept = sorted(p.name for p in run.out.glob("ckpt_step_*"))
    assert kept == ["ckpt_step_1000000.safetensors", "ckpt_step_1000001.safetensors"]
    return 0, ""


#: Temporary files as a kill leaves them (fileio.atomic_path: ".NAME.XXXXXXXX.tmp"), and
#: files of the same look that are not the trainer's and must survive.
OURS = (".ckpt_latest.safetensors.k3x_9qaz.tmp", ".log.csv.abcd1234.tmp")
NOT_OURS = (".mynotes.abcd1234.tmp", "keep.tmp", ".ckpt_latest.safetensors.tmp")


def stale_temporary_files(run: Run):
    """Item 10: a resume removes the trainer's own leftover temporary files, only those."""
    run.trained(1)
    for name in OURS + NOT_OURS:
        (run.out / name).write_bytes(b"x" * 1000)
    (run.out / "samples" / ".step_000001.png.abcdefgh.tmp").write_bytes(b"x")
    code, err = run.resume(2)
    left = {p.name for p in run.out.glob("*.tmp")} | {p.name for p in run.out.rglob(".*.tmp")}
    assert left == set(NOT_OURS)
    assert "removed" in err
    return code, err


def second_trainer_in_the_same_folder(run: Run):
    """Item 11: another live process holds the run folder: the error names it and its pid."""
    run.trained(1)
    holder = (
        "import sys, time\n"
        "from sketchedit.run_folder import run_folder_lock\n"
        "with run_folder_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(run.out)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        code, err = run.resume(2)
        assert f"pid {proc.pid}" in err and str(run.out) in err
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert C.read_training_metadata(run.out)["step"] == 1  # nothing was written
    return code, err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def stale_lock_of_a_dead_trainer(run: Run):
    """Item 11: the lock of a trainer that died on this host is taken over, with a notice."""
    run.trained(1)
    owner = {"pid": _dead_pid(), "host": socket.gethostname()}
    (run.out / R.LOCK_NAME).write_text(json.dumps(owner))
    code, err = run.resume(2)
    assert f"taking over the lock of {str(run.out)!r} from pid {owner['pid']}" in err
    assert C.read_training_metadata(run.out)["step"] == 2
    return code, err


def lock_held_on_another_host(run: Run):
    """Item 11: a lock naming another host cannot be checked from here: refused."""
    run.trained(1)
    (run.out / R.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.invalid"}))
    return run.resume(2)


def set_non_finite(name: str, value: str):
    """Item 12: ``--set NAME=nan`` (or inf) for a float setting."""

    def scenario(run: Run):
        v = ",".join([value, "0.5", "0.5"]) if name == "mode_probs" else value
        return run.fresh(1, "--set", f"{name}={v}")

    scenario.__doc__ = f"--set {name}={value}"
    return scenario


def out_dir_is_a_file(run: Run):
    """Item 14: the output folder is a file."""
    run.out.write_text("not a folder")
    return run.fresh(1)


def _refuse_temp_files_in(monkeypatch, folder: Path, err: OSError) -> None:
    """Make every temporary file (atomic writes, the export probe) in ``folder`` fail."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):  # noqa: A002 (tempfile's own name)
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise err
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def read_only_out_dir(run: Run):
    """Item 14: nothing can be written in the run folder (read-only; simulated, since root
    may write anywhere)."""
    run.out.mkdir()
    denied = PermissionError(errno.EACCES, "Permission denied", str(run.out))
    _refuse_temp_files_in(run.monkeypatch, run.out, denied)
    return run.fresh(1)


def disk_full_during_a_checkpoint(run: Run):
    """Item 14: the disk fills up while the checkpoint is written: one-line error, no
    half-written or temporary file left."""
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    run.monkeypatch.setattr(safetensors.torch, "save_file", full)
    result = run.fresh(1)
    assert not list(run.out.glob("*.safetensors")) and not list(run.out.glob(".*.tmp"))
    return result


def _nothing_trained(run: Run, result):
    assert not (run.out / "log.csv").exists(), "the export path must be checked before training"
    return result


def export_to_a_folder(run: Run):
    """Item 14: ``--export`` names a folder: refused before training."""
    folder = run.out.parent / "exports"
    folder.mkdir()
    return _nothing_trained(run, run.fresh(1, "--export", str(folder)))


def export_into_a_missing_folder(run: Run):
    """Item 14: ``--export`` into a folder that does not exist: refused before training."""
    target = run.out.parent / "no" / "such" / "model.safetensors"
    return _nothing_trained(run, run.fresh(1, "--export", str(target)))


def export_into_a_read_only_folder(run: Run):
    """Item 14: ``--export`` into a folder nothing can be written to: refused before training."""
    folder = run.out.parent / "exports"
    folder.mkdir()
    _refuse_temp_files_in(
        run.monkeypatch, folder, PermissionError(errno.EACCES, "Permission denied", str(folder))
    )
    return _nothing_trained(run, run.fresh(1, "--export", str(folder / "m.safetensors")))


def export_to_a_good_path(run: Run):
    """Item 14 (already works): a good ``--export`` path gets the inference checkpoint."""
    target = run.out.parent / "m.safetensors"
    result = run.fresh(1, "--export", str(target))
    assert target.is_file()
    return result


def on_run(scenario):
    """A row's call: ``scenario`` on the context's training run."""
    return lambda c: scenario(c.run)


def finite_config(name: str, value: float):
    """Item 12 from Python (``get_config``), where no string parsing is involved."""
    return get_config("tiny", **{name: (value, 0.5, 0.5) if name == "mode_probs" else value})


# fmt: off
TRAINING_ROWS = [
    ("item 7: killed after a checkpoint: its log rows survive", on_run(killed_after_a_checkpoint),
     OK),
    ("item 7: torn last log row dropped on resume", on_run(torn_last_log_row), OK),
    ("item 7: resume from an older checkpoint drops later rows",
     on_run(resume_from_an_older_checkpoint), OK),
    ("item 8: --preset other --resume RUN", on_run(resume_with_a_conflicting_preset),
     error("--preset paper conflicts with the run in")),
    ("item 8: --preset own --resume RUN --set x", on_run(resume_with_its_own_preset_and_a_set),
     OK),
    ("item 8: plain resume reports no change", on_run(resume_without_changes), OK),
    ("item 9: step checkpoints past 999,999 rotate by step",
     on_run(checkpoints_past_step_999999), OK),
    ("item 10: stale temporary files removed on resume", on_run(stale_temporary_files), OK),
    ("item 11: second trainer in the same folder", on_run(second_trainer_in_the_same_folder),
     error("run folder")),
    ("item 11: stale lock of a dead trainer taken over", on_run(stale_lock_of_a_dead_trainer),
     OK),
    ("item 11: lock held on another host", on_run(lock_held_on_another_host),
     error("run folder")),
    *[(f"item 12: --set {name}={value}", on_run(set_non_finite(name, value)),
       error(f"bad value for {name}"))
      for name in FLOAT_FIELDS for value in ("nan", "inf")],
    *[(f"item 12: get_config({name}={value})", lambda c, n=name, v=value: finite_config(n, v),
       Raises(ValueError, rf"^{name} must be a finite number"))
      for name in FLOAT_FIELDS for value in (float("nan"), float("inf"), -float("inf"))],
    ("item 14: out_dir is a file", on_run(out_dir_is_a_file), error("is a file, not a folder")),
    ("item 14: read-only out_dir", on_run(read_only_out_dir),
     error("[Errno 13] Permission denied")),
    ("item 14: disk full during a checkpoint", on_run(disk_full_during_a_checkpoint),
     error("No space left")),
    ("item 14: --export to a folder", on_run(export_to_a_folder),
     error("is a folder; give a file name")),
    ("item 14: --export into a missing folder", on_run(export_into_a_missing_folder),
     error("does not exist")),
    ("item 14: --export into a read-only folder", on_run(export_into_a_read_only_folder),
     error("cannot write")),
    ("item 14: --export to a good path", on_run(export_to_a_good_path), OK),
]
# fmt: on


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
def test_bad_input(run, expect, tmp_path, request):
    ctx = Ctx(tmp_path, request)
    if isinstance(expect, Exits):  # the trainer: its warnings are not this matrix's subject
        check_exit(run(ctx), expect)
        return
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


def check_exit(result: tuple[int, str], expect: Exits) -> None:
    """The trainer's (exit code, stderr) is the promised one (see :class:`Exits`)."""
    code, err = result
    assert code == expect.code, f"exit {code}, {err[-2000:]}"
    if expect.code == 0:
        return
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert expect.fragment in errors[0], errors[0]
