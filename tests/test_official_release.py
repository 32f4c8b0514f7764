"""The official weights as users have them: the downloaded archive, its folder, the two files.

Synthetic official-format checkpoints: random tensors with exactly the official names and
shapes (tests/data/official-checkpoint-layout.json), written with ``torch.save`` as the
official code saves ``net.cpu().state_dict()``, inside a ``celeb.zip`` laid out as the official
download script's archives (``celeb/latest_net_M.pth``, ``celeb/latest_net_G.pth``).
"""

import hashlib
import io
import json
import math
import zipfile
from pathlib import Path

import pytest
import torch

from sketchedit.checkpoints import CheckpointError, load_official
from sketchedit.editor import SketchEditor
from sketchedit.official_release import read_official_release

LAYOUT = json.loads(
    (Path(__file__).parent / "data" / "official-checkpoint-layout.json").read_text()
)
FILES = ("latest_net_M.pth", "latest_net_G.pth")


def official_tensors(file_name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the official names and shapes of ``file_name``.

    Weights are scaled by 1/sqrt(fan-in) so the networks' outputs stay finite (plain unit
    Gaussians overflow to inf after a few dozen layers and the editor refuses them).
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in LAYOUT[file_name]["tensors"].items():
        t = torch.randn(shape, generator=g)
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 100
        out[name] = t / math.sqrt(fan_in)
    return out


