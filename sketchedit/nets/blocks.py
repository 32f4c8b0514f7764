"""The building blocks shared by the mask estimator and the generator (docs/method.md section 2).

Everything in SketchEdit is built from one layer, the **gated convolution** of DeepFill v2
[code][lineage]: a ``Conv2d`` whose ``cout`` output channels are split in two halves ``a`` and
``b``; the layer returns ``act(a) * sigmoid(b)``, i.e. ``cout // 2`` channels. The sigmoid half
is a learned soft "gate" per pixel and channel, which lets the network switch features off
inside the hole (or outside the edited region) instead of smearing them. A layer with 3 or 1
output channels (the final RGB / mask projections) or without activation is a plain
convolution. There is no normalisation anywhere.

On top of the layer, this module defines the three stacks the networks are made of:

- :func:`dilated_trunk`: 5x5 conv, two stride-2 convs to 1/4 resolution, two convs and four
  3x3 convs dilated 2, 4, 8, 16 (the encoder of the mask estimator, of the coarse generator,
  of the style encoder and of the refinement stage's dilated branch);
- :class:`Decoder`: two convs, nearest-x2 up + conv, conv, nearest-x2 up + conv, conv and a
  plain 3x3 projection to 3 (RGB, tanh) or 1 (mask, sigmoid) channels;
- :func:`gated_stack`: the generic helper both are built with.

Shapes with ``cnum = 48`` (the released width): real feature widths 24 at full resolution,
48 at 1/2 and 96 at 1/4.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "Decoder",
    "GatedConv2d",
    "GatedUpConv2d",
    "LayerSpec",
    "NonFiniteError",
    "check_cnum",
    "check_image_batch",
    "cpu_low_precision_is_fast",
    "dilated_trunk",
    "gated_stack",
    "init_weights",
    "subpixel_upsampling",
    "upconv_subpixel",
]

#: Activations of the "feature" half of a gated conv. ReLU is used once, in the attention
#: branch right before contextual attention. [code]
ACTIVATIONS = {"elu": F.elu, "relu": F.relu}


class NonFiniteError(ValueError):
    """NaN or inf inside a network (inference turns it into an error naming the network)."""


@lru_cache(maxsize=8)
def cpu_low_precision_is_fast(dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether this CPU runs ``dtype`` (bf16/fp16) convolutions natively through oneDNN.

    The package's one such check (inference, the VGG loss, benchmarks and tests use it).
    Needs AVX-512 (bf16) or AVX-512-FP16/AMX (fp16); elsewhere PyTorch falls back to a slow
    reference convolution. float32 and float64 always count as fast.
    """
    if dtype in (torch.float32, torch.float64):
        return True
    check = {
        torch.bfloat16: "_is_mkldnn_bf16_supported",
        torch.float16: "_is_mkldnn_fp16_supported",
    }.get(dtype)
    try:
        return bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError, TypeError):
        # Private query missing in this PyTorch build: fall back on the dispatcher's ISA level.
        return dtype == torch.bfloat16 and torch.backends.cpu.get_cpu_capability() == "AVX512"


#: Initialisation of every conv: xavier-normal weights with this gain, zero bias. [code]
INIT_GAIN = 0.02


