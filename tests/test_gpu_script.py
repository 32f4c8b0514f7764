"""The GPU training script's whole path, dry-run on the CPU (the GPU itself is not in CI)."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_train", REPO / "scripts" / "gpu_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_args_are_time_limited_and_resume(tmp_path):
    gpu = _script()
    args = gpu.train_args(tmp_path / "run", 8.0, dry_run=False)
    assert args[:2] == ["--preset", "paper"] and "--resume" not in args
    assert "max_minutes=8.0" in args and "ckpt_every_minutes=2" in args
    assert "data_source=pack" in args
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "ckpt_latest.safetensors").write_bytes(b"")
    assert "--resume" in gpu.train_args(tmp_path / "run", 8.0, dry_run=False)


def test_dry_run_trains_and_exports_an_fp16_checkpoint(tmp_path, capsys):
    from sketchedit.checkpoints import read_checkpoint_metadata

    export = tmp_path / "out" / "gpu_model.safetensors"
    assert _script().main(["--dry-run", "--export", str(export)]) == 0
    meta = read_checkpoint_metadata(export)
    assert meta["user"]["stored_dtype"] == "float16" and meta["user"]["working_size"] == 32
    assert (tmp_path / "out" / "gpu_log.csv").is_file()
    assert "exported" in capsys.readouterr().out
