"""Training SketchEdit: the objective of method.md section 4, on CPU, GPU or several processes.

One training step (:func:`gan_step`) does, for a batch of synthetic edits (input x, target y,
partial sketch c, full edge map E(y)):

1. **Mask estimator** ``m, rgb = M(x, c)`` and its two L1 losses ``L1(rgb, y)`` and
   ``L1(rgb*m + x*(1-m), y)`` [code]. M has no ground-truth mask: the second loss is lowest
   when ``m`` covers exactly the pixels where x differs from y.
2. **Mode lottery** (one draw per batch) [code]:

   - 0 joint inpainting: a random hole H; the generator's coarse stage gets the *target* y
     with H cut out and the full edges E(y) inside H (the official code does this; the style
     encoder still gets the input x);
   - 1 mask-free, soft: the generator gets x, c and the detached soft mask ``m``;
   - 2 mask-free, hard: the same with ``m > 0.5``.
3. **Style region** [code]: the used mask with a second random hole punched in it, so the
   style encoder never sees the whole region it has to repaint; optionally the hole is filled
   with pixels of the next image in the batch and the style input is rotated/flipped (later
   official demo models), so the style vector cannot carry structure.
4. **Generator** ``coarse, fine = G(image, sketch, mask, style_mask, style_image)``; the
   *composite* ``fine*mask + known*(1-mask)`` is what the discriminator judges [code].
5. **Discriminator step first** (hinge loss, D conditioned on the sketch and the input image),
   then the **generator step**: hinge GAN x1 + VGG-19 perceptual x10 + full-image L1 on
   coarse and fine x1 each, plus the mask estimator's losses x ``lambda_mask`` [code].

Adam with TTUR (G 1e-4, D 4e-4, betas (0, 0.9)) [code]. Staged training (mask / coarse / fine
/ joint) [lineage] is a configuration value (``stage="mask:600,joint"``).

Reproducibility: every random choice of a step (mode, holes, style augmentation) comes from a
generator seeded by ``(seed, step)``, and the data order is a pure function of
``(seed, step)`` too (:class:`StepSampler`), so the same seed gives the same run on every
rank of a distributed job, and a resumed run continues exactly where the interrupted one was.

Checkpoints are single ``.safetensors`` files (no pickle): networks, optimiser states, RNG
states and the step as tensors, everything else as JSON in the file's metadata.

Command line::

    python -m sketchedit.train --preset tiny --steps 50 --set lr_g=2e-4 --out-dir runs/t
    python -m sketchedit.train --resume runs/t --steps 100
    python -m torch.distributed.run --nproc_per_node=2 -m sketchedit.train --preset tiny
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import random
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sketchedit.fileio import atomic_path
from sketchedit.presets import (
    PRESETS,
    TrainConfig,
    get_config,
    parse_assignment,
    parse_stage_schedule,
    validate_config,
)

#: Format tag of training checkpoints (safetensors metadata key ``sketchedit_train``).
TRAIN_CKPT_FORMAT = "sketchedit-train-checkpoint"
TRAIN_CKPT_VERSION = 1
LATEST = "ckpt_latest.safetensors"
#: Test hook: seconds to sleep inside the atomic checkpoint write (after the temporary file
#: is complete, before it replaces the old one), so a test can kill the process mid-write.
_WRITE_DELAY_ENV = "SKETCHEDIT_TEST_CKPT_WRITE_DELAY"

LOG_COLUMNS = (
    "step",
    "stage",
    "mode",
    "d_loss",
    "d_real_score",
    "d_fake_score",
    "g_gan",
    "g_vgg",
    "g_l1_coarse",
    "g_l1_fine",
    "g_l1_hole",
    "g_total",
    "m_rgb",
    "m_composite",
    "m_bce",
    "mask_mean",
    "sec_per_step",
)


# ------------------------------------------------------------------------------------------
# Distributed helpers (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK)
# ------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _dist_info_from_env() -> DistInfo:
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def _resolve_device(cfg: TrainConfig, dist_info: DistInfo) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch.cuda.is_available() is False; use cpu")
        return torch.device("cuda", dist_info.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------
# Data: a step-indexed sampler, so the data stream is a pure function of (seed, step)
# ------------------------------------------------------------------------------------------


class StepSampler(torch.utils.data.Sampler):
    """Indices for steps ``start_step .. end_step - 1`` of one rank, in order.

    The *global* batch of step ``s`` (``batch_size * world_size`` indices) is slice
    ``s % per_epoch`` of the permutation of epoch ``s // per_epoch``, drawn from a generator
    seeded by ``(seed, epoch)``; rank ``r`` takes the ``r``-th part of it (so ranks see
    different data, like ``DistributedSampler``). Incomplete global batches are dropped.
    Because step ``s`` always gets the same indices, resuming at step ``s`` needs no skipping.
    """

    def __init__(
        self, num_samples, batch_size, *, seed=0, rank=0, world_size=1, start_step=0, end_step=1
    ):
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.global_batch = self.batch_size * int(world_size)
        if self.global_batch > self.num_samples:
            raise ValueError(
                f"batch_size {batch_size} x {world_size} process(es) = {self.global_batch} is "
                f"larger than the data set ({self.num_samples} samples) and incomplete batches "
                f"are dropped; lower batch_size or add photos / samples_per_photo"
            )
        self.per_epoch = self.num_samples // self.global_batch
        self.seed, self.rank = int(seed), int(rank)
        self.start_step, self.end_step = int(start_step), int(end_step)
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 0x5A3])
            self._perm_cache = (epoch, rng.permutation(self.num_samples))
        return self._perm_cache[1]

    def indices_for_step(self, step: int) -> list[int]:
        """This rank's indices of ``step``, as *epoch-tagged* indices ``epoch * N + i``."""
        epoch, within = divmod(step, self.per_epoch)
        perm = self._permutation(epoch)
        start = within * self.global_batch + self.rank * self.batch_size
        return (perm[start : start + self.batch_size] + epoch * self.num_samples).tolist()

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.end_step):
            yield from self.indices_for_step(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step) * self.batch_size


