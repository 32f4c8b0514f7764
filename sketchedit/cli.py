"""The command line: ``python -m sketchedit edit | reproduce | train | evaluate``.

``edit`` edits one photo with a sketch file, with no Python to write::

    sketchedit edit photo.jpg --sketch strokes.png -o edited.png --mask-out mask.png

``reproduce`` runs a folder laid out like the official release samples (``list.txt``,
``images/``, ``edges/``, optional ``results/``) through the official test protocol with the
official weights, and compares with the official results (:mod:`sketchedit.reproduce`)::

    sketchedit reproduce --checkpoints celeb.zip --samples face_release --out reproduced

``train`` and ``evaluate`` pass their arguments on to ``python -m sketchedit.train`` and
``python -m sketchedit.evaluate`` unchanged.

Reading a sketch file [ours]
----------------------------
Drawing programs save strokes in three ways; ``edit`` reads each (the paper's networks take
1 = stroke on 0 = background, docs/method.md section 1):

1. **A transparent layer** (PNG/WebP with an alpha channel that has at least one transparent
   pixel): the alpha channel is the stroke layer, whatever colour the strokes are.
2. **White (light) strokes on black**: the grey values are the strokes.
3. **Dark strokes on white**: detected when *most pixels are light*, i.e. the median grey of
   the file is >= 128, and inverted (a note on stderr says so). A partial sketch covers a few
   percent of the picture, so its background decides the median. ``--invert`` forces the
   inversion (a transparent sketch is then read as dark strokes composited onto white).

A file whose alpha channel is fully opaque is read by its grey values (rules 2 and 3). After
that the package's sketch rule (:func:`sketchedit.editor.as_sketch`) turns the grey layer into
strokes. A sketch with no stroke, or with more than
:data:`sketchedit.editor.MAX_STROKE_FRACTION` of its pixels as strokes, is refused. A ``--mask``
file is read like rule 1 or 2 (white or opaque = the region to change), never inverted.
Sketch and mask files are turned upright by their EXIF orientation, as the photo is, so they
are drawn at the photo's size as a viewer shows it.

Errors
------
Every bad input (missing or unreadable files, sizes that differ, an empty or all-stroke sketch,
an output that exists without ``--overwrite``, a missing output folder, CUDA asked for but
absent...) prints one line ``error: ...`` on stderr and exits with status 2, before the
networks run. Outputs are written atomically (:func:`sketchedit.fileio.atomic_path`): an
interrupted run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sketchedit.roi import STRATEGIES

#: Exit status of every user error (argparse's own convention).
USAGE_ERROR = 2
#: Sub-commands handed to another module's ``main(argv)`` with the remaining arguments.
PASS_THROUGH = {
    "train": ("sketchedit.train", "train a model (python -m sketchedit.train)"),
    "evaluate": ("sketchedit.evaluate", "held-out metrics of a checkpoint"),
}
#: A sketch whose median grey is at least this is "mostly light": dark strokes on white. [ours]
LIGHT_MEDIAN = 128
#: Used-mask values below this change nothing visible: the "empty mask" warning. [ours]
EMPTY_MASK = 0.5
JPEG_QUALITY = 95
#: PIL modes that carry an alpha channel.
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

#: How a sketch was read (see :func:`read_sketch`) -> what to try when it is all strokes.
TOO_MANY_STROKES_HINT = {
    "grey values": "white strokes need a black background",
    "inverted grey values (--invert)": "drop --invert",
    "inverted grey values (mostly light)": "its light background is not pure white: save it "
    "as PNG on white, or the strokes alone on a transparent layer",
    "alpha channel": "the layer must be transparent outside the strokes",
}
SKETCH_HELP = (
    "the strokes, same size as PHOTO: a transparent layer (the alpha channel is the strokes), "
    "white strokes on black, or dark strokes on white (detected when the median grey is >= "
    "128, i.e. most pixels are light, and inverted with a note on stderr) [ours]"
)


OFFICIAL_HELP = (
    "the official weights: celeb.zip or places.zip as the official download script saves "
    "them, their extracted folder, or the two files latest_net_M.pth latest_net_G.pth"
)


class UserError(Exception):
    """A bad input: reported as one ``error: ...`` line and exit status 2, no traceback."""


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one ``error: ...`` line too (no usage block)."""

    def error(self, message: str):
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------
def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {text!r}") from None
    if not (value >= 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be >= 0 px, got {text}")
    return value


def build_parser() -> Parser:
    parser = Parser(
        prog="sketchedit",
        description="SketchEdit: mask-free local image editing with partial sketches.",
        epilog="'sketchedit COMMAND --help' describes each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    edit = commands.add_parser(
        "edit",
        help="edit a photo with a sketch file",
        description="Edit PHOTO so it follows the strokes of SKETCH; write the result to OUT. "
        "The mask of the region to change is predicted (the paper's mask-free mode) unless "
        "--mask gives it. Every bad input: one 'error:' line on stderr, exit status 2.",
    )
    edit.add_argument("photo", metavar="PHOTO", help="the photo (any size; EXIF orientation used)")
    edit.add_argument("--sketch", required=True, metavar="SKETCH.png", help=SKETCH_HELP)
    edit.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.png",
        help="the edited photo; format from the suffix (PNG without one; JPEG at quality 95)",
    )
    edit.add_argument(
        "--mask-out", metavar="MASK.png", help="also write the used mask (8-bit greyscale PNG)"
    )
    edit.add_argument(
        "--mask",
        metavar="USER_MASK.png",
        help="use this mask instead of the predicted one (white or opaque = region to change)",
    )
    model = edit.add_mutually_exclusive_group()
    model.add_argument(
        "--checkpoint", metavar="PATH", help="a sketchedit checkpoint (default: the starter)"
    )
    model.add_argument("--official", nargs="+", metavar="PATH", help=OFFICIAL_HELP)
    edit.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="where the networks run: crop around the strokes at the model's scale (auto on "
        "photos larger than the model's working size), the whole photo resized, or full "
        "resolution (default: auto)",
    )
    edit.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    edit.add_argument("--overwrite", action="store_true", help="replace existing output files")
    edit.add_argument(
        "--invert", action="store_true", help="the sketch is dark strokes on a light background"
    )
    edit.add_argument(
        "--feather",
        type=_non_negative,
        default=0.0,
        metavar="PX",
        help="soften the blend edge by PX pixels (default 0)",
    )
    edit.set_defaults(run=edit_command)
    _add_reproduce(commands)
    for name, (_, help_text) in PASS_THROUGH.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASS_THROUGH:
        # Handed on before parsing, so `sketchedit train --help` shows the trainer's own help.
        from importlib import import_module

        return import_module(PASS_THROUGH[argv[0]][0]).main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2): a status, like the rest
        return stop.code if isinstance(stop.code, int) else USAGE_ERROR
    try:
        return args.run(args)
    except UserError as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # one line, always
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted: no output written", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------------------------
# edit
# --------------------------------------------------------------------------------------------
def edit_command(args: argparse.Namespace) -> int:
    """``sketchedit edit``: check everything, run one edit, write the outputs, say what ran."""
    start = time.perf_counter()
    output = _output_path(args.output, "output", args.overwrite, formats=None)
    mask_out = None
    if args.mask_out is not None:
        mask_out = _output_path(args.mask_out, "--mask-out", args.overwrite, formats=("PNG",))
        if mask_out[0].resolve() == output[0].resolve():
            raise UserError(f"--mask-out and the output are the same file {args.output}")

    photo = _read_photo(args.photo)
    sketch, source = read_sketch(args.sketch, invert=args.invert)
    _check_same_size("sketch", args.sketch, sketch.shape, args.photo, photo)
    _check_strokes(args.sketch, sketch, source)
    mask = None
    if args.mask is not None:
        mask = _ink_layer(_open_image(args.mask, "mask"), invert=False)
        _check_same_size("mask", args.mask, mask.size[::-1], args.photo, photo)

    editor = load_editor(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = editor.edit(photo, sketch, mask, feather=args.feather, strategy=args.strategy)
        except ValueError as err:  # the checks above should have caught it; still no traceback
            raise UserError(str(err)) from err
    for w in caught:
        print("warning: " + " ".join(str(w.message).split()), file=sys.stderr)

    _save(result.image, *output)
    if mask_out is not None:
        used = np.round(np.clip(result.used_mask, 0.0, 1.0) * 255.0).astype(np.uint8)
        _save(Image.fromarray(used, mode="L"), *mask_out)

    seconds = time.perf_counter() - start
    width, height = result.image.size
    extra = f", mask in {args.mask_out}" if mask_out is not None else ""
    print(f"{args.output}: {width}x{height}, {result.describe()}, {seconds:.2f} s{extra}")
    if float(result.used_mask.max(initial=0.0)) < EMPTY_MASK:
        if mask is None:
            print(
                "warning: the predicted mask is empty: nothing visibly changed; try longer "
                "strokes or --mask",
                file=sys.stderr,
            )
        else:
            print(
                f"warning: the mask {args.mask} is empty (no value reaches 0.5): little or "
                f"nothing visibly changed",
                file=sys.stderr,
            )
    return 0


# ---- outputs ---------------------------------------------------------------------------------
def _output_path(
    text: str, what: str, overwrite: bool, formats: tuple[str, ...] | None
) -> tuple[Path, str]:
    """Check an output path before anything runs; returns ``(path, PIL format)``.

    The format comes from the suffix (PNG when there is none); ``formats`` limits it.
    """
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise UserError(f"{what} {text} is a folder; give a file name such as {path / 'out.png'}")
    if not folder.is_dir():
        raise UserError(f"the folder of the {what} {text} does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write the {what} {text}: the folder {folder} is not writable")
    if path.exists() and not overwrite:
        raise UserError(f"{what} {text} exists; pass --overwrite to replace it")
    fmt = "PNG"
    if path.suffix:
        Image.init()
        fmt = Image.registered_extensions().get(path.suffix.lower())
        if fmt is None or fmt not in Image.SAVE:
            raise UserError(f"{what} {text}: unknown image suffix {path.suffix!r} (try .png)")
    if formats is not None and fmt not in formats:
        raise UserError(f"{what} {text} must be {' or '.join(formats)} (suffix {path.suffix})")
    return path, fmt


def _save(image: Image.Image, path: Path, fmt: str) -> None:
    """Write ``image`` to ``path`` atomically in PIL format ``fmt``."""
    from sketchedit.fileio import atomic_path

    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format=fmt, **options)
    except OSError as err:  # a full disk, a read-only file system...
        raise UserError(f"cannot write {path}: {err}") from err


