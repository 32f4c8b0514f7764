"""The networks: official layout, a literal functional reference of the official computation,
the gated conv by hand, the style vector's invariance, bad inputs."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sketchedit.nets import (
    Discriminator,
    GatedConv2d,
    GatedUpConv2d,
    Generator,
    MaskEstimator,
    StyleEncoder,
    composite,
    global_pool,
)
from sketchedit.nets.blocks import subpixel_upsampling, upconv_subpixel
from sketchedit.nets.official import official_layer_table

LAYOUT = json.loads(
    (Path(__file__).parent / "data" / "official-checkpoint-layout.json").read_text()
)
M_LAYOUT = LAYOUT["latest_net_M.pth"]
G_LAYOUT = LAYOUT["latest_net_G.pth"]


# --------------------------------------------------------------------------------------------
# Random state dicts in the official layout (read from the JSON, not from our code).
# --------------------------------------------------------------------------------------------
def scaled_layout(entry, cnum):
    """The official tensor shapes at width ``cnum`` (the JSON is at 48).

    Input widths 3/4/5 (image, image+sketch, image+sketch+mask) and output widths 1/3 (mask,
    RGB) do not depend on the width; every other channel count scales with cnum / 48.
    """
    out = {}
    for name, shape in entry["tensors"].items():
        shape = list(shape)
        if shape[0] not in (1, 3):
            shape[0] = shape[0] * cnum // 48
        if len(shape) == 4 and shape[1] not in (3, 4, 5):
            shape[1] = shape[1] * cnum // 48
        out[name] = shape
    return out


def random_official_state_dict(entry, cnum=48, seed=0):
    """Weights with std 1.5 / sqrt(fan_in) so signals neither vanish nor explode."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in scaled_layout(entry, cnum).items():
        t = torch.randn(shape, generator=g)
        if name.endswith(".weight"):
            t = t * (1.5 / (shape[1] * shape[2] * shape[3]) ** 0.5)
        else:
            t = t * 0.1
        sd[name] = t
    return sd


