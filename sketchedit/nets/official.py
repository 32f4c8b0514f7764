"""The official checkpoints' tensor names, mapped to ours: one line per layer. [code]

The official demo's ``latest_net_M.pth`` and ``latest_net_G.pth`` name their layers after
DeepFill's TensorFlow code (``conv7_atrous``, ``wconv3``, ``pmconv6`` ...); our modules use the
paper's vocabulary. The two tables below map every official layer to ours; a layer has a
``.weight`` and a ``.bias``. Nothing else is renamed, reshaped or transposed: each official
tensor lands, unchanged, in exactly one of ours.

This module knows names and shapes only, no file format and no network class (the tables are
keyed by class *name*), so the networks can use it without an import cycle. Reading an official
``.pth`` file is :func:`sketchedit.checkpoints.load_official`.

- :func:`from_official` / :func:`to_official` convert a state dict (also as
  ``MaskEstimator.from_official(state_dict)`` and ``net.to_official()``, the methods of the
  :class:`OfficialLayout` mixin); a missing, unexpected or mis-shaped tensor is a
  :class:`CheckpointError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = [
    "GENERATOR_LAYERS",
    "MASK_ESTIMATOR_LAYERS",
    "OFFICIAL_TABLES",
    "CheckpointError",
    "OfficialLayout",
    "compare_shapes",
    "from_official",
    "official_layer_table",
    "strip_module_prefix",
    "tensor_table",
    "to_official",
]


class CheckpointError(ValueError):
    """A checkpoint does not match the network: names the missing/unexpected/mis-shaped
    tensors, or says why the file cannot be read."""


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


#: Network class name -> its table (only these two have an official checkpoint).
OFFICIAL_TABLES: dict[str, dict[str, str]] = {
    "MaskEstimator": MASK_ESTIMATOR_LAYERS,
    "Generator": GENERATOR_LAYERS,
}


def official_layer_table(cls_or_net) -> dict[str, str]:
    """The official -> ours layer table of ``MaskEstimator`` or ``Generator`` (class or net).

    Looked up by class name along the class hierarchy, so subclasses share their parent's table.
    """
    cls = cls_or_net if isinstance(cls_or_net, type) else type(cls_or_net)
    for klass in cls.__mro__:
        if klass.__name__ in OFFICIAL_TABLES:
            return OFFICIAL_TABLES[klass.__name__]
    raise TypeError(f"no official layout for {cls.__name__}: only MaskEstimator and Generator")


def tensor_table(cls_or_net) -> dict[str, str]:
    """Official tensor name -> our state-dict key, for weights and biases."""
    return {
        f"{official}.{kind}": f"{ours}.{kind}"
        for official, ours in official_layer_table(cls_or_net).items()
        for kind in ("weight", "bias")
    }


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix ``nn.DataParallel`` adds (when *every* key has it)."""
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


#: How many mis-shaped tensors an error message lists by name.
MAX_LISTED = 5


def compare_shapes(
    what: str,
    expected: Mapping[str, tuple[int, ...]],
    got: Mapping[str, tuple[int, ...]],
) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped tensor.

    ``expected`` and ``got`` map tensor names to shapes (``torch.Size`` or tuples).
    """
    problems = []
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    wrong = [
        f"{key} has shape {tuple(got[key])}, expected {tuple(expected[key])}"
        for key in sorted(set(expected) & set(got))
        if tuple(got[key]) != tuple(expected[key])
    ]
    # A wrong width mis-shapes every layer: name a few, count the rest.
    problems += wrong[:MAX_LISTED] + [f"and {len(wrong) - MAX_LISTED} more"] * (
        len(wrong) > MAX_LISTED
    )
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))


def _official_width(what: str, state_dict: Mapping[str, torch.Tensor]) -> int:
    """The width ``cnum`` of official weights: ``conv1``'s output channels, checked.

    Both official networks start with ``conv1`` (``cnum`` gated channels out) followed by
    ``conv2_downsample``, which reads the ``cnum / 2`` channels left after gating. A ``conv1`` of
    the wrong width is named with both widths rather than blamed on every later layer.
    """
    if "conv1.weight" not in state_dict:
        raise CheckpointError(f"not {what}: missing tensors: conv1.weight")
    cnum = int(state_dict["conv1.weight"].shape[0])
    after = state_dict.get("conv2_downsample.weight")
    if after is not None and after.ndim == 4 and 2 * int(after.shape[1]) != cnum:
        raise CheckpointError(
            f"{what}: conv1.weight has {cnum} output channels (width cnum={cnum}) but "
            f"conv2_downsample.weight reads {after.shape[1]} channels "
            f"(width cnum={2 * int(after.shape[1])}): the two do not belong together"
        )
    if cnum <= 0 or cnum % 4:
        raise CheckpointError(
            f"{what}: conv1.weight has {cnum} output channels, but the width cnum it sets "
            f"must be a positive multiple of 4"
        )
    return cnum


def from_official(cls: type[nn.Module], state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Build ``cls`` (``MaskEstimator`` or ``Generator``) from official weights.

    Args:
        cls: the network class.
        state_dict: a state dict with official names (``conv1.weight`` ...); a ``module.``
            prefix on every key is dropped. Read a ``.pth`` file with
            :func:`sketchedit.checkpoints.load_official`.

    The width ``cnum`` is read from ``conv1.weight`` (48 for the released files), so a
    narrower network saved in the official layout loads too.
    """
    if isinstance(state_dict, (str, bytes)) or hasattr(state_dict, "__fspath__"):
        raise TypeError(
            f"{cls.__name__}.from_official takes a state dict; read the file first with "
            f"sketchedit.checkpoints.load_official({str(state_dict)!r})"
        )
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected an official state dict, got {type(state_dict).__name__}")
    state_dict = strip_module_prefix(state_dict)
    table = tensor_table(cls)
    what = f"official {cls.__name__} weights"
    net = cls(cnum=_official_width(what, state_dict))
    ours = net.state_dict()
    expected = {official: ours[our_key].shape for official, our_key in table.items()}
    compare_shapes(what, expected, {k: v.shape for k, v in state_dict.items()})
    net.load_state_dict({table[k]: v for k, v in state_dict.items()})
    return net


def to_official(net: nn.Module) -> dict[str, torch.Tensor]:
    """The network's tensors under their official names (detached copies, on the CPU)."""
    table = tensor_table(net)
    ours = net.state_dict()
    return {official: ours[our_key].detach().cpu().clone() for official, our_key in table.items()}


class OfficialLayout:
    """Mixin of :class:`~sketchedit.nets.MaskEstimator` and :class:`~sketchedit.nets.Generator`:
    conversion from and to the official tensor names (their tables are above)."""

    @classmethod
    def from_official(cls, state_dict: Mapping[str, torch.Tensor]):
        """Build from an official state dict (``latest_net_M.pth`` / ``latest_net_G.pth``).

        Read the file with :func:`sketchedit.checkpoints.load_official` (the networks know no
        file format).
        """
        return from_official(cls, state_dict)

    def to_official(self) -> dict[str, torch.Tensor]:
        """This network's weights under the official tensor names (``conv1.weight`` ...)."""
        return to_official(self)
