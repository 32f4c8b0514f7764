"""Helpers for notebook 07 (the paper's figures): model diagram, inference-time ablations, inputs.

- :func:`trace_shapes` runs the two networks once on random inputs with forward hooks and
  records the output shape of every stage; :func:`draw_model_overview` draws the paper's model
  overview (Fig. 3 of the paper) from those shapes with matplotlib, so the diagram cannot
  drift from the code.
- :func:`run_stages` runs the generator stage by stage (the public ``style_vector``,
  ``coarse``, ``composite`` and ``refine`` of :class:`~sketchedit.nets.generator.Generator`)
  so that one stage can be changed at inference: the style vector zeroed or read from another
  photo, the stroke-hull mask instead of the mask estimator, the contextual attention layer
  replaced by the identity. None of these were trained that way: they show what each part
  contributes to *this* network's output, not what retraining without it would give. [ours]
- :func:`load_editor` and :func:`official_pairs` pick the models and inputs: the shipped
  starter on bundled photos by default, or the official checkpoints and release samples.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = [
    "OVERVIEW_STAGES",
    "draw_model_overview",
    "fit_photo",
    "load_editor",
    "official_pairs",
    "run_stages",
    "trace_shapes",
]

#: Stages drawn in the overview: (module path in the mask estimator "M." or generator "G.",
#: label in the diagram). The trunk is hooked at its last layer: ``predict_mask`` calls the
#: trunk's layers one by one, so a hook on the trunk itself never fires.
OVERVIEW_STAGES = (
    ("M.trunk.dilated16", "mask estimator trunk"),
    ("M.mask_head", "mask head"),
    ("G.style_encoder", "style encoder"),
    ("G.coarse_encoder", "coarse encoder"),
    ("G.coarse_decoder", "coarse decoder"),
    ("G.refine_dilated", "refine: dilated branch"),
    ("G.refine_attention.features", "refine: attention features"),
    ("G.refine_attention.attention", "contextual attention"),
    ("G.refine_attention.post", "refine: after attention"),
    ("G.refine_decoder", "refine decoder"),
)


def load_editor(official_checkpoints=None, device: str = "cpu"):
    """``(editor, label)``: the shipped starter, or the official models.

    ``official_checkpoints``: ``None`` (the starter), a pair ``(latest_net_M.pth,
    latest_net_G.pth)``, or one path (an official archive or extracted folder, as accepted by
    :meth:`SketchEditor.from_official`; a folder holding the two files also works with the
    two-file API).
    """
    from sketchedit.editor import SketchEditor

    if official_checkpoints is None:
        return SketchEditor.from_pretrained(device=device), "shipped starter (64 px, CPU-trained)"
    if isinstance(official_checkpoints, (list, tuple)):
        return SketchEditor.from_official(*official_checkpoints, device=device), "official"
    path = Path(official_checkpoints)
    files = (path / "latest_net_M.pth", path / "latest_net_G.pth")
    if path.is_dir() and all(f.is_file() for f in files):
        return SketchEditor.from_official(*files, device=device), "official"
    return SketchEditor.from_official(path, device=device), "official"


def fit_photo(photo: Image.Image, width: int, height: int | None = None) -> Image.Image:
    """``photo`` centre-cropped and resized to ``width x height`` (default square), RGB."""
    return ImageOps.fit(photo.convert("RGB"), (width, height or width), Image.Resampling.LANCZOS)


def official_pairs(
    folder: str | os.PathLike, k: int, size: int
) -> list[tuple[Image.Image, np.ndarray]]:
    """The first ``k`` (photo, sketch) pairs of an official release sample folder.

    Layout: ``list.txt`` (one image name a line), ``images/<name>``, ``edges/<name>`` (the
    partial sketch, white strokes on black). Photos are fitted to ``size`` px; sketches are
    resized with nearest neighbours and thresholded at half intensity.
    """
    root = Path(folder)
    listing = root / "list.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{root} has no list.txt (expected the official sample layout)")
    names = [n.strip() for n in listing.read_text().splitlines() if n.strip()][:k]
    pairs = []
    for name in names:
        photo = fit_photo(Image.open(root / "images" / name), size)
        edges = Image.open(root / "edges" / name).convert("L")
        edges = ImageOps.fit(edges, (size, size), Image.Resampling.NEAREST)
        pairs.append((photo, (np.asarray(edges) > 127).astype(np.float32)))
    return pairs


# ------------------------------------------------------------------------------------------
# Model overview
# ------------------------------------------------------------------------------------------


def _module(nets: dict, path: str) -> torch.nn.Module:
    net, _, rest = path.partition(".")
    mod = nets[net]
    for part in rest.split("."):
        mod = getattr(mod, part)
    return mod


@torch.no_grad()
def trace_shapes(mask_estimator, generator, size: int = 256) -> dict[str, tuple[int, ...]]:
    """Output shape of every stage of :data:`OVERVIEW_STAGES` for one ``size`` px image.

    Runs the mask estimator and the generator once on random inputs with forward hooks
    (the weights do not matter for shapes). Also records ``"input"`` ``(1, 3, size, size)``,
    ``"sketch"``, ``"style vector"`` and the final ``"coarse"`` and ``"fine"`` images.
    """
    nets = {"M": mask_estimator, "G": generator}
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for path, _ in OVERVIEW_STAGES:

        def hook(_mod, _inp, out, path=path):
            out = out[0] if isinstance(out, (tuple, list)) else out
            shapes[path] = tuple(out.shape)

        hooks.append(_module(nets, path).register_forward_hook(hook))
    try:
        gen = torch.Generator().manual_seed(0)
        image = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
        sketch = (torch.rand(1, 1, size, size, generator=gen) > 0.99).float()
        mask = (mask_estimator.predict_mask(image, sketch) > 0.5).float()
        mask[..., size // 4 : size // 2, size // 4 : size // 2] = 1  # a hole, whatever M says
        coarse, fine = generator(image, sketch, mask, mask)
        style = generator.style_vector(image, mask)
    finally:
        for h in hooks:
            h.remove()
    shapes.update(
        {
            "input": tuple(image.shape),
            "sketch": tuple(sketch.shape),
            "style vector": tuple(style.shape),
            "coarse": tuple(coarse.shape),
            "fine": tuple(fine.shape),
        }
    )
    return shapes


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape[1:])  # without the batch dimension


def draw_model_overview(shapes: dict[str, tuple[int, ...]], title: str | None = None):
    """The model overview as boxes and arrows, each box labelled with its output shape.

    ``shapes``: from :func:`trace_shapes`. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    labels = dict(OVERVIEW_STAGES)
    # (key, x, y, colour): three lanes, mask estimator (top), coarse (middle), refine (bottom).
    boxes = [
        ("input", 0.0, 2.0, "#dddddd", "image + sketch\n(+ mask for G)"),
        ("M.trunk.dilated16", 1.6, 3.0, "#f4c7a1", None),
        ("M.mask_head", 3.2, 3.0, "#f4c7a1", "mask head\n-> soft mask"),
        ("G.style_encoder", 3.2, 1.0, "#c9e4c5", "style encoder\n(global max pool)"),
        ("G.coarse_encoder", 3.2, 2.0, "#b7d3f2", None),
        ("G.coarse_decoder", 4.8, 2.0, "#b7d3f2", "coarse decoder (+ tiled\nstyle) -> coarse"),
        ("G.refine_dilated", 6.4, 2.5, "#d9c8ef", None),
        ("G.refine_attention.features", 6.4, 1.0, "#d9c8ef", None),
        ("G.refine_attention.attention", 8.0, 1.0, "#f2b8c6", None),
        ("G.refine_attention.post", 9.6, 1.0, "#d9c8ef", None),
        ("G.refine_decoder", 9.6, 2.5, "#d9c8ef", "refine decoder\n-> fine"),
    ]
    arrows = [
        ("input", "M.trunk.dilated16"),
        ("M.trunk.dilated16", "M.mask_head"),
        ("M.mask_head", "G.coarse_encoder"),
        ("input", "G.coarse_encoder"),
        ("input", "G.style_encoder"),  # the image's region under the mask
        ("G.coarse_encoder", "G.coarse_decoder"),
        ("G.style_encoder", "G.coarse_decoder"),
        ("G.coarse_decoder", "G.refine_dilated"),
        ("G.coarse_decoder", "G.refine_attention.features"),
        ("G.refine_attention.features", "G.refine_attention.attention"),
        ("G.refine_attention.attention", "G.refine_attention.post"),
        ("G.refine_attention.post", "G.refine_decoder"),
        ("G.refine_dilated", "G.refine_decoder"),
    ]
    fig, ax = plt.subplots(figsize=(13, 4.6))
    w, h = 1.35, 0.62
    centre = {}
    for key, x, y, colour, text in boxes:
        ax.add_patch(
            FancyBboxPatch(
                (x, y), w, h, boxstyle="round,pad=0.03", facecolor=colour, edgecolor="#333333"
            )
        )
        name = text or labels.get(key, key)
        shape = _shape_text(shapes["style vector" if key == "G.style_encoder" else key])
        ax.text(x + w / 2, y + h * 0.64, name, ha="center", va="center", fontsize=7)
        ax.text(
            x + w / 2,
            y + h * 0.2,
            shape,
            ha="center",
            va="center",
            fontsize=7.5,
            family="monospace",
        )
        centre[key] = (x, y)
    for a, b in arrows:
        (xa, ya), (xb, yb) = centre[a], centre[b]
        start = (xa + w, ya + h / 2) if xb > xa else (xa + w / 2, ya + (h if yb > ya else 0))
        end = (xb, yb + h / 2) if xb > xa else (xb + w / 2, yb + (0 if yb > ya else h))
        ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "lw": 0.9})
    ax.text(
        11.1,
        2.8,
        f"coarse {_shape_text(shapes['coarse'])}\nfine {_shape_text(shapes['fine'])}",
        fontsize=7.5,
        family="monospace",
        va="center",
    )
    ax.set_xlim(-0.2, 12.4)
    ax.set_ylim(0.7, 3.8)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------