# --------------------------------------------------------------------------------------------
# A literal functional reference of the official forward passes, on official tensor names.
# --------------------------------------------------------------------------------------------
def ref_conv(sd, name, x, stride=1, dilation=1, act=F.elu):
    """gen_conv: conv with 'same' padding; split channels in halves: act(a) * sigmoid(b)."""
    w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
    k = w.shape[-1]
    y = F.conv2d(x, w, b, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation)
    if w.shape[0] in (1, 3) or act is None:
        return y
    a, g = torch.split(y, w.shape[0] // 2, dim=1)
    return act(a) * torch.sigmoid(g)


def ref_upconv(sd, name, x):
    return ref_conv(sd, name, F.interpolate(x, scale_factor=2))


def ref_trunk(sd, p, x, until=10):
    """conv1 .. conv10_atrous with prefix p ('', 'w', 'x'); returns every layer's output."""
    outs = {}
    x = outs[1] = ref_conv(sd, f"{p}conv1", x)
    x = outs[2] = ref_conv(sd, f"{p}conv2_downsample", x, stride=2)
    x = outs[3] = ref_conv(sd, f"{p}conv3", x)
    x = outs[4] = ref_conv(sd, f"{p}conv4_downsample", x, stride=2)
    x = outs[5] = ref_conv(sd, f"{p}conv5", x)
    x = outs[6] = ref_conv(sd, f"{p}conv6", x)
    for i, rate in zip((7, 8, 9, 10), (2, 4, 8, 16), strict=True):
        if i > until:
            break
        x = outs[i] = ref_conv(sd, f"{p}conv{i}_atrous", x, dilation=rate)
    return outs


def ref_decoder(sd, names, x):
    """names: the 7 official layer names (11, 12, 13_upsample, 14, 15_upsample, 16, 17)."""
    x = ref_conv(sd, names[0], x)
    x = ref_conv(sd, names[1], x)
    x = ref_upconv(sd, names[2], x)
    x = ref_conv(sd, names[3], x)
    x = ref_upconv(sd, names[4], x)
    x = ref_conv(sd, names[5], x)
    return ref_conv(sd, names[6], x, act=None)


def decoder_names(prefix):
    return [
        f"{prefix}11",
        f"{prefix}12",
        f"{prefix}13_upsample_conv",
        f"{prefix}14",
        f"{prefix}15_upsample_conv",
        f"{prefix}16",
        f"{prefix}17",
    ]


def ref_mask_estimator(sd, image, sketch):
    outs = ref_trunk(sd, "", torch.cat([image, sketch], 1))
    rgb = torch.tanh(ref_decoder(sd, decoder_names("conv"), outs[9]))  # RGB head: rate 8
    mask = torch.sigmoid(ref_decoder(sd, decoder_names("conv_mask_"), outs[10]))  # rate 16
    return mask, rgb


def ref_contextual_attention(f, hole):
    """The official per-sample computation: normalised key patches as conv kernels."""
    outs = []
    for b in range(f.shape[0]):
        x = f[b : b + 1]
        c = x.shape[1]
        normed = x / torch.sqrt((x**2).sum(3, keepdim=True).sum(2, keepdim=True) + 1e-8)
        keys = F.unfold(normed, 4, stride=2).transpose(1, 2).reshape(-1, c, 4, 4)
        scores = F.conv2d(x, keys, stride=2)  # (1, L, hq, wq)
        known_ratio = F.unfold(1 - hole[b : b + 1], 4, stride=2).mean(1)  # (1, L)
        valid = (known_ratio > 0.1).float().view(1, -1, 1, 1)
        weights = F.softmax(scores * valid * 10.0, dim=1)
        raw = F.unfold(x, 4, stride=2).transpose(1, 2).reshape(-1, c, 4, 4)
        outs.append(F.conv_transpose2d(weights, raw, stride=2))
    return torch.cat(outs, 0)


def ref_generator(sd, image, sketch, mask, style_mask, style_image):
    x = torch.cat([image * (1 - mask), sketch, mask], 1)
    x2 = torch.cat([style_image * style_mask, torch.zeros_like(sketch), style_mask], 1)
    x = ref_trunk(sd, "", x)[10]
    x2 = ref_trunk(sd, "w", x2)[10]
    hs, ws = x2.shape[2:]
    x2 = F.interpolate(F.max_pool2d(x2, kernel_size=(hs, ws)), (hs, ws), mode="nearest")
    coarse = torch.tanh(ref_decoder(sd, decoder_names("conv"), torch.cat([x, x2], 1)))
    xin = image * (1 - mask)
    xnow = coarse * mask + xin * (1 - mask)
    hallu = ref_trunk(sd, "x", xnow)[10]
    pm = ref_trunk(sd, "pm", xnow, until=6)[5]
    pm = ref_conv(sd, "pmconv6", pm, act=F.relu)
    pm = ref_contextual_attention(pm, F.avg_pool2d(mask, 4, stride=4))
    pm = ref_conv(sd, "pmconv10", ref_conv(sd, "pmconv9", pm))
    fine = torch.tanh(ref_decoder(sd, decoder_names("allconv"), torch.cat([hallu, pm], 1)))
    return coarse, fine


def healthy(cls, cnum=8, seed=0):
    """A network with weights of a trained-like scale. (The official init, xavier gain 0.02,
    shrinks the signal ~50x per layer, so an untrained network outputs ~0 everywhere.)"""
    entry = M_LAYOUT if cls is MaskEstimator else G_LAYOUT
    return cls.from_official(random_official_state_dict(entry, cnum, seed)).eval()


def random_inputs(batch, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    sketch = (torch.rand(batch, 1, size, size, generator=g) < 0.03).float()
    return image, sketch


def square_hole(batch, size, top, left, side):
    m = torch.zeros(batch, 1, size, size)
    m[:, :, top : top + side, left : left + side] = 1
    return m


# --------------------------------------------------------------------------------------------
# Layout: parameter counts, every tensor name and shape, every layer's hyper-parameters.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "entry"), [(MaskEstimator, M_LAYOUT), (Generator, G_LAYOUT)])
def test_official_layout_names_shapes_and_counts(cls, entry):
    net = cls(cnum=48)
    assert sum(p.numel() for p in net.parameters()) == entry["num_parameters"]
    official = {k: list(v.shape) for k, v in net.to_official().items()}
    assert official == entry["tensors"]


@pytest.mark.parametrize(("cls", "entry"), [(MaskEstimator, M_LAYOUT), (Generator, G_LAYOUT)])
def test_every_layer_has_the_official_stride_dilation_padding_and_gating(cls, entry):
    net = cls(cnum=48)
    modules = dict(net.named_modules())
    table = official_layer_table(cls)
    assert list(table) == [layer["name"] for layer in entry["layers_in_definition_order"]]
    for layer in entry["layers_in_definition_order"]:
        ours = modules[table[layer["name"]]]
        assert isinstance(ours, GatedConv2d), layer["name"]
        assert list(ours.weight.shape) == layer["weight"]
        assert ours.stride == (layer["stride"],) * 2, layer["name"]
        assert ours.dilation == (layer["dilation"],) * 2, layer["name"]
        assert ours.padding == (layer["padding"],) * 2, layer["name"]
        assert ours.gated == layer["gated"], layer["name"]
        expected_act = (layer["activation"] or "none").lower() if layer["gated"] else "none"
        assert (ours.activation if ours.gated else "none") == expected_act, layer["name"]
        assert isinstance(ours, GatedUpConv2d) == ("upsample" in layer["name"]), layer["name"]


# --------------------------------------------------------------------------------------------
# Same function as the official computation.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cnum", "size"), [(48, 32), (8, 64)])
def test_mask_estimator_computes_the_official_function(cnum, size):
    sd = random_official_state_dict(M_LAYOUT, cnum, seed=1)
    net = MaskEstimator.from_official(sd).eval()
    image, sketch = random_inputs(2, size, seed=2)
    with torch.no_grad():
        mask, rgb = net(image, sketch)
        ref_mask, ref_rgb = ref_mask_estimator(sd, image, sketch)
        predicted = net.predict_mask(image, sketch)
    assert ref_mask.std() > 1e-3 and ref_rgb.std() > 1e-3  # a non-trivial function
    assert (mask - ref_mask).abs().max() < 1e-5
    assert (rgb - ref_rgb).abs().max() < 1e-5
    assert torch.equal(predicted, mask)


@pytest.mark.parametrize(("cnum", "size", "soft"), [(48, 32, False), (8, 64, False), (8, 64, True)])
def test_generator_computes_the_official_function(cnum, size, soft):
    sd = random_official_state_dict(G_LAYOUT, cnum, seed=3)
    net = Generator.from_official(sd).eval()
    image, sketch = random_inputs(2, size, seed=4)
    mask = square_hole(2, size, size // 4, size // 3, size // 2)
    style_mask = mask * (torch.rand(2, 1, size, size) > 0.3).float()  # holes in the region
    style_image = image.flip(0)
    if soft:  # training mode 1 feeds the soft mask: the composite differs from image*(1-m)
        mask = mask * torch.rand(2, 1, size, size)
    with torch.no_grad():
        coarse, fine = net(image, sketch, mask, style_mask, style_image=style_image)
        ref_coarse, ref_fine = ref_generator(sd, image, sketch, mask, style_mask, style_image)
    assert ref_coarse.std() > 1e-3 and ref_fine.std() > 1e-3
    assert (coarse - ref_coarse).abs().max() < 1e-5
    assert (fine - ref_fine).abs().max() < 1e-5


def test_style_image_defaults_to_image():
    net = Generator(cnum=8).eval()
    image, sketch = random_inputs(1, 32)
    mask = square_hole(1, 32, 8, 8, 16)
    with torch.no_grad():
        a = net(image, sketch, mask, mask)
        b = net(image, sketch, mask, mask, style_image=image)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_generator_sees_the_hole_only_through_the_style_vector():
    """Changing the image inside the (binary) hole, with the style image fixed, changes nothing:
    the coarse input and the composite both zero the hole."""
    net = healthy(Generator)
    image, sketch = random_inputs(1, 32)
    mask = square_hole(1, 32, 8, 8, 16)
    other = torch.where(mask.bool(), -image, image)
    with torch.no_grad():
        a = net(image, sketch, mask, mask, style_image=image)
        b = net(other, sketch, mask, mask, style_image=image)
        c = net(other, sketch, mask, mask, style_image=other)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], c[0])  # ... but through the style vector it does


def test_soft_mask_composite_is_the_official_literal_one():
    coarse, image = torch.full((1, 3, 8, 8), 0.5), torch.full((1, 3, 8, 8), -1.0)
    m = torch.full((1, 1, 8, 8), 0.25)
    x = Generator.composite(coarse, image, m)
    # coarse*m + (image*(1-m))*(1-m) = 0.125 - 0.5625
    assert torch.allclose(x, torch.full_like(x, 0.5 * 0.25 - 1.0 * 0.75 * 0.75))


def test_mask_head_reads_rate16_and_rgb_head_rate8():
    net = healthy(MaskEstimator)
    image, sketch = random_inputs(1, 32)
    with torch.no_grad():
        mask0, rgb0 = net(image, sketch)
        net.trunk.dilated16.weight.mul_(-3.0)
        mask1, rgb1 = net(image, sketch)
    assert torch.equal(rgb0, rgb1)  # the rate-16 conv does not feed the RGB head
    assert not torch.allclose(mask0, mask1)


# --------------------------------------------------------------------------------------------
# Building blocks by hand.
# --------------------------------------------------------------------------------------------
def test_gated_conv_by_hand():
    layer = GatedConv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        layer.bias.copy_(torch.tensor([-1.0, 0.5]))
    x = torch.tensor([[[[1.0, -1.0]]]])  # (1, 1, 1, 2)
    y = layer(x)
    # feature half a = 2x - 1 = [1, -3]; gate half b = -x + 0.5 = [-0.5, 1.5]
    elu = torch.tensor([1.0, torch.exp(torch.tensor(-3.0)).item() - 1.0])
    gate = torch.sigmoid(torch.tensor([-0.5, 1.5]))
    assert y.shape == (1, 1, 1, 2)
    assert torch.allclose(y.flatten(), elu * gate, atol=1e-7)
    # ReLU variant: relu([1, -3]) = [1, 0]
    layer.activation = "relu"
    assert torch.allclose(layer(x).flatten(), torch.tensor([1.0, 0.0]) * gate, atol=1e-7)


@pytest.mark.parametrize(("cout", "activation"), [(3, "elu"), (1, "elu"), (4, None)])
def test_plain_conv_when_rgb_mask_or_no_activation(cout, activation):
    layer = GatedConv2d(2, cout, 3, activation=activation)
    x = torch.randn(1, 2, 8, 8)
    assert not layer.gated
    assert torch.equal(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1))


