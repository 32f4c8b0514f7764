"""Ship a finished run as the starter model: weights, a compact training log, the last samples.

    python scripts/export_starter.py runs/edge64

writes, into ``sketchedit/assets/``:

- ``starter.safetensors``: M and G of the run's latest checkpoint (float32, no optimiser state,
  the training configuration and step in its metadata; ``export_inference_checkpoint``);
- ``starter_training_log.csv``: the run's ``log.csv`` in bins of 25 steps
  (``run_folder.write_binned_log``; ``read_log`` reads it back), so notebook 05 can plot the
  shipped model's real curves without a 1-MB log in the repository;
- ``starter_samples.png``: the run's last sample grid (columns in ``samples/columns.txt``).

It does not judge the run: compare it with the shipped model on the validation split first
(``python -m sketchedit evaluate ... --split validation``, see the model card).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sketchedit.run_folder import read_log, write_binned_log
from sketchedit.train_checkpoints import export_inference_checkpoint

ASSETS = Path(__file__).resolve().parents[1] / "sketchedit" / "assets"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "run_dir", type=Path, help="a training run folder (holds ckpt_latest.safetensors)"
    )
    ap.add_argument(
        "--assets", type=Path, default=ASSETS, help="where to write (default: the package's)"
    )
    ap.add_argument("--bin", type=int, default=25, help="steps per bin of the shipped log")
    args = ap.parse_args(argv)

    samples = sorted((args.run_dir / "samples").glob("step_*.png"))
    if not samples:
        raise SystemExit(f"{args.run_dir}: no sample grids in samples/")
    args.assets.mkdir(parents=True, exist_ok=True)
    ckpt = export_inference_checkpoint(args.run_dir, args.assets / "starter.safetensors")
    log = write_binned_log(
        read_log(args.run_dir / "log.csv"), args.assets / "starter_training_log.csv", every=args.bin
    )
    grid = args.assets / "starter_samples.png"
    shutil.copyfile(samples[-1], grid)
    for p in (ckpt, log, grid):
        print(f"{p}  {p.stat().st_size / 1e6:.2f} MB")
    print(f"sample grid: {samples[-1].name}")


if __name__ == "__main__":
    main()
