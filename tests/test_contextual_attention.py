"""Contextual attention against a literal, loop-by-loop reading of docs/method.md 2, steps 1-6."""

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sketchedit.nets.contextual_attention import (
    ContextualAttention,
    attention_weights,
    auto_chunk_size,
    contextual_attention,
    patch_grid_shape,
    patch_top_left,
    valid_patches,
)

# The module itself (the package `sketchedit.nets` exports the *function* of the same name).
ca_module = importlib.import_module("sketchedit.nets.contextual_attention")


def reference_attention(f, hole, ps=4, st=2, scale=10.0, threshold=0.1):
    """Slow float64 reference with explicit loops.

    Returns (output (B, C, h, w), weights (B, L, hq, wq)).
    """
    f = np.asarray(f, dtype=np.float64)
    hole = np.asarray(hole, dtype=np.float64)
    b_size, c_size, h, w = f.shape
    hq, wq = (h - ps) // st + 1, (w - ps) // st + 1
    corners = [(i * st, j * st) for i in range(hq) for j in range(wq)]  # row-major grid
    out = np.zeros_like(f)
    weights = np.zeros((b_size, len(corners), hq, wq))
    for b in range(b_size):
        hb = hole[b if hole.shape[0] > 1 else 0, 0]
        # Step 1: one norm per channel over the whole map.
        key_map = np.empty_like(f[b])
        for c in range(c_size):
            key_map[c] = f[b, c] / np.sqrt(np.sum(f[b, c] ** 2) + 1e-8)
        # Step 4: validity of each key patch.
        valid = [np.mean(1.0 - hb[r : r + ps, s : s + ps]) > threshold for r, s in corners]
        for q, (qr, qs) in enumerate(corners):
            # Step 3: correlation of the raw query window with each normalised key patch.
            scores = np.zeros(len(corners))
            for l, (kr, ks) in enumerate(corners):
                total = 0.0
                for c in range(c_size):
                    for u in range(ps):
                        for v in range(ps):
                            total += f[b, c, qr + u, qs + v] * key_map[c, kr + u, ks + v]
                scores[l] = total * (1.0 if valid[l] else 0.0)  # multiplied by 0, not -inf
            # Step 5: softmax over the key patches of 10 * score.
            e = np.exp(scale * scores - np.max(scale * scores))
            wq_vec = e / e.sum()
            weights[b, :, q // wq, q % wq] = wq_vec
            # Step 6: transposed conv = add weighted raw patches into the query's window.
            for l, (kr, ks) in enumerate(corners):
                out[b, :, qr : qr + ps, qs : qs + ps] += (
                    wq_vec[l] * f[b, :, kr : kr + ps, ks : ks + ps]
                )
    return out, weights


def conv_attention(f, hole, ps=4, st=2, scale=10.0, threshold=0.1):
    """Second reference in the official formulation: per-sample conv2d / conv_transpose2d."""
    outs = []
    for b in range(f.shape[0]):
        x = f[b : b + 1]
        norm = torch.sqrt(x.square().sum(dim=(2, 3), keepdim=True) + 1e-8)
        kernels = F.unfold(x / norm, ps, stride=st)  # (1, C*ps*ps, L)
        kernels = kernels[0].T.reshape(-1, x.shape[1], ps, ps)  # (L, C, ps, ps)
        raw = F.unfold(x, ps, stride=st)[0].T.reshape(-1, x.shape[1], ps, ps)
        scores = F.conv2d(x, kernels, stride=st)  # (1, L, hq, wq)
        known = F.avg_pool2d(1 - hole[b : b + 1], ps, st)  # (1, 1, hq, wq)
        mm = (known > threshold).to(x.dtype).view(1, -1, 1, 1)
        weights = torch.softmax(scores * mm * scale, dim=1)
        outs.append(F.conv_transpose2d(weights, raw, stride=st))
    return torch.cat(outs)


def random_case(b, c, h, w, kind, rng):
    f = rng.standard_normal((b, c, h, w))
    hole = np.zeros((b, 1, h, w))
    for i in range(b):
        if kind == "rect":
            # Tall enough to swallow whole 4x4 patches (invalid ones), narrow enough to leave
            # known columns (valid ones).
            height = rng.integers(h // 2 + 2, h + 1)
            width = rng.integers(min(w // 2 + 2, w - 2), w - 1)
            r0, c0 = rng.integers(0, h - height + 1), rng.integers(0, w - width + 1)
            hole[i, 0, r0 : r0 + height, c0 : c0 + width] = 1
        elif kind == "pixels":
            hole[i, 0] = rng.random((h, w)) < 0.5
        elif kind == "soft":  # what avg_pool2d(mask, 4, 4) of a hard mask looks like
            hole[i, 0] = rng.integers(0, 17, size=(h, w)) / 16
    return f, hole


@pytest.mark.parametrize(
    "shape, kind",
    [
        ((2, 3, 8, 12), "rect"),
        ((2, 3, 8, 12), "pixels"),
        ((1, 2, 10, 6), "soft"),
        ((3, 2, 6, 8), "none"),
    ],
)
def test_matches_literal_reference(shape, kind, rng):
    f, hole = random_case(*shape, kind, rng)
    expected_out, expected_w = reference_attention(f, hole)
    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-5)]:
        ft, ht = torch.tensor(f, dtype=dtype), torch.tensor(hole, dtype=dtype)
        out = contextual_attention(ft, ht).double().numpy()
        weights = attention_weights(ft, ht).double().numpy()
        assert out.shape == f.shape and weights.shape == expected_w.shape
        rel = np.abs(out - expected_out).max() / np.abs(expected_out).max()
        assert rel < tol, (dtype, rel)
        assert np.abs(weights - expected_w).max() < tol, dtype


def test_literal_reference_has_mixed_validity(rng):
    """Guard for the test above: its holes must leave some patches invalid and some valid."""
    _, hole = random_case(2, 3, 8, 12, "rect", rng)
    valid = valid_patches(torch.tensor(hole))
    assert ((0 < valid.sum(dim=1)) & (valid.sum(dim=1) < valid.shape[1])).all()


def test_fold_equals_transposed_convolution(rng):
    """Our unfold/matmul/fold route equals the official conv2d + conv_transpose2d route."""
    f, hole = random_case(3, 4, 12, 16, "rect", rng)
    ft, ht = torch.tensor(f), torch.tensor(hole)
    torch.testing.assert_close(
        contextual_attention(ft, ht), conv_attention(ft, ht), rtol=1e-10, atol=1e-10
    )


def test_validity_threshold_is_strict():
    """Valid = mean of known pixels > threshold: 1/16 known fails 0.1, 2/16 passes; a mean exactly
    at the threshold (2/16 against 0.125) is invalid."""
    hole = torch.ones(1, 1, 4, 12)
    hole[0, 0, 0, 4] = 0  # patch at cols 4-7 (index 2): 1/16 known
    hole[0, 0, 0, 8:10] = 0  # patch at cols 8-11 (index 4): 2/16 known
    # Patches at cols 2-5 and 6-9 (indices 1, 3) see 1/16 and 2/16 too.
    torch.testing.assert_close(valid_patches(hole), torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]]))
    torch.testing.assert_close(
        valid_patches(hole, valid_threshold=0.125), torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0]])
    )
    hole[0, 0, 1, 10] = 0  # only index 4 (cols 8-11) covers col 10: now 3/16 known
    torch.testing.assert_close(
        valid_patches(hole, valid_threshold=0.125), torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    )


