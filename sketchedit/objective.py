"""The training objective of docs/method.md section 4: networks, stages and one training step.

One step (:func:`gan_step`) does, for a batch of synthetic edits (input x, target y, partial
sketch c, full edge map E(y), changed region D), three optimiser steps in this order:

1. :func:`mask_estimator_step`: ``m, rgb = M(x, c)`` and M's two L1 losses [code] (plus an
   optional BCE against D [ours]);
2. :func:`generator_input` draws what G is fed (the **mode lottery**, one draw per batch
   [code]: 0 joint inpainting of the target with a random hole, 1 mask-free with M's soft
   mask, 2 with its hard mask) and the **style region** (the mask with a second random hole,
   optionally filled from the next image, rotated / flipped [code]); G runs once:
   ``coarse, fine = G(image, sketch, mask, style_mask, style_image)``;
3. :func:`discriminator_step`: hinge loss on y against the composite
   ``fine*mask + known*(1-mask)`` [code];
4. :func:`generator_step`: hinge GAN x1 + VGG-19 perceptual x10 + full-image L1 of coarse and
   fine x1 each [code] (+ an optional L1 inside the mask [ours]), D frozen.

Every random choice of a step comes from a generator seeded by ``(seed, step)``
(:func:`step_randomness`), identical on every rank and in a resumed run. Adam with TTUR
(G 1e-4, D 4e-4, betas (0, 0.9)) [code] (:func:`make_optimizers`); staged training (mask /
coarse / fine / joint) [lineage] switches which parameters train (:func:`set_trainable`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sketchedit import losses as L
from sketchedit.nets.discriminator import composite
from sketchedit.presets import TrainConfig


def build_networks(cfg: TrainConfig) -> dict[str, nn.Module]:
    """Fresh ``{"M": MaskEstimator, "G": Generator, "D": Discriminator}`` (seeded by caller)."""
    from sketchedit.nets import Discriminator, Generator, MaskEstimator, init_weights

    nets = {
        "M": MaskEstimator(cnum=cfg.cnum),
        "G": Generator(cnum=cfg.cnum),
        "D": Discriminator(cnum=cfg.disc_cnum),
    }
    if cfg.init_gain != 0.02:  # [ours] see TrainConfig.init_gain
        init_weights(nets["M"], gain=cfg.init_gain)
        init_weights(nets["G"], gain=cfg.init_gain)
    return nets


#: Top-level sub-modules of the Generator that form its coarse stage (with the style encoder);
#: everything else is the refinement ("fine") stage. Read off ``sketchedit/nets/generator.py``.
COARSE_PREFIXES = ("coarse", "style_encoder")


def generator_stage_of(param_name: str) -> str:
    """``"coarse"`` or ``"fine"`` for a parameter name of the Generator."""
    top = param_name.split(".", 1)[0]
    return "coarse" if top.startswith(COARSE_PREFIXES) else "fine"


def set_trainable(nets: dict[str, nn.Module], stage: str, train_d: bool = True) -> dict[str, bool]:
    """Switch ``requires_grad`` for ``stage``; return which networks have trainable params.

    - mask:   M only (with its two losses);
    - coarse: the coarse generator and the style encoder;
    - fine:   the refinement generator (contextual-attention and dilated branches, decoder);
    - joint:  M, all of G; D trains in every stage except "mask" (and never when
      ``train_d`` is False, i.e. with the GAN term switched off).
    """
    train_m = stage in ("mask", "joint")
    for p in nets["M"].parameters():
        p.requires_grad_(train_m)
    for name, p in nets["G"].named_parameters():
        p.requires_grad_(stage == "joint" or generator_stage_of(name) == stage)
    for p in nets["D"].parameters():
        p.requires_grad_(stage != "mask" and train_d)
    return {k: any(p.requires_grad for p in net.parameters()) for k, net in nets.items()}


def stage_at(schedule: list[tuple[str, int]], step: int) -> str:
    """Stage of 0-based ``step`` in a schedule from :func:`parse_stage_schedule`."""
    for name, end in schedule:
        if step < end:
            return name
    return schedule[-1][0]


def make_optimizers(cfg: TrainConfig, nets: dict[str, nn.Module]) -> dict[str, torch.optim.Adam]:
    """Adam with TTUR: G ``lr_g``, D ``lr_d``, M ``lr_m``, betas ``(beta1, beta2)`` [code]."""
    betas = (cfg.beta1, cfg.beta2)
    return {
        "M": torch.optim.Adam(nets["M"].parameters(), lr=cfg.lr_m, betas=betas),
        "G": torch.optim.Adam(nets["G"].parameters(), lr=cfg.lr_g, betas=betas),
        "D": torch.optim.Adam(nets["D"].parameters(), lr=cfg.lr_d, betas=betas),
    }


# ------------------------------------------------------------------------------------------
# One training step: the randomness of the step, then M, D and G
# ------------------------------------------------------------------------------------------


@dataclass
class StepRandomness:
    """Every random choice of one step, identical on all ranks (seeded by (seed, step))."""

    mode: int
    hole: np.ndarray  # (H, W) {0,1}: joint-inpainting hole (mode 0)
    style_hole: np.ndarray  # (H, W) {0,1}: hole punched into the style region
    rot90: int  # style augmentation: quarter turns
    flip: bool  # style augmentation: horizontal flip


def step_randomness(cfg: TrainConfig, step: int, height: int, width: int) -> StepRandomness:
    """Draw the mode lottery, holes and style augmentation of ``step`` from ``(seed, step)``.

    Everything is always drawn in the same order, whatever the mode, so the stream of a step
    never depends on what earlier steps did.
    """
    from sketchedit.data.masks import random_hole

    rng = np.random.default_rng([cfg.seed, step, 0x51E])
    probs = np.asarray(cfg.mode_probs, dtype=np.float64)
    mode = int(rng.choice(3, p=probs / probs.sum()))
    hole = random_hole(height, width, rng)
    style_hole = random_hole(height, width, rng)
    rot90 = int(rng.integers(4))
    flip = bool(rng.integers(2))
    return StepRandomness(mode, hole, style_hole, rot90, flip)


def style_input(
    cfg: TrainConfig, x: torch.Tensor, mask: torch.Tensor, r: StepRandomness
) -> tuple[torch.Tensor, torch.Tensor]:
    """Style image and style mask for training [code].

    x ``(B, 3, H, W)``, mask ``(B, 1, H, W)``. With ``style_holes`` a second random hole is
    punched into the region: ``style_mask = mask * (1 - hole2)``. With
    ``style_hole_fill="other_image"`` the punched pixels are instead *replaced* by the same
    pixels of the next image in the batch (``torch.roll`` by one), and the mask stays whole,
    so the style encoder sees foreign content there. ``style_augment`` rotates / flips both
    (one transform per batch; quarter turns only on square inputs).
    """
    style_image, style_mask = x, mask
    if cfg.style_holes:
        hole2 = torch.from_numpy(r.style_hole).to(x)[None, None]
        if cfg.style_hole_fill == "other_image":
            other = torch.roll(x, shifts=1, dims=0)
            style_image = x * (1 - hole2) + other * hole2
        else:
            style_mask = mask * (1 - hole2)
    if cfg.style_augment:
        k = r.rot90 if x.shape[-1] == x.shape[-2] else 2 * (r.rot90 % 2)
        if k:
            style_image = torch.rot90(style_image, k, dims=(-2, -1))
            style_mask = torch.rot90(style_mask, k, dims=(-2, -1))
        if r.flip:
            style_image = torch.flip(style_image, dims=(-1,))
            style_mask = torch.flip(style_mask, dims=(-1,))
    return style_image, style_mask


@dataclass
class StepOutput:
    losses: dict[str, float]
    pictures: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class GeneratorInput:
    """What the generator and the discriminator get in one step (all ``(B, C, H, W)``)."""

    image: torch.Tensor  # (B, 3): the known image (x, or y in joint inpainting)
    sketch: torch.Tensor  # (B, 1): partial sketch (or the full edges inside the hole)
    mask: torch.Tensor  # (B, 1) in [0, 1]: the region to repaint
    condition: torch.Tensor  # (B, 3): D's image condition
    style_image: torch.Tensor  # (B, 3): the style encoder's input ...
    style_mask: torch.Tensor  # (B, 1): ... and its region


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """Switch off ``requires_grad`` of ``net`` for a while (D during the generator's step)."""
    old = {p: p.requires_grad for p in net.parameters()}
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in old.items():
            p.requires_grad_(flag)


def mask_estimator_step(
    cfg: TrainConfig,
    batch: dict[str, torch.Tensor],
    m_net: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: bool,
    autocast,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``m, rgb = M(x, c)``; when ``train``, one optimiser step of M on

    ``lambda_mask * (L1(rgb, y) + L1(rgb*m + x*(1-m), y))`` (:func:`losses.mask_estimator_losses`,
    on Gaussian-blurred images when ``mask_loss_blur``) [code] ``+ lambda_mask_bce *
    BCE(m, D)`` against the synthetic changed region D [ours] (see TrainConfig.lambda_mask_bce).

    M has no ground-truth mask in the paper: the second L1 is lowest when ``m`` covers exactly
    the pixels where x differs from y. M shares nothing with G or D, so its step can come
    first. Returns the detached soft mask ``(B, 1, H, W)`` (float32) and the logged losses.
    """
    x, y, c = batch["input"], batch["target"], batch["sketch"]
    out: dict[str, float] = {}
    with autocast(), torch.set_grad_enabled(train):
        soft_mask, rgb = m_net(x, c)
        if train:
            loss_rgb, loss_comp = L.mask_estimator_losses(
                rgb, soft_mask, x, y, blur=cfg.mask_loss_blur
            )
            loss = cfg.lambda_mask * (loss_rgb + loss_comp)
            out.update(m_rgb=loss_rgb.item(), m_composite=loss_comp.item())
    if train and cfg.lambda_mask_bce > 0:
        # BCE outside autocast (it is not autocast-safe).
        p = soft_mask.float().clamp(1e-6, 1 - 1e-6)
        loss_bce = F.binary_cross_entropy(p, batch["changed"].float())
        loss = loss + cfg.lambda_mask_bce * loss_bce
        out["m_bce"] = loss_bce.item()
    if train:
        loss.backward()
        optimizer.step()
    soft_mask = soft_mask.detach().float()
    out["mask_mean"] = soft_mask.mean().item()
    return soft_mask, out


def generator_input(
    cfg: TrainConfig, batch: dict[str, torch.Tensor], soft_mask: torch.Tensor, r: StepRandomness
) -> GeneratorInput:
    """The mode lottery [code] and the style region of one step.

    - mode 0, joint inpainting: the *target* y with the random hole cut out and the full
      edges E(y) inside it;
    - mode 1 / 2, mask-free: the input x, the partial sketch and M's detached soft mask,
      as it is (1) or thresholded at 0.5 (2).
    """
    x, y = batch["input"], batch["target"]
    b, _, h, w = x.shape
    if r.mode == 0:
        mask = torch.from_numpy(r.hole).to(x)[None, None].expand(b, 1, h, w)
        image, sketch = y, batch["edges"] * mask
        # [ours] D's condition is the generator's input with the hole blanked: y itself would
        # show D the answer inside the hole.
        condition = y * (1 - mask)
    else:
        mask = soft_mask if r.mode == 1 else (soft_mask > 0.5).to(x)
        image, sketch, condition = x, batch["sketch"], x
    style_image, style_mask = style_input(cfg, x, mask, r)
    return GeneratorInput(image, sketch, mask, condition, style_image, style_mask)


def discriminator_step(
    d_net: nn.Module,
    optimizer: torch.optim.Optimizer,
    real: torch.Tensor,
    fake: torch.Tensor,
    g_in: GeneratorInput,
    autocast,
) -> dict[str, float]:
    """One optimiser step of D on the hinge loss [code] (:func:`losses.hinge_d_loss`)

    ``mean(relu(1 - D(y))) + mean(relu(1 + D(composite)))``, D conditioned on the sketch and
    the condition image; real ``(B, 3, H, W)`` and the detached fake composite go through D
    as one batch.
    """
    with autocast():
        scores = d_net(
            torch.cat([real, fake.detach()]),
            torch.cat([g_in.sketch, g_in.sketch]),
            torch.cat([g_in.condition, g_in.condition]),
        )
        real_scores, fake_scores = scores.float().chunk(2)
        loss_d = L.hinge_d_loss(real_scores, fake_scores)
    loss_d.backward()
    optimizer.step()
    return {
        "d_loss": loss_d.item(),
        "d_real_score": real_scores.mean().item(),
        "d_fake_score": fake_scores.mean().item(),
    }


def generator_step(
    cfg: TrainConfig,
    stage: str,
    coarse: torch.Tensor,
    fine: torch.Tensor,
    comp: torch.Tensor,
    target: torch.Tensor,
    g_in: GeneratorInput,
    *,
    d_net: nn.Module,
    vgg: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    autocast,
) -> dict[str, float]:
    """One optimiser step of G on (all ``(B, 3, H, W)``; D, just updated, is frozen)

    - ``lambda_gan * hinge_g(D(composite))``                  [code] :func:`losses.hinge_g_loss`
    - ``lambda_l1_coarse * L1(coarse, y) + lambda_l1_fine * L1(fine, y)``, whole image [code]
      (:func:`losses.l1_reconstruction_losses`; no fine term in the "coarse" stage)
    - ``lambda_l1_hole * (L1 in the mask of coarse and of fine)`` [ours] :func:`losses.hole_l1_loss`
    - ``lambda_edge * (edge shortfall along the sketch)``     [ours] :func:`losses.sketch_edge_loss`
    - ``lambda_vgg * VGG(fine or composite, y)``              [code] perceptual loss

    In the "coarse" stage the coarse output plays the part of the fake everywhere.
    """
    y, mask = target, g_in.mask
    fake = coarse if stage == "coarse" else fine
    zero = torch.zeros((), device=y.device)
    with frozen(d_net), autocast():
        g_gan = zero
        if cfg.lambda_gan > 0:
            g_gan = L.hinge_g_loss(d_net(comp, g_in.sketch, g_in.condition).float())
        l1_coarse, l1_fine = L.l1_reconstruction_losses(coarse.float(), fine.float(), y)
        total = cfg.lambda_gan * g_gan + cfg.lambda_l1_coarse * l1_coarse
        if stage != "coarse":
            total = total + cfg.lambda_l1_fine * l1_fine
        l1_hole = zero
        if cfg.lambda_l1_hole > 0:  # [ours] see TrainConfig.lambda_l1_hole
            l1_hole = L.hole_l1_loss(coarse.float(), y, mask)
            if stage != "coarse":
                l1_hole = l1_hole + L.hole_l1_loss(fine.float(), y, mask)
            total = total + cfg.lambda_l1_hole * l1_hole
        g_edge = zero
        if cfg.lambda_edge > 0:  # [ours] see TrainConfig.lambda_edge
            g_edge = L.sketch_edge_loss(fake.float(), y, g_in.sketch)
            total = total + cfg.lambda_edge * g_edge
        g_vgg = zero
        if vgg is not None and cfg.lambda_vgg > 0:
            g_vgg = vgg((fake if cfg.vgg_target == "fine" else comp).float(), y).float()
            total = total + cfg.lambda_vgg * g_vgg
    total.backward()
    optimizer.step()
    out = {"g_gan": g_gan.item()} if cfg.lambda_gan > 0 else {}
    if cfg.lambda_l1_hole > 0:
        out["g_l1_hole"] = l1_hole.item()
    if cfg.lambda_edge > 0:
        out["g_edge"] = g_edge.item()
    out.update(
        g_vgg=g_vgg.item(),
        g_l1_coarse=l1_coarse.item(),
        g_l1_fine=l1_fine.item(),
        g_total=total.item(),
    )
    return out


def gan_step(
    cfg: TrainConfig,
    step: int,
    batch: dict[str, torch.Tensor],
    nets: dict[str, nn.Module],
    wrapped: dict[str, nn.Module],
    optims: dict[str, torch.optim.Optimizer],
    stage: str,
    vgg: nn.Module | None,
    autocast=None,
    keep_pictures: bool = False,
) -> StepOutput:
    """One training step: the mask estimator's, then the discriminator's, then the generator's.

    ``batch`` holds ``input`` x, ``target`` y, ``sketch`` c (``(B, 1, H, W)``), ``edges``
    E(y) and ``changed`` D. ``nets`` are the plain modules, ``wrapped`` the same modules or
    their DistributedDataParallel wrappers (used for every forward whose backward must be
    averaged across processes). ``stage`` decides who trains (see :func:`set_trainable`).
    Returns the loss values (floats) and, when ``keep_pictures``, the tensors of a sample grid.
    """
    autocast = autocast or contextlib.nullcontext
    x, y = batch["input"], batch["target"]
    r = step_randomness(cfg, step, x.shape[-2], x.shape[-1])
    train_m, train_g = stage in ("mask", "joint"), stage != "mask"
    for opt in optims.values():
        opt.zero_grad(set_to_none=True)
    losses = {"mode": float(r.mode) if train_g else float("nan")}

    m_net = wrapped["M"] if train_m else nets["M"]
    soft_mask, m_losses = mask_estimator_step(cfg, batch, m_net, optims["M"], train_m, autocast)
    losses.update(m_losses)
    if not train_g:
        pics = {"input": x, "sketch": batch["sketch"], "pred_mask": soft_mask, "target": y}
        return StepOutput(losses, pics if keep_pictures else {})

    g_in = generator_input(cfg, batch, soft_mask, r)
    with autocast():
        coarse, fine = wrapped["G"](
            g_in.image, g_in.sketch, g_in.mask, g_in.style_mask, g_in.style_image
        )
        # the composite fine*mask + known*(1-mask) is what D judges [code]
        comp = composite(coarse if stage == "coarse" else fine, g_in.image, g_in.mask)
    if cfg.lambda_gan > 0:  # lambda_gan = 0 switches the adversarial part off: no D step
        losses.update(discriminator_step(wrapped["D"], optims["D"], y, comp, g_in, autocast))
    losses.update(
        generator_step(
            cfg, stage, coarse, fine, comp, y, g_in,
            d_net=nets["D"], vgg=vgg, optimizer=optims["G"], autocast=autocast,
        )
    )  # fmt: skip
    pics = {}
    if keep_pictures:
        pics = {
            "input": x,
            "sketch": g_in.sketch,
            "pred_mask": soft_mask,
            "used_mask": g_in.mask,
            "coarse": coarse.detach().float(),
            "fine": fine.detach().float(),
            "composite": comp.detach().float(),
            "target": y,
        }
    return StepOutput(losses, pics)