def pth_bytes(state_dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


def official_files(seed: int = 0) -> dict[str, bytes]:
    """``{"latest_net_M.pth": bytes, "latest_net_G.pth": bytes}``, as torch.save writes them."""
    return {name: pth_bytes(official_tensors(name, seed)) for name in FILES}


def write_archive(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    """A zip with ``members`` (name -> bytes) and their folder entries, as ``zip -r`` makes."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for folder in sorted({n.rsplit("/", 1)[0] + "/" for n in members if "/" in n}):
            zf.writestr(folder, b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def files():
    return official_files(seed=0)


@pytest.fixture(scope="module")
def release(tmp_path_factory, files):
    """``celeb.zip`` as downloaded, and ``checkpoints/celeb/`` as the script extracts it."""
    root = tmp_path_factory.mktemp("official")
    archive = write_archive(
        root / "celeb.zip", {f"celeb/{n}": d for n, d in files.items()}, zipfile.ZIP_DEFLATED
    )
    folder = write_folder(root / "checkpoints" / "celeb", files)
    return archive, folder


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Every accepted form loads the same weights and reports their sha256.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["zip", "folder", "parent folder", "two files"])
def test_every_form_loads_the_official_tensors_and_reports_their_sha256(release, files, form):
    archive, folder = release
    args = {
        "zip": (archive,),
        "folder": (folder,),
        "parent folder": (folder.parent,),
        "two files": (folder / FILES[0], folder / FILES[1]),
    }[form]
    editor = SketchEditor.from_official(*args)

    expected = {"M": sha(files[FILES[0]]), "G": sha(files[FILES[1]])}
    assert editor.official_sha256 == expected
    for role, net, name in (
        ("M", editor.mask_estimator, FILES[0]),
        ("G", editor.generator, FILES[1]),
    ):
        original = official_tensors(name, seed=0)
        loaded = net.to_official()
        assert loaded.keys() == original.keys()
        assert all(torch.equal(loaded[k], original[k]) for k in original), name
        assert expected[role][:16] in net.source
    assert editor.working_size == 256
    if form == "zip":
        assert f"{archive}:celeb/latest_net_M.pth" in editor.source
        assert f"{archive}:celeb/latest_net_G.pth" in editor.source


def test_archive_with_the_files_at_its_top_loads_too(tmp_path, files):
    archive = write_archive(tmp_path / "places.zip", dict(files))
    weights = read_official_release(archive)
    assert weights.sha256 == {"M": sha(files[FILES[0]]), "G": sha(files[FILES[1]])}
    assert weights.sources["G"] == f"{archive}:latest_net_G.pth"


def test_load_official_reads_bytes_safely(files):
    state = load_official(files[FILES[0]], name="celeb.zip:celeb/latest_net_M.pth")
    assert state.keys() == LAYOUT[FILES[0]]["tensors"].keys()


class NotAWeight:  # an arbitrary class: weights_only=True must refuse to unpickle it
    pass


def test_an_archive_member_with_arbitrary_objects_is_refused(tmp_path, files):
    evil = pth_bytes({"conv1.weight": torch.zeros(1), "payload": NotAWeight()})
    archive = write_archive(
        tmp_path / "celeb.zip",
        {"celeb/latest_net_M.pth": evil, "celeb/latest_net_G.pth": files[FILES[1]]},
    )
    with pytest.raises(CheckpointError, match=r"cannot read .*celeb\.zip:celeb/latest_net_M\.pth"):
        SketchEditor.from_official(archive)


# --------------------------------------------------------------------------------------------
# Clear errors.
# --------------------------------------------------------------------------------------------
def test_a_file_that_is_not_a_zip_is_named_as_such(tmp_path):
    fake = tmp_path / "celeb.zip"
    fake.write_bytes(b"<html>sign in to SharePoint</html>")  # what a failed download saves
    with pytest.raises(CheckpointError, match=r"celeb\.zip is not a zip archive"):
        SketchEditor.from_official(fake)


def test_a_foreign_archive_lists_what_it_contains(tmp_path):
    archive = write_archive(tmp_path / "other.zip", {"photos/a.jpg": b"x", "readme.txt": b"y"})
    with pytest.raises(
        CheckpointError, match=r"no member latest_net_M\.pth.*contains: .*readme\.txt"
    ):
        SketchEditor.from_official(archive)


def test_a_missing_member_is_named(tmp_path, files):
    archive = write_archive(tmp_path / "celeb.zip", {"celeb/latest_net_M.pth": files[FILES[0]]})
    message = r"no member latest_net_G\.pth \(the generator\).*contains: celeb/latest_net_M\.pth"
    with pytest.raises(CheckpointError, match=message):
        SketchEditor.from_official(archive)


def test_a_folder_missing_one_file_names_it(tmp_path, files):
    folder = write_folder(tmp_path / "celeb", {FILES[0]: files[FILES[0]]})
    with pytest.raises(CheckpointError, match=r"lacks latest_net_G\.pth \(the generator\)"):
        SketchEditor.from_official(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match=r"no official checkpoint in the folder.*notes\.txt"):
        SketchEditor.from_official(empty)


def test_a_folder_with_both_models_asks_for_one(tmp_path, files):
    write_folder(tmp_path / "checkpoints" / "celeb", files)
    write_folder(tmp_path / "checkpoints" / "places", files)
    with pytest.raises(CheckpointError, match=r"several official models \(celeb, places\)"):
        SketchEditor.from_official(tmp_path / "checkpoints")


def test_a_generator_passed_as_the_mask_estimator_is_named(tmp_path, files):
    folder = write_folder(tmp_path / "celeb", files)
    g = folder / FILES[1]
    message = r"latest_net_G\.pth holds the official generator .*wconv\*.*not the mask estimator"
    with pytest.raises(CheckpointError, match=message):
        SketchEditor.from_official(g, g)
    with pytest.raises(CheckpointError, match=r"the two files are swapped"):
        SketchEditor.from_official(g, folder / FILES[0])
    # The same inside an archive whose members carry the wrong names.
    archive = write_archive(
        tmp_path / "celeb.zip",
        {"celeb/latest_net_M.pth": files[FILES[1]], "celeb/latest_net_G.pth": files[FILES[0]]},
    )
    with pytest.raises(
        CheckpointError, match=r"celeb/latest_net_M\.pth holds the official generator"
    ):
        SketchEditor.from_official(archive)


def test_missing_paths_and_a_lone_file(tmp_path, release):
    _, folder = release
    with pytest.raises(FileNotFoundError, match="nothing.zip"):
        SketchEditor.from_official(tmp_path / "nothing.zip")
    with pytest.raises(FileNotFoundError, match=r"generator checkpoint file at .*absent\.pth"):
        SketchEditor.from_official(folder / FILES[0], tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match=r"is one file: pass the official archive"):
        SketchEditor.from_official(folder / FILES[0])


def test_the_conv1_width_check_still_applies_inside_an_archive(tmp_path, files):
    m = official_tensors(FILES[0])
    m["conv1.weight"], m["conv1.bias"] = torch.zeros(50, 4, 5, 5), torch.zeros(50)
    archive = write_archive(
        tmp_path / "celeb.zip",
        {"celeb/latest_net_M.pth": pth_bytes(m), "celeb/latest_net_G.pth": files[FILES[1]]},
    )
    with pytest.raises(CheckpointError, match=r"conv1\.weight has 50 .*cnum=50.*reads 24"):
        SketchEditor.from_official(archive)


def test_an_archive_mixing_two_models_files_is_refused(tmp_path, files):
    archive = write_archive(
        tmp_path / "mixed.zip",
        {"celeb/latest_net_M.pth": files[FILES[0]], "places/latest_net_G.pth": files[FILES[1]]},
    )
    with pytest.raises(CheckpointError, match=r"two different models' files"):
        SketchEditor.from_official(archive)
