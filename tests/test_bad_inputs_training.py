"""Bad input to the trainer never loses work or trains on nonsense (issue 10, items 7-14).

One row of :data:`TRAINING_CASES` per case: what is done to a run (a scenario function
below), and what must come out of ``python -m sketchedit.train`` (its ``main()``): ``"ok"``
(exit 0; the scenario itself checks the run folder afterwards) or ``"error: <fragment>"``
(exit 2 with one ``error:`` line containing the fragment, no traceback). Rows marked
"already works" guard behaviour that was right before the issue was filed.

Runs are 32 px, cnum 8, batch 2 and one to four steps on six small photos.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_train  # tests/ is on sys.path (no __init__.py): its settings and photos

from sketchedit import run_folder as R
from sketchedit import train as T
from sketchedit import train_checkpoints as C
from sketchedit.presets import TrainConfig, get_config

REPO = Path(__file__).resolve().parents[1]

#: The small settings of every run (strings, as on the command line): those of test_train,
#: without samples and intermediate checkpoints unless a case asks for them.
SMALL = {**test_train.SMALL, "sample_every": "0", "ckpt_every": "0"}
photo_dir = test_train.photo_dir  # the fixture: six 64x64 photos, a tiny, fast training folder

#: Every float setting of TrainConfig (tuples of floats included): none may be NaN or inf.
FLOAT_FIELDS = [
    f.name
    for f in dataclasses.fields(TrainConfig)
    if typing.get_type_hints(TrainConfig)[f.name] is float
    or typing.get_origin(typing.get_type_hints(TrainConfig)[f.name]) is tuple
]


@dataclass
class Run:
    """One case's run folder and the trainer's command line, in-process."""

    out: Path
    photo_dir: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture

    def settings(self, **extra) -> list[str]:
        out = []
        for k, v in {**SMALL, "data_source": str(self.photo_dir), **extra}.items():
            out += ["--set", f"{k}={v}"]
        return out

    def main(self, *args: str) -> tuple[int, str]:
        """``main(args)`` -> (exit code, its stderr); earlier output is discarded."""
        self.capsys.readouterr()
        code = T.main([*args, "--no-progress"])
        return code, self.capsys.readouterr().err

    def fresh(self, steps: int = 1, *extra: str, **settings) -> tuple[int, str]:
        """A new tiny run of ``steps`` steps into ``self.out``."""
        args = ["--preset", "tiny", "--steps", str(steps), "--out-dir", str(self.out)]
        return self.main(*args, *self.settings(**settings), *extra)

    def resume(self, steps: int, *extra: str) -> tuple[int, str]:
        return self.main("--resume", str(self.out), "--steps", str(steps), *extra)

    def trained(self, steps: int = 1, **settings) -> None:
        code, err = self.fresh(steps, **settings)
        assert code == 0, err

    def log_steps(self) -> list[int]:
        return [int(s) for s in R.read_log(self.out / "log.csv")["step"]]

    def stored_config(self) -> dict:
        return json.loads((self.out / "config.json").read_text())


# ------------------------------------------------------------------------------------------
# Scenarios: each does something to a run and returns main()'s (exit code, stderr)
# ------------------------------------------------------------------------------------------


def killed_after_a_checkpoint(run: Run):
    """Item 7: a kill (no flush, no clean-up) at step 4, after the checkpoint of step 2, with
    the log flushed only every 100 steps: the log must still hold steps 1 and 2."""
    killer = (
        "import os, sys\n"
        "import sketchedit.train as T\n"
        "step_fn = T.gan_step\n"
        "def dying(cfg, step, *a, **k):\n"
        "    if step == 3:\n"
        "        os._exit(9)\n"
        "    return step_fn(cfg, step, *a, **k)\n"
        "T.gan_step = dying\n"
        "sys.exit(T.main(sys.argv[1:]))\n"
    )
    args = ["--preset", "tiny", "--steps", "6", "--out-dir", str(run.out), "--no-progress"]
    args += run.settings(ckpt_every=2, keep_last=0, log_every=100)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, "-c", killer, *args], env=env, capture_output=True, timeout=300
    )
    assert r.returncode == 9, r.stderr.decode()[-2000:]
    assert C.read_training_metadata(run.out)["step"] == 2
    result = run.resume(4)
    assert run.log_steps() == [1, 2, 3, 4]
    return result


def torn_last_log_row(run: Run):
    """Item 7: the last row was cut after one character (``1`` of ``12,joint,...``): it is
    dropped on resume, not kept as a second, empty step 1."""
    run.trained(2)
    with open(run.out / "log.csv", "a") as f:
        f.write("1")
    result = run.resume(3)
    assert run.log_steps() == [1, 2, 3]
    return result


def resume_from_an_older_checkpoint(run: Run):
    """Item 7 (already works): rows after the resumed step are dropped."""
    run.trained(4, ckpt_every=2, keep_last=2)
    result = run.main("--resume", str(run.out / "ckpt_step_000002.safetensors"), "--steps", "3")
    assert run.log_steps() == [1, 2, 3]
    return result


def resume_with_a_conflicting_preset(run: Run):
    """Item 8: ``--preset paper --resume RUN`` (a tiny run) is refused; config.json stays."""
    run.trained(1)
    before = (run.out / "config.json").read_bytes()
    result = run.main("--preset", "paper", "--resume", str(run.out), "--steps", "2")
    assert (run.out / "config.json").read_bytes() == before
    return result


def resume_with_its_own_preset_and_a_set(run: Run):
    """Item 8: ``--preset tiny --resume RUN --set lr_g=5e-5`` keeps the run's stored settings
    (32 px, cnum 8; the tiny preset says 64 px, cnum 16) and reports the one it changes."""
    run.trained(1)
    code, err = run.main(
        "--preset", "tiny", "--resume", str(run.out), "--steps", "2", "--set", "lr_g=5e-5"
    )
    assert "resume: changing lr_g from 0.0001 to 5e-05" in err
    stored = run.stored_config()
    assert (stored["image_size"], stored["cnum"], stored["lr_g"]) == (32, 8, 5e-5)
    assert "changing lr_g" in (run.out / "config_changes.txt").read_text()
    assert C.read_training_metadata(run.out)["step"] == 2
    return code, err


def resume_without_changes(run: Run):
    """Item 8 (already works, now quiet): a plain resume changes and reports nothing."""
    run.trained(1)
    code, err = run.resume(2)
    assert "resume: changing" not in err and not (run.out / "config_changes.txt").exists()
    return code, err


def checkpoints_past_step_999999(run: Run):
    """Item 9: after step 999,999 the newest step checkpoints must be kept, not deleted."""
    run.out.mkdir()
    steps = (999_998, 999_999, 1_000_000, 1_000_001)
    for s in steps:
        (run.out / f"ckpt_step_{s:06d}.safetensors").write_bytes(b"fake")
    assert C.step_checkpoints(run.out)[-1].name == "ckpt_step_1000001.safetensors"
    C.rotate_step_checkpoints(run.out, keep_last=2)
    kept = sorted(p.name for p in run.out.glob("ckpt_step_*"))
    assert kept == ["ckpt_step_1000000.safetensors", "ckpt_step_1000001.safetensors"]
    return 0, ""


#: Temporary files as a kill leaves them (fileio.atomic_path: ".NAME.XXXXXXXX.tmp"), and
#: files of the same look that are not the trainer's and must survive.
OURS = (".ckpt_latest.safetensors.k3x_9qaz.tmp", ".log.csv.abcd1234.tmp")
NOT_OURS = (".mynotes.abcd1234.tmp", "keep.tmp", ".ckpt_latest.safetensors.tmp")


def stale_temporary_files(run: Run):
    """Item 10: a resume removes the trainer's own leftover temporary files, only those."""
    run.trained(1)
    for name in OURS + NOT_OURS:
        (run.out / name).write_bytes(b"x" * 1000)
    (run.out / "samples" / ".step_000001.png.abcdefgh.tmp").write_bytes(b"x")
    code, err = run.resume(2)
    left = {p.name for p in run.out.glob("*.tmp")} | {p.name for p in run.out.rglob(".*.tmp")}
    assert left == set(NOT_OURS)
    assert "removed" in err
    return code, err


