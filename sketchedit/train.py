"""Training SketchEdit: the loop and the command line, on CPU, GPU or several processes.

The parts live in their own modules:

- :mod:`sketchedit.objective`: the objective of docs/method.md section 4, one step as the mask
  estimator's, the discriminator's and the generator's step, the mode lottery, the stages;
- :mod:`sketchedit.stream`: the data stream, a pure function of ``(seed, step)``;
- :mod:`sketchedit.train_checkpoints`: training checkpoints (one ``.safetensors`` file, no
  pickle) and their export to an inference checkpoint; :mod:`sketchedit.checkpoints` reads
  them;
- :mod:`sketchedit.run_folder`: the log, sample grids, the lock and the bookkeeping of a run
  folder.

:func:`train` puts them together: validate, build, maybe resume, then step, log, sample and
checkpoint. Reproducibility: every random choice of a step comes from ``(seed, step)``, so
the same seed gives the same run on every rank of a distributed job, and a resumed run
continues exactly where the interrupted one was.

Command line::

    python -m sketchedit.train --preset tiny --steps 50 --set lr_g=2e-4 --out-dir runs/t
    python -m sketchedit.train --resume runs/t --steps 100
    python -m torch.distributed.run --nproc_per_node=2 -m sketchedit.train --preset tiny
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sketchedit.checkpoints import (
    LATEST,
    load_networks,
    read_training_checkpoint,
    read_training_metadata,
    resolve_checkpoint,
)
from sketchedit.fileio import atomic_path
from sketchedit.nets.blocks import cpu_low_precision_is_fast  # the one native-bf16 check
from sketchedit.objective import (
    StepRandomness,
    build_networks,
    gan_step,
    generator_stage_of,
    make_optimizers,
    set_trainable,
    stage_at,
    step_randomness,
    style_input,
)
from sketchedit.presets import (
    PRESETS,
    TrainConfig,
    get_config,
    parse_assignment,
    parse_stage_schedule,
    validate_config,
)
from sketchedit.run_folder import (
    LOCK_NAME,
    CsvLog,
    RunFolderInUseError,
    check_export_path,
    open_run_folder,
    read_log,
    run_folder_lock,
    save_sample_grid,
)
from sketchedit.stream import (
    EpochTaggedDataset,
    StepSampler,
    build_dataset,
    step_loader,
    training_dataset,
    training_photos,
)
from sketchedit.train_checkpoints import (
    export_inference_checkpoint,
    restore_training_state,
    rotate_step_checkpoints,
    save_training_checkpoint,
    step_checkpoints,
    weights_checksum,
    write_checkpoints,
)

#: Names kept importable from ``sketchedit.train`` (tests, notebooks, scripts written before
#: the split); new code imports them from their own modules.
__all__ = [
    "LATEST",
    "LOCK_NAME",
    "EpochTaggedDataset",
    "RunFolderInUseError",
    "StepRandomness",
    "StepSampler",
    "TrainResult",
    "build_dataset",
    "build_networks",
    "export_inference_checkpoint",
    "gan_step",
    "generator_stage_of",
    "load_networks",
    "main",
    "make_optimizers",
    "read_log",
    "read_training_checkpoint",
    "read_training_metadata",
    "rotate_step_checkpoints",
    "run_folder_lock",
    "save_training_checkpoint",
    "set_trainable",
    "stage_at",
    "step_checkpoints",
    "step_randomness",
    "style_input",
    "train",
    "training_photos",
    "weights_checksum",
]


# ------------------------------------------------------------------------------------------
# Distributed helpers (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK)
# ------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    """This process's place in a ``torchrun`` job (one process: rank 0 of 1)."""

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
# The training loop
# ------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns: where the run is, its last step, losses and checksum."""

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


def train(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Train (or resume, when ``config.resume`` is set) and return a :class:`TrainResult`.

    Works in a single process and under ``torchrun`` (one process per device; gloo on CPU,
    NCCL on CUDA). Every configuration error is raised before the first step.
    """
    cfg = config
    validate_config(cfg)
    schedule = parse_stage_schedule(cfg.stage)
    dist_info = _dist_info_from_env()
    if dist_info.enabled and cfg.max_minutes > 0:
        raise ValueError("max_minutes works in single-process runs only (ranks would stop apart)")
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
        loader = step_loader(
            cfg, dataset, start_step, device, rank=dist_info.rank, world_size=dist_info.world_size
        )
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
        t_start = t_prev = t_ckpt = time.perf_counter()
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
            by_step = cfg.ckpt_every > 0 and done % cfg.ckpt_every == 0
            by_time = cfg.ckpt_every_minutes > 0 and now - t_ckpt >= 60 * cfg.ckpt_every_minutes
            if (by_step or by_time) and done < cfg.steps and dist_info.is_main:
                ckpt = write_checkpoints(out_dir, cfg, done, nets, optims, log)
                t_ckpt = time.perf_counter()
            step = done
            if cfg.max_minutes > 0 and now - t_start >= 60 * cfg.max_minutes:
                print(f"stopping after {cfg.max_minutes:g} min at step {done} (max_minutes)")
                break
        step = max(step, start_step)
        if dist_info.is_main and (step > start_step or not (out_dir / LATEST).exists()):
            ckpt = write_checkpoints(out_dir, cfg, step, nets, optims, log)
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
    if cfg.amp == "bf16" and device.type == "cpu" and not cpu_low_precision_is_fast(torch.bfloat16):
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
        if cfg.init_from:
            _init_from_inference_checkpoint(cfg.init_from, nets)
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


def _init_from_inference_checkpoint(path: str, nets: dict[str, nn.Module]) -> None:
    """Start M and G from an inference checkpoint's weights (D and the optimisers start fresh).

    [ours] For fine-tuning a trained model on new data, another resolution or another recipe;
    the networks must have the same widths (a clear error names the mismatch otherwise).
    """
    from sketchedit.checkpoints import load_checkpoint

    loaded = load_checkpoint(path)
    for ours, theirs in (("M", "mask_estimator"), ("G", "generator")):
        if theirs not in loaded:
            raise ValueError(f"init_from {path}: the checkpoint has no {theirs!r} network")
        if loaded[theirs].config() != nets[ours].config():
            raise ValueError(
                f"init_from {path}: its {theirs} is {loaded[theirs].config()}, this run's is "
                f"{nets[ours].config()} (set cnum to match)"
            )
        nets[ours].load_state_dict(loaded[theirs].float().state_dict())
    print(f"initialised the mask estimator and generator from {path}")


def _shown_losses(losses: dict[str, float]) -> dict[str, str]:
    """The few losses the progress bar shows."""
    return {k: f"{losses[k]:.3f}" for k in ("d_loss", "g_total", "m_composite") if k in losses}


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