class GatedConv2d(nn.Conv2d):
    """Gated convolution: ``act(a) * sigmoid(b)`` with ``[a, b] = conv(x)`` split by channels.

    Args:
        cin: input channels.
        cout: channels the convolution produces. A gated layer *returns* ``cout // 2`` of
            them; a plain layer (``cout`` in {1, 3} or ``activation=None``) returns ``cout``.
        kernel_size, stride, dilation: as in ``nn.Conv2d``; the padding is always
            ``dilation * (kernel_size - 1) // 2`` ("same" for stride 1). [code]
        activation: ``"elu"`` (default), ``"relu"`` or ``None`` (plain conv).

    Shapes: ``(B, cin, H, W) -> (B, cout // 2, H / stride, W / stride)`` (gated).

    It subclasses ``nn.Conv2d`` so the parameters are plain ``weight`` and ``bias``, exactly
    one tensor of each per official layer.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        activation: str | None = "elu",
    ):
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} or None, got {activation!r}"
            )
        super().__init__(
            cin,
            cout,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            bias=True,
        )
        self.activation = activation
        # [code] The final projections (3 = RGB, 1 = mask) are never gated.
        self.gated = activation is not None and cout not in (1, 3)
        if self.gated and cout % 2:
            raise ValueError(f"a gated conv needs an even number of output channels, got {cout}")

    @property
    def out_features(self) -> int:
        """Channels this layer returns (``cout // 2`` when gated)."""
        return self.out_channels // 2 if self.gated else self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(super().forward(x))

    def gate(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, cout, H, W)`` conv output -> ``act(first half) * sigmoid(second half)``."""
        if not self.gated:
            return y
        features, gate = y.chunk(2, dim=1)
        if torch.is_grad_enabled() and y.requires_grad:
            return ACTIVATIONS[self.activation](features) * torch.sigmoid(gate)
        # Without autograd the same numbers can be computed in place, in the conv's output
        # buffer: no new full-size tensors to allocate and fill (a measurable saving at
        # full resolution).
        ACTIVATIONS[self.activation](features, inplace=True)
        return features.mul_(gate.sigmoid_())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation}, gated={self.gated}"


class GatedUpConv2d(GatedConv2d):
    """Nearest-neighbour x2 upsampling followed by a 3x3 gated conv (no transposed conv).

    ``(B, cin, H, W) -> (B, cout // 2, 2H, 2W)``. [code]
    """

    def __init__(self, cin: int, cout: int, activation: str | None = "elu"):
        super().__init__(cin, cout, 3, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _SUBPIXEL.get() and not (torch.is_grad_enabled() and self.weight.requires_grad):
            return self.gate(upconv_subpixel(x, self.weight, self.bias))
        return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"))


# --- a faster, equivalent up-convolution for inference ---------------------------------------
_SUBPIXEL: contextvars.ContextVar[bool] = contextvars.ContextVar("subpixel", default=False)

# Nearest x2 upsampling then a 3-tap filter = a 2-tap filter at low resolution whose taps
# depend on the output phase: an even output row 2i sees low rows (i-1, i, i) through taps
# (w0, w1, w2), so low row i-1 gets w0 and low row i gets w1 + w2; an odd row 2i+1 sees
# (i, i, i+1): low row i gets w0 + w1 and row i+1 gets w2. _PHASE_TAPS[a] is that 2x3 matrix.
_PHASE_TAPS = (((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)))


def upconv_subpixel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``conv3x3(nearest_up2(x))`` computed as four 2x2 convs at the low resolution.

    Equal to ``F.conv2d(F.interpolate(x, scale_factor=2), weight, bias, padding=1)`` up to
    float rounding (the taps that read the same low-res pixel are summed first), with 16
    instead of 36 multiply-adds per low-res pixel and output channel, and without building
    the upsampled tensor. Used at inference inside :func:`subpixel_upsampling`.

    ``x (B, cin, h, w)``, ``weight (cout, cin, 3, 3)`` -> ``(B, cout, 2h, 2w)``.
    """
    b, _, h, w = x.shape
    cout = weight.shape[0]
    taps = torch.tensor(_PHASE_TAPS, dtype=weight.dtype, device=weight.device)
    # kernels[a, c, o, i, s, t]: phase (a, c), output o, input i, 2x2 tap (s, t).
    kernels = torch.einsum("asu,ctv,oiuv->acoist", taps, taps, weight)
    z = F.conv2d(
        F.pad(x, (1, 1, 1, 1)),
        kernels.reshape(4 * cout, -1, 2, 2),
        None if bias is None else bias.repeat(4),
    )
    z = z.unflatten(1, (2, 2, cout))  # (B, 2, 2, cout, h + 1, w + 1)
    # Phase (a, c) lives at offset (a, c) of the padded grid; interleave the four phases.
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last and cout > 1 else torch.contiguous_format
    y = torch.empty((b, cout, 2 * h, 2 * w), dtype=z.dtype, device=z.device, memory_format=fmt)
    if fmt == torch.channels_last:
        y6 = y.permute(0, 2, 3, 1).view(b, h, 2, w, 2, cout)
        for a in (0, 1):
            for c in (0, 1):
                y6[:, :, a, :, c, :] = z[:, a, c, :, a : a + h, c : c + w].permute(0, 2, 3, 1)
    else:
        y6 = y.view(b, cout, h, 2, w, 2)
        for a in (0, 1):
            for c in (0, 1):
                y6[:, :, :, a, :, c] = z[:, a, c, :, a : a + h, c : c + w]
    return y


@contextlib.contextmanager
def subpixel_upsampling(enabled: bool = True):
    """Within this block, up-convs run without autograd use :func:`upconv_subpixel`."""
    token = _SUBPIXEL.set(enabled)
    try:
        yield
    finally:
        _SUBPIXEL.reset(token)


def init_weights(module: nn.Module, gain: float = INIT_GAIN) -> nn.Module:
    """Xavier-normal init (``gain``) of every conv weight and zero biases, in place. [code]"""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


# A layer of a stack: (name, cout, kernel_size, stride, dilation, activation, upsample).
LayerSpec = tuple[str, int, int, int, int, "str | None", bool]


def gated_stack(cin: int, specs: Sequence[LayerSpec]) -> nn.Sequential:
    """Chain gated convs; each layer reads what the previous one *returns* (``cout // 2``).

    Returns an ``nn.Sequential`` whose children carry the given names, so state-dict keys read
    like ``trunk.dilated16.weight``.
    """
    layers = OrderedDict()
    channels = cin
    for name, cout, kernel, stride, dilation, activation, upsample in specs:
        if upsample:
            if kernel != 3 or stride != 1 or dilation != 1:
                raise ValueError(f"{name}: an up-conv is always 3x3, stride 1, dilation 1")
            layer = GatedUpConv2d(channels, cout, activation=activation)
        else:
            layer = GatedConv2d(channels, cout, kernel, stride, dilation, activation)
        layers[name] = layer
        channels = layer.out_features
    return nn.Sequential(layers)


def check_cnum(cnum) -> int:
    """``cnum`` must be a positive int divisible by 4 (the last decoder layer has cnum/4)."""
    if isinstance(cnum, bool) or not isinstance(cnum, int) or cnum < 4 or cnum % 4:
        raise ValueError(f"cnum must be a positive multiple of 4, got {cnum!r}")
    return cnum


def dilated_trunk(cin: int, cnum: int, widths: str = "standard") -> nn.Sequential:
    """The encoder: full -> 1/4 resolution, then four dilated convs (rates 2, 4, 8, 16).

    ``(B, cin, H, W) -> (B, 2*cnum, H/4, W/4)``.

    ``widths="standard"`` is the trunk of the mask estimator, the coarse generator and the style
    encoder (gated outputs cnum/2, cnum, cnum, 2cnum, ...). ``widths="refine"`` is the
    refinement stage's dilated branch, narrower at the start (cnum/2, cnum/2, cnum, cnum,
    2cnum, ...). The layer names say what each layer does: ``downN`` halves the resolution,
    ``dilatedR`` is a 3x3 conv with dilation R. [code]
    """
    c = cnum
    # Output channels of conv1, down1, conv2, down2; from conv3 on everything is 4*cnum.
    if widths == "standard":
        early = [c, 2 * c, 2 * c, 4 * c]
    elif widths == "refine":
        early = [c, c, 2 * c, 2 * c]
    else:
        raise ValueError(f"widths must be 'standard' or 'refine', got {widths!r}")
    specs: list[LayerSpec] = [
        ("conv1", early[0], 5, 1, 1, "elu", False),
        ("down1", early[1], 3, 2, 1, "elu", False),
        ("conv2", early[2], 3, 1, 1, "elu", False),
        ("down2", early[3], 3, 2, 1, "elu", False),
        ("conv3", 4 * c, 3, 1, 1, "elu", False),
        ("conv4", 4 * c, 3, 1, 1, "elu", False),
    ]
    specs += [(f"dilated{r}", 4 * c, 3, 1, r, "elu", False) for r in (2, 4, 8, 16)]
    return gated_stack(cin, specs)


class Decoder(nn.Module):
    """1/4 resolution features -> full-resolution RGB (tanh) or mask (sigmoid).

    ``(B, cin, H/4, W/4) -> (B, out_channels, H, W)``: two 3x3 gated convs (2cnum), an up-conv
    (cnum), a conv (cnum), an up-conv (cnum/2), a conv (cnum/4) and a plain 3x3 conv to
    ``out_channels``, then ``output_activation``. Used for both heads of the mask estimator
    and for the coarse and fine decoders of the generator. [code]
    """

    def __init__(self, cin: int, cnum: int, out_channels: int, output_activation: str):
        super().__init__()
        if output_activation not in ("tanh", "sigmoid"):
            raise ValueError(
                f"output_activation must be 'tanh' or 'sigmoid', got {output_activation!r}"
            )
        if out_channels not in (1, 3):
            raise ValueError(f"out_channels must be 1 or 3, got {out_channels}")
        c = cnum
        self.output_activation = output_activation
        self.layers = gated_stack(
            cin,
            [
                ("conv1", 4 * c, 3, 1, 1, "elu", False),
                ("conv2", 4 * c, 3, 1, 1, "elu", False),
                ("up1", 2 * c, 3, 1, 1, "elu", True),
                ("conv3", 2 * c, 3, 1, 1, "elu", False),
                ("up2", c, 3, 1, 1, "elu", True),
                ("conv4", c // 2, 3, 1, 1, "elu", False),
                ("to_output", out_channels, 3, 1, 1, None, False),
            ],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return torch.tanh(y) if self.output_activation == "tanh" else torch.sigmoid(y)


def check_image_batch(
    name: str,
    x,
    channels: int,
    *,
    like: torch.Tensor | None = None,
    multiple: int | None = 8,
    check_nan: bool = True,
) -> None:
    """Raise a clear ``TypeError``/``ValueError`` for a malformed network input.

    Checks: a floating tensor, 4-D ``(B, channels, H, W)``, the batch/size of ``like`` when
    given, H and W multiples of ``multiple`` and no NaN. The NaN check is one reduction over
    the input (a few microseconds), negligible next to the networks.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
    if like is not None:
        if x.shape[0] != like.shape[0] or x.shape[2:] != like.shape[2:]:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}, which does not match the image "
                f"{tuple(like.shape)} in batch size and H, W"
            )
        if x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but the image is on {like.device}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if multiple is not None and (x.shape[2] % multiple or x.shape[3] % multiple):
        raise ValueError(
            f"{name}: H and W must be multiples of {multiple}, got {x.shape[2]}x{x.shape[3]} "
            "(sketchedit.inference.run_sketchedit pads or resizes any size for you)"
        )
    if check_nan and torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN values")
