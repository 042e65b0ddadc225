"""engine.attributes: KL / JS on constructed distributions, the PnP on synthetic landmarks, the estimators
on renders whose sampled pose and expression are known (error bounds stated below), and the command."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine import attributes as A


# ----------------------------------------------------------------------------------------------
# divergences (no dlib)
# ----------------------------------------------------------------------------------------------


def test_kl_and_js_on_constructed_histograms():
    edges = np.array([0.0, 1.0, 2.0])  # two bins
    # real: 3 in bin 0, 1 in bin 1; synthetic: 1 and 3 (pseudo-count 0: exact)
    d = A.divergences([0.5, 0.5, 0.5, 1.5], [0.5, 1.5, 1.5, 1.5], pseudo=0.0, edges=edges)
    p, q = np.array([0.75, 0.25]), np.array([0.25, 0.75])
    assert d["kl_real_syn"] == pytest.approx(np.sum(p * np.log(p / q)))  # = 0.5 ln 3
    assert d["kl_real_syn"] == pytest.approx(0.5 * np.log(3))
    assert d["kl_syn_real"] == pytest.approx(d["kl_real_syn"])  # symmetric case
    m = (p + q) / 2
    assert d["js"] == pytest.approx(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))
    # asymmetric: KL differs by direction, JS is bounded by 1 bit and 0 for equal samples
    d2 = A.divergences([0.5] * 9 + [1.5], [0.5] * 5 + [1.5] * 5, pseudo=0.0, edges=edges)
    assert d2["kl_real_syn"] != pytest.approx(d2["kl_syn_real"])
    same = A.divergences(np.arange(100.0), np.arange(100.0))
    assert same["js"] == pytest.approx(0.0, abs=1e-12) and same["kl_real_syn"] == pytest.approx(0.0, abs=1e-12)
    far = A.divergences(np.zeros(1000), np.full(1000, 10.0))
    assert 0.95 < far["js"] <= 1.0  # disjoint supports: ~1 bit (pseudo-counts keep KL finite)
    assert np.isfinite(far["kl_real_syn"]) and far["kl_real_syn"] > 5
    with pytest.raises(ValueError, match="finite values in both"):
        A.divergences([np.nan], [1.0])


def test_kl_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    r, s = rng.normal(0, 1, 200_000), rng.normal(0.5, 1, 200_000)
    d = A.divergences(r, s, bins=200, pseudo=0.5)
    assert d["kl_real_syn"] == pytest.approx(0.125, abs=0.01)  # (mu1 - mu2)^2 / 2 for unit variances
    assert d["kl_syn_real"] == pytest.approx(0.125, abs=0.01)


def test_reading_names_under_and_over_coverage():
    rng = np.random.default_rng(1)
    real = rng.normal(0, 20, 5000)
    assert "under-covers" in A.reading("yaw", real, rng.normal(0, 5, 5000))
    assert "mostly high" in A.reading("yaw", real, rng.uniform(-60, 0, 5000))
    assert "over-covers" in A.reading("yaw", real, rng.normal(0, 60, 5000))
    assert "synthetic covers" in A.reading("yaw", real, rng.normal(0, 20, 5000))
    assert "shifted up" in A.reading("brightness", real, rng.normal(25, 20, 5000))


# ----------------------------------------------------------------------------------------------
# PnP on landmarks made from the generic 3D face (no dlib)
# ----------------------------------------------------------------------------------------------


def _rot(yaw, pitch, roll):
    y, p, r = np.radians([yaw, pitch, roll])
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Rz @ Rx @ Ry


def test_pnp_reads_poses_in_the_renderer_s_own_rotation():
    import torch
    from morphable.camera import euler_to_matrix
    poses = np.array([[25.0, 0.0, 0.0], [0.0, 15.0, 0.0], [0.0, 0.0, 12.0], [-30.0, -10.0, -8.0]])
    R = euler_to_matrix(*torch.tensor(poses, dtype=torch.float64).T).numpy()
    lm = np.zeros((len(poses), 68, 2))
    for n in range(len(poses)):
        X = A._MODEL_3D @ R[n].T
        lm[n, A._MODEL_IDS] = np.c_[56.0 + 0.8 * X[:, 0], 60.0 - 0.8 * X[:, 1]]  # image y down
    np.testing.assert_allclose(A.solve_pose(lm), poses, atol=1e-6)


def test_pnp_recovers_the_pose_of_projected_model_points():
    rng = np.random.default_rng(0)
    poses = np.c_[rng.uniform(-60, 60, 50), rng.uniform(-30, 30, 50), rng.uniform(-20, 20, 50)]
    lm = np.zeros((50, 68, 2))
    for n, (yaw, pitch, roll) in enumerate(poses):
        # the renderer's convention (morphable.camera.euler_to_matrix) is the right-handed y-up
        # rotation with yaw negated
        X = A._MODEL_3D @ _rot(-yaw, pitch, roll).T
        pts = 0.8 * X[:, :2] + [56.0, 60.0]
        pts[:, 1] = 120 - pts[:, 1]  # y up -> image y down
        lm[n, A._MODEL_IDS] = pts
    est = A.solve_pose(lm)
    assert np.max(np.abs(est - poses)) < 1e-6
    with pytest.raises(ValueError, match=r"\(N, 68, 2\)"):
        A.solve_pose(np.zeros((2, 5, 2)))


# ----------------------------------------------------------------------------------------------
# dlib: the estimators on renders with known pose and expression
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models():
    pytest.importorskip("dlib")
    try:
        return A.find_shape_predictor()
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"68-point shape predictor unavailable: {e}")


@pytest.fixture(scope="module")
def renders():
    """32 frontal-preset renders (8 identities x 4), yaw widened to +-40 degrees, no occluders; the
    expression is the jaw alone, open in about half of the images (so mouth openness has something to
    follow in 32 images whatever the sampling stream draws)."""
    import torch

    from engine import create_source

    src = create_source("morphable", preset="frontal", size=112,
                        overrides={"pose": {"yaw": {"lo": -40, "hi": 40}},
                                   "expression": {"prob": 0.5, "units": ["jawOpen"], "max_units": 1, "presets": False,
                                                  "intensity": {"lo": 0.2, "hi": 1.0}}})
    ids = src.sample_identities(8, seed=3)
    rows = torch.arange(8).repeat_interleave(4)
    var = torch.arange(4).repeat(8)
    b = src.render(ids, rows=rows, variations=var, seed=3)
    imgs = (b.images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    f = {k: v.numpy() for k, v in b.factors.items() if v.ndim == 1}
    return imgs, f


def test_estimators_read_the_sampled_pose_and_expression(models, renders):
    imgs, f = renders
    est = A.estimate_attributes(list(imgs), models)
    # stated bounds, with margin over what was measured on these 32 renders (2026-12-04, sampling version 3,
    # jaw-only expressions): yaw r 0.977, MAE 6.6 deg; pitch r 0.59; mean |roll| 2.6 deg; mouth openness vs
    # jawOpen r 0.86 (16 open mouths)
    yaw_err = np.abs(est["yaw"] - f["yaw"])
    assert np.corrcoef(est["yaw"], f["yaw"])[0, 1] > 0.9
    assert np.mean(yaw_err) < 12.0  # degrees, |yaw| <= 40
    assert np.corrcoef(est["pitch"], f["pitch"])[0, 1] > 0.3
    # roll is undone by the 5-point alignment: the aligned faces are upright
    assert np.mean(np.abs(est["roll"])) < 6.0
    assert np.corrcoef(est["mouth_open"], f["expr_jawOpen"])[0, 1] > 0.5
    for k in A.ATTRIBUTES:
        assert est[k].shape == (32,) and np.all(np.isfinite(est[k])), k


def test_image_attributes_follow_constructed_changes(models, renders):
    imgs, _ = renders
    img = imgs[0]
    lm = A.estimate_attributes([img], models)["landmarks"][0]
    base = A.image_attributes(img, lm)
    darker = A.image_attributes((img * 0.6).astype(np.uint8), lm)
    assert darker["brightness"] < base["brightness"] - 10
    from PIL import Image, ImageFilter

    blurred = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(2)))
    assert A.image_attributes(blurred, lm)["sharpness"] < base["sharpness"] - 0.3
    half = img.copy()
    half[:, :56] = (half[:, :56] * 0.5).astype(np.uint8)  # image-left half darker
    assert A.image_attributes(half, lm)["lr_asymmetry"] < base["lr_asymmetry"] - 0.1
    lab = A._srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]]))
    assert lab[0] == pytest.approx([100, 0, 0], abs=0.05) and lab[1] == pytest.approx([0, 0, 0], abs=1e-6)
    assert lab[2] == pytest.approx([53.24, 80.09, 67.20], abs=0.05)


def test_attributes_command_on_tiny_sets(models, tmp_path):
    from engine import render as R

    ds = tmp_path / "ds"
    R.render_dataset(ids=3, per_id=4, source="morphable", preset="frontal", size=112, out=str(ds), seed=2,
                     workers=0, render_workers=0, progress=False, log=None, fsync=False)
    # a "real" folder: the same images in DIR/<person>/<image> form, without metadata
    real = tmp_path / "real"
    for p in (ds / "images").rglob("*.jpg"):
        (real / p.parent.name).mkdir(parents=True, exist_ok=True)
        (real / p.parent.name / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "rep"
    assert A.main([str(ds), "--real", str(real), "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["attributes"]) == set(A.ATTRIBUTES)
    for c in rep["attributes"].values():  # the same images on both sides: identical distributions
        assert c["js"] == pytest.approx(0.0, abs=1e-12) and c["n_real"] == c["n_syn"] == 12
    assert set(rep["ground_truth"]["synthetic"]) <= set(A.GROUND_TRUTH) and "yaw" in rep["ground_truth"]["synthetic"]
    md = (out / "report.md").read_text()
    assert "| yaw |" in md and "Readings:" in md and "sampled ground truth" in md
    assert (out / "attributes.png").is_file() and (out / "synthetic.parquet").is_file()
    assert A.main([str(tmp_path / "nope"), "--real", str(real), "--out", str(out)]) == 2
