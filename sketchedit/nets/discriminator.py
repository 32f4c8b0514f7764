"""The discriminator D, used only for training (docs/method.md section 2).

SketchEdit's discriminator was not released. Its call site in the official code fixes what it
sees: the fake image composited with the real image outside the mask, conditioned on the
sketch and on the input image [code]. Its architecture comes from the lineage (DeepFill v2's
SN-PatchGAN, as in CR-Fill) [lineage]: six spectral-normalised 5x5 stride-2 convs with widths
``cnum * (1, 2, 4, 4, 4, 4)``, each followed by LeakyReLU (slope 0.01), and *no* final
1-channel conv: every output channel of every 1/64-resolution cell is a score for the hinge
loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sketchedit.nets.blocks import check_image_batch, init_weights

__all__ = ["Discriminator", "composite"]

#: LeakyReLU slope after every conv: F.leaky_relu's default, as in the lineage. [lineage]
LEAKY_SLOPE = 0.01


def composite(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What D judges: ``fake`` inside ``mask``, ``real`` outside. ``(B, 3, H, W)``. [code]

    The mask is detached, as in the official training step: D's gradient must not move the
    mask estimator.
    """
    mask = mask.detach()
    return fake * mask + real * (1 - mask)


class Discriminator(nn.Module):
    """SN-PatchGAN: ``(image, sketch, condition) -> scores (B, 4*cnum, H/64, W/64)``.

    Args:
        cnum: width of the first conv (64 in the lineage).
        use_condition: [ours] the official call passes the image, the sketch and the input
            image (the "condition"), but how its unreleased discriminator combined them is
            unknown. ``True`` (default): concatenate all three, 3 + 1 + 3 = 7 input channels,
            the simplest reading. ``False``: image and sketch only (4 channels); ``condition``
            is then ignored.

    The image sides should be multiples of 64 for an exact 1/64 grid (any size works; the
    convs use padding 2, so each stride-2 layer maps ``s`` to ``ceil(s / 2)``).
    """

    def __init__(self, cnum: int = 64, use_condition: bool = True):
        super().__init__()
        if isinstance(cnum, bool) or not isinstance(cnum, int) or cnum < 1:
            raise ValueError(f"cnum must be a positive int, got {cnum!r}")
        self.cnum = cnum
        self.use_condition = bool(use_condition)
        widths = [cnum, 2 * cnum, 4 * cnum, 4 * cnum, 4 * cnum, 4 * cnum]
        layers = []
        cin = 7 if self.use_condition else 4
        for cout in widths:
            conv = nn.Conv2d(cin, cout, kernel_size=5, stride=2, padding=2)
            init_weights(conv)  # before spectral norm wraps the weight [lineage]
            layers.append(nn.utils.spectral_norm(conv))
            cin = cout
        self.convs = nn.ModuleList(layers)

    def config(self) -> dict:
        """Constructor arguments: ``Discriminator(**d.config())`` rebuilds the network."""
        return {"cnum": self.cnum, "use_condition": self.use_condition}

    def forward(
        self,
        image: torch.Tensor,
        sketch: torch.Tensor,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``image`` (the composite or the real one), ``sketch`` and the ``condition`` image.

        ``(B, 3, H, W), (B, 1, H, W), (B, 3, H, W) -> (B, 4*cnum, H/64, W/64)``.
        """
        check_image_batch("image", image, 3, multiple=None)
        check_image_batch("sketch", sketch, 1, like=image, multiple=None)
        inputs = [image, sketch]
        if self.use_condition:
            if condition is None:
                raise ValueError("this discriminator is conditioned: pass the condition image")
            check_image_batch("condition", condition, 3, like=image, multiple=None)
            inputs.append(condition)
        x = torch.cat(inputs, dim=1)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAKY_SLOPE)
        return x