# ---- inputs ----------------------------------------------------------------------------------
def _open_image(text: str, what: str) -> Image.Image:
    """Open and decode an image file, as PIL gives it (mode, alpha and EXIF kept)."""
    path = Path(text)
    if not path.exists():
        raise UserError(f"{what} file {text} does not exist")
    if path.is_dir():
        raise UserError(f"{what} {text} is a folder, not an image file")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here
            return img.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read {what} {text}: {err}") from err


def _read_photo(text: str) -> Image.Image:
    """The photo as upright 8-bit RGB (through the package's one loader)."""
    from sketchedit.images import load_rgb

    return load_rgb(_open_image(text, "photo"))


def _uses_alpha(img: Image.Image) -> bool:
    """Rule 1 of the module docstring: the alpha channel holds the strokes when some pixel
    is transparent (a fully opaque alpha channel carries nothing)."""
    if img.mode not in ALPHA_MODES and "transparency" not in img.info:
        return False
    return img.convert("RGBA").getchannel("A").getextrema()[0] < 255


def _ink_layer(img: Image.Image, invert: bool) -> Image.Image:
    """The stroke (or mask) layer of a drawing as an upright "L" image: light = ink.

    The alpha channel when :func:`_uses_alpha`; otherwise the grey values, inverted when
    ``invert`` (after compositing any alpha onto white, as the package's loader does).
    """
    from sketchedit.images import load_rgb

    if not invert and _uses_alpha(img):
        return ImageOps.exif_transpose(img).convert("RGBA").getchannel("A")
    grey = load_rgb(img).convert("L")  # load_rgb applies the EXIF orientation
    return ImageOps.invert(grey) if invert else grey


