"""The official SketchEdit weights in the forms users have them: archive, folder, two files.

This module only *reads* what a user already downloaded; this repository never bundles or
downloads the authors' weights (they are CC BY-NC, see the README's "Official checkpoints").

Facts about the official release this module relies on (read in zengxianyu/sketchedit, which
is CC BY-NC: facts only, no code taken) [code]:

- ``download/download_model.sh`` fetches two archives into ``./checkpoints/`` under the names
  ``celeb.zip`` (the CelebA-HQ face model) and ``places.zip`` (the Places scene model) and runs
  ``unzip`` on each inside ``./checkpoints/``.
- ``test_celeb.sh`` / ``test_places.sh`` call ``test.py`` with ``--name celeb`` /
  ``--name places`` and ``--which_epoch latest``; ``util/util.py`` (``load_network``) then reads
  ``<checkpoints_dir>/<name>/<epoch>_net_<label>.pth`` with ``checkpoints_dir`` defaulting to
  ``./checkpoints`` (``options/base_options.py``), and ``models/editline2_model.py`` loads the
  labels ``M`` (the mask estimator, class ``MDGenerator``) and ``G`` (the generator,
  ``DeepFillC2Generator``). So each archive holds ``<name>/latest_net_M.pth`` and
  ``<name>/latest_net_G.pth``, and after the download script a user has the folder
  ``checkpoints/<name>/`` with those two files.
- The files are plain ``torch.save`` state dicts (``util/util.py`` saves
  ``net.cpu().state_dict()``); a ``module.`` prefix is dropped when loading.

Accepted forms (:func:`read_official_release`):

1. the archive as downloaded (``celeb.zip``): read with :mod:`zipfile`, nothing extracted;
2. the extracted model folder (``checkpoints/celeb/``), or the folder above it
   (``checkpoints/``) when it holds exactly one model;
3. the two files, mask estimator first (the historic two-argument form).

Every file is read once as bytes: its sha256 is taken of exactly the bytes that were loaded,
then :func:`sketchedit.checkpoints.load_official` parses them with
``torch.load(weights_only=True)`` (no arbitrary unpickling). Which network a file holds is
checked from its tensor names before any network is built, so a generator file passed as the
mask estimator is named as such instead of as a hundred unexpected tensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from pathlib import Path, PurePosixPath

import torch

from sketchedit.checkpoints import CheckpointError, load_official

__all__ = [
    "GENERATOR_FILE",
    "MASK_ESTIMATOR_FILE",
    "OfficialWeights",
    "read_official_release",
]

#: The official file names (``<epoch>_net_<label>.pth`` with epoch ``latest``). [code]
MASK_ESTIMATOR_FILE = "latest_net_M.pth"
GENERATOR_FILE = "latest_net_G.pth"
FILES = {"M": MASK_ESTIMATOR_FILE, "G": GENERATOR_FILE}
ROLE_NAMES = {"M": "mask estimator", "G": "generator"}

#: Tensor-name prefixes only one of the two official networks has. [code] The generator's
#: style encoder (``wconv``), refinement branches (``xconv``, ``pmconv``) and decoder
#: (``allconv``); the mask estimator's mask head (``conv_mask_``).
ONLY_IN = {"G": ("wconv", "xconv", "pmconv", "allconv"), "M": ("conv_mask_",)}

#: A member larger than this is refused before it is decompressed (the official files are
#: 8.5 and 21.5 MB): a corrupt or hostile archive cannot exhaust the memory. [ours]
MAX_MEMBER_BYTES = 1 << 30
#: How many archive or folder entries an error message lists.
MAX_LISTED = 12


@dataclasses.dataclass(frozen=True)
class OfficialWeights:
    """The two official state dicts and where they came from.

    Attributes:
        mask_estimator: the official ``latest_net_M.pth`` tensors (official names).
        generator: the official ``latest_net_G.pth`` tensors.
        sha256: ``{"M": hex digest, "G": hex digest}`` of the bytes read for each file.
        sources: ``{"M": ..., "G": ...}``, each file as a user would name it
            (``celeb.zip:celeb/latest_net_M.pth`` for an archive member, else its path).
    """

    mask_estimator: dict[str, torch.Tensor]
    generator: dict[str, torch.Tensor]
    sha256: dict[str, str]
    sources: dict[str, str]


def read_official_release(
    path: str | os.PathLike, generator_path: str | os.PathLike | None = None
) -> OfficialWeights:
    """Read the official weights from an archive, a folder, or the two files.

    Args:
        path: ``celeb.zip`` / ``places.zip``; a folder holding ``latest_net_M.pth`` and
            ``latest_net_G.pth`` (or the folder above one such folder); or, with
            ``generator_path``, the mask estimator's file.
        generator_path: the generator's file, only with a mask-estimator file as ``path``.

    Raises:
        FileNotFoundError: a path that does not exist.
        CheckpointError: not a zip archive, a missing member or file (the message lists what
            is there), an unreadable file, or a file that holds the other network.
    """
    path = Path(path)
    if generator_path is not None:
        return _from_files(path, Path(generator_path))
    if not path.exists():
        raise FileNotFoundError(f"no official checkpoint archive, folder or file at {path}")
    if path.is_dir():
        return _from_files(*_model_folder_files(path))
    if zipfile.is_zipfile(path) and not _is_torch_file(path):
        return _from_archive(path)
    if path.suffix.lower() == ".zip":
        raise CheckpointError(
            f"{path} is not a zip archive (truncated or not the downloaded file?); the official "
            f"download script saves celeb.zip and places.zip"
        )
    raise CheckpointError(
        f"{path} is one file: pass the official archive (celeb.zip / places.zip), its extracted "
        f"folder, or both files ({MASK_ESTIMATOR_FILE} then {GENERATOR_FILE})"
    )


def _is_torch_file(path: Path) -> bool:
    """A ``torch.save`` file is itself a zip (``<name>/data.pkl`` and tensor records): tell
    one ``.pth`` from the official archive, which holds ``.pth`` files."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [PurePosixPath(n).name for n in zf.namelist()]
    except zipfile.BadZipFile:
        return False
    return "data.pkl" in names and not any(n in FILES.values() for n in names)


