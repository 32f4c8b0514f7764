"""run_sketchedit: any size, the soft blend, a user mask, the fast paths."""

import pytest
import torch

from sketchedit.inference import (
    predict_soft_mask,
    resize_sketch,
    run_sketchedit,
    working_size,
)
from sketchedit.nets import Generator, MaskEstimator
from sketchedit.nets.blocks import cpu_low_precision_is_fast


def _healthy(net, seed):
    """Re-initialise with trained-like weight scales (the official init outputs ~0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("weight"):
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn(p.shape, generator=g) * 1.5 / fan_in**0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def nets():
    return _healthy(MaskEstimator(cnum=4), 0), _healthy(Generator(cnum=4), 1)


def _inputs(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=g) * 2 - 1
    sketch = (torch.rand(b, 1, h, w, generator=g) < 0.05).float()
    return image, sketch


@pytest.mark.parametrize("size_mode", ["pad", "resize"])
def test_any_size_comes_back_at_its_size_and_keeps_unmasked_pixels(nets, size_mode):
    m, g = nets
    image, sketch = _inputs(2, 37, 50)
    out = run_sketchedit(m, g, image, sketch, size_mode=size_mode)
    for name in ("output", "coarse", "fine"):
        assert getattr(out, name).shape == (2, 3, 37, 50), name
    assert out.soft_mask.shape == out.hard_mask.shape == (2, 1, 37, 50)
    assert ((out.soft_mask >= 0) & (out.soft_mask <= 1)).all()
    assert set(out.hard_mask.unique().tolist()) <= {0.0, 1.0}
    # output - image = (fine - image) * m with |fine - image| <= 2: unchanged where m ~ 0.
    assert ((out.output - image).abs() <= 2 * out.soft_mask + 1e-6).all()
    assert torch.allclose(out.output, out.fine * out.soft_mask + image * (1 - out.soft_mask))
    assert out.soft_mask.std() > 0  # the mask estimator's output, not a constant


def test_pad_mode_equals_the_networks_on_a_multiple_of_8(nets):
    m, g = nets
    image, sketch = _inputs(1, 32, 40)
    out = run_sketchedit(m, g, image, sketch)
    with torch.no_grad():
        soft = m(image, sketch)[0]
        hard = (soft > 0.5).float()
        coarse, fine = g(image, sketch, hard, hard)
    assert torch.equal(out.soft_mask, soft)
    assert torch.equal(out.hard_mask, hard)
    assert torch.allclose(out.fine, fine, atol=1e-6)
    assert torch.allclose(out.output, fine * soft + image * (1 - soft), atol=1e-6)


def test_user_mask_replaces_the_prediction(nets):
    _, g = nets
    image, sketch = _inputs(1, 29, 35)
    mask = torch.zeros(1, 1, 29, 35)
    mask[:, :, 5:20, 8:30] = 0.8
    mask[:, :, 10:12, 10:12] = 0.3  # soft values below the threshold
    out = run_sketchedit(None, g, image, sketch, mask=mask)  # the estimator is not needed
    assert torch.equal(out.soft_mask, mask)
    assert torch.equal(out.hard_mask, (mask > 0.5).float())
    outside = (mask == 0).expand_as(image)
    assert torch.equal(out.output[outside], image[outside])  # exactly unchanged
    assert not torch.allclose(out.output, image)


def test_tiny_images_use_replicate_padding(nets):
    m, g = nets
    image, sketch = _inputs(1, 5, 7)
    assert working_size(5, 7) == (16, 16)
    out = run_sketchedit(m, g, image, sketch)
    assert out.output.shape == (1, 3, 5, 7)
    assert torch.isfinite(out.output).all()


def test_working_sizes():
    assert working_size(37, 50, "pad") == (40, 56)
    assert working_size(37, 50, "resize") == (40, 48)
    assert working_size(256, 256, "resize") == (256, 256)
    with pytest.raises(ValueError, match="size_mode"):
        working_size(8, 8, "crop")


def test_resizing_keeps_one_pixel_strokes():
    sketch = torch.zeros(1, 1, 37, 50)
    sketch[0, 0, 20, 3:45] = 1  # a horizontal 1-px line
    sketch[0, 0, 2:35, 31] = 1  # a vertical one
    small = resize_sketch(sketch, (32, 40))
    assert set(small.unique().tolist()) == {0.0, 1.0}
    assert (small.sum(dim=2) > 0).sum() >= 34  # the horizontal line is still continuous
    assert (small.sum(dim=3) > 0).sum() >= 28  # and the vertical one
    bilinear = torch.nn.functional.interpolate(
        sketch, size=(32, 40), mode="bilinear", antialias=True
    )
    assert bilinear.max() < 1  # what we avoid: bilinear turns strokes grey


def test_fast_paths_are_the_same_and_bf16_is_close(nets):
    m, g = nets
    image, sketch = _inputs(1, 32, 32)
    exact = run_sketchedit(m, g, image, sketch)
    for kwargs in (
        {"channels_last": True},
        {"subpixel": True},
        {"channels_last": True, "subpixel": True},
    ):
        fast = run_sketchedit(m, g, image, sketch, **kwargs)
        assert torch.allclose(fast.output, exact.output, atol=1e-5), kwargs
        assert fast.output.is_contiguous()
    if cpu_low_precision_is_fast(torch.bfloat16):
        bf16 = run_sketchedit(m, g, image, sketch, bf16=True)
    else:
        with pytest.warns(RuntimeWarning, match="bfloat16"):
            bf16 = run_sketchedit(m, g, image, sketch, bf16=True)
    assert bf16.output.dtype == torch.float32
    assert (bf16.output - exact.output).abs().mean() < 0.05


def test_bad_inputs(nets):
    m, g = nets
    image, sketch = _inputs(1, 32, 32)
    with pytest.raises(ValueError, match=r"image must lie in \[-1, 1\]"):
        run_sketchedit(m, g, image * 127.5 + 127.5, sketch)
    with pytest.raises(ValueError, match="sketch has shape"):
        run_sketchedit(m, g, image, sketch[:, :, :16])
    with pytest.raises(ValueError, match="NaN"):
        run_sketchedit(m, g, image * float("nan"), sketch)
    with pytest.raises(ValueError, match="mask_estimator"):
        run_sketchedit(None, g, image, sketch)
    with pytest.raises(ValueError, match="size_mode"):
        run_sketchedit(m, g, image, sketch, size_mode="crop")
    with pytest.raises(TypeError, match="floating-point"):
        run_sketchedit(m, g, image, sketch.bool())


@pytest.mark.parametrize("size_mode", ["pad", "resize"])
def test_mask_preview_is_the_mask_the_edit_predicts(nets, size_mode):
    m, g = nets
    image, sketch = _inputs(2, 29, 43)
    preview = predict_soft_mask(m, image, sketch, size_mode=size_mode)
    full = run_sketchedit(m, g, image, sketch, size_mode=size_mode)
    assert preview.shape == (2, 1, 29, 43)
    torch.testing.assert_close(preview, full.soft_mask, rtol=0, atol=1e-6)


@pytest.mark.parametrize("network", ["mask_estimator", "generator"])
def test_non_finite_weights_are_named_with_their_checkpoint(network):
    # Today: NaN mask-estimator weights gave NaN masks and a black picture behind a numpy cast
    # warning; NaN generator weights said "features contain NaN or inf" with no culprit.
    nets = {"mask_estimator": MaskEstimator(cnum=4), "generator": Generator(cnum=4)}
    with torch.no_grad():
        next(nets[network].parameters()).fill_(float("nan"))
    nets[network].source = "runs/diverged.safetensors"
    image, sketch = _inputs(1, 24, 32)
    name = network.replace("_", " ")
    with pytest.raises(RuntimeError, match=rf"the {name} produced .*runs/diverged\.safetensors"):
        run_sketchedit(nets["mask_estimator"], nets["generator"], image, sketch)
    if network == "mask_estimator":
        with pytest.raises(RuntimeError, match=rf"the {name} produced"):
            predict_soft_mask(nets["mask_estimator"], image, sketch)
