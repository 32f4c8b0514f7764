"""The one place inputs are read: photos, sketches and masks, and the tensor conventions.

Every photo that enters ``sketchedit`` passes through :func:`load_rgb` (files, PIL images,
numpy arrays, tensors) and becomes a ``(3, H, W)`` float tensor in ``[-1, 1]`` through
:func:`to_tensor`; the networks work in that range (docs/method.md section 1). Sketches go through
:func:`as_sketch`, masks through :func:`as_mask`. Each input type has ONE convention, stated
below; a value outside it is a ``ValueError`` that names the input and the convention, never a
guess from the values. [ours] (The paper and the official code take tensors only.)

Conventions
-----------
Photos (:func:`load_rgb`)
    - files: anything Pillow opens; EXIF orientation applied, then as the PIL mode below.
    - PIL 8-bit modes ("1", "L", "P", "RGB", "CMYK", "YCbCr", ...): as Pillow converts them;
      alpha ("RGBA", "LA", "PA") is composited onto :data:`ALPHA_BACKGROUND`.
    - PIL "I;16*" (16-bit PNG, TIFF): 0..65535. PIL "I" (32-bit int; Pillow also opens 16-bit
      PGM/PPM this way, already scaled to 0..65535): read as 0..65535, values outside it are an
      error. PIL "F" (32-bit float): must lie in ``[0, 1]``; NaN is an error.
    - numpy arrays ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)``, ``(H, W, 4)`` (HWC): bool;
      uint8 0..255; uint16 0..65535; other integer types 0..255; floats in ``[0, 1]``.
      A float array outside ``[0, 1]`` is an error that says what it looks like
      (0..255: divide by 255 or pass uint8; ``[-1, 1]``: pass ``(x + 1) / 2``).
    - torch tensors ``(3, H, W)``, ``(1, 3, H, W)`` or ``(1, H, W)`` (CHW): float in
      ``[-1, 1]``, the package's convention (what :func:`to_tensor` returns). A tensor outside
      ``[-1, 1]`` is an error. A tensor entirely in ``[0, 1]`` (and not all zero) is ambiguous
      (it may be torchvision's ``[0, 1]`` convention): it is read as ``[-1, 1]`` as documented,
      with a ``UserWarning``; convert a ``[0, 1]`` tensor with :func:`from_unit_range` first.
      Integer tensors are an error (``torchvision.io.read_image`` gives uint8: pass
      ``t.float() / 127.5 - 1``).

Sketches (:func:`as_sketch`, 1 = stroke) and masks (:func:`as_mask`, 1 = may change)
    Both are single-channel: ``(H, W)``, ``(H, W, 1)``, ``(1, H, W)`` or ``(1, 1, H, W)``
    arrays/tensors, or PIL images. Each value is first read as a fraction of its type's full
    scale (:func:`read_plane`):

    - bool: as is; floats: must lie in ``[0, 1]``;
    - integer data whose maximum is 1 (uint8, PIL "L" ...): ``{0, 1}``, 1 = on;
    - otherwise uint8 / other integers / PIL 8-bit modes: ``/ 255`` (ints outside 0..255 are an
      error); uint16 / PIL "I;16" / "I": ``/ 65535``; PIL "F": must lie in ``[0, 1]``;
    - PIL modes with alpha ("RGBA", "LA", "PA", "P" with transparency): the **alpha channel**
      (strokes or a region on a transparent layer; colour is irrelevant). An image whose alpha
      is opaque everywhere has no drawing in its alpha, so its colours are read instead.
    - PIL "1" and "L": the grey value; colour modes ("RGB", "P", "CMYK" ...): the brightest
      channel (a red stroke on black counts like a white one).

    A **sketch** pixel is a stroke when that fraction is **above one half**: float ``> 0.5``,
    uint8 and 8-bit PIL ``>= 128``, uint16 ``>= 32768`` (so antialiasing halos and JPEG
    noise are not strokes). A **mask** keeps the fraction as its soft value.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
ArrayLike = np.ndarray | torch.Tensor | Image.Image

#: What RGBA pixels are composited onto before the alpha channel is dropped.
#: [ours] White, the usual "paper" a transparent sketch or photo is shown on.
ALPHA_BACKGROUND = (255, 255, 255)

#: Float inputs may overshoot their range by this much (float rounding) and are clipped.
RANGE_TOLERANCE = 1e-3

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


# --------------------------------------------------------------------------------------------
# Value-range rules shared by photos, sketches and masks.
# --------------------------------------------------------------------------------------------
def _range_hint(low: float, high: float) -> str:
    """What a float input outside ``[0, 1]`` looks like, and what to do about it."""
    if low >= 0 and 2 < high <= 255:
        return " (looks like 0..255: divide by 255 or pass a uint8 array)"
    if low >= -1 and high <= 1:
        return " (looks like [-1, 1]: pass (x + 1) / 2)"
    if low >= 0 and high <= 65535:
        return " (looks like 0..65535: divide by 65535 or pass a uint16 array)"
    return ""


def check_unit_range(arr: np.ndarray, what: str) -> np.ndarray:
    """Float array that must lie in ``[0, 1]`` -> float32 copy clipped to it; else ValueError.

    NaN/inf are an error; an overshoot up to :data:`RANGE_TOLERANCE` is float rounding.
    """
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    if arr.size:
        low, high = float(arr.min()), float(arr.max())
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise ValueError(
                f"{what}: float values must lie in [0, 1], got values in "
                f"[{low:.4g}, {high:.4g}]{_range_hint(low, high)}"
            )
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def _integer_fraction(arr: np.ndarray, what: str, *, binary_if_max_1: bool) -> np.ndarray:
    """Integer array -> float32 fraction of full scale (uint16: 65535, others: 255)."""
    full = 65535 if arr.dtype == np.uint16 else 255
    low, high = int(arr.min(initial=0)), int(arr.max(initial=0))
    if low < 0 or high > full:
        raise ValueError(
            f"{what}: {arr.dtype} values must lie in 0..{full}, got values in [{low}, {high}]"
            + ("" if full == 65535 else " (pass uint16 for 16-bit data)")
        )
    if binary_if_max_1 and high == 1:
        return arr.astype(np.float32)  # a {0, 1} label image
    return (arr.astype(np.float64) / full).astype(np.float32)


def _deep_pil_values(img: Image.Image, what: str) -> np.ndarray:
    """PIL "I;16*" -> uint16, "I" -> uint16 (checked 0..65535), "F" -> float32 (checked)."""
    arr = np.asarray(img)
    if img.mode == "F":
        return check_unit_range(arr, f"{what} (PIL mode 'F')")
    if img.mode == "I":
        low, high = int(arr.min(initial=0)), int(arr.max(initial=0))
        if low < 0 or high > 65535:
            raise ValueError(
                f"{what}: a 32-bit integer image (PIL mode 'I') is read as 16-bit 0..65535, "
                f"got values in [{low}, {high}]: rescale it to 0..65535 (or 8 bits) first"
            )
    return arr.astype(np.uint16)


def _eight_bit(fraction: np.ndarray) -> np.ndarray:
    """Fraction of full scale in ``[0, 1]`` -> uint8, rounded to the nearest level."""
    return np.round(fraction.astype(np.float64) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Photos.
# --------------------------------------------------------------------------------------------
def pil_to_rgb(img: Image.Image, what: str = "image") -> Image.Image:
    """Return ``img`` as an 8-bit RGB PIL image, by the rule of its mode (module docstring).

    EXIF orientation is applied, alpha is composited onto :data:`ALPHA_BACKGROUND`,
    palette/CMYK/LAB/YCbCr are converted, 16-bit, 32-bit and float greyscale are rescaled.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in _DEEP_MODES:
        values = _deep_pil_values(img, what)
        if values.dtype == np.uint16:
            values = _integer_fraction(values, what, binary_if_max_1=False)
        img = Image.fromarray(_eight_bit(values), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def array_to_pil(arr: np.ndarray, what: str = "image array") -> Image.Image:
    """Convert an ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array to PIL.

    bool, uint8 0..255, uint16 0..65535, other integers 0..255, floats in ``[0, 1]``; values
    outside their convention are a ValueError (see the module docstring).
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        chw = arr.ndim == 3 and arr.shape[0] in (1, 3, 4)
        raise ValueError(
            f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}"
            + (" (numpy images are HWC: pass arr.transpose(1, 2, 0))" if chw else "")
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        arr = _eight_bit(check_unit_range(arr, what))
    elif np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        arr = _eight_bit(_integer_fraction(arr, what, binary_if_max_1=False))
    elif arr.dtype != np.uint8:
        raise TypeError(f"{what}: unsupported dtype {arr.dtype}")
    return Image.fromarray(arr)


def _image_planes(tensor: torch.Tensor, what: str = "image tensor") -> torch.Tensor:
    """``(3, H, W)``, ``(1, 3, H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)`` -> finite ``(C, H, W)``
    float32 on the CPU (the shape and NaN checks of every tensor-to-picture conversion)."""
    t = tensor.detach().float().cpu()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(
                f"{what}: one image expected, got a batch of {t.shape[0]} "
                f"(shape {tuple(tensor.shape)})"
            )
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(
            f"{what} must be (3, H, W), (1, 3, H, W) or (1, H, W) in [-1, 1], "
            f"got shape {tuple(tensor.shape)}"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return t


def tensor_to_rgb(tensor: torch.Tensor) -> Image.Image:
    """``(3, H, W)``, ``(1, 3, H, W)`` or ``(1, H, W)`` tensor in ``[-1, 1]`` -> 8-bit RGB PIL.

    Values are mapped to the 8-bit grid exactly as :func:`to_pil` does, so
    ``tensor_to_rgb(to_tensor(img))`` gives back ``img``'s pixels. Integer tensors, values
    outside ``[-1, 1]`` (beyond float rounding) and NaN raise ``ValueError`` rather than being
    clipped silently.
    """
    if not (tensor.is_floating_point()):
        raise ValueError(
            f"image tensors must be float in [-1, 1], got dtype {tensor.dtype} (for a uint8 "
            f"tensor such as torchvision.io.read_image gives, pass t.float() / 127.5 - 1)"
        )
    t = _image_planes(tensor)
    low, high = t.min().item(), t.max().item()
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"image tensors are expected in [-1, 1], got values in [{low:.3g}, {high:.3g}]"
        )
    return to_pil(t).convert("RGB")


def from_unit_range(tensor: torch.Tensor) -> torch.Tensor:
    """A ``[0, 1]`` image tensor (torchvision's ``ToTensor`` convention) -> ``[-1, 1]``.

    The explicit way in for such tensors: :func:`load_rgb` cannot tell ``[0, 1]`` from a bright
    ``[-1, 1]`` image and always reads tensors as ``[-1, 1]``.
    """
    if not tensor.is_floating_point():
        raise ValueError(f"from_unit_range takes a float tensor, got {tensor.dtype}")
    low, high = tensor.min().item(), tensor.max().item()
    if not (low >= -RANGE_TOLERANCE and high <= 1 + RANGE_TOLERANCE):  # also catches NaN
        raise ValueError(f"from_unit_range expects values in [0, 1], got [{low:.3g}, {high:.3g}]")
    return tensor.clamp(0, 1) * 2.0 - 1.0


def _warn_if_ambiguous(tensor: torch.Tensor) -> None:
    """Warn when a float tensor lies entirely in [0, 1] (maybe torchvision's convention);
    an all-zero (uniform mid-grey) tensor is left alone."""
    if tensor.is_floating_point() and tensor.numel() and tensor.min().item() >= 0.0 < tensor.max():
        warnings.warn(
            f"an image tensor of shape {tuple(tensor.shape)} has no value below 0: it is read "
            f"in the package's [-1, 1] convention (0 = mid-grey). If it is a [0, 1] tensor "
            f"(torchvision's ToTensor), pass sketchedit.images.from_unit_range(t) instead.",
            UserWarning,
            stacklevel=3,
        )


def _open_file(path: Path) -> Image.Image:
    """Decode the image file at ``path`` to 8-bit RGB; clear errors naming the file."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now: a corrupt file fails here, not later
            return pil_to_rgb(img, what=f"image {path}")
    except Image.DecompressionBombError as err:
        raise ValueError(
            f"cannot read image {path}: it is too large for Pillow's safety limit ({err})"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises all three for bad files
        raise ValueError(f"cannot read image {path}: {err}") from err


def load_rgb(image: ImageLike) -> Image.Image:
    """Open a path, PIL image, numpy array or ``[-1, 1]`` tensor as an 8-bit RGB PIL image.

    See the module docstring for each type's convention. Raises ``FileNotFoundError`` for a
    missing file, ``IsADirectoryError`` for a folder, ``ValueError`` (naming the file) for a
    file PIL cannot decode or refuses as too large, including truncated/corrupt JPEGs,
    ``ValueError`` for values outside their convention, and ``TypeError`` for anything that is
    not an image.
    """
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        return pil_to_rgb(array_to_pil(image))
    if isinstance(image, torch.Tensor):
        rgb = tensor_to_rgb(image)
        _warn_if_ambiguous(image)
        return rgb
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(
            "image must be a path, a PIL image, a numpy array or a tensor, "
            f"got {type(image).__name__}"
        )
    return _open_file(Path(image))


def to_tensor(image: ImageLike) -> torch.Tensor:
    """Image -> ``(3, H, W)`` float32 tensor in ``[-1, 1]``."""
    arr = np.asarray(load_rgb(image), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


# --------------------------------------------------------------------------------------------
# Tensors back to pictures: the package's one converter (and its float twin for plots).
# --------------------------------------------------------------------------------------------
def to_pil(tensor: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` or ``(1, H, W)`` tensor in ``[-1, 1]`` -> PIL image (RGB or L).

    Also accepts a batch of one ``(1, C, H, W)``. Network outputs may overshoot ``[-1, 1]``
    slightly and are clamped; NaN/inf raise ``ValueError`` (a black picture would hide them).
    """
    t = _image_planes(tensor, "tensor to convert to a picture")
    arr = ((t.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


def to_numpy01(tensor: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in ``[-1, 1]`` -> ``(H, W, 3)`` float array in ``[0, 1]`` (plots)."""
    t = _image_planes(tensor, "tensor to convert to a picture")
    return ((t.clamp(-1, 1) + 1.0) / 2.0).permute(1, 2, 0).numpy()


def mask_to_numpy(mask: torch.Tensor) -> np.ndarray:
    """``(1, 1, H, W)`` or ``(H, W)`` mask tensor in ``[0, 1]`` -> ``(H, W)`` float32 array.

    NaN/inf raise ``ValueError`` (numpy would cast them to garbage with only a warning).
    """
    m = mask.detach().float().cpu()
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"expected a (1, 1, H, W) or (H, W) mask, got {tuple(mask.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("mask tensor contains NaN or infinite values")
    return m.numpy().clip(0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Sketches and masks.
# --------------------------------------------------------------------------------------------
def _to_2d_array(x: ArrayLike, what: str) -> np.ndarray:
    """Tensor/array of shape (H, W), (H, W, 1), (1, H, W) or (1, 1, H, W) -> (H, W) array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{what} must be a PIL image, a numpy array or a tensor, got {type(x).__name__}"
        )
    arr = x
    while arr.ndim > 2 and arr.shape[0] == 1:  # (1, H, W), (1, 1, H, W)
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[2] == 1:  # (H, W, 1)
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(
            f"{what} must be single-channel: (H, W), (H, W, 1), (1, H, W) or (1, 1, H, W); "
            f"got shape {x.shape} (pass an RGB/RGBA drawing as a PIL image instead)"
        )
    return arr


def _pil_plane(img: Image.Image, what: str) -> np.ndarray:
    """The one channel a PIL sketch/mask is read from (module docstring), in its own dtype."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        alpha = np.asarray(img.getchannel("A"))
        if (alpha < 255).any():
            return alpha
        img = img.convert("RGB")  # opaque everywhere: the drawing is in the colours
    if img.mode in _DEEP_MODES:
        return _deep_pil_values(img, what)
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"))
    # Colour: the brightest channel, so a red or blue stroke counts like a white one (the
    # luminance of pure red is 76 of 255, which would drop it below the stroke threshold).
    return np.asarray(img.convert("RGB")).max(axis=2)


def read_plane(x: ArrayLike, what: str) -> np.ndarray:
    """Any supported sketch or mask -> ``(H, W)`` float32 fraction of full scale in ``[0, 1]``.

    The shared first step of :func:`as_sketch` and :func:`as_mask` (rules in the module
    docstring); ``what`` names the input in errors.
    """
    arr = _pil_plane(x, what) if isinstance(x, Image.Image) else _to_2d_array(x, what)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        return check_unit_range(arr, what)
    if np.issubdtype(arr.dtype, np.integer):
        return _integer_fraction(arr, what, binary_if_max_1=True)
    raise TypeError(f"unsupported {what} dtype {arr.dtype}")


def as_sketch(sketch: ArrayLike, what: str = "sketch") -> np.ndarray:
    """Any supported sketch -> ``(H, W)`` float32 array in ``{0, 1}``, 1 = stroke.

    A stroke is a value above half of its type's full scale (module docstring).
    """
    return (read_plane(sketch, what) > 0.5).astype(np.float32)


def as_mask(mask: ArrayLike, what: str = "mask") -> np.ndarray:
    """Any supported mask -> ``(H, W)`` float32 array in ``[0, 1]`` (soft values kept)."""
    return read_plane(mask, what)


def check_size(name: str, arr: np.ndarray, like: Image.Image | np.ndarray) -> None:
    """Raise a ValueError naming both sizes when ``(H, W)`` array ``arr`` does not match
    ``like`` (the PIL image, or the ``(H, W)`` array, it belongs to)."""
    h, w = arr.shape[:2]
    ref_w, ref_h = like.size if isinstance(like, Image.Image) else (like.shape[1], like.shape[0])
    if (w, h) != (ref_w, ref_h):
        raise ValueError(
            f"{name} size {w}x{h} (W x H) does not match the image size {ref_w}x{ref_h} (W x H)"
        )
