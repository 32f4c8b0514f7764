"""Training data for SketchEdit: photos, crops, edge maps, random holes, warp pairs, Dataset.

One module per step of the data pipeline (docs/method.md section 4):

- :mod:`~sketchedit.data.photos`   offline bundled photos, the photo pack, a user's folder, splits
- :mod:`~sketchedit.data.photo_pack` builds the photo pack from pip and Debian packages
- :mod:`~sketchedit.data.crops`    seeded random square crops resized to the training size
- :mod:`~sketchedit.data.edges`    Canny / XDoG / HED edge maps as 1-px sketches
- :mod:`~sketchedit.data.masks`    free-form strokes, squares, object-like blobs (random holes)
- :mod:`~sketchedit.data.warp`     mask-free pairs: y, its local warp x, changed region, sketch
- :mod:`~sketchedit.data.dataset`  the torch Dataset and a reproducible DataLoader
"""

from sketchedit.data.crops import center_crop_resize, random_crop_resize
from sketchedit.data.dataset import SAMPLE_KEYS, SketchEditDataset, make_dataloader
from sketchedit.data.edges import extract_edges, hed_available
from sketchedit.data.masks import blob_mask, free_form_mask, random_hole, square_mask
from sketchedit.data.photos import (
    Photo,
    bundled_photos,
    default_photos,
    folder_photos,
    pack_photos,
    split_photos,
)
from sketchedit.data.warp import WarpConfig, WarpPair, synthesize_warp_pair

__all__ = [
    "Photo",
    "SAMPLE_KEYS",
    "SketchEditDataset",
    "WarpConfig",
    "WarpPair",
    "blob_mask",
    "bundled_photos",
    "default_photos",
    "center_crop_resize",
    "extract_edges",
    "folder_photos",
    "free_form_mask",
    "hed_available",
    "make_dataloader",
    "pack_photos",
    "random_crop_resize",
    "random_hole",
    "split_photos",
    "square_mask",
    "synthesize_warp_pair",
]
