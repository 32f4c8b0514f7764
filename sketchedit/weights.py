"""Weights: the official checkpoints' tensor names, and this project's checkpoint format.

**Official checkpoints** (``latest_net_M.pth``, ``latest_net_G.pth`` of the official demo) name
their layers after DeepFill's TensorFlow code: ``conv7_atrous``, ``wconv3``, ``pmconv6``...
Our modules use the paper's vocabulary instead. The two tables below map every official layer
to ours, one line per layer; a layer has a ``.weight`` and a ``.bias``. Nothing else is
renamed, reshaped or transposed: each official tensor lands, unchanged, in exactly one of ours.

- :func:`from_official` / :func:`to_official` convert (also as ``MaskEstimator.from_official``,
  ``net.to_official()``); a missing, unexpected or mis-shaped tensor is an error naming it.
- :func:`load_official` reads an official ``.pth`` with ``torch.load(weights_only=True)``
  (never unpickling arbitrary objects), unwrapping common containers and ``module.`` prefixes.

**Our format** is one ``.safetensors`` file (no pickle) holding several networks: tensors are
keyed ``"<network name>.<state-dict key>"`` and the file's metadata holds, under the key
``"sketchedit"``, a JSON string ``{"format_version": 1, "networks": {name: {"class": ...,
"config": {...}}}, "user": {...}}``, enough to rebuild every network with
:func:`load_checkpoint`. :func:`save_checkpoint` writes atomically (a crash mid-write leaves the
old file intact).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sketchedit.fileio import atomic_path
from sketchedit.nets.discriminator import Discriminator
from sketchedit.nets.generator import Generator
from sketchedit.nets.mask_estimator import MaskEstimator

__all__ = [
    "CHECKPOINT_CLASSES",
    "FORMAT_VERSION",
    "GENERATOR_LAYERS",
    "MASK_ESTIMATOR_LAYERS",
    "CheckpointError",
    "from_official",
    "load_checkpoint",
    "load_official",
    "official_layer_table",
    "read_checkpoint_metadata",
    "save_checkpoint",
    "to_official",
]

# --------------------------------------------------------------------------------------------
# The mapping tables: official layer name -> our module path. [code]
# --------------------------------------------------------------------------------------------

#: Mask estimator (official ``MDGenerator``, file ``latest_net_M.pth``).
MASK_ESTIMATOR_LAYERS: dict[str, str] = {
    # trunk: 5x5 conv, stride-2, conv, stride-2, 2 convs, dilated 2/4/8/16
    "conv1": "trunk.conv1",
    "conv2_downsample": "trunk.down1",
    "conv3": "trunk.conv2",
    "conv4_downsample": "trunk.down2",
    "conv5": "trunk.conv3",
    "conv6": "trunk.conv4",
    "conv7_atrous": "trunk.dilated2",
    "conv8_atrous": "trunk.dilated4",
    "conv9_atrous": "trunk.dilated8",
    "conv10_atrous": "trunk.dilated16",
    # auxiliary RGB head (reads the rate-8 output)
    "conv11": "rgb_head.layers.conv1",
    "conv12": "rgb_head.layers.conv2",
    "conv13_upsample_conv": "rgb_head.layers.up1",
    "conv14": "rgb_head.layers.conv3",
    "conv15_upsample_conv": "rgb_head.layers.up2",
    "conv16": "rgb_head.layers.conv4",
    "conv17": "rgb_head.layers.to_output",
    # mask head (reads the rate-16 output)
    "conv_mask_11": "mask_head.layers.conv1",
    "conv_mask_12": "mask_head.layers.conv2",
    "conv_mask_13_upsample_conv": "mask_head.layers.up1",
    "conv_mask_14": "mask_head.layers.conv3",
    "conv_mask_15_upsample_conv": "mask_head.layers.up2",
    "conv_mask_16": "mask_head.layers.conv4",
    "conv_mask_17": "mask_head.layers.to_output",
}

#: Generator (official ``DeepFillC2Generator``, file ``latest_net_G.pth``).
GENERATOR_LAYERS: dict[str, str] = {
    # coarse stage encoder
    "conv1": "coarse_encoder.conv1",
    "conv2_downsample": "coarse_encoder.down1",
    "conv3": "coarse_encoder.conv2",
    "conv4_downsample": "coarse_encoder.down2",
    "conv5": "coarse_encoder.conv3",
    "conv6": "coarse_encoder.conv4",
    "conv7_atrous": "coarse_encoder.dilated2",
    "conv8_atrous": "coarse_encoder.dilated4",
    "conv9_atrous": "coarse_encoder.dilated8",
    "conv10_atrous": "coarse_encoder.dilated16",
    # coarse stage decoder (its first conv reads coarse features + tiled style vector)
    "conv11": "coarse_decoder.layers.conv1",
    "conv12": "coarse_decoder.layers.conv2",
    "conv13_upsample_conv": "coarse_decoder.layers.up1",
    "conv14": "coarse_decoder.layers.conv3",
    "conv15_upsample_conv": "coarse_decoder.layers.up2",
    "conv16": "coarse_decoder.layers.conv4",
    "conv17": "coarse_decoder.layers.to_output",
    # style encoder ("w" = the official name of the style branch)
    "wconv1": "style_encoder.trunk.conv1",
    "wconv2_downsample": "style_encoder.trunk.down1",
    "wconv3": "style_encoder.trunk.conv2",
    "wconv4_downsample": "style_encoder.trunk.down2",
    "wconv5": "style_encoder.trunk.conv3",
    "wconv6": "style_encoder.trunk.conv4",
    "wconv7_atrous": "style_encoder.trunk.dilated2",
    "wconv8_atrous": "style_encoder.trunk.dilated4",
    "wconv9_atrous": "style_encoder.trunk.dilated8",
    "wconv10_atrous": "style_encoder.trunk.dilated16",
    # refinement stage, dilated ("hallucination") branch
    "xconv1": "refine_dilated.conv1",
    "xconv2_downsample": "refine_dilated.down1",
    "xconv3": "refine_dilated.conv2",
    "xconv4_downsample": "refine_dilated.down2",
    "xconv5": "refine_dilated.conv3",
    "xconv6": "refine_dilated.conv4",
    "xconv7_atrous": "refine_dilated.dilated2",
    "xconv8_atrous": "refine_dilated.dilated4",
    "xconv9_atrous": "refine_dilated.dilated8",
    "xconv10_atrous": "refine_dilated.dilated16",
    # refinement stage, attention branch (contextual attention sits between pmconv6 and pmconv9)
    "pmconv1": "refine_attention.features.conv1",
    "pmconv2_downsample": "refine_attention.features.down1",
    "pmconv3": "refine_attention.features.conv2",
    "pmconv4_downsample": "refine_attention.features.down2",
    "pmconv5": "refine_attention.features.conv3",
    "pmconv6": "refine_attention.features.conv4",
    "pmconv9": "refine_attention.post.conv1",
    "pmconv10": "refine_attention.post.conv2",
    # refinement decoder
    "allconv11": "refine_decoder.layers.conv1",
    "allconv12": "refine_decoder.layers.conv2",
    "allconv13_upsample_conv": "refine_decoder.layers.up1",
    "allconv14": "refine_decoder.layers.conv3",
    "allconv15_upsample_conv": "refine_decoder.layers.up2",
    "allconv16": "refine_decoder.layers.conv4",
    "allconv17": "refine_decoder.layers.to_output",
}

_OFFICIAL_TABLES: dict[type, dict[str, str]] = {
    MaskEstimator: MASK_ESTIMATOR_LAYERS,
    Generator: GENERATOR_LAYERS,
}


class CheckpointError(ValueError):
    """A checkpoint does not match the network: names the missing/unexpected/mis-shaped
    tensors, or says why the file cannot be read."""


def official_layer_table(cls_or_net) -> dict[str, str]:
    """The official -> ours layer table of ``MaskEstimator`` or ``Generator`` (class or net)."""
    cls = cls_or_net if isinstance(cls_or_net, type) else type(cls_or_net)
    for known, table in _OFFICIAL_TABLES.items():
        if issubclass(cls, known):
            return table
    raise TypeError(f"no official layout for {cls.__name__}: only MaskEstimator and Generator")


def _tensor_table(cls_or_net) -> dict[str, str]:
    """Official tensor name -> our state-dict key, for weights and biases."""
    return {
        f"{official}.{kind}": f"{ours}.{kind}"
        for official, ours in official_layer_table(cls_or_net).items()
        for kind in ("weight", "bias")
    }


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix ``nn.DataParallel`` adds (when *every* key has it)."""
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _compare(
    what: str,
    expected: Mapping[str, torch.Size],
    got: Mapping[str, torch.Tensor],
) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped tensor."""
    problems = []
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    for key in sorted(set(expected) & set(got)):
        shape = tuple(got[key].shape)
        if shape != tuple(expected[key]):
            problems.append(f"{key} has shape {shape}, expected {tuple(expected[key])}")
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))


def from_official(cls, state_dict_or_path) -> nn.Module:
    """Build ``cls`` (``MaskEstimator`` or ``Generator``) from official weights.

    Args:
        cls: the network class.
        state_dict_or_path: a state dict with official names (``conv1.weight`` ...) or the
            path of an official ``.pth`` file (read with :func:`load_official`).

    The width ``cnum`` is read from ``conv1.weight`` (48 for the released files), so a
    narrower network saved in the official layout loads too.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        state_dict = load_official(state_dict_or_path)
    elif isinstance(state_dict_or_path, Mapping):
        state_dict = _strip_module_prefix(state_dict_or_path)
    else:
        raise TypeError(
            f"expected an official state dict or a path, got {type(state_dict_or_path).__name__}"
        )
    table = _tensor_table(cls)
    if "conv1.weight" not in state_dict:
        raise CheckpointError(
            f"not an official {cls.__name__} state dict: missing tensors: conv1.weight"
        )
    cnum = int(state_dict["conv1.weight"].shape[0])
    net = cls(cnum=cnum)
    ours = net.state_dict()
    expected = {official: ours[our_key].shape for official, our_key in table.items()}
    _compare(f"official {cls.__name__} weights", expected, state_dict)
    net.load_state_dict({table[k]: v for k, v in state_dict.items()})
    return net