def read_sketch(text: str, invert: bool = False) -> tuple[np.ndarray, str]:
    """A sketch file -> ``(H, W)`` float32 strokes in ``{0, 1}`` by the module docstring's
    rules, and which layer they were read from (for messages).

    Prints a note on stderr when a dark-on-light sketch is detected and inverted.
    """
    from sketchedit.editor import as_sketch  # the package's sketch rule, in this one place

    img = _open_image(text, "sketch")
    if invert:
        source = "inverted grey values (--invert)"
    elif _uses_alpha(img):
        source = "alpha channel"
    else:
        source = "grey values"
        median = int(np.median(np.asarray(_ink_layer(img, invert=False))))
        if median >= LIGHT_MEDIAN:
            print(
                f"note: sketch {text} is mostly light (median grey {median} >= {LIGHT_MEDIAN}): "
                f"read as dark strokes on a light background and inverted",
                file=sys.stderr,
            )
            invert, source = True, "inverted grey values (mostly light)"
    return as_sketch(_ink_layer(img, invert=invert)), source


def _check_strokes(text: str, sketch: np.ndarray, source: str) -> None:
    """Refuse an empty or all-stroke sketch (the editor's limit), saying how it was read."""
    from sketchedit.editor import MAX_STROKE_FRACTION

    fraction = float(sketch.mean()) if sketch.size else 0.0
    if fraction == 0.0:
        raise UserError(f"sketch {text} has no strokes (read from its {source})")
    if fraction > MAX_STROKE_FRACTION:
        hint = TOO_MANY_STROKES_HINT[source]
        raise UserError(
            f"sketch {text} marks {fraction:.0%} of the pixels as strokes (read from its "
            f"{source}; at most {MAX_STROKE_FRACTION:.0%}): a partial sketch is thin strokes on "
            f"an empty background ({hint})"
        )


