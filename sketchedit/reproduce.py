"""The official test protocol: run a sample folder as the authors' test script does, and compare.

``python -m sketchedit reproduce --checkpoints celeb.zip --samples DIR --out OUT`` (the CLI is
:mod:`sketchedit.cli`; this module does the work) reads a folder laid out like the official
release samples::

    DIR/list.txt          one file name per line (e.g. 11.png)
    DIR/images/<name>     the photos
    DIR/edges/<name>      the partial sketches (any non-zero pixel is a stroke)
    DIR/results/<name>    optional: the official results, to compare with

and writes ``OUT/results/<name>`` (the edited images) and ``OUT/masks/<name>`` (the predicted
soft masks, which the official script computes but does not save by default). Where
``DIR/results/`` exists it prints, per sample, the largest absolute difference from the
official result in 8-bit levels and the PSNR, then a summary line. With the official weights
our results should equal the official ones to within :data:`TOLERANCE` (one level): our
networks match the official code's outputs to within 5e-7 on the same weights and inputs, i.e.
below 1e-4 of a level, which truncation to 8 bits turns into 0 or, at a level boundary, 1.
Not verified here: the official weights are not reachable offline. Two caveats for a real run:
the official results were computed on a GPU (``gpu_ids`` defaults to 0 in
``options/base_options.py``), whose convolution arithmetic differs slightly from a CPU's; and
where the soft mask is within rounding of 0.5 the hard mask can flip, which changes the
generator's input there and can move nearby pixels by more than one level.

Facts about the official test this module follows (read in zengxianyu/sketchedit, CC BY-NC:
facts only, no code taken) [code]:

- ``test_celeb.sh`` / ``test_places.sh`` run ``test.py`` with ``--dataset_mode testimage``,
  ``--image_dirs <DIR>/images``, ``--mask_dirs <DIR>/edges``, ``--image_lists <DIR>/list.txt``,
  ``--image_postfix .png --mask_postfix .png``, batch size 1, model ``editline2`` with the
  ``deepfillc2`` generator (max-pooled style vector, contextual attention on).
- ``data/testimage_dataset.py``: each line of ``list.txt`` is stripped of its newline and of
  ``.png``; the photo is ``images/<stem>.png``, the sketch ``edges/<stem>.png``, the output
  name ``<stem>.png``. The photo is opened with PIL and converted to RGB (no EXIF rotation, an
  alpha channel is dropped), turned into a float tensor in [0, 1] and normalised with mean 0.5
  and std 0.5 to [-1, 1]. The sketch is converted to greyscale ("L"), resized to the photo's
  size, and every value above 0 is a stroke. **No resizing or cropping of the photo**: the
  networks run at each photo's own size (the release samples are 256 x 256).
- ``models/editline2_model.py`` (inference mode): the mask estimator gives the soft mask
  ``m``; the generator gets the hard mask ``m > 0.5`` (as both its hole and its style mask),
  and the result is ``fine * m + image * (1 - m)`` with the **soft** mask.
- The output folders the scripts pass (``../datasets/face_release/results`` in
  ``test_celeb.sh``, ``./datasets/geneeral_release/results`` in ``test_places.sh``) are not the
  samples' own ``results/``, so which run produced the shipped ``results/`` is not recorded.
- ``test.py``: the result is mapped to 8 bits as ``((x + 1) / 2 * 255)`` cast to ``uint8``
  (truncation, not rounding) and written as PNG with OpenCV (RGB to BGR for OpenCV, so the
  file holds the RGB image); the mask, when asked for, as ``m * 255`` cast to ``uint8``.

Where we differ [ours]: a sketch of another size than its photo is refused rather than
resized (a 1-px sketch resized is no longer the one drawn; the release's sketches match their
photos); sides that are not multiples of 8 are refused (the official code has no size handling
and the networks need multiples of 8); blank lines and surrounding spaces in ``list.txt`` are
ignored; names with a folder part are refused (they would write outside ``OUT``). Everything is
checked before the networks run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sketchedit.fileio import atomic_path
from sketchedit.inference import MULTIPLE, run_sketchedit
from sketchedit.nets.generator import MIN_SIDE

__all__ = [
    "TOLERANCE",
    "Agreement",
    "Sample",
    "SampleError",
    "agreement",
    "all_agree",
    "format_table",
    "load_sample",
    "read_official_result",
    "read_samples",
    "reproduce_folder",
    "run_sample",
]

#: Our results should equal the official ones to within this many 8-bit levels.
TOLERANCE = 1
#: The file suffix of every official sample (``--image_postfix .png --mask_postfix .png``).
POSTFIX = ".png"


class SampleError(ValueError):
    """A sample folder that cannot be run as the official test would: names the file."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One line of ``list.txt``: ``name`` is the output file name (``<stem>.png``)."""

    name: str
    image: Path
    edge: Path
    size: tuple[int, int]  # (width, height)


