"""Checkpoint files: this project's safetensors format, and reading the official ``.pth`` files.

This is the one module that knows a file format; the networks (:mod:`sketchedit.nets`) know
none, and the official tensor names live next to them in :mod:`sketchedit.nets.official`.

**Our format** is one ``.safetensors`` file (no pickle) holding several networks: tensors are
keyed ``"<network name>.<state-dict key>"`` and the file's metadata holds, under the key
``"sketchedit"``, a JSON string ``{"format_version": 1, "networks": {name: {"class": ...,
"config": {...}}}, "user": {...}}``, enough to rebuild every network with
:func:`load_checkpoint`. :func:`save_checkpoint` writes atomically (a crash mid-write leaves the
old file intact). :func:`load_checkpoint` trusts nothing in the file: the metadata's configs
are checked against the stored tensors' shapes (read from the header, without loading a byte
of data) *before* any network is allocated, so a small file claiming a huge network is refused
at once.

**Official checkpoints**: :func:`load_official` reads an official ``.pth`` with
``torch.load(weights_only=True)`` (never unpickling arbitrary objects), unwrapping common
containers and ``module.`` prefixes; :func:`from_official` builds the network from it.

**Training checkpoints** (:mod:`sketchedit.train_checkpoints` writes them) are read here
too: one ``.safetensors`` file whose metadata key ``"sketchedit_train"`` holds the training
state as JSON (config, step, network classes and configs, optimiser groups, RNG states) and
whose tensors are keyed ``"net.<M|G|D>.<key>"``, ``"optim.<name>.state.<i>.<key>"`` and
``"rng.*"``. :func:`load_networks` rebuilds the networks with the same checks as
:func:`load_checkpoint` (known classes only, configs checked against the stored shapes on the
``meta`` device before anything is allocated). A run folder stands for its
``ckpt_latest.safetensors`` (:func:`resolve_checkpoint`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

import sketchedit.nets.official as official
from sketchedit.fileio import atomic_path
from sketchedit.nets.discriminator import Discriminator
from sketchedit.nets.generator import Generator
from sketchedit.nets.mask_estimator import MaskEstimator
from sketchedit.nets.official import (
    CheckpointError,
    compare_shapes,
    official_layer_table,
    strip_module_prefix,
    to_official,
)

__all__ = [
    "CHECKPOINT_CLASSES",
    "FORMAT_VERSION",
    "LATEST",
    "TRAIN_CKPT_FORMAT",
    "TRAIN_CKPT_VERSION",
    "CheckpointError",
    "from_official",
    "is_training_checkpoint",
    "load_checkpoint",
    "load_networks",
    "load_official",
    "official_layer_table",
    "read_checkpoint_metadata",
    "read_training_checkpoint",
    "read_training_metadata",
    "rebuild_network",
    "resolve_checkpoint",
    "save_checkpoint",
    "stored_shapes",
    "to_official",
]


# --------------------------------------------------------------------------------------------
# Official checkpoints.
# --------------------------------------------------------------------------------------------
def from_official(cls: type[nn.Module], state_dict_or_path) -> nn.Module:
    """Build ``cls`` (``MaskEstimator`` or ``Generator``) from official weights.

    ``state_dict_or_path``: a state dict with the official names, or the path of an official
    ``.pth`` file (read with :func:`load_official`). See
    :func:`sketchedit.nets.official.from_official`.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        state_dict_or_path = load_official(state_dict_or_path)
    return official.from_official(cls, state_dict_or_path)


_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network", "params", "weights")