class EpochTaggedDataset(torch.utils.data.Dataset):
    """Reads epoch-tagged indices ``epoch * N + i`` (from :class:`StepSampler`) as sample ``i``
    of ``epoch``: each epoch draws new crops, warps and holes, and a sample is a function of
    ``(seed, epoch, i)`` alone, whichever worker process loads it.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.n = len(dataset)

    def __len__(self) -> int:
        return self.n * 2**31  # effectively endless; the sampler decides what is read

    def __getitem__(self, index: int):
        epoch, i = divmod(int(index), self.n)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[i]


def list_photos(cfg: TrainConfig):
    """All photos of ``cfg.data_source`` (before the train/held-out split)."""
    from sketchedit.data import photos as photos_mod

    if cfg.data_source == "bundled":
        photos = photos_mod.bundled_photos(include_optional=cfg.include_optional_photos)
        where = "the bundled offline photo pool"
    else:
        root = Path(cfg.data_source).expanduser()
        if not root.is_dir():
            raise ValueError(f"data_source {cfg.data_source!r} is neither 'bundled' nor a folder")
        photos = photos_mod.folder_photos(root)
        where = f"folder {str(root)!r}"
    if not photos:
        raise ValueError(f"data_source: no images found in {where}")
    return photos


def training_photos(cfg: TrainConfig):
    """The train split of the photos (the held-out part is for :mod:`sketchedit.evaluate`)."""
    from sketchedit.data.photos import split_photos

    photos = list_photos(cfg)
    train, _ = split_photos(photos, heldout_fraction=cfg.heldout_fraction, seed=cfg.split_seed)
    if not train:
        raise ValueError(
            f"no training photos left after holding out {cfg.heldout_fraction:.0%} of "
            f"{len(photos)} photo(s); lower heldout_fraction or add photos"
        )
    return train


def build_dataset(cfg: TrainConfig, photos, seed: int | None = None):
    """The synthetic-edit data set of ``photos`` at ``cfg.image_size``."""
    from sketchedit.data.dataset import SketchEditDataset

    return SketchEditDataset(
        photos,
        size=cfg.image_size,
        samples_per_photo=cfg.samples_per_photo,
        edge_method=cfg.edge_method,
        seed=cfg.seed if seed is None else seed,
    )


def training_dataset(cfg: TrainConfig, world_size: int = 1):
    """The synthetic-edit data set of the train split, checked against the global batch."""
    photos = training_photos(cfg)
    dataset = build_dataset(cfg, photos)
    if len(dataset) < cfg.batch_size * world_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} x {world_size} process(es) is larger than "
            f"the data set ({len(dataset)} samples from {len(photos)} photos) and incomplete "
            f"batches are dropped; lower batch_size or raise samples_per_photo"
        )
    return dataset


def step_loader(cfg: TrainConfig, dataset, dist_info, start_step: int, device: torch.device):
    """A DataLoader of this rank's batches for steps ``start_step .. cfg.steps - 1``."""
    sampler = StepSampler(
        len(dataset),
        cfg.batch_size,
        seed=cfg.seed,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        start_step=start_step,
        end_step=cfg.steps,
    )
    return torch.utils.data.DataLoader(
        EpochTaggedDataset(dataset),
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        # A private generator: creating the iterator must not consume the global RNG.
        generator=torch.Generator().manual_seed(cfg.seed),
    )


# ------------------------------------------------------------------------------------------
# Networks and which parameters each stage trains
# ------------------------------------------------------------------------------------------


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
# One GAN step
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


def _set_requires_grad(net: nn.Module, flag: bool) -> dict[nn.Parameter, bool]:
    old = {p: p.requires_grad for p in net.parameters()}
    for p in net.parameters():
        p.requires_grad_(flag)
    return old