@dataclasses.dataclass(frozen=True)
class Agreement:
    """Our result against the official one: ``max_diff`` in 8-bit levels, ``psnr`` in dB
    (``inf`` when identical); ``None`` for both when there is no official result, with
    ``note`` saying why."""

    name: str
    max_diff: int | None
    psnr: float | None
    note: str = ""


# ---- reading the sample folder --------------------------------------------------------------
def read_samples(folder: str | os.PathLike) -> list[Sample]:
    """Every sample of ``list.txt``, checked as the networks will need it (nothing run yet).

    Raises :class:`SampleError` naming the file: no ``list.txt`` or an empty one, a listed
    photo or sketch missing or unreadable, a sketch of another size than its photo, a side
    that is not a multiple of 8.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SampleError(f"the samples folder {folder} does not exist")
    listing = folder / "list.txt"
    if not listing.is_file():
        raise SampleError(
            f"{listing} does not exist: a samples folder holds list.txt, images/ and edges/ "
            f"(the layout of the official release samples)"
        )
    try:
        lines = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise SampleError(f"cannot read {listing} as UTF-8 text: {err}") from err
    samples = [_sample(folder, listing, n, line) for n, line in enumerate(lines, 1) if line]
    if not samples:
        raise SampleError(f"{listing} lists no sample")
    return samples


def _sample(folder: Path, listing: Path, line_no: int, entry: str) -> Sample:
    stem = entry.replace(POSTFIX, "")  # the official reader drops ".png" and adds it back
    name = stem + POSTFIX
    if Path(name).name != name or name.startswith("."):
        raise SampleError(f"{listing} line {line_no}: {entry!r} is not a plain file name")
    image, edge = folder / "images" / name, folder / "edges" / name
    width, height = _image_size(image, f"photo of {listing} line {line_no}")
    edge_size = _image_size(edge, f"sketch of {listing} line {line_no}")
    if edge_size != (width, height):
        raise SampleError(
            f"sketch {edge} is {edge_size[0]}x{edge_size[1]} px but photo {image} is "
            f"{width}x{height} px; draw the sketch at the photo's size"
        )
    if width % MULTIPLE or height % MULTIPLE or min(width, height) < MIN_SIDE:
        raise SampleError(
            f"photo {image} is {width}x{height} px: the official test runs each photo at its "
            f"own size, and the networks need sides that are multiples of {MULTIPLE} (at least "
            f"{MIN_SIDE}); use 'sketchedit edit' for photos of any size"
        )
    return Sample(name, image, edge, (width, height))


def _image_size(path: Path, what: str) -> tuple[int, int]:
    """Decode ``path`` fully (a truncated file fails here, before any network runs)."""
    if not path.is_file():
        raise SampleError(f"the {what} is missing: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise SampleError(f"cannot read the {what}, {path}: {err}") from err


def load_sample(sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
    """The official test's inputs: photo ``(1, 3, H, W)`` in [-1, 1], sketch ``(1, 1, H, W)``
    in {0, 1} (every non-zero grey value is a stroke). Same float operations as the official
    loader: ``x / 255``, then ``(x - 0.5) / 0.5``. [code]"""
    with Image.open(sample.image) as img:
        rgb = np.asarray(img.convert("RGB"))
    with Image.open(sample.edge) as img:
        grey = np.asarray(img.convert("L"))
    image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255)
    image = (image - 0.5) / 0.5
    sketch = torch.from_numpy(grey > 0).float()
    return image[None], sketch[None, None]


# ---- running and writing --------------------------------------------------------------------
def to_official_uint8(x: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in [-1, 1] -> ``(H, W, 3)`` uint8, truncated as the official test does."""
    return ((x + 1) / 2 * 255).cpu().numpy().astype(np.uint8)[0].transpose(1, 2, 0)


def mask_to_official_uint8(m: torch.Tensor) -> np.ndarray:
    """``(1, 1, H, W)`` in [0, 1] -> ``(H, W)`` uint8, ``m * 255`` truncated (official)."""
    return (m * 255).cpu().numpy().astype(np.uint8)[0, 0]