def to_official(net: nn.Module) -> dict[str, torch.Tensor]:
    """The network's tensors under their official names (detached copies, on the CPU)."""
    table = _tensor_table(net)
    ours = net.state_dict()
    return {official: ours[our_key].detach().cpu().clone() for official, our_key in table.items()}


_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network", "params", "weights")


def load_official(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an official ``.pth`` state dict safely (``torch.load(weights_only=True)``).

    Accepts a bare state dict, a dict wrapping one under a common key (``state_dict``,
    ``model``, ``net``...), and keys prefixed with ``module.``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
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
    return _strip_module_prefix(tensors)


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


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, nn.Module]:
    """Rebuild the networks saved by :func:`save_checkpoint`.

    Returns ``{name: network}`` on ``map_location``, freshly constructed (so in training mode,
    as PyTorch modules start; the mask estimator and generator behave the same in both modes).
    Raises :class:`CheckpointError` for a file that is not a sketchedit checkpoint, another
    format version, a corrupt or truncated file, or tensors that do not fit (naming them).
    """
    from safetensors import safe_open

    path = Path(path)
    header = _read_header(path)
    device = str(torch.device(map_location))
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot read the tensors (corrupt or truncated?): {err}"
        ) from err

    networks: dict[str, nn.Module] = {}
    for name, spec in header["networks"].items():
        cls = CHECKPOINT_CLASSES.get(spec.get("class") if isinstance(spec, dict) else None)
        if cls is None:
            raise CheckpointError(f"{path}: network {name!r} has an unknown class {spec!r}")
        try:
            net = cls(**spec.get("config", {}))
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                f"{path}: cannot rebuild {name!r} from its config: {err}"
            ) from err
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        expected = {k: v.shape for k, v in net.state_dict().items()}
        _compare(f"{path}, network {name!r}", expected, own)
        net.load_state_dict(own)
        networks[name] = net.to(device)
    stray = sorted(k for k in tensors if k.split(".", 1)[0] not in header["networks"])
    if stray:
        raise CheckpointError(f"{path}: unexpected tensors: {', '.join(stray)}")
    return networks
