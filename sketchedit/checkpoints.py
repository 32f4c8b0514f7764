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

[ours] The training checkpoints (optimisers, step, RNG states) are read by the trainer today;
they are safetensors files in this same format with extra networks, so their reader belongs
here too once the trainer is split up.
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
    "CheckpointError",
    "from_official",
    "load_checkpoint",
    "load_official",
    "official_layer_table",
    "read_checkpoint_metadata",
    "rebuild_network",
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


def _read_header(path: Path) -> dict:
    """The parsed ``sketchedit`` metadata of a checkpoint, with clear errors."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (corrupt or truncated?): {err}"
        ) from err
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a sketchedit checkpoint")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupt sketchedit metadata: {err}") from err
    version = header.get("format_version") if isinstance(header, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this sketchedit reads version "
            f"{FORMAT_VERSION}"
        )
    if not isinstance(header.get("networks"), dict) or not header["networks"]:
        raise CheckpointError(f"{path}: the metadata lists no networks")
    return header


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
    Public so that other readers of this format (the trainer's) share the same checks.
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
    from safetensors import safe_open

    path = Path(path)
    header = _read_header(path)
    stored = stored_shapes(path)
    specs = header["networks"]
    for name, spec in specs.items():
        on_meta = rebuild_network(path, name, spec, "meta")
        shapes = {k: v.shape for k, v in on_meta.state_dict().items()}
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
        compare_shapes(
            f"{path}, network {name!r} (its metadata config {spec.get('config')} does not match "
            f"the stored tensors)",
            shapes,
            own,
        )
    stray = sorted(k for k in stored if k.split(".", 1)[0] not in specs)
    if stray:
        raise CheckpointError(f"{path}: unexpected tensors: {', '.join(stray)}")

    device = str(torch.device(map_location))
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot read the tensors (corrupt or truncated?): {err}"
        ) from err
    networks: dict[str, nn.Module] = {}
    for name, spec in specs.items():
        net = rebuild_network(path, name, spec, "cpu")
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        net.load_state_dict(own)
        net.source = str(path)
        networks[name] = net.to(device)
    return networks
