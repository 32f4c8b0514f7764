"""Inference: from an image and a partial sketch to the edited image (docs/method.md section 3).

::

    m = M(image, sketch)                     soft mask in (0, 1)   (or a mask the user gives)
    h = (m > 0.5)                            hard mask
    coarse, fine = G(image, sketch, mask=h, style_mask=h)
    output = fine * m + image * (1 - m)      blended with the SOFT mask [code]

The networks need H and W to be multiples of 8; :func:`run_sketchedit` accepts any size:

- ``size_mode="pad"`` (default): reflect-pad right and bottom to the next multiple of 8 (at
  least 16), run, crop back. Every input pixel is processed at its own resolution. [ours]
  Image, sketch and a given mask are all mirrored, so the padding is a consistent mirror world
  (mirrored old content next to a hole is hidden by the mirrored hole, not offered as "known").
  Images smaller than the padding use replicate padding (reflection needs more pixels).
- ``size_mode="resize"``: resize to the nearest multiple of 8 and back, as the official demo
  does (it floors to ``h // 8 * 8``). The image is resized with antialiased bilinear
  interpolation. A 1-px stroke would fade to grey, or vanish, under bilinear resizing, so the
  sketch is resized with an adaptive **max** pool instead: a target pixel is a stroke if any
  source pixel under it is one (strokes survive, at worst 2 px wide). [ours]

In both modes the final blend happens at the input's own resolution with the original image,
so pixels where the soft mask is ~0 come back unchanged (no resampling blur outside the edit).

Speed (see ``benchmarks/inference.py``). Always: ``torch.inference_mode``, the mask
estimator's RGB head is skipped (a third of its work), the gated convs gate in place, and
denormal floats are flushed to zero while the networks run (sigmoid gates produce them, x86
arithmetic on denormals is many times slower, and the change is below 1e-38). Opt-in, same
numbers up to float rounding: ``channels_last=True`` (the memory layout oneDNN convolutions
prefer) and ``subpixel=True`` (up-convolutions computed at the low resolution). Opt-in and
*not* exact: ``bf16=True`` (bfloat16 autocast; fast only on CPUs with native bf16).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Literal

import torch
import torch.nn.functional as F

from sketchedit.nets.blocks import (
    NonFiniteError,
    check_image_batch,
    cpu_low_precision_is_fast,
    subpixel_upsampling,
)
from sketchedit.nets.generator import MIN_SIDE, Generator
from sketchedit.nets.mask_estimator import MaskEstimator
from sketchedit.roi import MULTIPLE  # the networks need sides that are multiples of 8 [code]

__all__ = [
    "InferenceOutput",
    "predict_soft_mask",
    "resize_sketch",
    "run_sketchedit",
    "working_size",
]


@dataclasses.dataclass
class InferenceOutput:
    """Everything :func:`run_sketchedit` computed, at the input's ``H, W``.

    Attributes:
        output: ``(B, 3, H, W)`` in [-1, 1], the edited image ``fine * m + image * (1 - m)``.
        soft_mask: ``(B, 1, H, W)`` in [0, 1], ``m``: the predicted (or the given) soft mask.
        hard_mask: ``(B, 1, H, W)`` in {0, 1}, the hard mask ``m > 0.5`` the generator got
            (``EditResult.used_mask`` is the *soft* mask the editor blended with).
        coarse: ``(B, 3, H, W)``, the generator's coarse stage.
        fine: ``(B, 3, H, W)``, the generator's fine stage (before the soft blend).
    """

    output: torch.Tensor
    soft_mask: torch.Tensor
    hard_mask: torch.Tensor
    coarse: torch.Tensor
    fine: torch.Tensor


def working_size(height: int, width: int, size_mode: str = "pad") -> tuple[int, int]:
    """The ``(H, W)`` the networks run at for an input of ``height x width``.

    ``"pad"``: the next multiple of 8 (at least 16). ``"resize"``: the nearest multiple of 8
    (at least 16).
    """
    if size_mode == "pad":
        side = lambda s: max(MIN_SIDE, -(-s // MULTIPLE) * MULTIPLE)  # noqa: E731
    elif size_mode == "resize":
        side = lambda s: max(MIN_SIDE, int(round(s / MULTIPLE)) * MULTIPLE)  # noqa: E731
    else:
        raise ValueError(f"size_mode must be 'pad' or 'resize', got {size_mode!r}")
    return side(height), side(width)


# --- getting to and back from the working size -------------------------------------------------
def _pad(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pad right/bottom to ``size``: reflect, or replicate where the image is too small."""
    pad_h, pad_w = size[0] - x.shape[2], size[1] - x.shape[3]
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < x.shape[2] and pad_w < x.shape[3] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _resize_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_sketch(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Stroke-preserving resize of ``(B, 1, H, W)`` strokes to ``size``. [ours]

    A target pixel is a stroke if any source pixel under it is one (adaptive max pooling), so
    1-px lines stay connected and binary instead of fading to grey as under bilinear.
    """
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.adaptive_max_pool2d(x, size)


def _check_inputs(image, sketch, mask):
    """The networks' input checks (type, shape, matching sizes), minus the multiple-of-8 rule
    this module removes by padding, plus value ranges (which also catch NaN)."""

    def check(name, x, channels):
        like = None if x is image else image
        check_image_batch(name, x, channels, like=like, multiple=None, check_nan=False)
        if x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
        low, high = torch.aminmax(x)
        if torch.isnan(low) or torch.isnan(high):
            raise ValueError(f"{name} contains NaN values")
        lo, hi = (-1.0, 1.0) if channels == 3 else (0.0, 1.0)
        tol = 1e-3
        if low < lo - tol or high > hi + tol:
            raise ValueError(
                f"{name} must lie in [{lo:g}, {hi:g}], got values in [{low:.4g}, {high:.4g}]"
                + (" (convert images with sketchedit.images.to_tensor)" if channels == 3 else "")
            )

    check("image", image, 3)
    check("sketch", sketch, 1)
    if mask is not None:
        check("mask", mask, 1)


def check_finite_output(network: str, net: torch.nn.Module, **outputs: torch.Tensor) -> None:
    """Raise RuntimeError naming ``network`` (and its weights' source) on NaN/inf outputs.

    [ours] Checked once per edit, on the outputs only: finite inputs (checked before the run)
    and non-finite outputs mean the weights are at fault, e.g. a corrupt or diverged checkpoint.
    Without this, NaN became an all-black picture behind a numpy cast warning.
    """
    bad = [name for name, t in outputs.items() if not torch.isfinite(t).all()]
    if bad:
        raise _non_finite(network, net, f"NaN or infinite values in {', '.join(bad)}")


def _non_finite(network: str, net: torch.nn.Module, what: str) -> RuntimeError:
    source = getattr(net, "source", None)
    origin = f" (weights from {source})" if source else ""
    return RuntimeError(
        f"the {network} produced {what}{origin}: its weights are probably corrupt or "
        f"diverged; check or replace that checkpoint"
    )


@contextlib.contextmanager
def _flushing_denormals(enabled: bool):
    """Flush denormal floats to zero inside the block (restored afterwards)."""
    if not enabled:
        yield
        return
    # set_flush_denormal returns False where the CPU has no such mode (then nothing changes).
    changed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)


@torch.inference_mode()
def predict_soft_mask(
    mask_estimator: MaskEstimator,
    image: torch.Tensor,
    sketch: torch.Tensor,
    *,
    size_mode: Literal["pad", "resize"] = "pad",
    flush_denormal: bool = True,
) -> torch.Tensor:
    """Only the mask estimator: the soft mask :func:`run_sketchedit` would predict.

    ``image (B, 3, H, W)`` in [-1, 1], ``sketch (B, 1, H, W)`` in {0, 1}, any ``H, W`` ->
    ``(B, 1, H, W)`` float32 in [0, 1], through the same working-size rules (a cheap preview
    of the region an edit would change, for the widget).
    """
    _check_inputs(image, sketch, None)
    height, width = image.shape[2:]
    size = working_size(height, width, size_mode)
    with _flushing_denormals(flush_denormal):
        if size_mode == "pad":
            m = mask_estimator.predict_mask(_pad(image, size), _pad(sketch, size))
            m = m[:, :, :height, :width]
        else:
            m = mask_estimator.predict_mask(_resize_image(image, size), resize_sketch(sketch, size))
            m = _resize_image(m, (height, width))
    check_finite_output("mask estimator", mask_estimator, soft_mask=m)
    return m.float().clamp(0, 1)


@torch.inference_mode()
def run_sketchedit(
    mask_estimator: MaskEstimator | None,
    generator: Generator,
    image: torch.Tensor,
    sketch: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    size_mode: Literal["pad", "resize"] = "pad",
    channels_last: bool = False,
    subpixel: bool = False,
    bf16: bool = False,
    flush_denormal: bool = True,
) -> InferenceOutput:
    """Edit ``image`` following the partial ``sketch``; any ``H, W``.

    Args:
        mask_estimator: predicts the soft mask; may be ``None`` when ``mask`` is given.
        generator: the coarse-to-fine generator.
        image: ``(B, 3, H, W)`` in [-1, 1].
        sketch: ``(B, 1, H, W)`` in {0, 1}, 1 = stroke.
        mask: optional ``(B, 1, H, W)`` in [0, 1]; replaces the predicted soft mask (then the
            mask estimator is not run): thresholded at 0.5 for the generator, soft for the blend.
        size_mode: ``"pad"`` or ``"resize"`` (see the module docstring).
        channels_last: run the networks in the channels-last memory layout (the layout oneDNN
            convolutions prefer; same result up to float rounding). The networks are not
            modified.
        subpixel: compute each "nearest x2 upsampling + 3x3 conv" as four 2x2 convs at the low
            resolution (:func:`sketchedit.nets.blocks.upconv_subpixel`): 2.25x fewer
            multiply-adds in those layers, same result up to float rounding.
        bf16: bfloat16 autocast for the networks: faster on CPUs with native bf16 (AVX-512 BF16,
            AMX), *much* slower elsewhere (a warning says so); not exact (opt-in).
        flush_denormal: flush denormal floats to zero while the networks run (much faster on
            x86; changes nothing above 1e-38).

    Returns:
        :class:`InferenceOutput` with everything at the input's ``H, W``, on its device, float32.
    """
    _check_inputs(image, sketch, mask)
    if mask is None and mask_estimator is None:
        raise ValueError("pass a mask_estimator, or a mask to use instead of its prediction")
    height, width = image.shape[2:]
    size = working_size(height, width, size_mode)
    if size_mode == "pad":
        to_work_image = to_work_strokes = to_work_mask = lambda x: _pad(x, size)  # noqa: E731
        back = lambda x: x[:, :, :height, :width]  # noqa: E731
        back_hard = back
    else:
        to_work_image, to_work_strokes = (
            (lambda x: _resize_image(x, size)),
            (lambda x: resize_sketch(x, size)),
        )
        to_work_mask = to_work_image
        back = lambda x: _resize_image(x, (height, width))  # noqa: E731
        back_hard = lambda x: F.interpolate(x, size=(height, width), mode="nearest")  # noqa: E731

    work_image, work_sketch = to_work_image(image), to_work_strokes(sketch)
    if channels_last:
        work_image = work_image.contiguous(memory_format=torch.channels_last)
        work_sketch = work_sketch.contiguous(memory_format=torch.channels_last)
    if bf16 and image.device.type == "cpu" and not cpu_low_precision_is_fast(torch.bfloat16):
        warnings.warn(
            "bf16=True on a CPU without native bfloat16 support: the convolutions fall back to "
            "a slow reference path (about 100x slower than float32 measured on an AVX2 CPU)",
            RuntimeWarning,
            stacklevel=2,
        )
    autocast = (
        torch.autocast(device_type=image.device.type, dtype=torch.bfloat16)
        if bf16
        else contextlib.nullcontext()
    )
    with _flushing_denormals(flush_denormal), autocast, subpixel_upsampling(subpixel):
        if mask is None:
            work_soft = mask_estimator.predict_mask(work_image, work_sketch).float()
            check_finite_output("mask estimator", mask_estimator, soft_mask=work_soft)
        else:
            work_soft = to_work_mask(mask)
            if channels_last:
                work_soft = work_soft.contiguous(memory_format=torch.channels_last)
        work_hard = (work_soft > 0.5).to(work_image.dtype)
        try:
            coarse, fine = generator(work_image, work_sketch, work_hard, work_hard)
        except NonFiniteError as err:  # the inputs are finite (checked): the weights are not
            inside = f"NaN or infinite values inside ({err})"
            raise _non_finite("generator", generator, inside) from err
        check_finite_output("generator", generator, coarse=coarse, fine=fine)

    soft = mask.clamp(0, 1) if mask is not None else back(work_soft).clamp(0, 1)
    fine = back(fine.float()).contiguous()
    coarse = back(coarse.float()).contiguous()
    hard = back_hard(work_hard.float()).contiguous()
    soft = soft.contiguous()
    output = fine * soft + image * (1 - soft)  # the soft blend, at the input's resolution
    return InferenceOutput(output=output, soft_mask=soft, hard_mask=hard, coarse=coarse, fine=fine)