def test_up_conv_is_nearest_then_conv_and_padding_keeps_size():
    layer = GatedUpConv2d(2, 4)
    x = torch.randn(1, 2, 5, 6)
    y = layer(x)
    assert y.shape == (1, 2, 10, 12)
    z = F.conv2d(
        x.repeat_interleave(2, 2).repeat_interleave(2, 3), layer.weight, layer.bias, padding=1
    )
    a, b = z.chunk(2, 1)
    assert torch.allclose(y, F.elu(a) * torch.sigmoid(b))
    dilated = GatedConv2d(2, 4, 3, dilation=16)
    assert dilated(torch.randn(1, 2, 8, 8)).shape == (1, 2, 8, 8)


def test_init_is_xavier_normal_gain_002_zero_bias():
    net = MaskEstimator(cnum=48)
    w = net.trunk.conv3.weight  # (192, 96, 3, 3)
    fan_in, fan_out = w.shape[1] * 9, w.shape[0] * 9
    expected_std = 0.02 * (2.0 / (fan_in + fan_out)) ** 0.5
    assert abs(w.std().item() / expected_std - 1) < 0.05
    assert all(
        torch.count_nonzero(m.bias) == 0 for m in net.modules() if isinstance(m, GatedConv2d)
    )


# --------------------------------------------------------------------------------------------
# The style vector.
# --------------------------------------------------------------------------------------------
def test_style_vector_is_invariant_to_permuting_the_region_features():
    """Global max (and avg) pooling forgets where a feature fired: any permutation of the
    positions of the feature map gives the same style vector; flattening would not."""
    enc = healthy(Generator).style_encoder
    image, _ = random_inputs(2, 32)
    mask = square_hole(2, 32, 4, 4, 20)
    feats = enc.feature_map(image, mask)  # (2, 16, 8, 8)
    b, c, h, w = feats.shape
    perm = torch.randperm(h * w)
    shuffled = feats.flatten(2)[:, :, perm].view(b, c, h, w)
    assert not torch.equal(shuffled, feats)
    for pool in ("max", "avg"):
        assert torch.allclose(global_pool(shuffled, pool), global_pool(feats, pool), atol=1e-6)
    assert not torch.equal(shuffled.flatten(1), feats.flatten(1))  # a flattened "vector" changes
    assert torch.equal(enc(image, mask), global_pool(feats, "max"))
    assert torch.equal(enc(image, mask), feats.amax(dim=(2, 3)))


