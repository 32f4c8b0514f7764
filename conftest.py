"""Settings for every test run, the unit tests and the notebooks (nbval) alike."""

import os

# The tests, and the notebooks nbval runs (their kernels inherit this environment), see no
# photo pack, whether or not `make photos` was run on this machine: CI never has one, and a
# test must not change its data with the machine. Tests of the pack build their own.
if "SKETCHEDIT_TEST_USE_PACK" not in os.environ:
    os.environ["SKETCHEDIT_CACHE"] = os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "runs", "test-cache-without-pack"
    )
