"""The one image loader and the tensor conventions of the whole package.

Every image that enters ``sketchedit`` passes through :func:`load_rgb` (files, PIL
images, numpy arrays) and becomes a ``(3, H, W)`` float tensor in ``[-1, 1]`` through
:func:`to_tensor`; the networks work in that range (docs/method.md section 1). Greyscale,
RGBA, palette, CMYK, 16-bit and EXIF-rotated inputs all become correct 8-bit RGB here,
so no other module has to think about image modes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

#: What RGBA pixels are composited onto before the alpha channel is dropped.
#: [ours] White, the usual "paper" a transparent sketch or photo is shown on.
ALPHA_BACKGROUND = (255, 255, 255)


def _sixteen_bit_to_eight(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit single-channel PIL image to 8 bits by its dtype range."""
    arr = np.asarray(img)
    if arr.dtype == np.uint16 or img.mode in ("I;16", "I;16B", "I;16L"):
        arr = (arr.astype(np.float64) / 65535.0 * 255.0).round()
    elif img.mode == "I":  # 32-bit ints; PNG 16-bit greyscale often lands here
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr = (arr.astype(np.float64) / top * 255.0).round()
    elif img.mode == "F":
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        arr = arr.astype(np.float64) / top * 255.0
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")


def pil_to_rgb(img: Image.Image) -> Image.Image:
    """Return ``img`` as an 8-bit RGB PIL image, whatever its mode.

    EXIF orientation is applied, alpha is composited onto :data:`ALPHA_BACKGROUND`,
    palette/CMYK/LAB/YCbCr are converted, 16-bit and float greyscale are rescaled.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        img = _sixteen_bit_to_eight(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def array_to_pil(arr: np.ndarray) -> Image.Image:
    """Convert an ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array to PIL.

    uint8 is taken as 0..255, uint16 as 0..65535, floats as 0..1 (values are clipped).
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(
            f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}"
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 65535.0 * 255.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("image array contains NaN or infinite values")
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def tensor_to_rgb(tensor: torch.Tensor) -> Image.Image:
    """``(3, H, W)``, ``(1, 3, H, W)`` or ``(1, H, W)`` tensor in ``[-1, 1]`` -> 8-bit RGB PIL.

    Values are mapped to the 8-bit grid exactly as :func:`to_pil` does, so
    ``tensor_to_rgb(to_tensor(img))`` gives back ``img``'s pixels. Values outside ``[-1, 1]``
    (beyond float rounding) and NaN raise ``ValueError`` rather than being clipped silently.
    """
    t = tensor.detach().float().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(
            f"an image tensor must be (3, H, W), (1, 3, H, W) or (1, H, W) in [-1, 1], "
            f"got shape {tuple(tensor.shape)}"
        )
    if not torch.isfinite(t).all():
        raise ValueError("image tensor contains NaN or infinite values")
    low, high = t.min().item(), t.max().item()
    if low < -1.001 or high > 1.001:
        raise ValueError(
            f"image tensors are expected in [-1, 1], got values in [{low:.3g}, {high:.3g}]"
        )
    return to_pil(t).convert("RGB")


def load_rgb(image: ImageLike) -> Image.Image:
    """Open a path, PIL image, numpy array or ``[-1, 1]`` tensor as an 8-bit RGB PIL image.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` (naming the file) for a
    file PIL cannot decode, including truncated/corrupt JPEGs, and ``TypeError`` for anything
    that is not an image.
    """
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        return pil_to_rgb(array_to_pil(image))
    if isinstance(image, torch.Tensor):
        return tensor_to_rgb(image)
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(
            "image must be a path, a PIL image, a numpy array or a tensor, "
            f"got {type(image).__name__}"
        )
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now: a corrupt file fails here, not later
            return pil_to_rgb(img)
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises all three for bad files
        raise ValueError(f"cannot read image {path}: {err}") from err


def to_tensor(image: ImageLike) -> torch.Tensor:
    """Image -> ``(3, H, W)`` float32 tensor in ``[-1, 1]``."""
    arr = np.asarray(load_rgb(image), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` or ``(1, H, W)`` tensor in ``[-1, 1]`` -> PIL image (RGB or L).

    Also accepts a batch of one ``(1, C, H, W)``.
    """
    t = tensor.detach().float().cpu()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_pil takes one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected (3, H, W) or (1, H, W), got {tuple(tensor.shape)}")
    arr = ((t.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


def to_numpy01(tensor: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in ``[-1, 1]`` -> ``(H, W, 3)`` float array in ``[0, 1]`` (plots)."""
    t = tensor.detach().float().cpu()
    if t.ndim == 4:
        t = t[0]
    return ((t.clamp(-1, 1) + 1.0) / 2.0).permute(1, 2, 0).numpy()