def gan_step(
    cfg: TrainConfig,
    step: int,
    batch: dict[str, torch.Tensor],
    nets: dict[str, nn.Module],
    wrapped: dict[str, nn.Module],
    optims: dict[str, torch.optim.Optimizer],
    stage: str,
    vgg: nn.Module | None,
    autocast: contextlib.AbstractContextManager | None = None,
    keep_pictures: bool = False,
) -> StepOutput:
    """One training step (discriminator step, then generator + mask-estimator step).

    ``nets`` are the plain modules, ``wrapped`` the same modules or their
    DistributedDataParallel wrappers (used for every forward whose backward must be averaged
    across processes). Returns the loss values (floats) and, when ``keep_pictures``, the
    tensors of a sample grid.
    """
    from sketchedit import losses as L
    from sketchedit.nets.discriminator import composite

    autocast = autocast or contextlib.nullcontext
    x, y = batch["input"], batch["target"]
    c, edges = batch["sketch"], batch["edges"]
    b, _, h, w = x.shape
    r = step_randomness(cfg, step, h, w)
    train_m = stage in ("mask", "joint")
    train_g = stage != "mask"
    out: dict[str, float] = {"mode": float(r.mode) if train_g else float("nan")}

    for opt in optims.values():
        opt.zero_grad(set_to_none=True)

    # 1. Mask estimator: soft mask + auxiliary RGB; its two losses need no ground truth.
    with autocast(), torch.set_grad_enabled(train_m):
        m_net = wrapped["M"] if train_m else nets["M"]
        soft_mask, rgb = m_net(x, c)
        loss_m = torch.zeros((), device=x.device)
        if train_m:
            loss_rgb, loss_comp = L.mask_estimator_losses(
                rgb, soft_mask, x, y, blur=cfg.mask_loss_blur
            )
            loss_m = cfg.lambda_mask * (loss_rgb + loss_comp)
            out.update(m_rgb=loss_rgb.item(), m_composite=loss_comp.item())
    if train_m and cfg.lambda_mask_bce > 0:
        # [ours] optional direct supervision with the synthetic data's changed region D (see
        # TrainConfig.lambda_mask_bce); BCE outside autocast (it is not autocast-safe).
        p = soft_mask.float().clamp(1e-6, 1 - 1e-6)
        loss_bce = F.binary_cross_entropy(p, batch["changed"].float())
        loss_m = loss_m + cfg.lambda_mask_bce * loss_bce
        out["m_bce"] = loss_bce.item()
    soft_mask = soft_mask.detach().float()
    out["mask_mean"] = soft_mask.mean().item()

    if not train_g:
        loss_m.backward()
        optims["M"].step()
        pics = (
            {"input": x, "sketch": c, "pred_mask": soft_mask, "target": y} if keep_pictures else {}
        )
        return StepOutput(out, pics)

    # 2. Mode lottery: what the generator is fed.
    if r.mode == 0:  # joint inpainting: target with a random hole, full edges inside it
        mask = torch.from_numpy(r.hole).to(x)[None, None].expand(b, 1, h, w)
        g_image, g_sketch = y, edges * mask
        # [ours] D's condition is the generator's input with the hole blanked: y itself would
        # show D the answer inside the hole.
        condition = y * (1 - mask)
    else:  # mask-free: the detached predicted mask, soft (1) or thresholded (2)
        mask = soft_mask if r.mode == 1 else (soft_mask > 0.5).to(x)
        g_image, g_sketch, condition = x, c, x
    known = g_image

    # 3. Style region with punched (and maybe filled) holes, rotated / flipped.
    s_image, s_mask = style_input(cfg, x, mask, r)

    # 4. Generator; in the "coarse" stage the coarse output plays the part of the fake.
    with autocast():
        coarse, fine = wrapped["G"](g_image, g_sketch, mask, s_mask, s_image)
        fake = coarse if stage == "coarse" else fine
        comp = composite(fake, known, mask)

    # 5a. Discriminator step (hinge), before the generator step; real and fake in one batch.
    # With lambda_gan = 0 the adversarial part is switched off entirely (no D step).
    use_gan = cfg.lambda_gan > 0
    if use_gan:
        with autocast():
            scores = wrapped["D"](
                torch.cat([y, comp.detach()]),
                torch.cat([g_sketch, g_sketch]),
                torch.cat([condition, condition]),
            )
            real_scores, fake_scores = scores.float().chunk(2)
            loss_d = L.hinge_d_loss(real_scores, fake_scores)
        loss_d.backward()
        optims["D"].step()
        out.update(
            d_loss=loss_d.item(),
            d_real_score=real_scores.mean().item(),
            d_fake_score=fake_scores.mean().item(),
        )

    # 5b. Generator step: D (just updated) is frozen, gradients flow into G only.
    old = _set_requires_grad(nets["D"], False)
    try:
        with autocast():
            g_gan = torch.zeros((), device=x.device)
            if use_gan:
                g_gan = L.hinge_g_loss(nets["D"](comp, g_sketch, condition).float())
            l1_coarse = F.l1_loss(coarse.float(), y)
            l1_fine = F.l1_loss(fine.float(), y)
            total = cfg.lambda_gan * g_gan + cfg.lambda_l1_coarse * l1_coarse
            if stage != "coarse":
                total = total + cfg.lambda_l1_fine * l1_fine
            l1_hole = torch.zeros((), device=x.device)
            if cfg.lambda_l1_hole > 0:  # [ours] see TrainConfig.lambda_l1_hole
                l1_hole = L.hole_l1_loss(coarse.float(), y, mask)
                if stage != "coarse":
                    l1_hole = l1_hole + L.hole_l1_loss(fine.float(), y, mask)
                total = total + cfg.lambda_l1_hole * l1_hole
            g_vgg = torch.zeros((), device=x.device)
            if vgg is not None and cfg.lambda_vgg > 0:
                g_vgg = vgg((fake if cfg.vgg_target == "fine" else comp).float(), y).float()
                total = total + cfg.lambda_vgg * g_vgg
    finally:
        for p, flag in old.items():
            p.requires_grad_(flag)
    (total + loss_m).backward()
    optims["G"].step()
    if train_m:
        optims["M"].step()
    if use_gan:
        out["g_gan"] = g_gan.item()
    if cfg.lambda_l1_hole > 0:
        out["g_l1_hole"] = l1_hole.item()
    out.update(
        g_vgg=g_vgg.item(),
        g_l1_coarse=l1_coarse.item(),
        g_l1_fine=l1_fine.item(),
        g_total=total.item(),
    )
    pics = {}
    if keep_pictures:
        pics = {
            "input": x,
            "sketch": g_sketch,
            "pred_mask": soft_mask,
            "used_mask": mask,
            "coarse": coarse.detach().float(),
            "fine": fine.detach().float(),
            "composite": comp.detach().float(),
            "target": y,
        }
    return StepOutput(out, pics)