def test_style_vector_reads_only_the_style_region():
    net = healthy(Generator)
    image, _ = random_inputs(1, 32)
    style_mask = square_hole(1, 32, 8, 8, 12)
    changed_outside = torch.where(style_mask.bool(), image, torch.rand_like(image))
    v = net.style_vector(image, style_mask)
    assert v.shape == (1, 16)
    assert torch.equal(v, net.style_vector(changed_outside, style_mask))


# --------------------------------------------------------------------------------------------
# Discriminator.
# --------------------------------------------------------------------------------------------
def test_discriminator_shape_spectral_norm_and_composite():
    d = Discriminator(cnum=4)
    image, sketch = random_inputs(2, 64)
    scores = d(image, sketch, image)
    assert scores.shape == (2, 16, 1, 1)
    assert all(hasattr(conv, "weight_orig") for conv in d.convs)  # spectral norm
    assert [conv.weight_orig.shape[0] for conv in d.convs] == [4, 8, 16, 16, 16, 16]
    assert all(conv.stride == (2, 2) and conv.kernel_size == (5, 5) for conv in d.convs)
    fake, real = torch.ones(1, 3, 4, 4), -torch.ones(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    c = composite(fake, real, mask)
    assert torch.equal(c[..., :2, :], fake[..., :2, :]) and torch.equal(
        c[..., 2:, :], real[..., 2:, :]
    )
    with pytest.raises(ValueError, match="condition"):
        d(image, sketch)
    assert Discriminator(cnum=4, use_condition=False)(image, sketch).shape == (2, 16, 1, 1)


# --------------------------------------------------------------------------------------------
# Configs and bad inputs.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "net", [MaskEstimator(cnum=8), Generator(cnum=8, style_pool="avg"), Discriminator(cnum=4)]
)
def test_config_rebuilds_the_network(net):
    rebuilt = type(net)(**net.config())
    assert rebuilt.config() == net.config()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items()
    }


