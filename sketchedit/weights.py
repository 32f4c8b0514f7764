"""Old name of :mod:`sketchedit.checkpoints` (official tables: :mod:`sketchedit.nets.official`)."""

# kept until train.py moves to sketchedit.checkpoints (train_checkpoints.py, evaluate.py use it)
from sketchedit.checkpoints import *  # noqa: F403
from sketchedit.checkpoints import __all__  # noqa: F401
