"""Contextual attention: fill the hole with patches borrowed from the known part of the image.

This is the parameter-free layer in the attention branch of the fine generator (docs/method.md
section 2, "Contextual attention"). It works on the branch's features ``f`` of shape
``(B, C, h, w)`` at 1/4 of the image resolution and is a *self*-attention: the keys, the values
and the queries are all 4x4 patches of the same map. [code]

The six steps, as the official generator computes them [code]:

1. normalise the features per channel over the whole map,
   ``k = f / sqrt(sum_{h,w} f^2 + 1e-8)`` (one norm per batch element and channel);
2. cut ``k`` into 4x4 *key* patches at stride 2 without padding:
   ``L = ((h - 4) // 2 + 1) * ((w - 4) // 2 + 1)`` patches (961 at a 256 px image, h = w = 64);
3. score every query position against every key patch: a stride-2 convolution of the **raw**
   features ``f`` with each key patch as kernel, so the query grid is the same ``hq x wq`` grid
   as the key grid, ``scores[b, l, i, j] = sum_{c,u,v} f[b, c, 2i+u, 2j+v] * k_l[b, c, u, v]``;
4. a key patch is *valid* when the mean of ``1 - hole`` over its 4x4 window is strictly greater
   than 0.1 (more than 10 % of its pixels are known); scores of invalid patches are
   **multiplied by 0**, not set to -inf, so they still take part in the softmax with score 0;
5. softmax over the ``L`` key patches of ``10 * score``;
6. reconstruct with a transposed convolution of the weights ``(B, L, hq, wq)`` with the **raw**
   4x4 patches of ``f`` as kernels, stride 2, no padding, output ``(h, w)``, *not* divided by the
   number of overlapping windows (each pixel is covered by up to 4 windows).

How this module computes it (same numbers, less memory): since queries and keys share one grid,
``F.unfold`` gives the raw patches ``P`` as a ``(B, C*16, L)`` matrix, the key patches ``K`` from
the normalised map likewise, and then

    scores  = K^T @ P                         (B, L, L)   step 3 as one batched matmul
    weights = softmax(10 * valid * scores)    over dim 1  steps 4-5
    columns = P @ weights                     (B, C*16, L) what each query window receives
    output  = fold(columns)                   (B, C, h, w) step 6: fold sums the overlaps,
                                                           which is the transposed convolution

The softmax runs over the keys, so the *query* positions can be processed in chunks exactly;
each chunk fills its slice of ``columns``, and one ``fold`` at the end sums everything. The
score tensor of a chunk is kept under :data:`SCORE_CHUNK_BYTES` (it is ``L^2`` floats per
sample unchunked: 1 GB at a 1024 px image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sketchedit.nets.blocks import NonFiniteError

__all__ = [
    "SCORE_CHUNK_BYTES",
    "ContextualAttention",
    "attention_weights",
    "auto_chunk_size",
    "contextual_attention",
    "patch_grid_shape",
    "patch_top_left",
    "valid_patches",
]

# [ours] Memory budget for the score tensor of one chunk of query positions, all samples of the
# batch together, counted in float32 (the softmax runs in float32). 256 MiB keeps a 512 px image
# in one chunk and splits a 1024 px image (1 GB of scores per sample) into about 4 chunks. The
# official code computes all scores at once; chunking over queries gives the same result.
# Peak memory of one call is about 2 x this budget (scores and their softmax) plus three
# (B, C*16, L) matrices (raw patches, key patches, output columns): measured 1.1 GiB at 1024 px,
# C = 96, against 2.2 GiB in one chunk (benchmarks/attention.py).
SCORE_CHUNK_BYTES = 256 * 2**20

# Epsilon inside the per-channel norm of step 1. [code]
NORM_EPS = 1e-8


def patch_grid_shape(h: int, w: int, *, patch_size: int = 4, stride: int = 2) -> tuple[int, int]:
    """Shape ``(hq, wq)`` of the patch grid of an ``(h, w)`` feature map.

    Keys and queries share this grid; the number of key patches is ``L = hq * wq``
    (31 x 31 = 961 for h = w = 64, i.e. a 256 px image).
    """
    if h < patch_size or w < patch_size:
        raise ValueError(f"feature map {h}x{w} is smaller than one {patch_size}x{patch_size} patch")
    return (h - patch_size) // stride + 1, (w - patch_size) // stride + 1


def patch_top_left(
    index: int, h: int, w: int, *, patch_size: int = 4, stride: int = 2
) -> tuple[int, int]:
    """Top-left corner ``(row, col)`` in the feature map of key patch (or query position) ``index``.

    Patches are numbered row-major over the ``(hq, wq)`` grid, the order of dimension ``L`` of
    :func:`attention_weights`. The feature map is at 1/4 resolution, so the patch covers image
    pixels ``[4*row, 4*row + 4*patch_size)`` x ``[4*col, 4*col + 4*patch_size)``.
    """
    hq, wq = patch_grid_shape(h, w, patch_size=patch_size, stride=stride)
    if not 0 <= index < hq * wq:
        raise ValueError(f"patch index {index} outside [0, {hq * wq}) for a {h}x{w} feature map")
    return (index // wq) * stride, (index % wq) * stride


def auto_chunk_size(batch: int, num_patches: int, num_queries: int) -> int:
    """Query positions per chunk so that a ``(batch, num_patches, chunk)`` float32 score tensor
    stays within :data:`SCORE_CHUNK_BYTES` (at least 1, at most ``num_queries``).

    Reads the module constant at call time, so it can be changed (or patched in tests).
    """
    per_query = batch * num_patches * 4  # bytes of one query column, float32
    return max(1, min(num_queries, SCORE_CHUNK_BYTES // per_query))


def _check_inputs(features: torch.Tensor, hole: torch.Tensor, patch_size: int, stride: int):
    """Raise a clear error for inputs the layer cannot handle (cheap checks only)."""
    if not isinstance(features, torch.Tensor) or not isinstance(hole, torch.Tensor):
        raise TypeError("features and hole must be torch.Tensor")
    if not features.is_floating_point() or not hole.is_floating_point():
        raise TypeError(
            f"features and hole must be floating point, got {features.dtype} and {hole.dtype}"
        )
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, h, w), got shape {tuple(features.shape)}")
    b, _, h, w = features.shape
    if b == 0:
        raise ValueError("features is an empty batch")
    if hole.dim() != 4 or hole.shape[1] != 1 or hole.shape[0] not in (1, b):
        raise ValueError(
            f"hole must be (B, 1, h, w) or (1, 1, h, w) with B = {b}, got {tuple(hole.shape)}"
        )
    if tuple(hole.shape[2:]) != (h, w):
        raise ValueError(
            f"hole is {tuple(hole.shape[2:])} but features are {(h, w)}: pass the mask pooled "
            "to the feature resolution (avg_pool2d(mask, 4, 4) for the 1/4-res branch)"
        )
    if hole.device != features.device:
        raise ValueError(f"hole is on {hole.device} but features are on {features.device}")
    if patch_size < 1 or stride < 1:
        raise ValueError(f"patch_size and stride must be >= 1, got {patch_size}, {stride}")
    if h < patch_size or w < patch_size:
        raise ValueError(f"feature map {h}x{w} is smaller than one {patch_size}x{patch_size} patch")
    if (h - patch_size) % stride or (w - patch_size) % stride:
        # With patch 4 / stride 2 this means odd h or w: the transposed convolution of step 6
        # would then return a map one pixel smaller than its input.
        raise ValueError(
            f"feature map {h}x{w}: (size - patch_size) must be divisible by stride "
            f"({patch_size}, {stride}); with the default 4/2 h and w must be even (image sides "
            "a multiple of 8)"
        )
    # One pass over inputs that are C*16*L times smaller than the work below: negligible.
    if not torch.isfinite(features).all():
        raise NonFiniteError("features contain NaN or inf")
    if not (hole.min() >= 0 and hole.max() <= 1):
        raise ValueError("hole must lie in [0, 1] (1 = hole)")


def valid_patches(
    hole: torch.Tensor, *, patch_size: int = 4, stride: int = 2, valid_threshold: float = 0.1
) -> torch.Tensor:
    """Step 4: which key patches may be borrowed from.

    Args:
        hole: ``(B, 1, h, w)`` in [0, 1], 1 = hole, at feature resolution.

    Returns:
        ``(B, L)`` float in {0, 1}: 1 where the mean of ``1 - hole`` over the patch window is
        strictly greater than ``valid_threshold``. [code]
    """
    known = F.avg_pool2d(1.0 - hole, patch_size, stride)  # (B, 1, hq, wq)
    return (known > valid_threshold).flatten(1).to(hole.dtype)


def _prepare(features, hole, patch_size, stride, valid_threshold):
    """Steps 1, 2 and 4: raw patches, key patches and the validity of each key patch.

    Returns:
        raw:   ``(B, C*k*k, L)`` raw 4x4 patches of ``features`` (values, and the query windows);
        keys:  ``(B, L, C*k*k)`` patches of the per-channel normalised map (keys);
        valid: ``(B, L, 1)`` in {0, 1}, in the dtype of the scores.
    """
    _check_inputs(features, hole, patch_size, stride)
    b = features.shape[0]
    # Step 1 in at least float32: the squared sum of a bf16 map would lose the small channels,
    # and 1e-8 is below bf16's resolution near 1.
    f32 = features.to(torch.promote_types(features.dtype, torch.float32))
    norm = torch.sqrt(f32.square().sum(dim=(2, 3), keepdim=True) + NORM_EPS)  # (B, C, 1, 1)
    normalised = (f32 / norm).to(features.dtype)
    raw = F.unfold(features, patch_size, stride=stride)  # (B, C*k*k, L)
    keys = F.unfold(normalised, patch_size, stride=stride).transpose(1, 2)  # (B, L, C*k*k)
    valid = valid_patches(
        hole.to(f32.dtype), patch_size=patch_size, stride=stride, valid_threshold=valid_threshold
    )
    return raw, keys, valid.expand(b, -1).unsqueeze(2)


def _weights_chunk(raw, keys, valid, start, stop, softmax_scale):
    """Steps 3-5 for query positions ``start:stop``: softmax weights ``(B, L, stop - start)``."""
    scores = torch.bmm(keys, raw[:, :, start:stop])  # (B, L, Q), step 3
    # Steps 4-5. Softmax in >= float32 (under bf16 autocast the matmul above runs in bf16).
    # Invalid patches are multiplied by 0, so they keep weight exp(0) / Z. [code]
    # In place: neither bmm nor this multiplication needs the scores for backward, and an
    # (B, L, Q) copy is the largest temporary of the layer.
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    scores.mul_(valid.to(scores.dtype) * softmax_scale)
    return torch.softmax(scores, dim=1)


def _resolve_chunk(chunk_size, batch, num_patches):
    if chunk_size is None:
        return auto_chunk_size(batch, num_patches, num_patches)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
    return min(chunk_size, num_patches)


def contextual_attention(
    features: torch.Tensor,
    hole: torch.Tensor,
    *,
    patch_size: int = 4,
    stride: int = 2,
    softmax_scale: float = 10.0,
    valid_threshold: float = 0.1,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Fill every position with a softmax-weighted sum of known patches (steps 1-6).

    Args:
        features: ``(B, C, h, w)`` float, the attention branch's features at 1/4 resolution;
            h and w even and >= 4 with the default patch 4 / stride 2.
        hole: ``(B, 1, h, w)`` (or ``(1, 1, h, w)``, shared by the batch) in [0, 1], 1 = hole:
            the full-resolution hole mask average-pooled to the feature resolution.
        patch_size, stride, softmax_scale, valid_threshold: the official values 4, 2, 10, 0.1.
        chunk_size: query positions per chunk; ``None`` picks one from
            :data:`SCORE_CHUNK_BYTES`. Any value gives the same result (up to float rounding).

    Returns:
        ``(B, C, h, w)`` in the dtype of the last matmul (the input dtype, or bf16 under
        autocast). Every position is rebuilt, inside and outside the hole, as in the official
        code; the caller's later layers decide what to keep.

    Memory: the inputs of each chunk stay alive for backward when gradients are tracked, so
    chunking bounds the peak memory of inference, not of training.
    """
    raw, keys, valid = _prepare(features, hole, patch_size, stride, valid_threshold)
    b, _, h, w = features.shape
    num_patches = raw.shape[2]  # L, also the number of query positions
    chunk = _resolve_chunk(chunk_size, b, num_patches)

    columns = None
    for start in range(0, num_patches, chunk):
        stop = min(start + chunk, num_patches)
        weights = _weights_chunk(raw, keys, valid, start, stop, softmax_scale)
        # Step 6, part 1: query q receives sum_l weights[l, q] * raw_patch_l in its window.
        part = torch.bmm(raw, weights.to(raw.dtype))  # (B, C*k*k, Q)
        if columns is None:
            # Allocated from the first chunk so it has the matmul's dtype (bf16 under autocast).
            columns = part.new_empty(b, part.shape[1], num_patches)
        columns[:, :, start:stop] = part
    # Step 6, part 2: fold sums overlapping windows = the un-normalised transposed convolution.
    return F.fold(columns, (h, w), patch_size, stride=stride)


