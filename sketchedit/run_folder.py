"""The run folder: what a training run writes besides its checkpoints, and who may write.

- ``log.csv``: one row per step, every loss term (:class:`CsvLog`, :func:`read_log`);
- ``samples/step_N.png``: sample grids (:func:`save_sample_grid`);
- ``config.json`` and ``config_changes.txt``: the configuration the run continues with and
  every setting a resume changed (:func:`open_run_folder`);
- ``.trainer.lock``: one trainer per folder (:func:`run_folder_lock`).

[ours] The paper's code has no such bookkeeping; it is what makes a killed run resume without
losing log rows, leaving stale files, or mixing two trainers' checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from sketchedit.fileio import atomic_path
from sketchedit.images import to_pil
from sketchedit.presets import TrainConfig
from sketchedit.train_checkpoints import read_training_metadata

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
    "g_edge",
    "g_total",
    "m_rgb",
    "m_composite",
    "m_bce",
    "mask_mean",
    "sec_per_step",
)

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


def write_binned_log(log: dict[str, np.ndarray], path: str | os.PathLike, every: int = 25) -> Path:
    """Write a compact copy of a training log: the mean of every column over bins of
    ``every`` consecutive rows (NaN-aware: a term logged in part of a bin is averaged over
    those rows; one never logged there stays empty). ``step`` is each bin's last step,
    ``stage`` its last row's stage; the file has the columns of ``log.csv``, so
    :func:`read_log` reads it. ``log``: the columns of :func:`read_log`.

    This is how a shipped model carries its real training curves in a few dozen KB.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive int, got {every!r}")
    n = len(log["step"])
    if n == 0:
        raise ValueError("the log has no rows")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, LOG_COLUMNS)
        w.writeheader()
        for start in range(0, n, every):
            end = min(n, start + every)
            row = {"step": int(log["step"][end - 1]), "stage": str(log["stage"][end - 1])}
            for k in LOG_COLUMNS:
                if k in row:
                    continue
                part = log[k][start:end]
                part = part[np.isfinite(part)]
                row[k] = f"{part.mean():.6g}" if part.size else ""
            w.writerow(row)
    return path


# ------------------------------------------------------------------------------------------
# Sample grids
# ------------------------------------------------------------------------------------------


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    """(3|1, H, W) image in [-1, 1] or mask in [0, 1] -> (H, W, 3) uint8."""
    t = t.detach().float().cpu()
    if t.shape[0] == 1:  # a mask (or the inverted sketch): [0, 1] -> [-1, 1], grey as RGB
        t = (t * 2 - 1).expand(3, -1, -1)
    return np.asarray(to_pil(t))


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
# One trainer per run folder
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
    may not reach, e.g. NFS) is refused, because we cannot tell whether it still runs (nor
    when a new process reuses the dead owner's pid): the message says which file to delete.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the owner check below still sees a live owner
        fcntl = None

    out_dir = Path(out_dir)
    path = out_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    with open(path, "a+") as f:  # noqa: PTH123 (the fd carries the flock)
        try:
            if fcntl is not None:
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


# ------------------------------------------------------------------------------------------
# Leftovers of a kill, changed settings, the export path
# ------------------------------------------------------------------------------------------


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
_ROUTINE_ON_RESUME = ("resume", "steps", "out_dir", "max_minutes", "ckpt_every_minutes")


def config_changes(stored: dict, cfg: TrainConfig) -> list[tuple[str, object, object]]:
    """``(name, stored value, new value)`` for every setting ``cfg`` changes in a resumed run."""
    old = TrainConfig.from_dict(stored).to_dict()
    new = cfg.to_dict()
    return [(k, old[k], new[k]) for k in new if k not in _ROUTINE_ON_RESUME and old[k] != new[k]]


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
# Opening the run folder
# ------------------------------------------------------------------------------------------


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
            print(f"removed {p}, left by a write that a kill interrupted", file=sys.stderr)
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