# Inference-time ablations
# ------------------------------------------------------------------------------------------


@torch.no_grad()
def run_stages(
    mask_estimator,
    generator,
    image: torch.Tensor,
    sketch: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    style: str | torch.Tensor = "own",
    attention: bool = True,
) -> dict[str, torch.Tensor]:
    """The generator stage by stage, with one stage changed at inference. [ours]

    Args:
        image: ``(B, 3, H, W)`` in [-1, 1], H and W multiples of 8 (the working size).
        sketch: ``(B, 1, H, W)`` in {0, 1}.
        mask: ``(B, 1, H, W)`` in [0, 1] instead of the mask estimator's prediction (e.g. the
            stroke-hull mask); thresholded at 0.5 for the generator, as at inference.
        style: ``"own"`` (the style vector of the region of ``image``, the normal path),
            ``"zero"`` (an all-zero style vector), or a ``(B, 3, H, W)`` image whose *same*
            region gives the style vector (style taken from another photo).
        attention: ``False`` replaces the contextual attention layer by the identity: the
            attention branch's features reach its last convs without being rebuilt from
            known patches.

    Returns:
        ``{"soft_mask", "mask", "style", "coarse", "fine", "output"}``; ``output`` is the
        soft blend ``fine * m + image * (1 - m)``, as the editor returns.
    """
    g = generator
    soft = mask_estimator.predict_mask(image, sketch) if mask is None else mask.clamp(0, 1)
    hard = (soft > 0.5).to(image.dtype)
    if isinstance(style, torch.Tensor):
        vector = g.style_vector(style, hard)
    elif style == "own":
        vector = g.style_vector(image, hard)
    elif style == "zero":
        vector = torch.zeros_like(g.style_vector(image, hard))
    else:
        raise ValueError(f"style must be 'own', 'zero' or an image tensor, got {style!r}")
    coarse = g.coarse(image, sketch, hard, vector)
    composite = g.composite(coarse, image, hard)
    if attention:
        fine = g.refine(composite, hard)
    else:
        branch = g.refine_attention
        dilated = g.refine_dilated(composite)
        attended = branch.post(branch.features(composite))  # attention layer skipped
        fine = g.refine_decoder(torch.cat([dilated, attended], dim=1))
    output = fine * soft + image * (1 - soft)
    return {
        "soft_mask": soft,
        "mask": hard,
        "style": vector,
        "coarse": coarse,
        "fine": fine,
        "output": output,
    }
