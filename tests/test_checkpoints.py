"""Official checkpoint mapping (nets/official.py) and our safetensors formats (checkpoints.py):
inference checkpoints and the reading of training checkpoints."""

import json
import os
from pathlib import Path

import pytest
import torch

from sketchedit.checkpoints import (
    CheckpointError,
    is_training_checkpoint,
    load_checkpoint,
    load_networks,
    load_official,
    read_checkpoint_metadata,
    read_training_checkpoint,
    read_training_metadata,
    save_checkpoint,
)
from sketchedit.nets import Discriminator, Generator, MaskEstimator, official

LAYOUT = json.loads(
    (Path(__file__).parent / "data" / "official-checkpoint-layout.json").read_text()
)
CASES = [(MaskEstimator, LAYOUT["latest_net_M.pth"]), (Generator, LAYOUT["latest_net_G.pth"])]


def official_state_dict(entry, seed=0):
    """A random state dict with exactly the official names and shapes (read from the JSON)."""
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, shape in entry["tensors"].items()}


# --------------------------------------------------------------------------------------------
# Official layout.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "entry"), CASES)
def test_official_round_trip_is_lossless_and_one_to_one(cls, entry):
    sd = official_state_dict(entry)
    net = cls.from_official(sd)
    back = net.to_official()
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    # Every official tensor lands in exactly one of ours, and every one of ours is covered.
    table = official.tensor_table(cls)
    assert len(set(table.values())) == len(table) == len(sd)
    assert set(table.values()) == set(net.state_dict())
    ours = net.state_dict()
    assert all(torch.equal(ours[table[k]], sd[k]) for k in sd)