def second_trainer_in_the_same_folder(run: Run):
    """Item 11: another live process holds the run folder: the error names it and its pid."""
    run.trained(1)
    holder = (
        "import sys, time\n"
        "from sketchedit.run_folder import run_folder_lock\n"
        "with run_folder_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(run.out)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        code, err = run.resume(2)
        assert f"pid {proc.pid}" in err and str(run.out) in err
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert C.read_training_metadata(run.out)["step"] == 1  # nothing was written
    return code, err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def stale_lock_of_a_dead_trainer(run: Run):
    """Item 11: the lock of a trainer that died on this host is taken over, with a notice."""
    run.trained(1)
    owner = {"pid": _dead_pid(), "host": socket.gethostname()}
    (run.out / R.LOCK_NAME).write_text(json.dumps(owner))
    code, err = run.resume(2)
    assert f"taking over the lock of {str(run.out)!r} from pid {owner['pid']}" in err
    assert C.read_training_metadata(run.out)["step"] == 2
    return code, err


def lock_held_on_another_host(run: Run):
    """Item 11: a lock naming another host cannot be checked from here: refused."""
    run.trained(1)
    (run.out / R.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.invalid"}))
    return run.resume(2)


def set_non_finite(name: str, value: str):
    """Item 12: ``--set NAME=nan`` (or inf) for a float setting."""

    def scenario(run: Run):
        v = ",".join([value, "0.5", "0.5"]) if name == "mode_probs" else value
        return run.fresh(1, "--set", f"{name}={v}")

    scenario.__doc__ = f"--set {name}={value}"
    return scenario


def out_dir_is_a_file(run: Run):
    """Item 14: the output folder is a file."""
    run.out.write_text("not a folder")
    return run.fresh(1)


def _refuse_temp_files_in(monkeypatch, folder: Path, err: OSError) -> None:
    """Make every temporary file (atomic writes, the export probe) in ``folder`` fail."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):  # noqa: A002 (tempfile's own name)
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise err
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def read_only_out_dir(run: Run):
    """Item 14: nothing can be written in the run folder (read-only; simulated, since root
    may write anywhere)."""
    run.out.mkdir()
    denied = PermissionError(errno.EACCES, "Permission denied", str(run.out))
    _refuse_temp_files_in(run.monkeypatch, run.out, denied)
    return run.fresh(1)


def disk_full_during_a_checkpoint(run: Run):
    """Item 14: the disk fills up while the checkpoint is written: one-line error, no
    half-written or temporary file left."""
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    run.monkeypatch.setattr(safetensors.torch, "save_file", full)
    result = run.fresh(1)
    assert not list(run.out.glob("*.safetensors")) and not list(run.out.glob(".*.tmp"))
    return result


def _nothing_trained(run: Run, result):
    assert not (run.out / "log.csv").exists(), "the export path must be checked before training"
    return result


def export_to_a_folder(run: Run):
    """Item 14: ``--export`` names a folder: refused before training."""
    folder = run.out.parent / "exports"
    folder.mkdir()
    return _nothing_trained(run, run.fresh(1, "--export", str(folder)))


def export_into_a_missing_folder(run: Run):
    """Item 14: ``--export`` into a folder that does not exist: refused before training."""
    target = run.out.parent / "no" / "such" / "model.safetensors"
    return _nothing_trained(run, run.fresh(1, "--export", str(target)))


def export_into_a_read_only_folder(run: Run):
    """Item 14: ``--export`` into a folder nothing can be written to: refused before training."""
    folder = run.out.parent / "exports"
    folder.mkdir()
    _refuse_temp_files_in(
        run.monkeypatch, folder, PermissionError(errno.EACCES, "Permission denied", str(folder))
    )
    return _nothing_trained(run, run.fresh(1, "--export", str(folder / "m.safetensors")))


def export_to_a_good_path(run: Run):
    """Item 14 (already works): a good ``--export`` path gets the inference checkpoint."""
    target = run.out.parent / "m.safetensors"
    result = run.fresh(1, "--export", str(target))
    assert target.is_file()
    return result


TRAINING_CASES = [
    # (case, issue 10 item, scenario, expected outcome)
    ("killed after a checkpoint: its log rows survive", 7, killed_after_a_checkpoint, "ok"),
    ("torn last log row dropped on resume", 7, torn_last_log_row, "ok"),
    ("resume from an older checkpoint drops later rows", 7, resume_from_an_older_checkpoint, "ok"),
    (
        "--preset other --resume RUN",
        8,
        resume_with_a_conflicting_preset,
        "error: --preset paper conflicts with the run in",
    ),
    ("--preset own --resume RUN --set x", 8, resume_with_its_own_preset_and_a_set, "ok"),
    ("plain resume reports no change", 8, resume_without_changes, "ok"),
    ("step checkpoints past 999,999 rotate by step", 9, checkpoints_past_step_999999, "ok"),
    ("stale temporary files removed on resume", 10, stale_temporary_files, "ok"),
    (
        "second trainer in the same folder",
        11,
        second_trainer_in_the_same_folder,
        "error: run folder",
    ),
    ("stale lock of a dead trainer taken over", 11, stale_lock_of_a_dead_trainer, "ok"),
    (
        "lock held on another host",
        11,
        lock_held_on_another_host,
        "error: run folder",
    ),
    *[
        (f"--set {name}={value}", 12, set_non_finite(name, value), f"error: bad value for {name}")
        for name in FLOAT_FIELDS
        for value in ("nan", "inf")
    ],
    ("out_dir is a file", 14, out_dir_is_a_file, "is a file, not a folder"),
    ("read-only out_dir", 14, read_only_out_dir, "error: [Errno 13] Permission denied"),
    ("disk full during a checkpoint", 14, disk_full_during_a_checkpoint, "No space left"),
    ("--export to a folder", 14, export_to_a_folder, "is a folder; give a file name"),
    ("--export into a missing folder", 14, export_into_a_missing_folder, "does not exist"),
    ("--export into a read-only folder", 14, export_into_a_read_only_folder, "cannot write"),
    ("--export to a good path", 14, export_to_a_good_path, "ok"),
]


@pytest.mark.parametrize(
    ("item", "scenario", "expected"),
    [pytest.param(item, fn, want, id=case) for case, item, fn, want in TRAINING_CASES],
)
def test_training_bad_input(item, scenario, expected, photo_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = Run(tmp_path / "run", photo_dir, monkeypatch, capsys)
    code, err = scenario(run)
    if expected == "ok":
        assert code == 0, f"issue 10 item {item}: {err[-2000:]}"
        return
    assert code == 2, f"issue 10 item {item}: exit {code}, {err[-2000:]}"
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert expected.removeprefix("error: ") in errors[0], errors[0]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_settings_are_refused_from_python(name, value):
    """Item 12: the same from Python (``get_config``), where no string parsing is involved."""
    v = (value, 0.5, 0.5) if name == "mode_probs" else value
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number"):
        get_config("tiny", **{name: v})