def load_official(
    path: str | os.PathLike | bytes, *, name: str | None = None
) -> dict[str, torch.Tensor]:
    """Read an official ``.pth`` state dict safely (``torch.load(weights_only=True)``).

    ``path`` is the file, or its bytes (e.g. a member read from the official ``.zip``
    archive, :mod:`sketchedit.official_release`); ``name`` is what messages call the bytes.
    Accepts a bare state dict, a dict wrapping one under a common key (``state_dict``,
    ``model``, ``net``...), and keys prefixed with ``module.``.
    """
    import io

    if isinstance(path, (bytes, bytearray, memoryview)):
        source, path = io.BytesIO(path), name or "official checkpoint bytes"
    else:
        path = source = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such checkpoint file: {path}")
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, zip errors, truncation...
        raise CheckpointError(f"cannot read {path} as a PyTorch state dict: {err}") from err
    for _ in range(3):  # unwrap at most a few levels of {"state_dict": {...}}
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} does not contain a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(bad)}")
    return strip_module_prefix(tensors)


# --------------------------------------------------------------------------------------------
# Our checkpoint format.
# --------------------------------------------------------------------------------------------
FORMAT_VERSION = 1
METADATA_KEY = "sketchedit"

#: Classes :func:`load_checkpoint` can rebuild, by name.
CHECKPOINT_CLASSES: dict[str, type[nn.Module]] = {
    "MaskEstimator": MaskEstimator,
    "Generator": Generator,
    "Discriminator": Discriminator,
}


def _class_name(net: nn.Module) -> str:
    for name, cls in CHECKPOINT_CLASSES.items():
        if type(net) is cls:
            return name
    raise TypeError(
        f"cannot save a {type(net).__name__}: only {', '.join(CHECKPOINT_CLASSES)} are supported"
    )


def save_checkpoint(
    path: str | os.PathLike,
    networks: Mapping[str, nn.Module],
    metadata: Mapping | None = None,
) -> Path:
    """Write ``networks`` (e.g. ``{"mask_estimator": m, "generator": g}``) to one safetensors file.

    ``metadata`` must be JSON-serialisable (e.g. the training config and step); it comes back
    from :func:`read_checkpoint_metadata`. Written atomically. Returns the path.
    """
    from safetensors.torch import save_file

    if not isinstance(networks, Mapping) or not networks:
        raise ValueError("networks must be a non-empty dict of name -> network")
    tensors: dict[str, torch.Tensor] = {}
    described = {}
    for name, net in networks.items():
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"network names must be non-empty strings without '.', got {name!r}")
        if not isinstance(net, nn.Module):
            raise TypeError(f"networks[{name!r}] is a {type(net).__name__}, not an nn.Module")
        described[name] = {"class": _class_name(net), "config": net.config()}
        for key, value in net.state_dict().items():
            # A private contiguous CPU copy: safetensors refuses shared or strided storage.
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
    header = {"format_version": FORMAT_VERSION, "networks": described, "user": metadata or {}}
    try:
        header_json = json.dumps(header, sort_keys=True)
    except TypeError as err:
        raise TypeError(f"checkpoint metadata must be JSON-serialisable: {err}") from err
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: header_json})
    return Path(path)


def _raw_metadata(path: Path) -> dict[str, str]:
    """The safetensors metadata of ``path`` (string to string), with a clear error."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(
            f"{path} is not a readable safetensors file (corrupt or truncated?): {err}"
        ) from err


def _parse_metadata(path: Path, raw: str, what: str) -> dict:
    """The JSON object ``raw`` (the file's ``what`` metadata), with clear errors."""
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupt {what} metadata: {err}") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the {what} metadata is not a JSON object")
    return meta


def _require_networks(path: Path, meta: dict) -> dict:
    """``meta`` itself, once it is known to list at least one network."""
    if not isinstance(meta.get("networks"), dict) or not meta["networks"]:
        raise CheckpointError(f"{path}: the metadata lists no networks")
    return meta


def _read_header(path: Path) -> dict:
    """The parsed ``sketchedit`` metadata of a checkpoint, with clear errors."""
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    raw = _raw_metadata(path).get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a sketchedit checkpoint")
    header = _parse_metadata(path, raw, "sketchedit")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {header.get('format_version')!r}; this "
            f"sketchedit reads version {FORMAT_VERSION}"
        )
    return _require_networks(path, header)


