"""``python -m sketchedit``: the command line of :mod:`sketchedit.cli`."""

from sketchedit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
