"""Notebook 07's helpers: the traced shapes, the diagram, and the inference-time ablations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sketchedit import paper_figures as PF
from sketchedit.inference import run_sketchedit
from sketchedit.nets import Generator, MaskEstimator


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return MaskEstimator(cnum=8).eval(), Generator(cnum=8).eval()


@pytest.fixture(scope="module")
def starter():
    """The shipped starter's networks (untrained ones give ~1e-38 outputs: nothing to compare)."""
    from sketchedit.editor import SketchEditor

    editor = SketchEditor.from_pretrained()
    return editor.mask_estimator, editor.generator


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    sketch = torch.zeros(2, 1, 32, 32)
    sketch[:, :, 10, 6:26] = 1
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 4:20, 4:28] = 1
    return image, sketch, mask


def test_trace_shapes_at_256_px(nets):
    m, g = nets
    shapes = PF.trace_shapes(m, g, size=256)
    c = 8
    assert shapes["input"] == (1, 3, 256, 256)
    assert shapes["M.mask_head"] == (1, 1, 256, 256)
    assert shapes["G.coarse_encoder"] == (1, 2 * c, 64, 64)
    assert shapes["style vector"] == (1, 2 * c)
    assert shapes["G.refine_attention.attention"] == (1, 2 * c, 64, 64)  # gated: half
    assert shapes["coarse"] == shapes["fine"] == (1, 3, 256, 256)
    assert set(dict(PF.OVERVIEW_STAGES)) <= set(shapes)
    assert not g._forward_hooks and not g.refine_attention.attention._forward_hooks  # removed
    fig = PF.draw_model_overview(shapes)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "16x64x64" in texts and "16" in texts  # coarse features and the style vector
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_run_stages_default_is_the_editing_path(nets, batch):
    m, g = nets
    image, sketch, mask = batch
    ours = PF.run_stages(m, g, image, sketch)
    ref = run_sketchedit(m, g, image, sketch)
    torch.testing.assert_close(ours["output"], ref.output, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours["coarse"], ref.coarse, atol=1e-5, rtol=0)
    with_mask = PF.run_stages(m, g, image, sketch, mask=mask)
    ref = run_sketchedit(None, g, image, sketch, mask=mask)
    torch.testing.assert_close(with_mask["fine"], ref.fine, atol=1e-5, rtol=0)


def test_run_stages_ablations_change_only_their_stage(starter, batch):
    m, g = starter
    image, sketch, mask = batch
    base = PF.run_stages(m, g, image, sketch, mask=mask)
    zero = PF.run_stages(m, g, image, sketch, mask=mask, style="zero")
    assert torch.count_nonzero(zero["style"]) == 0
    assert not torch.allclose(zero["coarse"], base["coarse"])
    other = torch.flip(image, dims=(3,))
    borrowed = PF.run_stages(m, g, image, sketch, mask=mask, style=other)
    torch.testing.assert_close(borrowed["style"], g.style_vector(other, mask))
    no_attention = PF.run_stages(m, g, image, sketch, mask=mask, attention=False)
    torch.testing.assert_close(no_attention["coarse"], base["coarse"])  # coarse untouched
    assert not torch.allclose(no_attention["fine"], base["fine"])
    # outside the mask every variant returns the input exactly
    outside = (mask == 0).expand_as(image)
    for run in (zero, borrowed, no_attention):
        assert torch.equal(run["output"][outside], image[outside])
    with pytest.raises(ValueError, match="style must be"):
        PF.run_stages(m, g, image, sketch, mask=mask, style="other")


def test_official_pairs_reads_the_release_layout(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "edges").mkdir()
    edges = np.zeros((40, 40), np.uint8)
    edges[20, 5:35] = 255
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 40), (10, 20, 30)).save(tmp_path / "images" / name)
        Image.fromarray(edges).save(tmp_path / "edges" / name)
    (tmp_path / "list.txt").write_text("a.png\nb.png\n")
    pairs = PF.official_pairs(tmp_path, k=1, size=40)
    assert len(pairs) == 1
    photo, sketch = pairs[0]
    assert photo.size == (40, 40) and np.array_equal(sketch, edges / 255)
    with pytest.raises(FileNotFoundError, match="list.txt"):
        PF.official_pairs(tmp_path / "images", k=1, size=40)


def test_load_editor_reads_an_official_folder_and_the_two_files(tmp_path, nets):
    """The notebooks' `official_checkpoints`: a folder with latest_net_M/G.pth, or the pair."""
    m, g = nets
    torch.save(m.to_official(), tmp_path / "latest_net_M.pth")
    torch.save(g.to_official(), tmp_path / "latest_net_G.pth")
    for spec in (tmp_path, (tmp_path / "latest_net_M.pth", tmp_path / "latest_net_G.pth")):
        editor, label = PF.load_editor(spec)
        assert label == "official" and editor.working_size == 256
        for ours, theirs in ((editor.generator, g), (editor.mask_estimator, m)):
            theirs_state = theirs.state_dict()
            for name, a in ours.state_dict().items():
                assert torch.equal(a, theirs_state[name]), name
    starter, label = PF.load_editor(None)
    assert "starter" in label and starter.working_size == 64
