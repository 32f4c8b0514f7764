"""The mask estimator M: where does the partial sketch ask the image to change? (docs/method.md 2)

SketchEdit is *mask-free*: the user only draws strokes. M looks at the image and the sketch and
predicts a soft mask of the region the strokes imply should change (paper, Fig. 2). It is a
plain encoder with two decoder heads [code]:

::

    cat(image, sketch)  (B, 4, H, W)
      -> trunk: 5x5 conv, stride-2, conv, stride-2, 2 convs, dilated 2, 4, 8, 16
           (B, 2cnum, H/4, W/4)
      -> mask head (reads the rate-16 output) -> sigmoid -> soft mask (B, 1, H, W) in (0, 1)
      -> RGB head  (reads the rate-8 output)  -> tanh    -> auxiliary RGB (B, 3, H, W)

The auxiliary RGB head exists only for training: M has no ground-truth mask and learns from
``L1(rgb, target)`` and ``L1(rgb * m + input * (1 - m), target)``, the second of which is lowest
when ``m`` covers exactly the pixels where input and target differ (docs/method.md section 4).
At inference :meth:`MaskEstimator.predict_mask` skips that head (about a third of M's work).

Quirk kept from the official network [code]: the RGB head branches off *before* the last
(rate-16) dilated conv, so that layer feeds only the mask head.
"""

from __future__ import annotations

import torch
from torch import nn

from sketchedit.nets.blocks import (
    Decoder,
    check_cnum,
    check_image_batch,
    dilated_trunk,
    init_weights,
)
from sketchedit.nets.official import OfficialLayout

__all__ = ["MaskEstimator"]


class MaskEstimator(OfficialLayout, nn.Module):
    """Predict the soft edit mask from an image and a partial sketch.

    Args:
        cnum: width; the released networks use 48 (real feature widths 24/48/96). Must be a
            multiple of 4. Tests use 4-8.

    Submodules: ``trunk`` (the shared dilated encoder), ``mask_head`` and ``rgb_head``
    (:class:`~sketchedit.nets.blocks.Decoder`).
    """

    def __init__(self, cnum: int = 48):
        super().__init__()
        self.cnum = check_cnum(cnum)
        self.trunk = dilated_trunk(4, cnum)
        self.rgb_head = Decoder(2 * cnum, cnum, out_channels=3, output_activation="tanh")
        self.mask_head = Decoder(2 * cnum, cnum, out_channels=1, output_activation="sigmoid")
        init_weights(self)

    def config(self) -> dict:
        """Constructor arguments: ``MaskEstimator(**m.config())`` rebuilds the network."""
        return {"cnum": self.cnum}

    def _check(self, image, sketch):
        check_image_batch("image", image, 3)
        check_image_batch("sketch", sketch, 1, like=image)

    def encode(self, image: torch.Tensor, sketch: torch.Tensor):
        """Run the trunk; return the two feature maps the heads read.

        Returns:
            ``(rate8, rate16)``, both ``(B, 2*cnum, H/4, W/4)``: the output of the rate-8
            dilated conv (read by the RGB head) and of the rate-16 one (read by the mask head).
        """
        x = torch.cat([image, sketch], dim=1)  # (B, 4, H, W)
        for layer in self.trunk[:-1]:  # everything up to and including dilated8
            x = layer(x)
        return x, self.trunk.dilated16(x)

    def forward(self, image: torch.Tensor, sketch: torch.Tensor):
        """``image (B, 3, H, W)`` in [-1, 1], ``sketch (B, 1, H, W)`` in {0, 1} (1 = stroke).

        H and W must be multiples of 8. Returns ``(mask (B, 1, H, W) in (0, 1),
        rgb (B, 3, H, W) in [-1, 1])``.
        """
        self._check(image, sketch)
        rate8, rate16 = self.encode(image, sketch)
        return self.mask_head(rate16), self.rgb_head(rate8)

    def predict_mask(self, image: torch.Tensor, sketch: torch.Tensor) -> torch.Tensor:
        """The soft mask only ``(B, 1, H, W)`` in (0, 1); skips the auxiliary RGB head.

        Gives exactly the ``mask`` output of :meth:`forward`.
        """
        self._check(image, sketch)
        _, rate16 = self.encode(image, sketch)
        return self.mask_head(rate16)
