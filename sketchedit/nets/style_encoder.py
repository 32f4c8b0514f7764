"""The structure-agnostic style encoder: what did the edited region look like? (paper, Sec. 3)

When the user redraws a contour, the new content should keep the *appearance* of what was
there (skin tone, roof texture, sky colour) while following the *shape* of the new strokes.
The style encoder summarises the old content of the region into one **style vector**
``(B, 2*cnum)`` (96 numbers at the released width) that the coarse generator is conditioned on.

How [code]:

::

    cat(image * style_mask, zeros, style_mask)      (B, 5, H, W)
      -> trunk of the same shape as the coarse generator's encoder
           (B, 2cnum, H/4, W/4)
      -> global MAX pooling over all positions
           (B, 2cnum)                                 the style vector

Why "structure-agnostic": a global max over positions forgets *where* a feature fired; it keeps
only *whether* (and how strongly) it fired somewhere. Moving, rotating or shuffling the content of
the region changes little of that summary, so the vector cannot carry the old shape to the
generator, only the old appearance; the shape has to come from the sketch. (Training
reinforces this by punching random holes in the style region, docs/method.md section 4.) The
released configurations use max pooling; the official code also has an average-pooling option,
offered here as ``pool="avg"`` for comparison (notebook 03). [code]

The middle input channel is where the coarse generator gets the sketch; in the style encoder it
is zeroed in both released configurations, so the sketch never reaches the style vector. [code]
"""

from __future__ import annotations

import torch
from torch import nn

from sketchedit.nets.blocks import check_cnum, dilated_trunk

__all__ = ["POOLINGS", "StyleEncoder", "global_pool"]

POOLINGS = ("max", "avg")


def global_pool(features: torch.Tensor, pool: str = "max") -> torch.Tensor:
    """Pool ``(B, C, h, w)`` over all positions to the style vector ``(B, C)``.

    ``"max"``: the released configurations [code]; invariant to any permutation of the
    positions. ``"avg"``: the alternative the official code offers (also permutation invariant,
    but it dilutes a feature that fires in a few places with the rest of the region).
    """
    if pool == "max":
        return features.amax(dim=(2, 3))
    if pool == "avg":
        return features.mean(dim=(2, 3))
    raise ValueError(f"pool must be one of {POOLINGS}, got {pool!r}")


class StyleEncoder(nn.Module):
    """``(style_image (B, 3, H, W) in [-1, 1], style_mask (B, 1, H, W) in [0, 1]) -> (B, 2*cnum)``.

    Args:
        cnum: width (48 released; multiple of 4).
        pool: ``"max"`` (released) or ``"avg"``.

    Submodule ``trunk`` is a :func:`~sketchedit.nets.blocks.dilated_trunk` with 5 input channels.
    Weights are initialised by the owning :class:`~sketchedit.nets.generator.Generator`.
    """

    def __init__(self, cnum: int = 48, pool: str = "max"):
        super().__init__()
        if pool not in POOLINGS:
            raise ValueError(f"pool must be one of {POOLINGS}, got {pool!r}")
        self.cnum = check_cnum(cnum)
        self.pool = pool
        self.trunk = dilated_trunk(5, cnum)

    @staticmethod
    def encoder_input(style_image: torch.Tensor, style_mask: torch.Tensor) -> torch.Tensor:
        """``(B, 5, H, W)``: the region's pixels, a zeroed sketch channel, the region mask."""
        return torch.cat(
            [style_image * style_mask, torch.zeros_like(style_mask), style_mask], dim=1
        )

    def feature_map(self, style_image: torch.Tensor, style_mask: torch.Tensor) -> torch.Tensor:
        """The trunk's output before pooling, ``(B, 2*cnum, H/4, W/4)``."""
        return self.trunk(self.encoder_input(style_image, style_mask))

    def forward(self, style_image: torch.Tensor, style_mask: torch.Tensor) -> torch.Tensor:
        return global_pool(self.feature_map(style_image, style_mask), self.pool)
