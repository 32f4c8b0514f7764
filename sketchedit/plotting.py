"""Plotting helpers shared by the notebooks: image grids and figure saving.

Notebooks call :func:`show_grid` to lay out images and :func:`save_figure` to write a
figure into ``figures/`` when the main job (``make run``) passes ``figures_dir``; the
stored notebook default ``figures_dir = None`` saves nothing, so running the tests does not
rewrite tracked files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def as_display_array(img) -> np.ndarray:
    """Tensor ``(3|1, H, W)`` in ``[-1, 1]`` or ``{0, 1}`` mask, PIL or array -> plottable array.

    Three-channel tensors are taken as images in ``[-1, 1]``; one-channel tensors as masks or
    sketches in ``[0, 1]`` (shown in grey).
    """
    if isinstance(img, torch.Tensor):
        t = img.detach().float().cpu()
        if t.ndim == 4:
            t = t[0]
        if t.ndim == 3 and t.shape[0] == 3:
            return ((t.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
        if t.ndim == 3 and t.shape[0] == 1:
            t = t[0]
        return t.clamp(0, 1).numpy()
    return np.asarray(img)


def show_grid(
    images: Sequence,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    size: float = 2.2,
    suptitle: str | None = None,
):
    """Show images in a grid and return the matplotlib figure.

    ``images`` may mix tensors (see :func:`as_display_array`), PIL images and arrays.
    """
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        arr = as_display_array(images[i])
        grey = arr.ndim == 2
        ax.imshow(arr, cmap="gray" if grey else None, vmin=0, vmax=1 if grey else None)
        if titles is not None and i < len(titles):
            ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def save_figure(fig, name: str, figures_dir: str | os.PathLike | None) -> Path | None:
    """Save ``fig`` as ``figures_dir/name`` (PNG, 110 dpi) when ``figures_dir`` is set."""
    if figures_dir is None:
        return None
    out = Path(figures_dir) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out
