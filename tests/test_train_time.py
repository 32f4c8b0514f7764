"""Time-limited training (for lent GPUs and short sessions), visible-edit data, and the
working size recorded in exported checkpoints."""

import pytest
from test_train import photo_dir, small_config  # noqa: F401  (tests/ is on sys.path; fixture)

from sketchedit.presets import get_config
from sketchedit.train import train
from sketchedit.train_checkpoints import (
    export_inference_checkpoint,
    read_training_checkpoint,
    step_checkpoints,
)


def test_max_minutes_stops_early_with_a_checkpoint_and_resume_continues(photo_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    cfg = small_config(photo_dir, out, steps=50, max_minutes=1e-6)
    result = train(cfg, progress=False)
    assert result.step == 1  # the limit is checked after each step
    _, meta = read_training_checkpoint(out / "ckpt_latest.safetensors")
    assert meta["step"] == 1
    again = train(cfg.replace(max_minutes=0.0, steps=3, resume=str(out)), progress=False)
    assert again.step == 3


def test_time_based_checkpoints(photo_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    cfg = small_config(photo_dir, out, steps=3, ckpt_every_minutes=1e-6, keep_last=5)
    train(cfg, progress=False)
    # one checkpoint after each step before the last, plus the final one
    assert [p.name for p in step_checkpoints(out)] == [
        f"ckpt_step_{n:06d}.safetensors" for n in (1, 2, 3)
    ]


def test_visible_fraction_reaches_the_data_and_export_records_the_working_size(
    photo_dir,  # noqa: F811
    tmp_path,
):
    from sketchedit.editor import SketchEditor
    from sketchedit.stream import build_dataset, training_photos

    cfg = small_config(photo_dir, tmp_path / "run", steps=1, visible_fraction=1.0)
    assert build_dataset(cfg, training_photos(cfg)).visible_fraction == 1.0
    train(cfg, progress=False)
    exported = export_inference_checkpoint(tmp_path / "run", tmp_path / "model.safetensors")
    assert SketchEditor.from_pretrained(exported).working_size == cfg.image_size == 32


@pytest.mark.parametrize(
    "field,value", [("max_minutes", -1.0), ("ckpt_every_minutes", -0.5), ("visible_fraction", 1.5)]
)
def test_time_and_visible_settings_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        get_config("tiny", **{field: value})