# ------------------------------------------------------------------------------------------
# Sample grids
# ------------------------------------------------------------------------------------------


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    """(3|1, H, W) image in [-1, 1] or mask in [0, 1] -> (H, W, 3) uint8."""
    t = t.detach().float().cpu()
    if t.shape[0] == 3:
        arr = (t.clamp(-1, 1) + 1) / 2
    else:
        arr = t.clamp(0, 1).expand(3, -1, -1)
    return (arr.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_sample_grid(
    pictures: dict[str, torch.Tensor], path: str | os.PathLike, rows: int = 4
) -> Path:
    """Save a PNG grid: one row per sample, one column per entry of ``pictures``.

    The sketch column shows black strokes on white.
    """
    from PIL import Image

    names = list(pictures)
    n = min(rows, next(iter(pictures.values())).shape[0])
    h, w = next(iter(pictures.values())).shape[-2:]
    pad = 2
    grid = np.full((n * (h + pad) + pad, len(names) * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        for j, name in enumerate(names):
            t = pictures[name][i]
            if name == "sketch":
                t = 1 - t
            y0, x0 = pad + i * (h + pad), pad + j * (w + pad)
            grid[y0 : y0 + h, x0 : x0 + w] = _to_uint8(t)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    (path.parent / "columns.txt").write_text(" | ".join(names) + "\n")
    return path


# ------------------------------------------------------------------------------------------
# Checkpoints: one safetensors file, no pickle
# ------------------------------------------------------------------------------------------


def _json_rng_states() -> dict:
    np_state = np.random.get_state()  # noqa: NPY002 (the global state is saved as asked)
    py_state = random.getstate()
    return {
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _restore_json_rng_states(d: dict) -> None:
    n = d["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))  # noqa: NPY002
    p = d["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def checkpoint_tensors_and_meta(
    cfg: TrainConfig,
    step: int,
    nets: dict[str, nn.Module],
    optims: dict[str, torch.optim.Optimizer],
) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten the whole training state to (tensors, JSON-able metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {
        "format": TRAIN_CKPT_FORMAT,
        "version": TRAIN_CKPT_VERSION,
        "step": int(step),
        "config": cfg.to_dict(),
        "networks": {},
        "optimizers": {},
        "torch_version": torch.__version__,
        # The data stream is a pure function of (seed, step): this is the loader position.
        "data": {"seed": cfg.seed, "next_step": int(step)},
    }
    for name, net in nets.items():
        meta["networks"][name] = {"class": type(net).__name__, "config": net.config()}
        for k, v in net.state_dict().items():
            tensors[f"net.{name}.{k}"] = v.detach().cpu().contiguous().clone()
    for name, opt in optims.items():
        sd = opt.state_dict()
        groups = []
        for g in sd["param_groups"]:
            groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
        meta["optimizers"][name] = {"param_groups": groups, "nonscalar": {}}
        for idx, st in sd["state"].items():
            for k, v in st.items():
                key = f"optim.{name}.state.{idx}.{k}"
                if isinstance(v, torch.Tensor):
                    tensors[key] = v.detach().cpu().contiguous().clone()
                else:  # plain Python numbers (e.g. a float "step" in old PyTorch)
                    meta["optimizers"][name]["nonscalar"][key] = v
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s.cpu()
    meta["rng"] = _json_rng_states()
    return tensors, meta


def save_training_checkpoint(
    path: str | os.PathLike,
    cfg: TrainConfig,
    step: int,
    nets: dict[str, nn.Module],
    optims: dict[str, torch.optim.Optimizer],
) -> Path:
    """Write the training state to ``path`` atomically (see :func:`load_training_checkpoint`)."""
    from safetensors.torch import save_file

    tensors, meta = checkpoint_tensors_and_meta(cfg, step, nets, optims)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"sketchedit_train": json.dumps(meta)})
        delay = float(os.environ.get(_WRITE_DELAY_ENV, "0") or 0)
        if delay > 0:  # test hook: widen the window in which a kill hits a write
            time.sleep(delay)
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder (-> its ``ckpt_latest.safetensors``) or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / LATEST
    if not p.is_file():
        raise FileNotFoundError(f"no training checkpoint at {p}")
    return p


def read_training_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a training checkpoint; clear errors for anything else."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = resolve_checkpoint(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get("sketchedit_train")
        tensors = load_file(str(p))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{p}: not a readable safetensors file ({err})") from None
    return tensors, _check_training_metadata(p, raw)


def _check_training_metadata(p: Path, raw: str | None) -> dict:
    if raw is None:
        raise ValueError(
            f"{p}: not a sketchedit training checkpoint (no 'sketchedit_train' metadata)"
        )
    meta = json.loads(raw)
    if meta.get("format") != TRAIN_CKPT_FORMAT or meta.get("version") != TRAIN_CKPT_VERSION:
        raise ValueError(
            f"{p}: training checkpoint format {meta.get('format')!r} v{meta.get('version')} "
            f"is not supported (expected {TRAIN_CKPT_FORMAT!r} v{TRAIN_CKPT_VERSION})"
        )
    return meta


def _split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_networks(path: str | os.PathLike, map_location="cpu") -> tuple[dict[str, nn.Module], dict]:
    """Rebuild M, G, D from a training checkpoint (strict); returns (nets, metadata)."""
    from sketchedit import nets as nets_mod

    tensors, meta = read_training_checkpoint(path)
    nets: dict[str, nn.Module] = {}
    for name, info in meta["networks"].items():
        cls = getattr(nets_mod, info["class"])
        net = cls(**info["config"])
        net.load_state_dict(_split_prefix(tensors, f"net.{name}."), strict=True)
        nets[name] = net.to(map_location)
    return nets, meta


def restore_training_state(
    path: str | os.PathLike,
    nets: dict[str, nn.Module],
    optims: dict[str, torch.optim.Optimizer],
    device: torch.device,
) -> int:
    """Load networks, optimisers and RNG states into existing objects; return the step."""
    tensors, meta = read_training_checkpoint(path)
    for name, net in nets.items():
        info = meta["networks"].get(name)
        if info is None or info["config"] != net.config():
            raise ValueError(
                f"checkpoint network {name} {info and info['config']} does not match the "
                f"configured one {net.config()}; resume with the checkpoint's configuration"
            )
        net.load_state_dict(_split_prefix(tensors, f"net.{name}."), strict=True)
    for name, opt in optims.items():
        ometa = meta["optimizers"][name]
        state: dict[int, dict] = {}
        for k, v in _split_prefix(tensors, f"optim.{name}.state.").items():
            idx, key = k.split(".", 1)
            state.setdefault(int(idx), {})[key] = v.to(device) if key != "step" else v
        for k, v in ometa["nonscalar"].items():
            idx, key = k[len(f"optim.{name}.state.") :].split(".", 1)
            state.setdefault(int(idx), {})[key] = v
        groups = []
        for g in ometa["param_groups"]:
            g = dict(g)
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
            groups.append(g)
        opt.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    _restore_json_rng_states(meta["rng"])
    return int(meta["step"])


def export_inference_checkpoint(
    run_dir_or_ckpt: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    dtype: str = "float32",
    metadata: dict | None = None,
) -> Path:
    """Write the trained mask estimator and generator as an inference checkpoint.

    Uses :func:`sketchedit.weights.save_checkpoint` (``{"mask_estimator": M, "generator": G}``);
    the training configuration and step go into its metadata. ``dtype="float16"`` halves the
    file (the loader copies into float32 parameters).
    """
    from sketchedit.weights import save_checkpoint

    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    nets, meta = load_networks(run_dir_or_ckpt)
    m, g = nets["M"].eval(), nets["G"].eval()
    if dtype == "float16":
        m, g = m.half(), g.half()
    info = {"step": meta["step"], "train_config": meta["config"], "stored_dtype": dtype}
    info.update(metadata or {})
    save_checkpoint(out_path, {"mask_estimator": m, "generator": g}, metadata=info)
    return Path(out_path)


def weights_checksum(nets: dict[str, nn.Module]) -> str:
    """SHA-256 of every network tensor (parameters and buffers), in a fixed order."""
    h = hashlib.sha256()
    for name in sorted(nets):
        for k, v in sorted(nets[name].state_dict().items()):
            h.update(f"{name}.{k}".encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------
# CSV log
# ------------------------------------------------------------------------------------------


def _complete_log_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of ``log.csv``.

    A kill can interrupt the last row mid-write: a last line without its line end, or a row
    with too few or too many fields, is not a row (it would read as a bogus step, e.g. ``1``
    torn from ``12,joint,...``), so it is dropped.
    """
    text = path.read_text()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = csv.DictReader(io.StringIO(text))
    return [r for r in rows if None not in r and None not in r.values() and r["step"].isdigit()]


class CsvLog:
    """``log.csv``: one row per step, every loss term (empty where a stage has none).

    On resume, rows after the checkpoint's step (written after the last checkpoint of the
    interrupted run) and a row torn by the kill are dropped, so the log has each step exactly
    once. :meth:`flush` makes the rows durable; the trainer calls it before every checkpoint,
    so the rows up to a checkpoint's step survive whatever kills the run after it.
    """

    def __init__(self, path: Path, start_step: int):
        self.path = path
        if start_step > 0 and path.exists():
            rows = [r for r in _complete_log_rows(path) if int(r["step"]) <= start_step]
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, LOG_COLUMNS, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
        elif start_step == 0 or not path.exists():
            with open(path, "w", newline="") as f:
                csv.DictWriter(f, LOG_COLUMNS).writeheader()
        self.file = open(path, "a", newline="")  # noqa: SIM115 (closed in close())
        self.writer = csv.DictWriter(self.file, LOG_COLUMNS)

    def write_step(self, step: int, stage: str, losses: dict[str, float]) -> None:
        """The row of ``step``: its stage, mode (empty when G did not train) and losses."""
        mode = losses.get("mode", float("nan"))
        row = {k: v for k, v in losses.items() if k != "mode"}
        self.write(
            {"step": step, "stage": stage, "mode": "" if math.isnan(mode) else int(mode), **row}
        )

    def write(self, row: dict) -> None:
        clean = {}
        for k in LOG_COLUMNS:
            v = row.get(k, "")
            if isinstance(v, float):
                v = "" if math.isnan(v) else f"{v:.6g}"
            clean[k] = v
        self.writer.writerow(clean)

    def flush(self, durable: bool = False) -> None:
        """Hand the rows to the OS (survives a kill); ``durable`` also fsyncs (a power cut)."""
        self.file.flush()
        if durable:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def read_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``log.csv`` as column arrays (floats; NaN where empty; "stage" as strings)."""
    rows = _complete_log_rows(Path(path))
    cols: dict[str, np.ndarray] = {}
    for k in LOG_COLUMNS:
        if k == "stage":
            cols[k] = np.array([r[k] for r in rows])
        else:
            # .get: a log written before a column existed reads as NaN there
            cols[k] = np.array([float(r.get(k) or "nan") for r in rows])
    return cols


# ------------------------------------------------------------------------------------------
# The run folder: one trainer at a time, no stale temporary files, no silent config change
# ------------------------------------------------------------------------------------------

LOCK_NAME = ".trainer.lock"


class RunFolderInUseError(RuntimeError):
    """Another trainer writes into the same run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def run_folder_lock(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder exclusively while training [ours].

    Two trainers in one folder would overwrite each other's checkpoints and interleave their
    log rows. The lock is ``flock`` on ``out_dir/.trainer.lock``, which the OS releases when
    its holder dies however it dies; the file holds the owner's pid and host for the error
    message. A file still naming an owner means that owner died without releasing it: a dead
    pid on this host is taken over with a notice; an owner on another host (where ``flock``
    may not reach, e.g. NFS) is refused, because we cannot tell whether it still runs.
    """
    import fcntl

    out_dir = Path(out_dir)
    path = out_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    with open(path, "a+") as f:  # noqa: PTH123 (the fd carries the flock)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _lock_owner(f)
            raise RunFolderInUseError(
                f"run folder {str(out_dir)!r} is in use by another trainer (pid "
                f"{owner.get('pid', '?')} on {owner.get('host', '?')}); wait for it to end or "
                f"choose another out_dir"
            ) from None
        owner = _lock_owner(f)
        if owner and owner != me:
            if owner.get("host") != me["host"] or _pid_alive(int(owner.get("pid", -1))):
                raise RunFolderInUseError(
                    f"run folder {str(out_dir)!r} is locked by pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')}; if no trainer runs there any more, delete {path}"
                )
            print(
                f"warning: taking over the lock of {str(out_dir)!r} from pid {owner['pid']}, "
                f"which is no longer running",
                file=sys.stderr,
            )
        f.seek(0)
        f.truncate()
        f.write(json.dumps(me))
        f.flush()
        try:
            yield path
        finally:
            f.seek(0)
            f.truncate()  # released; the empty file stays (unlinking it would race)


def _lock_owner(f) -> dict:
    f.seek(0)
    try:
        owner = json.loads(f.read() or "{}")
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?"}
    return owner if isinstance(owner, dict) else {}


#: The temporary files :func:`sketchedit.fileio.atomic_path` leaves when a kill hits a write:
#: ``tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp")`` next to the file ``name``, for the
#: files the trainer writes into a run folder (and its samples/ folder).
_RUN_TEMP_FILES = re.compile(
    r"\.(ckpt_latest\.safetensors|ckpt_step_\d+\.safetensors|config\.json|log\.csv"
    r"|rank_checksums\.json|step_\d+\.png)\.[a-z0-9_]{8}\.tmp"
)


def remove_stale_temp_files(out_dir: str | os.PathLike) -> list[Path]:
    """Delete the trainer's own leftover temporary files in ``out_dir`` (call with the lock).

    A kill during a checkpoint write leaves a hidden ``.ckpt_latest.safetensors.XXXXXXXX.tmp``
    as large as a checkpoint; nothing else would ever remove it. Only names of that exact
    pattern, directly in the run folder or its ``samples/`` folder, are touched.
    """
    out_dir = Path(out_dir)
    removed = []
    for folder in (out_dir, out_dir / "samples"):
        for p in folder.glob(".*.tmp"):
            if _RUN_TEMP_FILES.fullmatch(p.name) and p.is_file():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


#: Settings whose change on resume is routine and not worth a notice.
_ROUTINE_ON_RESUME = ("resume", "steps")


def config_changes(stored: dict, cfg: TrainConfig) -> list[tuple[str, object, object]]:
    """``(name, stored value, new value)`` for every setting ``cfg`` changes in a resumed run."""
    old = TrainConfig.from_dict(stored).to_dict()
    new = cfg.to_dict()
    return [(k, old[k], new[k]) for k in new if k not in _ROUTINE_ON_RESUME and old[k] != new[k]]


def read_training_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a training checkpoint (or run folder) without reading its tensors."""
    from safetensors import safe_open

    p = resolve_checkpoint(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get("sketchedit_train")
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{p}: not a readable safetensors file ({err})") from None
    return _check_training_metadata(p, raw)


def check_export_path(path: str | os.PathLike) -> Path:
    """Raise a clear error now if an inference checkpoint cannot be written to ``path``.

    Called before training starts, so a typo in ``--export`` does not surface only after
    hours of training.
    """
    p = Path(path)
    if p.is_dir():
        example = str(p / "model.safetensors")
        raise ValueError(f"--export {str(p)!r} is a folder; give a file name, e.g. {example!r}")
    if not p.parent.is_dir():
        raise ValueError(f"--export {str(p)!r}: folder {str(p.parent)!r} does not exist")
    import tempfile

    try:  # the real test of "writable" (os.access says yes to root even on a read-only mount)
        fd, probe = tempfile.mkstemp(prefix=".export-probe.", dir=p.parent)
    except OSError as err:
        raise ValueError(
            f"--export {str(p)!r}: cannot write into folder {str(p.parent)!r} ({err.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return p


# ------------------------------------------------------------------------------------------
# The training loop
# ------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    checkpoint: Path | None
    log_csv: Path
    samples: list[Path]
    last_losses: dict[str, float]
    wall_time_s: float
    checksum: str


def _wrap_ddp(net: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
    return DDP(net, **kwargs)


_STEP_CKPT = re.compile(r"ckpt_step_(\d+)\.safetensors")


def step_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """The ``ckpt_step_N.safetensors`` files of a run folder, oldest first.

    Sorted by the number N, not by the name: the names are zero-padded to six digits only,
    so ``ckpt_step_1000000`` sorts before ``ckpt_step_999999`` as text.
    """
    found = []
    for p in Path(out_dir).glob("ckpt_step_*.safetensors"):
        m = _STEP_CKPT.fullmatch(p.name)
        if m:
            found.append((int(m[1]), p))
    return [p for _, p in sorted(found)]


def rotate_step_checkpoints(out_dir: Path, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest step-numbered checkpoints."""
    step_files = step_checkpoints(out_dir)
    for old in step_files[: max(0, len(step_files) - keep_last)]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()


def _write_checkpoints(out_dir: Path, cfg: TrainConfig, step: int, nets, optims, log) -> Path:
    """``ckpt_step_N`` (if keep_last > 0) and ``ckpt_latest``, each replaced atomically.

    The log is made durable first: a checkpoint of step N promises the log rows up to N.
    """
    log.flush(durable=True)
    latest = out_dir / LATEST
    save_training_checkpoint(latest, cfg, step, nets, optims)
    if cfg.keep_last > 0:
        numbered = out_dir / f"ckpt_step_{step:06d}.safetensors"
        with atomic_path(numbered) as tmp:
            tmp.unlink()
            try:  # a hard link costs nothing; copy where links are not supported
                os.link(latest, tmp)
            except OSError:
                import shutil

                shutil.copyfile(latest, tmp)
        rotate_step_checkpoints(out_dir, cfg.keep_last)
    return latest


def train(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Train (or resume, when ``config.resume`` is set) and return a :class:`TrainResult`.

    Works in a single process and under ``torchrun`` (one process per device; gloo on CPU,
    NCCL on CUDA). Every configuration error is raised before the first step.
    """
    cfg = config
    validate_config(cfg)
    schedule = parse_stage_schedule(cfg.stage)
    dist_info = _dist_info_from_env()
    device = _set_up_device(cfg, dist_info)
    # VGG first: if its weights are missing this is where a run must fail, not at step 1000.
    vgg = _perceptual_loss(cfg, schedule, device)
    out_dir = Path(cfg.out_dir)
    resume_path = _check_run_folder(cfg, out_dir)
    dataset = training_dataset(cfg, dist_info.world_size)
    if dist_info.enabled:
        _init_process_group(device)

    with contextlib.ExitStack() as run:
        if dist_info.is_main:  # rank 0 owns the run folder: lock, clean-up, config.json
            run.enter_context(open_run_folder(out_dir, cfg, resume_path))
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        nets = {k: v.to(device) for k, v in build_networks(cfg).items()}
        optims = make_optimizers(cfg, nets)
        start_step = _restore_or_seed(cfg, resume_path, nets, optims, device)
        loader = step_loader(cfg, dataset, dist_info, start_step, device)
        log = CsvLog(out_dir / "log.csv", start_step) if dist_info.is_main else None
        if log is not None:
            run.callback(log.close)
        from tqdm.auto import tqdm

        bar = run.enter_context(
            tqdm(
                total=cfg.steps,
                initial=start_step,
                disable=not (progress and dist_info.is_main),
                desc="train",
                dynamic_ncols=True,
            )
        )
        autocast = _autocast(cfg, device)
        samples: list[Path] = []
        last: dict[str, float] = {}
        ckpt: Path | None = None
        current_stage = None
        wrapped: dict[str, nn.Module] = dict(nets)
        t_start = t_prev = time.perf_counter()
        step = start_step
        for step, batch in zip(range(start_step, cfg.steps), loader, strict=False):
            stage = stage_at(schedule, step)
            if stage != current_stage:
                trainable = set_trainable(nets, stage, train_d=cfg.lambda_gan > 0)
                if dist_info.enabled:  # DDP registers the parameters that require grad now
                    wrapped = {
                        k: _wrap_ddp(v, device) if trainable[k] else v for k, v in nets.items()
                    }
                current_stage = stage
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            done = step + 1
            want_pics = (
                dist_info.is_main
                and cfg.sample_every > 0
                and (done % cfg.sample_every == 0 or done == cfg.steps)
            )
            res = gan_step(cfg, step, batch, nets, wrapped, optims, stage, vgg, autocast, want_pics)
            now = time.perf_counter()
            last = {**res.losses, "sec_per_step": now - t_prev}
            t_prev = now
            if not all(math.isfinite(v) for k, v in last.items() if k != "mode"):
                raise FloatingPointError(f"non-finite loss at step {done}: {last}")
            if log is not None:
                log.write_step(done, stage, last)
                if done % cfg.log_every == 0:
                    log.flush()
                    bar.set_postfix(stage=stage, **_shown_losses(last))
            bar.update(1)
            if res.pictures:
                samples.append(
                    save_sample_grid(res.pictures, out_dir / "samples" / f"step_{done:06d}.png")
                )
            if cfg.ckpt_every > 0 and done % cfg.ckpt_every == 0 and done < cfg.steps:
                if dist_info.is_main:
                    ckpt = _write_checkpoints(out_dir, cfg, done, nets, optims, log)
            step = done
        step = max(step, start_step)
        if dist_info.is_main and (step > start_step or not (out_dir / LATEST).exists()):
            ckpt = _write_checkpoints(out_dir, cfg, step, nets, optims, log)
        elif dist_info.is_main:
            ckpt = out_dir / LATEST

    checksum = weights_checksum(nets)
    if dist_info.enabled:
        checksum = _check_ranks_in_sync(checksum, out_dir, dist_info, device)
    return TrainResult(
        out_dir=out_dir,
        step=step,
        checkpoint=ckpt,
        log_csv=out_dir / "log.csv",
        samples=samples,
        last_losses=last,
        wall_time_s=time.perf_counter() - t_start,
        checksum=checksum,
    )


def _set_up_device(cfg: TrainConfig, dist_info: DistInfo) -> torch.device:
    """The device of this process, with the CPU / cuDNN settings of ``cfg`` applied."""
    device = _resolve_device(cfg, dist_info)
    if cfg.threads > 0 and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    if cfg.flush_denormal and device.type == "cpu":
        torch.set_flush_denormal(True)  # [ours] see TrainConfig.flush_denormal
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if cfg.amp == "bf16" and device.type == "cpu" and not _cpu_bf16_is_native():
        import warnings

        warnings.warn(
            "amp='bf16' on a CPU without native bf16 convolutions (no AVX-512 BF16 / AMX): "
            "PyTorch falls back to a naive convolution, far slower than fp32; use amp='none'",
            stacklevel=3,
        )
    return device


def _autocast(cfg: TrainConfig, device: torch.device):
    """A factory of bf16 autocast contexts (disabled unless ``cfg.amp == "bf16"``)."""

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")

    return autocast


def _perceptual_loss(cfg: TrainConfig, schedule, device: torch.device) -> nn.Module | None:
    """The frozen VGG-19 perceptual loss, or None when no stage of this run uses it."""
    stages_used = {stage_at(schedule, s) for s in range(cfg.steps)}
    if not (cfg.lambda_vgg > 0 and stages_used - {"mask"}):
        return None
    from sketchedit.losses import VGGPerceptualLoss

    vgg = VGGPerceptualLoss(weights=cfg.vgg_weights or None).to(device).eval()
    for p in vgg.parameters():
        p.requires_grad_(False)
    return vgg


def _check_run_folder(cfg: TrainConfig, out_dir: Path) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); errors for a misused out_dir."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {str(out_dir)!r} is a file, not a folder")
    resume_path = resolve_checkpoint(cfg.resume) if cfg.resume else None
    if resume_path is None and (out_dir / LATEST).exists():
        raise ValueError(
            f"out_dir {cfg.out_dir!r} already holds a training run; continue it with "
            f"resume={cfg.out_dir!r} (--resume), or choose another out_dir"
        )
    return resume_path


def _init_process_group(device: torch.device) -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)


def _restore_or_seed(cfg: TrainConfig, resume_path, nets, optims, device) -> int:
    """Load the resumed state (returns its step), or seed a fresh run (returns 0)."""
    if resume_path is None:
        # Fresh run: the RNG states written into checkpoints start from the seed.
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)  # noqa: NPY002 (for code that uses it)
        return 0
    start_step = restore_training_state(resume_path, nets, optims, device)
    # The configuration wins over the stored hyper-parameters, so a run can be continued
    # with, e.g., a lower learning rate (same values = an exact continuation).
    lrs = {"M": cfg.lr_m, "G": cfg.lr_g, "D": cfg.lr_d}
    for name, opt in optims.items():
        for group in opt.param_groups:
            group["lr"] = lrs[name]
            group["betas"] = (cfg.beta1, cfg.beta2)
    return start_step


def _shown_losses(losses: dict[str, float]) -> dict[str, str]:
    """The few losses the progress bar shows."""
    return {k: f"{losses[k]:.3f}" for k in ("d_loss", "g_total", "m_composite") if k in losses}


@contextlib.contextmanager
def open_run_folder(out_dir: Path, cfg: TrainConfig, resume_path: Path | None) -> Iterator[None]:
    """Rank 0's hold on the run folder for the length of a run.

    Creates it, locks it (:func:`run_folder_lock`), removes temporary files a killed run
    left, reports every setting a resume changes (on stderr and in ``config_changes.txt``),
    and writes the configuration the run continues with to ``config.json``.
    """
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    with run_folder_lock(out_dir):
        for p in remove_stale_temp_files(out_dir):
            print(f"resume: removed {p}, left by a write that a kill interrupted", file=sys.stderr)
        if resume_path is not None:
            meta = read_training_metadata(resume_path)
            report_config_changes(out_dir, meta["step"], config_changes(meta["config"], cfg))
        with atomic_path(out_dir / "config.json") as tmp:
            tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        yield


def report_config_changes(out_dir: Path, step: int, changes) -> None:
    """Print each changed setting and append it to ``config_changes.txt`` (the run's history:
    ``config.json`` and the checkpoints hold only the latest configuration)."""
    lines = [
        f"resume: changing {name} from {json.dumps(old)} to {json.dumps(new)}"
        for name, old, new in changes
    ]
    for line in lines:
        print(line, file=sys.stderr)
    if lines:
        with open(out_dir / "config_changes.txt", "a") as f:
            f.writelines(f"step {step}: {line}\n" for line in lines)


def _cpu_bf16_is_native() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _check_ranks_in_sync(checksum: str, out_dir: Path, dist_info: DistInfo, device) -> str:
    """All-gather every rank's weight checksum; rank 0 writes them to ``rank_checksums.json``.

    Data parallelism must leave identical weights on every rank; if not, something (a
    rank-dependent random draw, an unsynchronised parameter) is broken, and we say so loudly.
    """
    import torch.distributed as dist

    mine = torch.tensor([int(checksum[:15], 16)], dtype=torch.int64, device=device)
    gathered = [torch.zeros_like(mine) for _ in range(dist_info.world_size)]
    dist.all_gather(gathered, mine)
    values = [f"{int(t.item()):015x}" for t in gathered]
    if dist_info.is_main:
        with atomic_path(out_dir / "rank_checksums.json") as tmp:
            tmp.write_text(json.dumps({"world_size": dist_info.world_size, "checksums": values}))
    dist.barrier()
    if len(set(values)) != 1:
        raise RuntimeError(f"ranks ended with different weights: {values}")
    return checksum


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sketchedit.train",
        description="Train SketchEdit (mask estimator + generator + discriminator). "
        "Any TrainConfig field can be overridden with --set key=value.",
    )
    p.add_argument("--preset", default=None, help=f"one of {sorted(PRESETS)} (default tiny)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--out-dir", default=None)
    p.add_argument("--device", default=None, help="cpu, cuda or auto")
    p.add_argument("--resume", default=None, help="run folder or checkpoint to continue from")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TrainConfig field, typed from the dataclass (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--export",
        default=None,
        metavar="PATH",
        help="after training, export M and G as an inference checkpoint to PATH",
    )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Preset (or the resumed run's stored config) + explicit flags + --set overrides.

    A resumed run keeps its stored configuration: ``--preset`` may only name the run's own
    preset, and what ``--set`` changes is reported when training starts.
    """
    overrides: dict = {}
    for text in args.overrides:
        key, value = parse_assignment(text)
        overrides[key] = value
    for key in ("steps", "out_dir", "device", "resume"):
        v = getattr(args, key)
        if v is not None:
            overrides[key] = v
    if not args.resume:
        return get_config(args.preset or "tiny", **overrides)
    stored = read_training_metadata(args.resume)["config"]
    if args.preset is not None and args.preset != stored.get("preset"):
        raise ValueError(
            f"--preset {args.preset} conflicts with the run in {args.resume!r} (preset "
            f"{stored.get('preset')!r}): a resumed run keeps its stored configuration; drop "
            f"--preset and change single settings with --set key=value"
        )
    if "out_dir" not in overrides:
        p = Path(args.resume)
        overrides["out_dir"] = str(p if p.is_dir() else p.parent)
    cfg = TrainConfig.from_dict(stored).replace(**overrides)
    validate_config(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """``python -m sketchedit.train``: 0 on success, 2 with a one-line ``error:`` otherwise."""
    args = build_arg_parser().parse_args(argv)
    out_dir = None
    try:
        cfg = config_from_args(args)
        out_dir = cfg.out_dir
        if args.export:
            check_export_path(args.export)  # before hours of training, not after
        result = train(cfg, progress=not args.no_progress)
        if not _dist_info_from_env().is_main:
            return 0
        print(
            json.dumps(
                {
                    "step": result.step,
                    "checkpoint": str(result.checkpoint),
                    "wall_time_s": round(result.wall_time_s, 2),
                    "last_losses": {
                        k: round(v, 5) for k, v in result.last_losses.items() if not math.isnan(v)
                    },
                }
            )
        )
        if args.export:
            export_inference_checkpoint(result.checkpoint, args.export)
    except (ValueError, OSError, RunFolderInUseError) as err:
        print(f"error: {_one_line(err, out_dir)}", file=sys.stderr)
        return 2
    return 0


def _one_line(err: Exception, out_dir: str | None) -> str:
    """The message of ``err`` on one line; an OSError without a file name (a full disk in
    the middle of a checkpoint write) gets the run folder it happened in."""
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and not err.filename and out_dir:
        text = f"writing the run in {out_dir!r} failed: {text}"
    return text


if __name__ == "__main__":
    raise SystemExit(main())
