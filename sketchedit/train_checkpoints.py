"""Training checkpoints: the whole training state in one ``.safetensors`` file, no pickle.

Networks, optimiser states, RNG states and the step are tensors; everything else (the
configuration, network classes and widths, optimiser hyper-parameters, Python and numpy RNG
states) is JSON in the file's metadata under ``sketchedit_train``, so a checkpoint is read
without running any code from it. Every file is replaced atomically
(:func:`sketchedit.fileio.atomic_path`): a kill mid-write leaves the previous one intact.

A run folder holds ``ckpt_latest.safetensors`` and, with ``keep_last > 0``, the newest
``ckpt_step_N.safetensors``; :func:`export_inference_checkpoint` turns one into the inference
format of :mod:`sketchedit.checkpoints` (mask estimator and generator only).

This module writes, restores and exports; *reading* the file (its metadata, its tensors, the
networks, with every check against untrusted content) is :mod:`sketchedit.checkpoints`'
job, the one module that knows the file format.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

# The file format is read in one place, sketchedit.checkpoints; the reading names stay
# importable from here (the trainer, run_folder and older scripts use them).
from sketchedit.checkpoints import (
    LATEST,
    TRAIN_CKPT_FORMAT,
    TRAIN_CKPT_VERSION,
    TRAIN_METADATA_KEY,
    TRAIN_NET_PREFIX,
    load_networks,
    read_training_checkpoint,
    read_training_metadata,
    resolve_checkpoint,
    save_checkpoint,
    tensors_under,
)
from sketchedit.fileio import atomic_path
from sketchedit.presets import TrainConfig

__all__ = [
    "LATEST",
    "TRAIN_CKPT_FORMAT",
    "TRAIN_CKPT_VERSION",
    "checkpoint_tensors_and_meta",
    "export_inference_checkpoint",
    "load_networks",
    "read_training_checkpoint",
    "read_training_metadata",
    "resolve_checkpoint",
    "restore_training_state",
    "rotate_step_checkpoints",
    "save_training_checkpoint",
    "step_checkpoints",
    "weights_checksum",
    "write_checkpoints",
]
#: Test hook: seconds to sleep inside the atomic checkpoint write (after the temporary file
#: is complete, before it replaces the old one), so a test can kill the process mid-write.
_WRITE_DELAY_ENV = "SKETCHEDIT_TEST_CKPT_WRITE_DELAY"

# ------------------------------------------------------------------------------------------
# Writing
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
            tensors[f"{TRAIN_NET_PREFIX}{name}.{k}"] = v.detach().cpu().contiguous().clone()
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
        save_file(tensors, str(tmp), metadata={TRAIN_METADATA_KEY: json.dumps(meta)})
        delay = float(os.environ.get(_WRITE_DELAY_ENV, "0") or 0)
        if delay > 0:  # test hook: widen the window in which a kill hits a write
            time.sleep(delay)
    return path


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
        net.load_state_dict(tensors_under(tensors, f"{TRAIN_NET_PREFIX}{name}."), strict=True)
    for name, opt in optims.items():
        ometa = meta["optimizers"][name]
        state: dict[int, dict] = {}
        for k, v in tensors_under(tensors, f"optim.{name}.state.").items():
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

    Uses :func:`sketchedit.checkpoints.save_checkpoint` (``{"mask_estimator": M, "generator": G}``);
    the training configuration and step go into its metadata. ``dtype="float16"`` halves the
    file (the loader copies into float32 parameters).
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    nets, meta = load_networks(run_dir_or_ckpt)
    m, g = nets["M"].eval(), nets["G"].eval()
    if dtype == "float16":
        m, g = m.half(), g.half()
    info = {
        "step": meta["step"],
        "train_config": meta["config"],
        "stored_dtype": dtype,
        # The resolution the model learned at: the editor runs it at that scale (roi.py).
        "working_size": meta["config"]["image_size"],
    }
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
# Step-numbered checkpoints
# ------------------------------------------------------------------------------------------


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


def write_checkpoints(out_dir: Path, cfg: TrainConfig, step: int, nets, optims, log=None) -> Path:
    """``ckpt_step_N`` (if keep_last > 0) and ``ckpt_latest``, each replaced atomically.

    The run's log (a :class:`sketchedit.run_folder.CsvLog`) is made durable first: a
    checkpoint of step N promises the log rows up to N.
    """
    if log is not None:
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