def _check_same_size(what: str, text: str, hw: tuple[int, int], photo_text: str, photo) -> None:
    """A :class:`UserError` naming both sizes when a drawing does not match the photo."""
    height, width = hw
    if (width, height) == photo.size:
        return
    note = ""
    with Image.open(photo_text) as raw:
        if raw.size != photo.size:
            note = f" (upright by its EXIF orientation; stored as {raw.size[0]}x{raw.size[1]})"
    raise UserError(
        f"{what} {text} is {width}x{height} px but photo {photo_text} is "
        f"{photo.size[0]}x{photo.size[1]} px{note}; draw the {what} at the photo's size"
    )


# ---- the model -------------------------------------------------------------------------------
def load_editor(args: argparse.Namespace):
    """The :class:`~sketchedit.editor.SketchEditor` the arguments ask for, on their device."""
    from sketchedit.editor import SketchEditor, resolve_device

    try:
        resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise UserError(f"--device {args.device}: {err}") from err
    if args.official:
        return load_official_editor(args.official, args.device, "--official")
    what = f"checkpoint {args.checkpoint or 'starter'}"
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint file {args.checkpoint} does not exist")
    try:
        return SketchEditor.from_pretrained(args.checkpoint, device=args.device)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        # A corrupt, truncated or foreign file: CheckpointError (a ValueError) names the
        # problem; safetensors and torch raise OSError/RuntimeError for unreadable bytes.
        raise UserError(f"cannot load {what}: {_first_sentence_of_cause(err)}") from err