def test_boundary_validity_in_full_layer(rng):
    """Patches at 1/16 and 2/16 known pixels, through the whole layer vs the reference."""
    f = rng.standard_normal((1, 3, 8, 8))
    hole = np.ones((1, 1, 8, 8))
    hole[0, 0, 0, 0] = 0  # patch (0,0): 1/16 known -> invalid
    hole[0, 0, 7, 6:8] = 0  # patch (4,4) at rows/cols 4-7: 2/16 known -> valid
    valid = valid_patches(torch.tensor(hole)).numpy()[0]
    assert valid[0] == 0 and valid[-1] == 1 and valid.sum() == 1
    expected, _ = reference_attention(f, hole)
    out = contextual_attention(torch.tensor(f), torch.tensor(hole)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


def test_invalid_patches_keep_weight_exp0_over_z(rng):
    """Invalid scores are zeroed, not removed: each gets exactly 1/Z of the softmax."""
    f, hole = random_case(2, 3, 8, 12, "rect", rng)
    ft, ht = torch.tensor(f), torch.tensor(hole)
    weights = attention_weights(ft, ht).flatten(2)  # (B, L, Q)
    valid = valid_patches(ht).bool()  # (B, L)
    raw = F.unfold(ft, 4, stride=2)
    keys = F.unfold(ft / torch.sqrt(ft.square().sum((2, 3), keepdim=True) + 1e-8), 4, stride=2)
    scores = keys.transpose(1, 2) @ raw * valid.unsqueeze(2)  # (B, L, Q)
    z = torch.exp(10 * scores).sum(dim=1)  # (B, Q)
    for b in range(2):
        invalid_w = weights[b][~valid[b]]  # (n_invalid, Q)
        assert invalid_w.shape[0] > 0
        torch.testing.assert_close(invalid_w, (1 / z[b]).expand_as(invalid_w))
        assert (invalid_w > 0).all()
    # Whole map in the hole: every score is 0, so the weights are uniform and the output is the
    # mean raw patch placed in every window (summed over overlaps).
    full = torch.ones_like(ht)
    uniform = attention_weights(ft, full)
    torch.testing.assert_close(uniform, torch.full_like(uniform, 1 / uniform.shape[1]))
    cols = F.unfold(ft, 4, stride=2).mean(dim=2, keepdim=True).expand(-1, -1, uniform.shape[1])
    torch.testing.assert_close(contextual_attention(ft, full), F.fold(cols, (8, 12), 4, stride=2))


def test_weights_sum_to_one_and_grid_helpers(rng):
    f, hole = random_case(2, 4, 10, 14, "pixels", rng)
    weights = attention_weights(
        torch.tensor(f, dtype=torch.float32), torch.tensor(hole, dtype=torch.float32)
    )
    hq, wq = patch_grid_shape(10, 14)
    assert (hq, wq) == (4, 6) and weights.shape == (2, hq * wq, hq, wq)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, hq, wq))
    assert patch_grid_shape(64, 64) == (31, 31)  # 961 patches at a 256 px image [code]
    assert patch_grid_shape(128, 128) == (63, 63)  # 3969 at 512 px
    assert patch_top_left(0, 10, 14) == (0, 0)
    assert patch_top_left(wq + 2, 10, 14) == (2, 4)
    assert patch_top_left(hq * wq - 1, 10, 14) == (10 - 4, 14 - 4)
    with pytest.raises(ValueError, match="outside"):
        patch_top_left(hq * wq, 10, 14)