def attention_weights(
    features: torch.Tensor,
    hole: torch.Tensor,
    *,
    patch_size: int = 4,
    stride: int = 2,
    softmax_scale: float = 10.0,
    valid_threshold: float = 0.1,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The softmax weights of step 5, for visualisation.

    Returns:
        ``(B, L, hq, wq)`` float (at least float32): ``weights[b, l, i, j]`` is how much query
        position ``(i, j)`` of the patch grid borrows from key patch ``l``; sums to 1 over ``l``.
        Use :func:`patch_top_left` to locate patch ``l`` (and query ``(i, j)`` is at feature
        pixel ``(stride*i, stride*j)``). The whole ``L x L`` tensor is returned, so this is meant
        for small maps (3.7 MB per sample at 256 px, 1 GB at 1024 px).
    """
    raw, keys, valid = _prepare(features, hole, patch_size, stride, valid_threshold)
    b, _, h, w = features.shape
    hq, wq = patch_grid_shape(h, w, patch_size=patch_size, stride=stride)
    num_patches = raw.shape[2]
    chunk = _resolve_chunk(chunk_size, b, num_patches)
    parts = [
        _weights_chunk(raw, keys, valid, start, min(start + chunk, num_patches), softmax_scale)
        for start in range(0, num_patches, chunk)
    ]
    return torch.cat(parts, dim=2).view(b, num_patches, hq, wq)


class ContextualAttention(nn.Module):
    """Parameter-free contextual attention layer of the fine generator's attention branch.

    ``forward(features (B, C, h, w), hole (B, 1, h, w) in [0, 1]) -> (B, C, h, w)``; see
    :func:`contextual_attention`. The hyper-parameters are plain attributes (official values as
    defaults). [code]
    """

    def __init__(
        self,
        patch_size: int = 4,
        stride: int = 2,
        softmax_scale: float = 10.0,
        valid_threshold: float = 0.1,
        chunk_size: int | None = None,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.stride = stride
        self.softmax_scale = softmax_scale
        self.valid_threshold = valid_threshold
        self.chunk_size = chunk_size

    def config(self) -> dict:
        """Constructor arguments: ``ContextualAttention(**layer.config())`` rebuilds the layer."""
        return {
            "patch_size": self.patch_size,
            "stride": self.stride,
            "softmax_scale": self.softmax_scale,
            "valid_threshold": self.valid_threshold,
            "chunk_size": self.chunk_size,
        }

    def forward(self, features: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return contextual_attention(features, hole, **self.config())

    def weights(self, features: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """Softmax weights ``(B, L, hq, wq)``; see :func:`attention_weights`."""
        return attention_weights(features, hole, **self.config())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())