@pytest.mark.parametrize(("cls", "entry"), CASES)
def test_official_errors_name_the_tensor(cls, entry):
    sd = official_state_dict(entry)
    missing = dict(sd)
    del missing["conv3.bias"]
    with pytest.raises(CheckpointError, match=r"missing tensors: conv3\.bias"):
        cls.from_official(missing)
    extra = dict(sd, **{"conv99.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected tensors: conv99\.weight"):
        cls.from_official(extra)
    bad = dict(sd, **{"conv16.weight": torch.zeros(24, 24, 5, 5)})
    with pytest.raises(CheckpointError, match=r"conv16\.weight has shape \(24, 24, 5, 5\)"):
        cls.from_official(bad)
    with pytest.raises(TypeError):
        cls.from_official([1, 2, 3])


def test_the_two_official_files_are_not_interchangeable():
    with pytest.raises(CheckpointError, match="conv_mask_11"):
        Generator.from_official(official_state_dict(LAYOUT["latest_net_M.pth"]))


def test_load_official_unwraps_containers_and_module_prefix(tmp_path):
    sd = official_state_dict(LAYOUT["latest_net_M.pth"])
    variants = {
        "bare.pth": sd,
        "wrapped.pth": {"state_dict": sd, "epoch": 3},
        "dataparallel.pth": {f"module.{k}": v for k, v in sd.items()},
        "nested.pth": {"model": {"state_dict": {f"module.{k}": v for k, v in sd.items()}}},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        loaded = load_official(tmp_path / name)
        assert loaded.keys() == sd.keys(), name
        net = MaskEstimator.from_official(loaded)
        assert torch.equal(net.to_official()["conv17.bias"], sd["conv17.bias"])


class NotAWeight:  # an arbitrary class: weights_only=True must refuse to unpickle it
    pass


def test_load_official_never_unpickles_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": NotAWeight()}, path)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_official(path)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_official(tmp_path / "garbage.pth")
    with pytest.raises(FileNotFoundError):
        load_official(tmp_path / "absent.pth")


# --------------------------------------------------------------------------------------------
# Our format.
# --------------------------------------------------------------------------------------------
@pytest.fixture
def nets():
    return {
        "mask_estimator": MaskEstimator(cnum=4),
        "generator": Generator(cnum=4, style_pool="avg"),
        "discriminator": Discriminator(cnum=4),
    }


def test_checkpoint_round_trip(tmp_path, nets):
    path = tmp_path / "ck.safetensors"
    for net in nets.values():  # make the weights distinguishable from a fresh init
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
    save_checkpoint(path, nets, metadata={"step": 7, "preset": "tiny"})
    loaded = load_checkpoint(path)
    assert loaded.keys() == nets.keys()
    for name, net in nets.items():
        assert type(loaded[name]) is type(net)
        assert loaded[name].config() == net.config()
        sd, sd2 = net.state_dict(), loaded[name].state_dict()
        assert sd.keys() == sd2.keys()
        assert all(torch.equal(sd[k], sd2[k]) for k in sd), name
    meta = read_checkpoint_metadata(path)
    assert meta["format_version"] == 1 and meta["user"] == {"step": 7, "preset": "tiny"}
    assert meta["networks"]["generator"] == {
        "class": "Generator",
        "config": {"cnum": 4, "style_pool": "avg"},
    }
    # One file, tensors keyed "<name>.<param>".
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert "generator.coarse_encoder.conv1.weight" in f.keys()


def _rewrite(path, mutate_tensors=None, mutate_header=None):
    """Rewrite a checkpoint with changed tensors / metadata (to build broken files)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["sketchedit"])
    if mutate_tensors:
        mutate_tensors(tensors)
    if mutate_header:
        mutate_header(header)
    save_file(tensors, str(path), metadata={"sketchedit": json.dumps(header)})


def test_checkpoint_errors(tmp_path, nets):
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"mask_estimator": nets["mask_estimator"]})

    def version(h):
        h["format_version"] = 2

    p = tmp_path / "v2.safetensors"
    p.write_bytes(path.read_bytes())
    _rewrite(p, mutate_header=version)
    with pytest.raises(CheckpointError, match="format version 2"):
        load_checkpoint(p)

    key = "mask_estimator.trunk.conv1.bias"
    for label, mutate, message in [
        ("missing", lambda t: t.pop(key), r"missing tensors: trunk\.conv1\.bias"),
        ("shape", lambda t: t.__setitem__(key, torch.zeros(3)), r"trunk\.conv1\.bias has shape"),
        ("extra", lambda t: t.__setitem__("mask_estimator.extra", torch.zeros(1)), "extra"),
        ("stray", lambda t: t.__setitem__("nobody.w", torch.zeros(1)), r"nobody\.w"),
    ]:
        p = tmp_path / f"{label}.safetensors"
        p.write_bytes(path.read_bytes())
        _rewrite(p, mutate_tensors=mutate)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(p)

    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a sketchedit checkpoint"):
        load_checkpoint(plain)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(garbage)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)

    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_save_checkpoint_rejects_bad_arguments(tmp_path, nets):
    with pytest.raises(ValueError, match="without '.'"):
        save_checkpoint(tmp_path / "a.safetensors", {"a.b": nets["mask_estimator"]})
    with pytest.raises(TypeError, match="cannot save"):
        save_checkpoint(tmp_path / "a.safetensors", {"x": torch.nn.Linear(2, 2)})
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "a.safetensors", nets, metadata={"x": object()})
    assert not list(tmp_path.iterdir())  # nothing written


def test_failed_write_leaves_the_old_file(tmp_path, nets, monkeypatch):
    import safetensors.torch

    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"mask_estimator": nets["mask_estimator"]})
    before = path.read_bytes()

    def half_write_then_crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write_then_crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, nets)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp file left
    assert load_checkpoint(path).keys() == {"mask_estimator"}


# --------------------------------------------------------------------------------------------
# Untrusted files: the metadata is checked against the stored shapes before any allocation.
# --------------------------------------------------------------------------------------------
def _with_metadata_config(src, dst, network, **config):
    """Copy checkpoint ``src`` to ``dst`` with ``network``'s metadata config changed."""
    from safetensors.torch import load_file, save_file

    header = read_checkpoint_metadata(src)
    header["networks"][network]["config"].update(config)
    save_file(load_file(str(src)), str(dst), metadata={"sketchedit": json.dumps(header)})
    return dst


@pytest.mark.parametrize("cnum", [512, 4096])
def test_metadata_claiming_a_huge_network_is_refused_before_allocating(tmp_path, cnum):
    # Today's failure: cnum 512 built the 2.6 GB network (7 s) before the shapes were compared,
    # cnum 4096 died in the allocator.
    import time

    small = tmp_path / "small.safetensors"
    save_checkpoint(small, {"mask_estimator": MaskEstimator(cnum=8), "generator": Generator(8)})
    liar = _with_metadata_config(small, tmp_path / "liar.safetensors", "generator", cnum=cnum)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"liar.*'generator'.*cnum': {cnum}.*has shape"):
        load_checkpoint(liar)
    assert time.perf_counter() - start < 2.0


def test_official_conv1_of_the_wrong_width_names_the_tensor_and_both_widths():
    # Today: "cnum must be a positive multiple of 4, got 50" with no tensor named.
    sd = official_state_dict(LAYOUT["latest_net_M.pth"])
    sd["conv1.weight"], sd["conv1.bias"] = torch.zeros(50, 4, 5, 5), torch.zeros(50)
    message = r"conv1\.weight has 50 .*cnum=50.*reads 24 .*cnum=48"
    with pytest.raises(CheckpointError, match=message):
        MaskEstimator.from_official(sd)


def test_nets_take_official_state_dicts_only_and_name_the_reader(tmp_path):
    with pytest.raises(TypeError, match=r"load_official"):
        MaskEstimator.from_official(tmp_path / "latest_net_M.pth")


# --------------------------------------------------------------------------------------------
# Training checkpoints: read by this module too, with the same distrust (the lying files are
# rows of the bad-input matrix, tests/test_bad_inputs.py).
# --------------------------------------------------------------------------------------------
@pytest.fixture
def training_checkpoint(tmp_path):
    """A real training checkpoint (M, G, D of width 8, optimisers, RNG) in a run folder."""
    from sketchedit.objective import build_networks, make_optimizers
    from sketchedit.presets import get_config
    from sketchedit.train_checkpoints import save_training_checkpoint

    cfg = get_config("tiny", cnum=8, disc_cnum=8, image_size=32)
    nets = build_networks(cfg)
    path = tmp_path / "run" / "ckpt_latest.safetensors"
    path.parent.mkdir()
    return save_training_checkpoint(path, cfg, 3, nets, make_optimizers(cfg, nets)), nets


def _with_training_metadata(path, mutate):
    """Rewrite the training metadata of ``path`` in place (to build lying files)."""
    from safetensors.torch import load_file, save_file

    meta = read_training_metadata(path)
    mutate(meta)
    save_file(load_file(str(path)), str(path), metadata={"sketchedit_train": json.dumps(meta)})


def test_training_checkpoint_round_trip_through_the_reader(training_checkpoint):
    path, nets = training_checkpoint
    loaded, meta = load_networks(path.parent)  # a run folder stands for its latest checkpoint
    assert meta["step"] == 3 and loaded.keys() == nets.keys() == {"M", "G", "D"}
    for name, net in nets.items():
        assert type(loaded[name]) is type(net) and loaded[name].source == str(path)
        sd, sd2 = net.state_dict(), loaded[name].state_dict()
        assert all(torch.equal(sd[k], sd2[k]) for k in sd), name


def test_training_checkpoint_readers_name_the_file(training_checkpoint, tmp_path):
    path, _ = training_checkpoint
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*empty.*ckpt_latest"):
        load_networks((tmp_path / "empty").mkdir() or tmp_path / "empty")
    inference = save_checkpoint(tmp_path / "inf.safetensors", {"m": MaskEstimator(cnum=4)})
    assert is_training_checkpoint(path) and not is_training_checkpoint(inference)
    with pytest.raises(CheckpointError, match=r"inf\.safetensors: not a sketchedit training"):
        read_training_metadata(inference)
    _with_training_metadata(path, lambda meta: meta.update(version=99))
    with pytest.raises(CheckpointError, match=r"format 'sketchedit-train-checkpoint' v99"):
        read_training_checkpoint(path)