def read_checkpoint_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint: ``{"format_version", "networks", "user"}``."""
    return _read_header(Path(path))


def stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, read from the safetensors header (no tensor data is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot read the tensors (corrupt or truncated?): {err}"
        ) from err


def rebuild_network(path: Path, name: str, spec, device) -> nn.Module:
    """The network ``spec`` (``{"class", "config"}`` from the metadata) describes, on ``device``.

    On ``device="meta"`` only the shapes exist: no memory is allocated however large the
    config, which is how the config is checked against the file before trusting it. Only the
    classes of :data:`CHECKPOINT_CLASSES` are built (a name is never looked up elsewhere).
    Both readers here (:func:`load_checkpoint`, :func:`load_networks`) build through it.
    """
    cls = CHECKPOINT_CLASSES.get(spec.get("class") if isinstance(spec, dict) else None)
    if cls is None:
        raise CheckpointError(f"{path}: network {name!r} has an unknown class {spec!r}")
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: network {name!r} has a config that is not a dict")
    try:
        with torch.device(device):
            return cls(**config)
    except (TypeError, ValueError, OverflowError) as err:
        raise CheckpointError(f"{path}: cannot rebuild {name!r} from its config: {err}") from err


def tensors_under(stored: Mapping, prefix: str) -> dict:
    """The entries of ``stored`` under ``prefix`` (e.g. ``"generator."``), prefix removed."""
    return {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}


def _check_specs_against_file(
    path: Path, specs: Mapping, stored: Mapping[str, tuple[int, ...]], prefix: str
) -> None:
    """Check every network spec of the metadata against the stored tensors' shapes.

    ``specs``: ``{name: {"class", "config"}}``; ``stored``: :func:`stored_shapes` of the file,
    whose network tensors are keyed ``f"{prefix}{name}.{key}"``. Each network is built on the
    ``meta`` device (no memory, however large its config claims to be) and its shapes
    compared with the file's, so a lying config is refused before anything is allocated.
    Tensors under ``prefix`` that belong to no listed network are refused too.
    """
    for name, spec in specs.items():
        on_meta = rebuild_network(path, name, spec, "meta")
        compare_shapes(
            f"{path}, network {name!r} (its metadata config {spec.get('config')} does not match "
            f"the stored tensors)",
            {k: v.shape for k, v in on_meta.state_dict().items()},
            tensors_under(stored, f"{prefix}{name}."),
        )
    stray = sorted(k for k in tensors_under(stored, prefix) if k.split(".", 1)[0] not in specs)
    if stray:
        raise CheckpointError(f"{path}: unexpected tensors: {', '.join(prefix + k for k in stray)}")


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, nn.Module]:
    """Rebuild the networks saved by :func:`save_checkpoint`.

    Returns ``{name: network}`` on ``map_location``, freshly constructed (so in training mode,
    as PyTorch modules start; the mask estimator and generator behave the same in both modes).
    Each network's ``source`` attribute is set to ``path`` (error messages name it).
    Raises :class:`CheckpointError` for a file that is not a sketchedit checkpoint, another
    format version, a corrupt or truncated file, or tensors that do not fit (naming them).

    The order is the safe one: header, then every config checked against the stored shapes
    on the ``meta`` device, and only then are tensors read and networks allocated.
    """
    path = Path(path)
    header = _read_header(path)
    return _build_checked_networks(path, header["networks"], stored_shapes(path), "", map_location)


def _build_checked_networks(
    path: Path, specs: Mapping, stored: Mapping[str, tuple[int, ...]], prefix: str, map_location
) -> dict[str, nn.Module]:
    """The networks ``specs`` describe, checked first, then built with the file's tensors.

    ``stored``: the shapes of the network tensors of ``path`` (keyed ``prefix + name + "."
    + key``). First :func:`_check_specs_against_file` (nothing allocated), then the tensors
    are read, each network is built on the CPU, loaded strictly, given ``source = path``
    and moved to ``map_location``.
    """
    from safetensors import safe_open

    _check_specs_against_file(path, specs, stored, prefix)
    device = str(torch.device(map_location))
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            tensors = {key: f.get_tensor(key) for key in stored}
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot read the tensors (corrupt or truncated?): {err}"
        ) from err
    networks: dict[str, nn.Module] = {}
    for name, spec in specs.items():
        net = rebuild_network(path, name, spec, "cpu")
        net.load_state_dict(tensors_under(tensors, f"{prefix}{name}."))
        net.source = str(path)
        networks[name] = net.to(device)
    return networks


# --------------------------------------------------------------------------------------------
# Training checkpoints (written by sketchedit.train_checkpoints).
# --------------------------------------------------------------------------------------------
#: Safetensors metadata key of a training checkpoint, and its format tag and version.
TRAIN_METADATA_KEY = "sketchedit_train"
TRAIN_CKPT_FORMAT = "sketchedit-train-checkpoint"
TRAIN_CKPT_VERSION = 1
#: The checkpoint a run folder stands for.
LATEST = "ckpt_latest.safetensors"
#: Prefix of the networks' tensors in a training checkpoint (``"net.G.<key>"``).
TRAIN_NET_PREFIX = "net."


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder (-> its ``ckpt_latest.safetensors``) or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / LATEST
    if not p.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {p} (a checkpoint file, or a run folder with {LATEST})"
        )
    return p


def is_training_checkpoint(path: str | os.PathLike) -> bool:
    """True for a training checkpoint (or a run folder), False for an inference checkpoint."""
    return TRAIN_METADATA_KEY in _raw_metadata(resolve_checkpoint(path))


def _check_training_metadata(p: Path, raw: str | None) -> dict:
    """The parsed training metadata of ``p``: right format and version, networks listed."""
    if raw is None:
        raise CheckpointError(
            f"{p}: not a sketchedit training checkpoint (no {TRAIN_METADATA_KEY!r} metadata)"
        )
    meta = _parse_metadata(p, raw, "training")
    if meta.get("format") != TRAIN_CKPT_FORMAT or meta.get("version") != TRAIN_CKPT_VERSION:
        raise CheckpointError(
            f"{p}: training checkpoint format {meta.get('format')!r} v{meta.get('version')} "
            f"is not supported (expected {TRAIN_CKPT_FORMAT!r} v{TRAIN_CKPT_VERSION})"
        )
    return _require_networks(p, meta)


def read_training_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a training checkpoint (or run folder) without reading its tensors."""
    p = resolve_checkpoint(path)
    return _check_training_metadata(p, _raw_metadata(p).get(TRAIN_METADATA_KEY))


def read_training_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a training checkpoint; clear errors for anything else."""
    from safetensors.torch import load_file

    p = resolve_checkpoint(path)
    meta = read_training_metadata(p)
    try:
        tensors = load_file(str(p))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(
            f"{p}: cannot read the tensors (corrupt or truncated?): {err}"
        ) from None
    return tensors, meta


def load_networks(path: str | os.PathLike, map_location="cpu") -> tuple[dict[str, nn.Module], dict]:
    """Rebuild the networks (``M``, ``G``, ``D``) of a training checkpoint; (nets, metadata).

    Nothing in the file is trusted: only the classes of :data:`CHECKPOINT_CLASSES` are built,
    and every config is checked against the stored shapes on the ``meta`` device before a
    network is allocated or a tensor read (as in :func:`load_checkpoint`). Each network's
    ``source`` is the checkpoint's path.
    """
    p = resolve_checkpoint(path)
    meta = read_training_metadata(p)
    stored = {k: v for k, v in stored_shapes(p).items() if k.startswith(TRAIN_NET_PREFIX)}
    nets = _build_checked_networks(p, meta["networks"], stored, TRAIN_NET_PREFIX, map_location)
    return nets, meta