@pytest.mark.parametrize("chunk", [1, 5, 7, 24, 1000])
def test_chunked_equals_unchunked(chunk, rng):
    f, hole = random_case(2, 3, 10, 12, "rect", rng)  # 4 x 5 = 20 query positions
    ft, ht = torch.tensor(f, dtype=torch.float32), torch.tensor(hole, dtype=torch.float32)
    whole = contextual_attention(ft, ht, chunk_size=20)
    torch.testing.assert_close(contextual_attention(ft, ht, chunk_size=chunk), whole)
    torch.testing.assert_close(
        attention_weights(ft, ht, chunk_size=chunk), attention_weights(ft, ht, chunk_size=20)
    )


def test_auto_chunking_bounds_score_memory(monkeypatch, rng):
    """With a tiny budget, auto mode splits the queries into many chunks; result unchanged."""
    f, hole = random_case(2, 4, 32, 32, "rect", rng)  # L = Q = 15 * 15 = 225
    ft, ht = torch.tensor(f, dtype=torch.float32), torch.tensor(hole, dtype=torch.float32)
    whole = contextual_attention(ft, ht, chunk_size=225)
    assert auto_chunk_size(2, 225, 225) == 225  # default budget: one chunk
    # At 1024 px (L = Q = 16129) the default budget splits a single image into 4-5 chunks.
    assert 3000 < auto_chunk_size(1, 16129, 16129) < 16129 / 3
    monkeypatch.setattr(ca_module, "SCORE_CHUNK_BYTES", 2 * 225 * 4 * 10)  # 10 queries
    assert auto_chunk_size(2, 225, 225) == 10
    calls = []
    real_chunk = ca_module._weights_chunk

    def spy(raw, keys, valid, start, stop, scale):
        calls.append(stop - start)
        return real_chunk(raw, keys, valid, start, stop, scale)

    monkeypatch.setattr(ca_module, "_weights_chunk", spy)
    torch.testing.assert_close(contextual_attention(ft, ht), whole)
    assert len(calls) == 23 and max(calls) == 10 and sum(calls) == 225
    monkeypatch.setattr(ca_module, "SCORE_CHUNK_BYTES", 1)  # never below one query per chunk
    assert auto_chunk_size(2, 225, 225) == 1