@pytest.mark.parametrize("cnum", [0, 6, 10, 4.0, True, "48"])
def test_bad_cnum(cnum):
    with pytest.raises(ValueError, match="cnum"):
        MaskEstimator(cnum=cnum)
    with pytest.raises(ValueError, match="cnum"):
        Generator(cnum=cnum)


def test_bad_inputs_give_clear_errors():
    m, g = MaskEstimator(cnum=4), Generator(cnum=4)
    image, sketch = random_inputs(1, 32)
    mask = square_hole(1, 32, 8, 8, 8)
    with pytest.raises(ValueError, match=r"image must have shape \(B, 3, H, W\)"):
        m(image[:, :2], sketch)
    with pytest.raises(ValueError, match="multiples of 8"):
        m(image[:, :, :30, :30], sketch[:, :, :30, :30])
    with pytest.raises(ValueError, match="does not match the image"):
        m(image, sketch[:, :, :24])
    with pytest.raises(ValueError, match="NaN"):
        m(image.clone().index_fill_(2, torch.tensor([3]), float("nan")), sketch)
    with pytest.raises(TypeError, match="floating-point"):
        m(image, sketch.to(torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        m(image.numpy(), sketch)
    with pytest.raises(ValueError, match=r"mask must lie in \[0, 1\]"):
        g(image, sketch, mask * 2, mask)
    with pytest.raises(ValueError, match="NaN"):
        g(image, sketch, mask, mask * float("nan"))
    with pytest.raises(ValueError, match="at least 16"):
        g(image[:, :, :8, :8], sketch[:, :, :8, :8], mask[:, :, :8, :8], mask[:, :, :8, :8])
    with pytest.raises(ValueError, match="style_image"):
        g(image, sketch, mask, mask, style_image=image[:, :, :16])
    with pytest.raises(ValueError, match="activation"):
        GatedConv2d(2, 4, 3, activation="gelu")
    with pytest.raises(ValueError, match="pool"):
        StyleEncoder(cnum=8, pool="median")


@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_up_conv_equals_nearest_upsampling_then_conv(channels_last):
    x = torch.randn(2, 6, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8, 6, 3, 3), torch.randn(8)
    reference = F.conv2d(F.interpolate(x, scale_factor=2), weight, bias, padding=1)
    fast = upconv_subpixel(x, weight, bias)
    assert fast.shape == reference.shape == (2, 8, 10, 14)
    assert (fast - reference).abs().max() < 1e-5
    layer = GatedUpConv2d(6, 8).eval()
    with torch.no_grad():
        plain = layer(x)
        with subpixel_upsampling():
            sub = layer(x)
    assert (sub - plain).abs().max() < 1e-5
    # with autograd on, the layer keeps the plain (differentiable, official) path
    with subpixel_upsampling():
        assert torch.equal(layer(x), plain)


def test_inplace_gating_matches_autograd_gating():
    layer = GatedConv2d(3, 8, 3)
    x = torch.randn(2, 3, 8, 8)
    with_grad = layer(x)
    assert with_grad.requires_grad
    with torch.no_grad():
        without = layer(x)
    assert torch.equal(with_grad.detach(), without)
    with_grad.sum().backward()  # the autograd path is differentiable
    assert layer.weight.grad is not None