# ---- the three forms -------------------------------------------------------------------------
def _from_files(m_path: Path, g_path: Path) -> OfficialWeights:
    for role, p in (("M", m_path), ("G", g_path)):
        if not p.is_file():
            what = "a folder, not a file" if p.is_dir() else "missing"
            raise FileNotFoundError(
                f"no official {ROLE_NAMES[role]} checkpoint file at {p} ({what})"
            )
    return _weights(
        {"M": (m_path.read_bytes(), str(m_path)), "G": (g_path.read_bytes(), str(g_path))}
    )


def _model_folder_files(folder: Path) -> tuple[Path, Path]:
    """The two files of an extracted model folder, or of the one model folder inside it."""
    if any((folder / name).is_file() for name in FILES.values()):
        return _both_or_missing(folder, [p.name for p in sorted(folder.iterdir())])
    models = sorted(
        d for d in folder.iterdir() if d.is_dir() and any((d / n).is_file() for n in FILES.values())
    )
    if len(models) == 1:
        return _both_or_missing(models[0], [p.name for p in sorted(models[0].iterdir())])
    if len(models) > 1:
        raise CheckpointError(
            f"{folder} holds several official models ({', '.join(d.name for d in models)}); "
            f"pass one of them, e.g. {models[0]}"
        )
    raise CheckpointError(
        f"no official checkpoint in the folder {folder}: expected {MASK_ESTIMATOR_FILE} and "
        f"{GENERATOR_FILE} in it or in one folder below it (e.g. celeb/); it contains: "
        f"{_listing([p.name + ('/' if p.is_dir() else '') for p in sorted(folder.iterdir())])}"
    )


