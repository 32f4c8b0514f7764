"""Photo sources and splits for training and evaluation (stream.photo_split)."""

import pytest

from sketchedit.data.photos import split_photos
from sketchedit.stream import photo_pool, photo_split, resolve_source


def keys(photos):
    return {p.key for p in photos}


def test_auto_is_the_bundled_pool_without_a_pack_and_pack_says_how_to_build_one():
    assert resolve_source("auto") == "bundled"  # conftest hides any pack on this machine
    assert keys(photo_pool("auto")) == keys(photo_pool("bundled"))
    with pytest.raises(FileNotFoundError, match="make photos"):
        photo_split("pack", "train")


def test_bundled_splits_partition_the_pool_and_keep_todays_train_side():
    pool = photo_pool("bundled")
    train, heldout = split_photos(pool, 0.2, seed=0)
    assert keys(photo_split("bundled", "train")) == keys(train)
    assert keys(photo_split("bundled", "heldout")) == keys(heldout)
    val, test = photo_split("bundled", "validation"), photo_split("bundled", "test")
    assert keys(val) | keys(test) == keys(heldout) and not keys(val) & keys(test)
    with pytest.raises(ValueError, match="split must be one of"):
        photo_split("bundled", "dev")


def test_the_pack_uses_its_own_splits(tmp_path, monkeypatch):
    from sketchedit.data import photos as photos_mod

    calls = []
    monkeypatch.setattr(photos_mod, "pack_available", lambda cache=None: True)
    monkeypatch.setattr(
        photos_mod, "pack_photos", lambda split=None, cache=None: calls.append(split) or []
    )
    assert resolve_source("auto") == "pack"
    photo_split("auto", "validation")
    photo_split("pack", "heldout")
    photo_split("pack", "train")
    assert calls == ["validation", "test", "train"]
