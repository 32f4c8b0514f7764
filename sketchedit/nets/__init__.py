"""The networks of SketchEdit (docs/method.md section 2) and the discriminator used to train them.

- :class:`MaskEstimator`  image + partial sketch -> soft mask of the region to change
- :class:`Generator`      coarse + fine generator conditioned on sketch and style vector
- :class:`StyleEncoder`   the structure-agnostic style encoder inside the generator
- :class:`Discriminator`  SN-PatchGAN, training only
- :mod:`~sketchedit.nets.blocks`  the gated convolution and the stacks built from it
- :mod:`~sketchedit.nets.contextual_attention`  the attention layer of the fine stage
"""

from sketchedit.nets.blocks import Decoder, GatedConv2d, GatedUpConv2d, init_weights
from sketchedit.nets.contextual_attention import (
    ContextualAttention,
    attention_weights,
    contextual_attention,
)
from sketchedit.nets.discriminator import Discriminator, composite
from sketchedit.nets.generator import Generator
from sketchedit.nets.mask_estimator import MaskEstimator
from sketchedit.nets.style_encoder import StyleEncoder, global_pool

__all__ = [
    "ContextualAttention",
    "Decoder",
    "Discriminator",
    "GatedConv2d",
    "GatedUpConv2d",
    "Generator",
    "MaskEstimator",
    "StyleEncoder",
    "attention_weights",
    "composite",
    "contextual_attention",
    "global_pool",
    "init_weights",
]