def _both_or_missing(folder: Path, contents: list[str]) -> tuple[Path, Path]:
    m_path, g_path = folder / MASK_ESTIMATOR_FILE, folder / GENERATOR_FILE
    for role, p in (("M", m_path), ("G", g_path)):
        if not p.is_file():
            raise CheckpointError(
                f"the official model folder {folder} lacks {p.name} (the {ROLE_NAMES[role]}); "
                f"it contains: {_listing(contents)}"
            )
    return m_path, g_path


def _from_archive(archive: Path) -> OfficialWeights:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {role: _find_member(archive, zf, name) for role, name in FILES.items()}
            folders = {PurePosixPath(m.filename).parent for m in members.values()}
            if len(folders) > 1:
                raise CheckpointError(
                    f"the archive {archive} holds {members['M'].filename} and "
                    f"{members['G'].filename}: two different models' files; an official "
                    f"archive holds both in one folder"
                )
            found = {
                role: (_read_member(archive, zf, m), f"{archive}:{m.filename}")
                for role, m in members.items()
            }
    except zipfile.BadZipFile as err:  # a corrupt member (CRC) or directory
        raise CheckpointError(f"cannot read the archive {archive}: {err}") from err
    return _weights(found)


def _find_member(archive: Path, zf: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The member ``<model>/<name>`` (or ``<name>`` at the top), exactly one."""
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    hits = [
        i
        for i in zf.infolist()
        if not i.is_dir()
        and PurePosixPath(i.filename).name == name
        and not i.filename.startswith("__MACOSX/")  # resource forks zipped on a Mac
    ]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        role = next(r for r, n in FILES.items() if n == name)
        raise CheckpointError(
            f"the archive {archive} has no member {name} (the {ROLE_NAMES[role]}); it is not "
            f"an official SketchEdit archive (celeb.zip / places.zip), or it is incomplete; "
            f"it contains: {_listing(names)}"
        )
    raise CheckpointError(
        f"the archive {archive} holds {name} {len(hits)} times "
        f"({', '.join(h.filename for h in hits)}): extract it and pass one model folder"
    )


def _read_member(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_MEMBER_BYTES:
        raise CheckpointError(
            f"{archive}:{info.filename} claims {info.file_size / 2**20:.0f} MiB uncompressed; "
            f"the official files are tens of MiB: refused"
        )
    return zf.read(info)


# ---- parsing and checking --------------------------------------------------------------------
def _weights(found: dict[str, tuple[bytes, str]]) -> OfficialWeights:
    """Hash and parse the bytes of both files, checking each holds the network it should."""
    state, sha, sources = {}, {}, {}
    for role, (data, where) in found.items():
        sha[role] = hashlib.sha256(data).hexdigest()
        sources[role] = where
        state[role] = load_official(data, name=where)
    for role in ("M", "G"):
        _check_role(state, sources, role)
    return OfficialWeights(state["M"], state["G"], sha, sources)


def _holds(state_dict: dict[str, torch.Tensor], role: str) -> bool:
    return any(k.startswith(ONLY_IN[role]) for k in state_dict)


def _check_role(state: dict, sources: dict, role: str) -> None:
    """Refuse a file that holds the *other* official network (by its tensor names)."""
    other = "G" if role == "M" else "M"
    if _holds(state[role], role) or not _holds(state[role], other):
        return  # the right network, or neither: then from_official names what is wrong
    prefixes = ", ".join(p + "*" for p in ONLY_IN[other])
    swapped = _holds(state[other], role) and not _holds(state[other], other)
    hint = (
        "the two files are swapped" if swapped else f"pass {FILES[role]} as the {ROLE_NAMES[role]}"
    )
    raise CheckpointError(
        f"{sources[role]} holds the official {ROLE_NAMES[other]} (tensors {prefixes}: the "
        f"layout of {FILES[other]}), not the {ROLE_NAMES[role]}: {hint}"
    )


def _listing(names: list[str]) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")
