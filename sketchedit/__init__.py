"""sketchedit: a readable re-implementation of SketchEdit (Zeng, Lin, Patel, CVPR 2022).

Mask-free local image manipulation with partial sketches: a user draws a few strokes on a
photo; the *mask estimator* finds the region to change, the *style encoder* summarises the
old content of that region into a structure-agnostic *style vector*, and a two-stage
*generator* paints new content that follows the strokes, blended back with the soft mask.

Modules, one idea each (see README.md for the map to the paper):

- :mod:`sketchedit.images`   the one reader of photos, sketches and masks (tensors ``[-1, 1]``)
- :mod:`sketchedit.data`     photo sources, crops, edges, random masks, warp pairs, visible
  edits, Dataset
- :mod:`sketchedit.nets`     mask estimator, generator, style encoder, contextual attention,
  discriminator; :mod:`sketchedit.nets.official` maps the official tensor names to ours
- :mod:`sketchedit.checkpoints` the one module that knows a file format: our inference and
  training checkpoints, read safely; official ``.pth`` files
- :mod:`sketchedit.losses`   hinge GAN, L1, mask-estimator and VGG-19 perceptual losses
- :mod:`sketchedit.inference` run both networks on an image of any size
- :mod:`sketchedit.roi`      where on a large photo the networks run, and at what scale
- :mod:`sketchedit.editor`   ``SketchEditor.edit``, mask revision, ``EditSession`` (undo/redo)
- :mod:`sketchedit.widget`   the ipycanvas sketching widget (imported only when used)
- :mod:`sketchedit.app`      the widget as a standalone web app (Voila)
- :mod:`sketchedit.presets`, :mod:`sketchedit.train` training presets and the trainer, in parts:
  :mod:`sketchedit.objective` (one step), :mod:`sketchedit.stream` (the data stream),
  :mod:`sketchedit.train_checkpoints` (writing training checkpoints),
  :mod:`sketchedit.run_folder` (log, samples, lock)
- :mod:`sketchedit.evaluate`, :mod:`sketchedit.real_strokes` held-out metrics and baselines;
  a check without ground truth on real photos
- :mod:`sketchedit.cli`      ``sketchedit edit | train | evaluate``
- :mod:`sketchedit.fileio`, :mod:`sketchedit.plotting` atomic writes; figures for notebooks

Importing this package does not import Jupyter, ipywidgets or ipycanvas.
"""

from importlib import import_module

__version__ = "0.1.0"

# Public names resolved lazily, so `import sketchedit` stays light and never pulls in the
# notebook stack (the widget module imports ipycanvas only when it is used).
_LAZY = {
    "MaskEstimator": "sketchedit.nets",
    "Generator": "sketchedit.nets",
    "Discriminator": "sketchedit.nets",
    "run_sketchedit": "sketchedit.inference",
    "SketchEditor": "sketchedit.editor",
    "EditResult": "sketchedit.editor",
    "EditSession": "sketchedit.editor",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sketchedit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
