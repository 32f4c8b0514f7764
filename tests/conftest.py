"""Shared test configuration: deterministic, single-threaded, small."""

import os

import numpy as np
import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - also pin the legacy global RNG some libraries use
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def editor():
    """A tiny untrained editor (width 4): fast, deterministic, for API and widget tests."""
    from sketchedit.editor import SketchEditor
    from sketchedit.nets import Generator, MaskEstimator

    torch.manual_seed(0)
    return SketchEditor(MaskEstimator(cnum=4), Generator(cnum=4))
