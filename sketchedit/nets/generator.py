"""Generator G: paint the region anew, following the sketch, in the old style (docs/method.md 2).

Two stages, as in DeepFill v2 / CR-Fill, the lineage of the official code [code][lineage]:

**Coarse stage.** ``cat(image * (1 - mask), sketch, mask)`` (5 channels) goes through a dilated
trunk to ``(B, 2cnum, H/4, W/4)``. The style vector of the :class:`StyleEncoder` ``(B, 2cnum)`` is
tiled over that grid and concatenated *after* the coarse features (``4cnum`` channels), and a
decoder produces the coarse image (tanh). This concatenation is the only place where the style
enters the generator (no AdaIN, no SPADE).

**Composite.** The coarse image is pasted into the hole of the known image:
``x = coarse * mask + known * (1 - mask)`` with ``known = image * (1 - mask)``.

**Refinement ("fine") stage** on that 3-channel composite only, two branches at 1/4 resolution:

- a dilated branch (a narrower dilated trunk) that hallucinates content;
- an attention branch: 6 gated convs (the last with ReLU), then parameter-free *contextual
  attention*, which rebuilds every position from known patches of the same feature map (so the
  hole can borrow texture from elsewhere in the image), then 2 gated convs.

Their outputs are concatenated (``4cnum``) and decoded to the fine image (tanh).

::

    image, sketch, mask ----> coarse_encoder --+
    style_image, style_mask -> style_encoder --+-> coarse_decoder -> coarse
    composite(coarse) -> refine_dilated ---------+
    composite(coarse) -> refine_attention -------+-> refine_decoder -> fine
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sketchedit.nets.blocks import (
    Decoder,
    check_cnum,
    check_image_batch,
    dilated_trunk,
    gated_stack,
    init_weights,
)
from sketchedit.nets.contextual_attention import ContextualAttention
from sketchedit.nets.official import OfficialLayout
from sketchedit.nets.style_encoder import POOLINGS, StyleEncoder

__all__ = ["AttentionBranch", "Generator", "MIN_SIDE"]

#: Smallest image side the generator accepts: contextual attention needs at least one 4x4
#: patch on the 1/4-resolution feature map.
MIN_SIDE = 16


class AttentionBranch(nn.Module):
    """The refinement stage's attention branch ``(B, 3, H, W), hole -> (B, 2cnum, H/4, W/4)``.

    ``features``: 5x5 conv, stride-2, conv, stride-2, conv and a conv whose feature half uses
    ReLU instead of ELU (the official ``pmconv1..6``); ``attention``: contextual attention with
    the official settings (4x4 patches, stride 2, softmax scale 10, 10 % validity threshold);
    ``post``: two gated convs (``pmconv9``, ``pmconv10``). [code]
    """

    def __init__(self, cnum: int, attention: ContextualAttention | None = None):
        super().__init__()
        c = cnum
        self.features = gated_stack(
            3,
            [
                ("conv1", c, 5, 1, 1, "elu", False),
                ("down1", c, 3, 2, 1, "elu", False),
                ("conv2", 2 * c, 3, 1, 1, "elu", False),
                ("down2", 4 * c, 3, 2, 1, "elu", False),
                ("conv3", 4 * c, 3, 1, 1, "elu", False),
                ("conv4", 4 * c, 3, 1, 1, "relu", False),  # ReLU here [code]
            ],
        )
        self.attention = attention if attention is not None else ContextualAttention()
        self.post = gated_stack(
            2 * c,
            [
                ("conv1", 4 * c, 3, 1, 1, "elu", False),
                ("conv2", 4 * c, 3, 1, 1, "elu", False),
            ],
        )

    def forward(self, x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """``x (B, 3, H, W)``, ``hole (B, 1, H/4, W/4)`` in [0, 1] -> ``(B, 2cnum, H/4, W/4)``."""
        return self.post(self.attention(self.features(x), hole))


class Generator(OfficialLayout, nn.Module):
    """Coarse-to-fine generator conditioned on the partial sketch and the style vector.

    Args:
        cnum: width (48 released; a multiple of 4).
        style_pool: ``"max"`` (released [code]) or ``"avg"`` pooling in the style encoder.

    Submodules: ``coarse_encoder``, ``style_encoder`` (:class:`StyleEncoder`),
    ``coarse_decoder``, ``refine_dilated``, ``refine_attention`` (:class:`AttentionBranch`, with
    ``.attention`` the contextual attention layer), ``refine_decoder``.
    """

    def __init__(self, cnum: int = 48, style_pool: str = "max"):
        super().__init__()
        if style_pool not in POOLINGS:
            raise ValueError(f"style_pool must be one of {POOLINGS}, got {style_pool!r}")
        self.cnum = check_cnum(cnum)
        self.coarse_encoder = dilated_trunk(5, cnum)
        self.style_encoder = StyleEncoder(cnum, pool=style_pool)
        self.coarse_decoder = Decoder(4 * cnum, cnum, out_channels=3, output_activation="tanh")
        self.refine_dilated = dilated_trunk(3, cnum, widths="refine")
        self.refine_attention = AttentionBranch(cnum)
        self.refine_decoder = Decoder(4 * cnum, cnum, out_channels=3, output_activation="tanh")
        init_weights(self)

    def config(self) -> dict:
        """Constructor arguments: ``Generator(**g.config())`` rebuilds the network."""
        return {"cnum": self.cnum, "style_pool": self.style_encoder.pool}

    # --- the stages, usable one by one (notebook 03) ------------------------------------------
    def style_vector(self, style_image: torch.Tensor, style_mask: torch.Tensor) -> torch.Tensor:
        """The style vector ``(B, 2*cnum)`` of the region ``style_mask`` of ``style_image``."""
        return self.style_encoder(style_image, style_mask)

    def coarse(
        self,
        image: torch.Tensor,
        sketch: torch.Tensor,
        mask: torch.Tensor,
        style: torch.Tensor,
    ) -> torch.Tensor:
        """Coarse stage: ``(B, 3, H, W)`` in [-1, 1] given the style vector ``(B, 2cnum)``."""
        x = torch.cat([image * (1 - mask), sketch, mask], dim=1)  # (B, 5, H, W)
        features = self.coarse_encoder(x)  # (B, 2cnum, H/4, W/4)
        # Tile the style vector over the 1/4-res grid, after the coarse features. [code]
        tiled = style[:, :, None, None].expand(-1, -1, *features.shape[2:])
        return self.coarse_decoder(torch.cat([features, tiled], dim=1))

    @staticmethod
    def composite(coarse: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Paste the coarse result into the hole: ``coarse * mask + known * (1 - mask)``.

        ``known = image * (1 - mask)`` is the *masked* input, exactly as the official code
        writes it [code]. For a binary mask this equals ``image * (1 - mask)``; for a soft mask
        (training mode 1 feeds the soft predicted mask) the known part is attenuated twice,
        ``image * (1 - mask)^2``. We keep that literally so official weights see the inputs they
        were trained on.
        """
        known = image * (1 - mask)
        return coarse * mask + known * (1 - mask)

    def refine(self, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Refinement stage on the 3-channel composite -> fine image ``(B, 3, H, W)``."""
        # The hole at the attention resolution; no gradient flows into the mask. [code]
        hole = F.avg_pool2d(mask, kernel_size=4, stride=4).detach()
        dilated = self.refine_dilated(composite)  # (B, 2cnum, H/4, W/4)
        attended = self.refine_attention(composite, hole)  # (B, 2cnum, H/4, W/4)
        return self.refine_decoder(torch.cat([dilated, attended], dim=1))

    def forward(
        self,
        image: torch.Tensor,
        sketch: torch.Tensor,
        mask: torch.Tensor,
        style_mask: torch.Tensor,
        style_image: torch.Tensor | None = None,
    ):
        """Edit ``image`` inside ``mask`` following ``sketch``, in the style of the region.

        Args:
            image: ``(B, 3, H, W)`` in [-1, 1]; H, W multiples of 8 and at least 16.
            sketch: ``(B, 1, H, W)`` in {0, 1}, 1 = stroke.
            mask: ``(B, 1, H, W)`` in [0, 1], 1 = regenerate (binary at inference).
            style_mask: ``(B, 1, H, W)`` in [0, 1], the region the style vector summarises
                (the same hard mask at inference; the mask with random holes in training).
            style_image: ``(B, 3, H, W)``, the image the style is read from; defaults to
                ``image``. (In the joint-inpainting training mode the official code feeds the
                target to the coarse stage but still the *input* image to the style encoder.)

        Returns:
            ``(coarse, fine)``, both ``(B, 3, H, W)`` in [-1, 1].
        """
        check_image_batch("image", image, 3)
        if image.shape[2] < MIN_SIDE or image.shape[3] < MIN_SIDE:
            raise ValueError(
                f"image is {image.shape[2]}x{image.shape[3]}; the generator needs at least "
                f"{MIN_SIDE}x{MIN_SIDE} (one contextual-attention patch at 1/4 resolution)"
            )
        check_image_batch("sketch", sketch, 1, like=image)
        check_image_batch("mask", mask, 1, like=image)
        check_image_batch("style_mask", style_mask, 1, like=image)
        if style_image is None:
            style_image = image
        else:
            check_image_batch("style_image", style_image, 3, like=image)
        for name, m in (("mask", mask), ("style_mask", style_mask)):
            low, high = torch.aminmax(m)
            if low < 0 or high > 1:
                raise ValueError(f"{name} must lie in [0, 1], got values in [{low}, {high}]")

        style = self.style_vector(style_image, style_mask)  # (B, 2cnum)
        coarse = self.coarse(image, sketch, mask, style)
        fine = self.refine(self.composite(coarse, image, mask), mask)
        return coarse, fine