def run_sample(editor, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """One sample through the official protocol: (result ``(H, W, 3)``, mask ``(H, W)``) uint8.

    The sides are multiples of 8 (checked by :func:`read_samples`), so
    :func:`~sketchedit.inference.run_sketchedit` runs the networks on the photo exactly as it
    is (no padding, no resizing) and blends with the soft mask, as the official model does.
    """
    image, sketch = load_sample(sample)
    device = editor.device
    out = run_sketchedit(
        editor.mask_estimator, editor.generator, image.to(device), sketch.to(device)
    )
    return to_official_uint8(out.output), mask_to_official_uint8(out.soft_mask)


def output_paths(out: Path, sample: Sample) -> tuple[Path, Path]:
    return out / "results" / sample.name, out / "masks" / sample.name


def check_outputs(samples: list[Sample], samples_dir: Path, out: Path, overwrite: bool) -> None:
    """Refuse, before anything runs, an output that exists (without ``overwrite``) or an
    output folder that would replace the official results."""
    if out.resolve() == samples_dir.resolve():
        raise SampleError(
            f"--out {out} is the samples folder: its results/ are the official ones; "
            f"choose another folder"
        )
    if out.exists() and not out.is_dir():
        raise SampleError(f"--out {out} is a file, not a folder")
    if not out.parent.is_dir():
        raise SampleError(f"the folder of --out {out} does not exist: {out.parent}")
    if overwrite:
        return
    existing = [p for s in samples for p in output_paths(out, s) if p.exists()]
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise SampleError(f"{existing[0]} exists{more}; pass --overwrite to replace")


def _write_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def read_official_result(path: Path) -> np.ndarray:
    """An official result file as ``(H, W, 3)`` uint8 RGB."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def agreement(name: str, ours: np.ndarray, official: np.ndarray | None) -> Agreement:
    """Largest absolute difference (8-bit levels) and PSNR (dB) of ``ours`` vs ``official``."""
    if official is None:
        return Agreement(name, None, None, "no official result")
    if official.shape != ours.shape:
        h, w = official.shape[:2]
        return Agreement(name, None, None, f"official result is {w}x{h} px")
    from skimage.metrics import peak_signal_noise_ratio

    diff = int(np.abs(ours.astype(np.int16) - official.astype(np.int16)).max())
    psnr = math.inf if diff == 0 else peak_signal_noise_ratio(official, ours, data_range=255)
    return Agreement(name, diff, float(psnr))


def reproduce_folder(
    editor,
    samples_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> list[Agreement] | None:
    """Run every sample of ``samples_dir`` and write ``out/results/`` and ``out/masks/``.

    Returns one :class:`Agreement` per sample when ``samples_dir/results/`` exists (else
    ``None``). ``log`` receives one progress line per sample. Every input and output is
    checked (:class:`SampleError`) before the first network runs.
    """
    samples_dir, out = Path(samples_dir), Path(out)
    samples = read_samples(samples_dir)
    check_outputs(samples, samples_dir, out, overwrite)
    official_dir = samples_dir / "results"
    rows = [] if official_dir.is_dir() else None
    for sample in samples:
        start = time.perf_counter()
        result, mask = run_sample(editor, sample)
        result_path, mask_path = output_paths(out, sample)
        _write_png(result, result_path)
        _write_png(mask, mask_path)
        width, height = sample.size
        log(f"{sample.name}: {width}x{height}, {time.perf_counter() - start:.2f} s")
        if rows is not None:
            official_path = official_dir / sample.name
            official = read_official_result(official_path) if official_path.is_file() else None
            rows.append(agreement(sample.name, result, official))
    return rows


def format_table(rows: list[Agreement]) -> list[str]:
    """The agreement table and its summary line, as printed by ``sketchedit reproduce``."""
    width = max(len("sample"), *(len(r.name) for r in rows))
    lines = [f"{'sample':<{width}}  max |diff| (levels)  PSNR (dB)"]
    for r in rows:
        if r.max_diff is None:
            lines.append(f"{r.name:<{width}}  {r.note}")
            continue
        psnr = "inf" if math.isinf(r.psnr) else f"{r.psnr:.2f}"
        lines.append(f"{r.name:<{width}}  {r.max_diff:>19d}  {psnr:>9}")
    compared = [r for r in rows if r.max_diff is not None]
    within = [r for r in compared if r.max_diff <= TOLERANCE]
    summary = (
        f"agreement: {len(within)} of {len(compared)} compared samples within {TOLERANCE} "
        f"level of the official results"
    )
    if compared:
        worst = max(compared, key=lambda r: r.max_diff)
        summary += f" (largest difference {worst.max_diff} levels, {worst.name})"
    if len(compared) < len(rows):
        summary += f"; {len(rows) - len(compared)} not compared"
    return [*lines, summary]


def all_agree(rows: list[Agreement]) -> bool:
    """Every sample compared, and each within :data:`TOLERANCE`."""
    return all(r.max_diff is not None and r.max_diff <= TOLERANCE for r in rows)
