"""Old name of :mod:`sketchedit.checkpoints` (official tables: :mod:`sketchedit.nets.official`)."""

# kept until train.py moves to sketchedit.checkpoints (evaluate.py imports it too)
from sketchedit.checkpoints import *  # noqa: F403
from sketchedit.checkpoints import __all__  # noqa: F401
