"""The editing API: one photo + a partial sketch in, the edited photo and its mask out.

This is the user-facing layer on top of :func:`sketchedit.inference.run_sketchedit`
(docs/method.md section 3). It accepts whatever a user has at hand (PIL images, numpy arrays,
tensors, files; any size, greyscale or RGBA) and adds what the official code lacks
(docs/method.md section 6): the predicted mask is returned to the user, and the user can
*revise* it (add and erase regions) before the generator runs.

>>> editor = SketchEditor.from_pretrained()                       # doctest: +SKIP
>>> result = editor.edit(photo, sketch)                           # doctest: +SKIP
>>> result.image, result.soft_mask                                # doctest: +SKIP
>>> fixed = editor.edit(photo, sketch, mask=MaskRevision(add=more, erase=less))  # doctest: +SKIP

Conventions
-----------
Image, sketch (1 = stroke) and mask (1 = the region the generator may change) are read by
:mod:`sketchedit.images`, whose module docstring states the one convention per input type:
:func:`~sketchedit.images.load_rgb` (photos: paths, PIL, HWC arrays in their dtype's range,
``[-1, 1]`` CHW tensors), :func:`~sketchedit.images.as_sketch` (a stroke is a value above half
of its type's full scale: float ``> 0.5``, uint8 ``>= 128``, alpha ``>= 128``; ``{0, 1}``
integer sketches work too) and :func:`~sketchedit.images.as_mask` (the same reading, soft values
kept; RGBA masks are read from their alpha channel).

A sketch drawn as dark lines on white would mark almost every pixel as stroke; rather than
guessing, :meth:`SketchEditor.edit` raises a ValueError when more than
:data:`MAX_STROKE_FRACTION` of the pixels are strokes and tells you to invert it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sketchedit.images import (
    ArrayLike,
    as_mask,
    as_sketch,
    check_size,
    load_rgb,
    mask_to_numpy,
    to_pil,
    to_tensor,
)
from sketchedit.inference import predict_soft_mask, resize_sketch, run_sketchedit
from sketchedit.roi import MULTIPLE, Region, choose_strategy, plan_regions

#: Above this fraction of stroke pixels a sketch is rejected as probably inverted (dark lines
#: on white). Real partial sketches cover 0.1-1 % of the pixels (docs/method.md section 1). [ours]
MAX_STROKE_FRACTION = 0.5

#: Where :meth:`SketchEditor.from_pretrained` looks when no path is given.
STARTER_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "starter.safetensors"

SIZE_MODES = ("pad", "resize")

#: The working size of a model whose checkpoint records none: the resolution the paper and
#: the official models train at (256 px, paper section 4). [ours]
DEFAULT_WORKING_SIZE = 256
#: The official face and scene models were both trained on 256 px images (paper, section 4).
OFFICIAL_WORKING_SIZE = 256
#: ``strategy="full"`` above this many pixels (2 megapixels) warns with a time estimate. [ours]
FULL_WARN_PIXELS = 2_000_000
#: Width, in working pixels, of the ramp that fades a crop's mask out at its inner borders.
#: [ours] A few pixels: the mask is rarely non-zero there at all.
TAPER = 4


# --------------------------------------------------------------------------------------------
# Input conversion lives in sketchedit.images; these are its names as the editor's API uses them.
# --------------------------------------------------------------------------------------------
#: Any supported image -> 8-bit RGB PIL image: the package's one image loader.
as_rgb = load_rgb


@dataclass(frozen=True)
class MaskRevision:
    """User corrections applied on top of the *predicted* mask.

    ``used = clip(predicted + add, 0, 1) * (1 - erase)``: the added region is forced into the
    mask, the erased region out of it (erase wins where both are set). ``add`` and ``erase``
    are masks in the module's mask convention, ``None`` meaning "nothing". This is the "mask
    revising" the official demo lists as a TODO (docs/method.md section 6).
    """

    add: ArrayLike | None = None
    erase: ArrayLike | None = None

    def apply(self, predicted: np.ndarray) -> np.ndarray:
        """``(H, W)`` predicted mask in ``[0, 1]`` -> revised ``(H, W)`` float32 mask."""
        used = predicted.astype(np.float32)
        if self.add is not None:
            add = as_mask(self.add, "MaskRevision.add")
            check_size("MaskRevision.add", add, used)
            used = np.clip(used + add, 0.0, 1.0)
        if self.erase is not None:
            erase = as_mask(self.erase, "MaskRevision.erase")
            check_size("MaskRevision.erase", erase, used)
            used = used * (1.0 - erase)
        return used.astype(np.float32)


def check_feather(feather: float) -> None:
    """``feather`` must be a finite number of px >= 0 (inf overflowed scipy, NaN was ignored)."""
    if not isinstance(feather, (int, float, np.integer, np.floating)) or isinstance(feather, bool):
        raise TypeError(f"feather must be a number of px, got {type(feather).__name__}")
    if not math.isfinite(feather) or feather < 0:
        raise ValueError(f"feather must be a finite number of px >= 0, got {feather}")


def feather_mask(mask: np.ndarray, feather: float) -> np.ndarray:
    """Soften the outer edge of a blend mask by a Gaussian of ``feather`` px (sigma).

    [ours] Not in the paper or the official code (they blend with the raw soft mask). We take
    ``max(mask, blur(mask))`` rather than the plain blur: the blur only *extends* the mask
    outwards, so the generated content inside the mask is kept whole and the transition to the
    untouched photo becomes gradual. ``feather=0`` returns the mask unchanged.
    """
    check_feather(feather)
    if feather == 0:
        return mask
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(mask.astype(np.float64), sigma=float(feather), mode="nearest")
    # Values below 1e-6 are rounding dust: zero them so "mask == 0 => pixel unchanged" stays a
    # clean, testable rule far from the edit.
    blurred[blurred < 1e-6] = 0.0
    return np.maximum(mask, blurred).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass
class EditResult:
    """What one edit produced. All arrays are ``(H, W)`` float32 at the input's size.

    Attributes:
        image: the edited photo, PIL RGB, the input's size.
        input_image: the photo that was edited, PIL RGB.
        sketch: the partial sketch, ``{0, 1}``.
        soft_mask: the mask estimator's soft prediction in ``[0, 1]``: zero outside the regions
            the networks saw (see ``regions``), and all zero when the model was not run, i.e.
            for an empty sketch.
        used_mask: the mask the output was blended with (prediction, or the user's mask,
            or the revised prediction; then feathered). Where it is exactly 0 the output pixel
            equals the input pixel.
        hard_mask: ``(used_mask before feathering) > 0.5`` as the generator got it, brought
            back to the photo's size: the hole the generator filled (``None`` when the model
            was not run).
        coarse, fine: the generator's two stages as PIL RGB at the input's size, before the
            blend (``None`` when the model was not run). Outside the regions the networks saw,
            they show the input photo.
        ran_model: False when the sketch was empty and the input was returned unchanged.
        strategy: how the networks were run: ``"full"``, ``"resize"`` or ``"crop"`` (``auto``
            resolved; see :mod:`sketchedit.roi`). The requested one is in ``settings``.
        working_size: the model's working resolution in pixels (its training size), which
            sets the scale of ``resize`` and ``crop``.
        regions: the :class:`sketchedit.roi.Region` s the networks ran on: for each, the box of
            the photo and the ``(h, w)`` the networks saw it at.
    """

    image: Image.Image
    input_image: Image.Image
    sketch: np.ndarray
    soft_mask: np.ndarray
    used_mask: np.ndarray
    hard_mask: np.ndarray | None = None
    coarse: Image.Image | None = None
    fine: Image.Image | None = None
    ran_model: bool = True
    settings: dict = field(default_factory=dict)
    strategy: str = "full"
    working_size: int | None = None
    regions: tuple[Region, ...] = ()

    def to_dict(self) -> dict:
        """The fields as a plain dict (images stay PIL, masks stay numpy)."""
        return {
            "image": self.image,
            "input_image": self.input_image,
            "sketch": self.sketch,
            "soft_mask": self.soft_mask,
            "used_mask": self.used_mask,
            "hard_mask": self.hard_mask,
            "coarse": self.coarse,
            "fine": self.fine,
            "ran_model": self.ran_model,
            "settings": dict(self.settings),
            "strategy": self.strategy,
            "working_size": self.working_size,
            "regions": list(self.regions),
        }

    def describe(self) -> str:
        """One line on how the networks ran, e.g. for a status bar."""
        if not self.ran_model:
            return "empty sketch: nothing was edited"
        parts = []
        for r in self.regions:
            seen = f"{r.work_size[1]}x{r.work_size[0]} px"
            if r.box.height == self.image.height and r.box.width == self.image.width:
                parts.append(f"the whole photo at {seen}")
            else:
                parts.append(f"a {r.box.width}x{r.box.height} crop at {seen}")
        return f"{self.strategy}: " + ", ".join(parts)

    def changed_pixels(self) -> np.ndarray:
        """``(H, W)`` bool: where the output differs from the input."""
        a = np.asarray(self.image, dtype=np.int16)
        b = np.asarray(self.input_image, dtype=np.int16)
        return np.any(a != b, axis=2)

    def show(self, size: float = 2.4, suptitle: str | None = None):
        """Plot input + sketch, the soft and used masks and the result; returns the figure."""
        from sketchedit.plotting import show_grid

        overlay = np.asarray(self.input_image).copy()
        overlay[self.sketch > 0] = (255, 40, 40)
        return show_grid(
            [overlay, self.soft_mask, self.used_mask, np.asarray(self.image)],
            titles=["input + sketch", "predicted soft mask", "used mask", "result"],
            size=size,
            suptitle=suptitle,
        )


# --------------------------------------------------------------------------------------------
# The editor
# --------------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``/``"cuda"``/``"cuda:1"``/torch.device -> torch.device, checking CUDA exists."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was requested but CUDA is not available in this PyTorch "
            f"({torch.__version__}); use device='cpu'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {str(device)!r}")
    return dev


def weights_source(mask_estimator: torch.nn.Module, generator: torch.nn.Module) -> str:
    """Where the two networks' weights came from, for messages: their ``source`` attributes
    (set by :func:`sketchedit.checkpoints.load_checkpoint` and the editor's constructors)."""
    sources = [getattr(net, "source", None) for net in (mask_estimator, generator)]
    if sources[0] == sources[1]:
        return sources[0] or "networks passed to SketchEditor (unknown source)"
    return f"mask estimator: {sources[0] or 'unknown'}; generator: {sources[1] or 'unknown'}"


def checkpoint_working_size(metadata: dict) -> int | None:
    """The training resolution a checkpoint of ours records, or None when it records none.

    Inference exports of the trainer store ``{"working_size": N}``; older files only have
    the training configuration's ``image_size``, which is the same number.
    """
    user = metadata.get("user") or {}
    size = user.get("working_size") or (user.get("train_config") or {}).get("image_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 2 * MULTIPLE:
        raise ValueError(f"the checkpoint records an invalid working size {size!r}")
    return size


def _full_cost(height: int, width: int, cnum: int) -> str:
    """A rough time for the ``full`` strategy on a 2-core laptop CPU, as words.

    Measured: ``cnum = 48`` takes about 71 s for 1024 x 1024 px on a 2-core AMD EPYC (AVX2)
    and 16 s on a 2-core Intel Xeon with AVX-512 (``benchmarks/any_size.py``); the estimate
    uses the slower figure. The cost grows with the pixels and with ``cnum ** 2``.
    """
    seconds = 71.0 * (height * width) / 1024**2 * (cnum / 48) ** 2
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


class SketchEditor:
    """Wraps a mask estimator and a generator for editing photos with partial sketches.

    Args:
        mask_estimator: a :class:`sketchedit.nets.MaskEstimator` (or anything with its
            ``predict_mask(image, sketch)`` / ``forward`` contract).
        generator: a :class:`sketchedit.nets.Generator`.
        device: "cpu" (default) or "cuda[:N]"; a clear RuntimeError when CUDA is asked for
            but not available.
        working_size: the resolution (px) the model was trained at; ``resize`` and ``crop``
            edits show the networks the photo at that scale (:mod:`sketchedit.roi`).
            [ours] Default :data:`DEFAULT_WORKING_SIZE`, the official models' 256 px.
        channels_last, bf16: speed options of :func:`sketchedit.inference.run_sketchedit`
            (bf16 is faster on recent CPUs but not exact).

    Both networks are put in eval mode; every edit runs under ``torch.inference_mode``, so
    the same inputs always give the same output.
    """

    #: ``{"M": sha256, "G": sha256}`` of the official files an editor was loaded from
    #: (:meth:`from_official`); ``None`` for other weights.
    official_sha256: dict[str, str] | None = None

    def __init__(
        self,
        mask_estimator: torch.nn.Module,
        generator: torch.nn.Module,
        device="cpu",
        *,
        working_size: int = None,
        channels_last: bool = False,
        bf16: bool = False,
    ):
        self.device = resolve_device(device)
        working_size = DEFAULT_WORKING_SIZE if working_size is None else working_size
        if (
            isinstance(working_size, bool)
            or not isinstance(working_size, int)
            or (working_size < 2 * MULTIPLE)
        ):
            raise ValueError(f"working_size must be an integer >= 16 px, got {working_size!r}")
        self.working_size = working_size
        self.channels_last = channels_last
        self.bf16 = bf16
        self.mask_estimator = mask_estimator.to(self.device).eval()
        self.generator = generator.to(self.device).eval()
        self.source = weights_source(self.mask_estimator, self.generator)

    def __repr__(self) -> str:
        return (
            f"SketchEditor(mask_estimator={type(self.mask_estimator).__name__}, "
            f"generator={type(self.generator).__name__}, device={str(self.device)!r}, "
            f"working_size={self.working_size})"
        )

    # ---- constructors ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device="cpu") -> SketchEditor:
        """Load a checkpoint in this project's format (default: the bundled starter model).

        The file holds the networks "mask_estimator" and "generator" written by
        :func:`sketchedit.checkpoints.save_checkpoint`; its recorded training resolution becomes
        the editor's ``working_size`` (:data:`DEFAULT_WORKING_SIZE` if it records none).
        """
        path = Path(path) if path is not None else STARTER_CHECKPOINT
        if not path.is_file():
            hint = (
                " The starter checkpoint ships with the package (sketchedit/assets/); "
                "train one with the training notebook, or pass path=... to your own checkpoint, "
                "or use SketchEditor.from_official(...) for the official weights."
            )
            raise FileNotFoundError(f"no checkpoint file at {path}.{hint}")
        from sketchedit.checkpoints import load_checkpoint, read_checkpoint_metadata

        networks = load_checkpoint(path, map_location="cpu")
        missing = [k for k in ("mask_estimator", "generator") if k not in networks]
        if missing:
            raise ValueError(
                f"checkpoint {path} lacks the network(s) {missing}; it holds {sorted(networks)}"
            )
        return cls(
            networks["mask_estimator"],
            networks["generator"],
            device=device,
            working_size=checkpoint_working_size(read_checkpoint_metadata(path)),
        )

    @classmethod
    def random_init(
        cls, cnum: int = 16, seed: int = 0, device="cpu", working_size: int | None = None
    ) -> SketchEditor:
        """Untrained networks of width ``cnum`` (default: the starter checkpoint's width).

        For tests, benchmarks and notebooks that must run before a checkpoint exists: the
        edits it makes are meaningless, only their shapes and timings are real.
        """
        from sketchedit.nets import Generator, MaskEstimator

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets = MaskEstimator(cnum=cnum), Generator(cnum=cnum)
        for net in nets:
            net.source = f"random init (cnum={cnum}, seed={seed})"
        return cls(*nets, device=device, working_size=working_size)

    @classmethod
    def from_official(
        cls,
        path: str | os.PathLike,
        generator_path: str | os.PathLike | None = None,
        device="cpu",
    ) -> SketchEditor:
        """Load the official weights of the authors' code (faces: celeb, scenes: places).

        ``path`` is the archive as the official download script saves it (``celeb.zip`` /
        ``places.zip``), its extracted folder (``checkpoints/celeb/``, or ``checkpoints/`` when
        it holds one model), or, with ``generator_path``, the mask estimator's
        ``latest_net_M.pth`` (then ``generator_path`` is ``latest_net_G.pth``). Read safely with
        ``torch.load(weights_only=True)`` (:mod:`sketchedit.official_release`).

        The editor's ``official_sha256`` is ``{"M": ..., "G": ...}``, the sha256 of each file
        read; its ``source`` names both files with the start of their digests. Both official
        models were trained on 256 px images (paper, section 4), so the working size is 256.
        """
        from sketchedit.nets import Generator, MaskEstimator
        from sketchedit.official_release import read_official_release

        weights = read_official_release(path, generator_path)
        mask_estimator = MaskEstimator.from_official(weights.mask_estimator)
        generator = Generator.from_official(weights.generator)
        for net, role in ((mask_estimator, "M"), (generator, "G")):
            net.source = f"{weights.sources[role]} (sha256 {weights.sha256[role][:16]})"
        editor = cls(mask_estimator, generator, device=device, working_size=OFFICIAL_WORKING_SIZE)
        editor.official_sha256 = dict(weights.sha256)
        return editor

    # ---- editing -------------------------------------------------------------------------
    def _plan(self, strategy: str, sketch: np.ndarray, extra: np.ndarray | None):
        """:func:`sketchedit.roi.plan_regions` for this model, warning before a slow ``full``."""
        strategy, regions = plan_regions(strategy, sketch, self.working_size, extra)
        height, width = sketch.shape
        if strategy == "full" and height * width > FULL_WARN_PIXELS:
            cost = _full_cost(height, width, getattr(self.generator, "cnum", 48))
            warnings.warn(
                f"strategy='full' runs both networks on all {width}x{height} px, far above the "
                f"model's {self.working_size} px working size: roughly {cost} on a 2-core CPU "
                f"(and an out-of-scale, often empty mask). strategy='auto' edits a crop around "
                f"the strokes at the model's scale instead.",
                RuntimeWarning,
                stacklevel=3,
            )
        return strategy, regions

    def _to_work(self, image: Image.Image, sketch: np.ndarray, region: Region):
        """One region of the photo and sketch as network inputs at the region's working size."""
        box = region.box
        crop = image.crop(box.pil)
        x = to_tensor(crop).unsqueeze(0).to(self.device)
        c = torch.from_numpy(np.ascontiguousarray(sketch[box.slices]))[None, None].to(self.device)
        if region.resampled:
            x = _reduce(x, region.work_size)
            c = resize_sketch(c, region.work_size)
        return x, c

    @staticmethod
    def _to_box(t: torch.Tensor, region: Region, mode: str = "bilinear") -> torch.Tensor:
        """A ``(1, C, h, w)`` network output at working size -> the region's box size."""
        if not region.resampled:
            return t
        size = (region.box.height, region.box.width)
        if mode == "nearest":
            return F.interpolate(t, size=size, mode="nearest")
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    def predict_mask(
        self, image, sketch, *, size_mode: str = "pad", strategy: str = "auto"
    ) -> np.ndarray:
        """Only the mask estimator: ``(H, W)`` float32 soft mask in ``[0, 1]``.

        Cheap preview of the region an edit would change (the widget shows it so the user
        can revise it before applying): the same regions and scale as :meth:`edit` with the
        same ``strategy``. An empty sketch gives an all-zero mask.
        """
        image = as_rgb(image)
        sketch = as_sketch(sketch)
        check_size("sketch", sketch, image)
        _check_size_mode(size_mode)
        mask = np.zeros_like(sketch)
        if not sketch.any():
            return mask
        _, regions = self._plan(strategy, sketch, None)
        for region in regions:
            x, c = self._to_work(image, sketch, region)
            with torch.inference_mode():
                m = predict_soft_mask(self.mask_estimator, x, c, size_mode=size_mode)
            mask[region.box.slices] = mask_to_numpy(self._to_box(m, region))
        return mask

    def edit(
        self,
        image,
        sketch,
        mask: ArrayLike | MaskRevision | None = None,
        *,
        feather: float = 0,
        size_mode: str = "pad",
        strategy: str = "auto",
    ) -> EditResult:
        """Edit ``image`` so it follows the partial ``sketch``.

        Args:
            image: the photo (any size; see the module docstring for accepted types).
            sketch: the partial sketch, 1 = stroke, same size as the image.
            mask: ``None`` (use the mask estimator's prediction, the paper's mask-free mode),
                a full mask (replaces the prediction), or a :class:`MaskRevision` (corrections
                on top of the prediction).
            feather: soften the blend edge by this many px (see :func:`feather_mask`; [ours]).
                With ``crop`` it acts inside each crop.
            size_mode: how a region reaches a multiple of 8 px: "pad" (reflect-pad, crop back)
                or "resize" (as the official demo does); see :mod:`sketchedit.inference`.
            strategy: where and at what scale the networks run: ``"auto"`` (default:
                ``"crop"`` on photos larger than the model's working size, else ``"full"``),
                ``"full"``, ``"resize"`` or ``"crop"``; see :mod:`sketchedit.roi`. ``full``
                on a photo above :data:`FULL_WARN_PIXELS` warns with a time estimate.

        The output has the input's size; pixels where the used mask is 0 (everything outside
        the regions the networks saw) are the input's, bit for bit. An empty sketch returns
        the input unchanged (bitwise) and an all-zero mask without running the networks.
        """
        image = as_rgb(image)
        sketch = as_sketch(sketch)
        check_size("sketch", sketch, image)
        _check_size_mode(size_mode)
        check_feather(feather)
        user_mask = revision = None
        if isinstance(mask, MaskRevision):
            revision = _read_revision(mask, image)
        elif mask is not None:
            user_mask = as_mask(mask)
            check_size("mask", user_mask, image)
        settings = {
            "feather": feather,
            "size_mode": size_mode,
            "mask": _describe_mask(mask),
            "strategy": strategy,
        }

        fraction = float(sketch.mean()) if sketch.size else 0.0
        if fraction > MAX_STROKE_FRACTION:
            raise ValueError(
                f"the sketch marks {fraction:.0%} of the pixels as strokes; a partial sketch is "
                f"thin lines (1 = stroke) on a zero background. If you drew dark lines on white, "
                f"invert it first (PIL.ImageOps.invert(sketch) or 1 - sketch)."
            )
        if not sketch.any():
            choose_strategy(strategy, sketch.shape, self.working_size)  # reject a bad name
            empty = np.zeros_like(sketch)
            return EditResult(
                image=image.copy(),
                input_image=image,
                sketch=sketch,
                soft_mask=empty,
                used_mask=empty.copy(),
                ran_model=False,
                settings=settings,
                strategy="none",
                working_size=self.working_size,
            )

        # Pixels every crop must cover besides the strokes: the user's mask, or what a
        # revision adds (a crop that cut them off would silently drop part of the edit).
        extra = user_mask if user_mask is not None else getattr(revision, "add", None)
        strategy, regions = self._plan(strategy, sketch, extra)
        soft, used, hard = (np.zeros_like(sketch) for _ in range(3))
        edited, coarse, fine = image.copy(), image.copy(), image.copy()
        for region in regions:
            piece = self._edit_region(image, sketch, region, user_mask, revision, size_mode)
            box = region.box.slices
            soft[box], hard[box] = piece["soft"], piece["hard"]
            used[box] = feather_mask(piece["used"], feather)
            if strategy == "crop":
                used[box] *= _crop_taper(region, sketch.shape)
            corner = (region.box.left, region.box.top)
            edited.paste(blend(image.crop(region.box.pil), piece["fine"], used[box]), corner)
            fine.paste(to_pil(piece["fine"]), corner)
            coarse.paste(to_pil(piece["coarse"]), corner)
        return EditResult(
            image=edited,
            input_image=image,
            sketch=sketch,
            soft_mask=soft,
            used_mask=used,
            hard_mask=hard,
            coarse=coarse,
            fine=fine,
            ran_model=True,
            settings=settings,
            strategy=strategy,
            working_size=self.working_size,
            regions=tuple(regions),
        )

    def _edit_region(
        self,
        image: Image.Image,
        sketch: np.ndarray,
        region: Region,
        user_mask: np.ndarray | None,
        revision: MaskRevision | None,
        size_mode: str,
    ) -> dict:
        """Both networks on one region; everything returned at the region's box size.

        Returns ``{"soft", "used", "hard"}`` as ``(h, w)`` float32 arrays (the prediction, the
        mask to blend with before feathering, the generator's hard mask) and ``{"fine",
        "coarse"}`` as ``(3, h, w)`` tensors in [-1, 1].
        """
        box = region.box.slices
        x, c = self._to_work(image, sketch, region)
        options = {"size_mode": size_mode, "channels_last": self.channels_last, "bf16": self.bf16}
        with torch.inference_mode():
            if user_mask is None and revision is None:
                # The paper's mask-free path: run_sketchedit predicts the mask itself.
                out = run_sketchedit(self.mask_estimator, self.generator, x, c, **options)
                soft = used = mask_to_numpy(self._to_box(out.soft_mask, region))
            else:
                # Revision or user mask: the prediction is still reported (a revision starts
                # from it); the generator then gets the user's mask instead.
                predicted = predict_soft_mask(self.mask_estimator, x, c, size_mode=size_mode)
                soft = mask_to_numpy(self._to_box(predicted, region))
                if revision is not None:
                    used = _crop_revision(revision, box).apply(soft)
                else:
                    used = user_mask[box]
                work_mask = torch.from_numpy(np.ascontiguousarray(used))[None, None].to(x)
                if region.resampled:
                    work_mask = _reduce(work_mask, region.work_size).clamp(0, 1)
                out = run_sketchedit(None, self.generator, x, c, mask=work_mask, **options)
        return {
            "soft": soft,
            "used": used,
            "hard": mask_to_numpy(self._to_box(out.hard_mask, region, mode="nearest")),
            "fine": self._to_box(out.fine, region)[0].clamp(-1, 1),
            "coarse": self._to_box(out.coarse, region)[0].clamp(-1, 1),
        }


def _reduce(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Shrink ``(1, C, H, W)`` to ``size``: block means when ``size`` divides ``(H, W)``
    exactly (the crops of :mod:`sketchedit.roi`), else antialiased bilinear."""
    fh, fw = x.shape[2] / size[0], x.shape[3] / size[1]
    if fh == fw and fh.is_integer():
        return F.avg_pool2d(x, int(fh))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _read_revision(revision: MaskRevision, image: Image.Image) -> MaskRevision:
    """The revision's ``add`` and ``erase`` read once as ``(H, W)`` float32 masks, each checked
    against the photo's size (a crop only slices them, so a wrong size must fail here)."""

    def read(m, what):
        if m is None:
            return None
        arr = as_mask(m, f"MaskRevision.{what}")
        check_size(f"MaskRevision.{what}", arr, image)
        return arr

    return MaskRevision(add=read(revision.add, "add"), erase=read(revision.erase, "erase"))


def _crop_revision(revision: MaskRevision, box: tuple[slice, slice]) -> MaskRevision:
    """The part of a revision read by :func:`_read_revision` that falls inside ``box``."""

    def part(m):
        return None if m is None else m[box]

    return MaskRevision(add=part(revision.add), erase=part(revision.erase))


def _crop_taper(region: Region, image_hw: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` weights that fade a crop's mask to 0 at its borders inside the photo. [ours]

    A mask that is not exactly 0 where a crop ends would leave a step between blended and
    untouched pixels there; a linear ramp over :data:`TAPER` working pixels removes it. Sides
    that are the photo's own border keep their full mask.
    """
    box = region.box
    width = max(1, round(TAPER / region.scale))

    def ramp(n: int, at_start: bool, at_end: bool) -> np.ndarray:
        i = np.arange(n, dtype=np.float32)
        r = np.ones(n, np.float32)
        if at_start:
            r = np.minimum(r, (i + 0.5) / width)
        if at_end:
            r = np.minimum(r, (n - i - 0.5) / width)
        return np.clip(r, 0.0, 1.0)

    rows = ramp(box.height, box.top > 0, box.bottom < image_hw[0])
    cols = ramp(box.width, box.left > 0, box.right < image_hw[1])
    return rows[:, None] * cols[None, :]


def _check_size_mode(size_mode: str) -> None:
    if size_mode not in SIZE_MODES:
        raise ValueError(f"size_mode must be one of {SIZE_MODES}, got {size_mode!r}")


def _describe_mask(mask) -> str:
    if mask is None:
        return "predicted"
    if isinstance(mask, MaskRevision):
        return "revised"
    return "user"


def blend(image: Image.Image, fine: torch.Tensor, mask: np.ndarray) -> Image.Image:
    """``fine * m + image * (1 - m)`` with the soft mask (docs/method.md section 3), as PIL RGB.

    Done here on the 8-bit input (not on the network's [-1, 1] copy) so that wherever
    ``m == 0`` the output pixel *is* the input pixel, bit for bit, whatever padding or
    resizing happened inside the networks.

    Args:
        image: PIL RGB input, size (W, H).
        fine: ``(3, H, W)`` tensor in ``[-1, 1]``, the generator's refined output.
        mask: ``(H, W)`` float array in ``[0, 1]``.
    """
    src = np.asarray(image, dtype=np.float64)
    gen = (fine.detach().double().cpu().clamp(-1, 1).permute(1, 2, 0).numpy() + 1.0) * 127.5
    m = mask.astype(np.float64)[:, :, None]
    out = np.clip(np.round(gen * m + src * (1.0 - m)), 0, 255).astype(np.uint8)
    keep = mask == 0
    out[keep] = np.asarray(image)[keep]
    return Image.fromarray(out, mode="RGB")


# --------------------------------------------------------------------------------------------
# Iterative editing
# --------------------------------------------------------------------------------------------
class EditSession:
    """Iterative editing with undo/redo: each result becomes the next input (official demo).

    >>> session = EditSession(editor, photo)          # doctest: +SKIP
    >>> session.edit(sketch1); session.edit(sketch2)  # doctest: +SKIP
    >>> session.undo(); session.current               # doctest: +SKIP

    ``history`` is the list of applied :class:`EditResult` (oldest first; the session's own
    records, not to be modified); ``current`` is a copy of the photo after the last one (the
    original when there is none). A new edit clears the redo stack. An edit with an empty
    sketch changes nothing and is not recorded.
    """

    def __init__(
        self,
        editor: SketchEditor,
        image,
        *,
        feather: float = 0,
        size_mode="pad",
        strategy: str = "auto",
    ):
        self.editor = editor
        self.feather = feather
        self.size_mode = size_mode
        self.strategy = strategy
        self.reset(image)

    def reset(self, image) -> None:
        """Start over from a new photo (history and redo are cleared)."""
        self.original = as_rgb(image)
        self._done: list[EditResult] = []
        self._undone: list[EditResult] = []

    @property
    def current(self) -> Image.Image:
        """The photo as it is now: a fresh copy, so drawing on it cannot change the history."""
        return (self._done[-1].image if self._done else self.original).copy()

    @property
    def last_result(self) -> EditResult | None:
        """The most recent applied edit, or None."""
        return self._done[-1] if self._done else None

    @property
    def history(self) -> list[EditResult]:
        """Applied edits, oldest first (a copy)."""
        return list(self._done)

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    def _push(self, result: EditResult) -> EditResult:
        """Record ``result``; the history keeps its own copy of the photos, so the caller may
        draw on the returned result's images without changing what undo/redo give back."""
        if result.ran_model:
            kept = dataclasses.replace(
                result, image=result.image.copy(), input_image=result.input_image.copy()
            )
            self._done.append(kept)
            self._undone.clear()
        return result

    def edit(self, sketch, mask: ArrayLike | MaskRevision | None = None, **kwargs) -> EditResult:
        """Edit the current photo; the result becomes the current photo."""
        kwargs.setdefault("feather", self.feather)
        kwargs.setdefault("size_mode", self.size_mode)
        kwargs.setdefault("strategy", self.strategy)
        return self._push(self.editor.edit(self.current, sketch, mask, **kwargs))

    def revise(self, mask: ArrayLike | MaskRevision, **kwargs) -> EditResult:
        """Re-run the last edit (same input, same sketch) with a corrected mask.

        ``mask`` is a full mask, or a :class:`MaskRevision` applied on top of the last edit's
        used mask. The revised result is a new step: ``undo()`` brings back the unrevised one.
        """
        last = self.last_result
        if last is None:
            raise ValueError("nothing to revise: no edit has been applied yet")
        if isinstance(mask, MaskRevision):
            mask = mask.apply(last.used_mask)
        kwargs.setdefault("feather", self.feather)
        kwargs.setdefault("size_mode", self.size_mode)
        kwargs.setdefault("strategy", self.strategy)
        result = self.editor.edit(last.input_image, last.sketch, mask, **kwargs)
        if not result.ran_model:  # cannot happen for a recorded edit, but keep the rule simple
            return result
        result.settings["revision_of"] = len(self._done) - 1
        return self._push(result)

    def undo(self) -> Image.Image:
        """Step back one edit; returns the new current photo. ValueError when nothing to undo."""
        if not self._done:
            raise ValueError("nothing to undo")
        self._undone.append(self._done.pop())
        return self.current

    def redo(self) -> Image.Image:
        """Re-apply the last undone edit; returns the new current photo."""
        if not self._undone:
            raise ValueError("nothing to redo")
        self._done.append(self._undone.pop())
        return self.current