def test_shared_hole_broadcasts_over_batch(rng):
    f, hole = random_case(3, 2, 8, 8, "rect", rng)
    ft, ht = torch.tensor(f), torch.tensor(hole[:1])
    torch.testing.assert_close(
        contextual_attention(ft, ht), contextual_attention(ft, ht.expand(3, -1, -1, -1))
    )


def test_module_wraps_function_and_has_no_parameters(rng):
    layer = ContextualAttention()
    assert list(layer.parameters()) == [] and list(layer.buffers()) == []
    assert (layer.patch_size, layer.stride, layer.softmax_scale, layer.valid_threshold) == (
        4,
        2,
        10.0,
        0.1,
    )
    assert ContextualAttention(**layer.config()).config() == layer.config()
    f, hole = random_case(2, 3, 8, 12, "rect", rng)
    ft, ht = torch.tensor(f, dtype=torch.float32), torch.tensor(hole, dtype=torch.float32)
    torch.testing.assert_close(layer(ft, ht), contextual_attention(ft, ht))
    torch.testing.assert_close(layer.weights(ft, ht), attention_weights(ft, ht))
    # Changing an attribute changes the computation (the attributes are not decorative).
    layer.softmax_scale = 1.0
    assert not torch.allclose(layer(ft, ht), contextual_attention(ft, ht))


def test_gradients_flow_to_features(rng):
    f, hole = random_case(1, 2, 6, 6, "rect", rng)
    ft = torch.tensor(f, requires_grad=True)
    ht = torch.tensor(hole)
    assert torch.autograd.gradcheck(lambda x: contextual_attention(x, ht, chunk_size=2), (ft,))


def test_bf16_autocast_close_to_fp32(rng):
    f, hole = random_case(2, 8, 16, 16, "rect", rng)
    ft, ht = torch.tensor(f, dtype=torch.float32), torch.tensor(hole, dtype=torch.float32)
    expected = contextual_attention(ft, ht)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = contextual_attention(ft, ht)
    assert out.shape == expected.shape and torch.isfinite(out).all()
    rel = (out.float() - expected).norm() / expected.norm()
    assert rel < 0.05, rel


@pytest.mark.parametrize(
    "features, hole, message",
    [
        (torch.zeros(3, 8, 8), torch.zeros(1, 1, 8, 8), "features must be"),
        (torch.zeros(2, 3, 8, 8), torch.zeros(2, 2, 8, 8), "hole must be"),
        (torch.zeros(2, 3, 8, 8), torch.zeros(3, 1, 8, 8), "hole must be"),
        (torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 16, 16), "avg_pool2d"),
        (torch.zeros(1, 3, 9, 8), torch.zeros(1, 1, 9, 8), "even"),
        (torch.zeros(1, 3, 8, 7), torch.zeros(1, 1, 8, 7), "even"),
        (torch.zeros(1, 3, 2, 8), torch.zeros(1, 1, 2, 8), "smaller than"),
        (torch.zeros(0, 3, 8, 8), torch.zeros(0, 1, 8, 8), "empty"),
        (torch.full((1, 3, 8, 8), float("nan")), torch.zeros(1, 1, 8, 8), "NaN"),
        (torch.zeros(1, 3, 8, 8), torch.full((1, 1, 8, 8), 2.0), r"\[0, 1\]"),
    ],
)
def test_bad_inputs_raise_value_error(features, hole, message):
    with pytest.raises(ValueError, match=message):
        contextual_attention(features, hole)


def test_bad_types_and_chunk_sizes_raise():
    f, hole = torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)
    with pytest.raises(TypeError, match="floating point"):
        contextual_attention(f.long(), hole)
    with pytest.raises(TypeError, match="torch.Tensor"):
        contextual_attention(f.numpy(), hole)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            contextual_attention(f, hole, chunk_size=bad)