def load_official_editor(paths: list[str], device: str, option: str):
    """``SketchEditor.from_official`` on the 1 (archive or folder) or 2 (files) ``paths``."""
    from sketchedit.editor import SketchEditor

    if len(paths) > 2:
        raise UserError(
            f"{option} takes the archive or folder, or the two files M.pth G.pth; got "
            f"{len(paths)} paths"
        )
    for path in paths:
        if not Path(path).exists():
            raise UserError(f"checkpoint file {path} does not exist")
    try:
        return SketchEditor.from_official(*paths, device=device)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        what = "official checkpoints " + " and ".join(paths)
        raise UserError(f"cannot load {what}: {_first_sentence_of_cause(err)}") from err


def _first_sentence_of_cause(err: Exception) -> str:
    """``err``'s message with the library error it wraps cut to its first sentence.

    torch's "weights only" refusal is a paragraph that ends by suggesting
    ``weights_only=False`` (arbitrary code execution); its first sentence says enough.
    """
    text, cause = str(err), str(err.__cause__ or "")
    if cause and cause in text:
        text = text.replace(cause, cause.split(". ")[0].rstrip("."))
    return text


# --------------------------------------------------------------------------------------------
# reproduce
# --------------------------------------------------------------------------------------------
def _add_reproduce(commands) -> None:
    reproduce = commands.add_parser(
        "reproduce",
        help="run the official test protocol on a samples folder and compare",
        description="Run a folder laid out like the official release samples (list.txt, "
        "images/, edges/, optional results/) as the official test script does, with the "
        "official weights; write OUT/results/ and OUT/masks/ and, where results/ exists, "
        "print how far each result is from the official one. Exit status 0 when every "
        "sample is within 1 level, 1 when one is not or has no official result; every bad "
        "input: one 'error:' line, exit status 2.",
    )
    reproduce.add_argument(
        "--checkpoints", required=True, nargs="+", metavar="PATH", help=OFFICIAL_HELP
    )
    reproduce.add_argument(
        "--samples",
        required=True,
        metavar="DIR",
        help="the samples folder (list.txt, images/, edges/, optional results/)",
    )
    reproduce.add_argument(
        "--out", required=True, metavar="OUT", help="where results/ and masks/ are written"
    )
    reproduce.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    reproduce.add_argument("--overwrite", action="store_true", help="replace existing output files")
    reproduce.set_defaults(run=reproduce_command)


def reproduce_command(args: argparse.Namespace) -> int:
    """``sketchedit reproduce``: check the samples and outputs, then run and compare."""
    from sketchedit.editor import resolve_device
    from sketchedit.reproduce import (
        SampleError,
        all_agree,
        check_outputs,
        format_table,
        read_samples,
        reproduce_folder,
    )

    try:
        resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise UserError(f"--device {args.device}: {err}") from err
    try:
        samples = read_samples(args.samples)
        check_outputs(samples, Path(args.samples), Path(args.out), args.overwrite)
    except SampleError as err:
        raise UserError(str(err)) from err
    editor = load_official_editor(args.checkpoints, args.device, "--checkpoints")
    print(f"weights: {editor.source}")
    try:
        rows = reproduce_folder(editor, args.samples, args.out, overwrite=args.overwrite)
    except SampleError as err:  # checked above; a file changed meanwhile
        raise UserError(str(err)) from err
    print(
        f"wrote {len(samples)} results to {Path(args.out) / 'results'} and masks to "
        f"{Path(args.out) / 'masks'}"
    )
    if rows is None:
        print(f"no {Path(args.samples) / 'results'} folder: nothing to compare with")
        return 0
    print("\n".join(format_table(rows)))
    return 0 if all_agree(rows) else 1
