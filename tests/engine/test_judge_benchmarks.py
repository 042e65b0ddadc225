"""benchmarks/judge_quick.py, judge_regions.py, judge_factors.py, judge_gender.py, judge_degradations.py,
judge_warp.py, judge_memorisation.py, detail_ablation.py, mean_detail.py and shape_proportions.py on tiny inputs (the tests that describe faces need the judge extra)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.bench_helpers import load_benchmark as _load


def test_soft_box_is_one_inside_zero_outside():
    R = _load("judge_regions")
    m = R.soft_box(28, 62, 20, 94)
    assert m.shape == (112, 112, 1)
    assert float(m[45, 57, 0]) == 1.0 and float(m[10, 57, 0]) == 0.0 and float(m[45, 5, 0]) == 0.0
    assert 0.0 < float(m[29, 57, 0]) < 1.0  # the 3 px ramp at the border
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0


def test_region_diversity_zero_for_one_donor_positive_for_several(models):
    R = _load("judge_regions")
    faces = R.synthetic_faces("frontal", 4, {})  # (8, 112, 112, 3): 4 identities x 2
    assert faces.shape == (8, 112, 112, 3)
    contexts = faces[[0, 2]]
    same = R.region_diversity(np.repeat(faces[4:5], 8, 0), contexts, models, workers=1)
    several = R.region_diversity(faces, contexts, models, workers=1)
    assert set(same) == set(R.REGIONS) == set(several)
    for k in R.REGIONS:  # one donor everywhere: identical images in a context, distance 0
        assert same[k] == 0.0 or np.isnan(same[k])
    assert several["brows_eyes"] > 0.05


def test_judge_quick_prints_the_figures(models, capsys):
    Q = _load("judge_quick")
    Q.main(["--ids", "3", "--per-id", "2", "--workers", "1", "-o", "identity.feature_shape=0"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["ids"] == 3 and line["overrides"] == ["identity.feature_shape=0"]
    assert 0.0 <= line["detection"] <= 1.0 and line["impostor"] > line["genuine"] > 0.0


def test_judge_factors_prints_one_line_per_factor_and_the_rate(models, capsys):
    F = _load("judge_factors")
    F.main(["--ids", "4", "--per-id", "6", "--workers", "1", "--max-yaw", "90", "--top", "3"])
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    last = lines[-1]
    assert last["preset"] == "wild" and last["images"] == 24 and 0.0 <= last["detection"] <= 1.0
    assert last["detection"] == last["detection_all_yaw"]  # --max-yaw 90 keeps every image
    assert all("factor" in x and x["spread"] >= 0 for x in lines[:-1]) and len(lines) <= 4


def test_yaw_band_keeps_faces_between_the_bounds_on_both_sides():
    F = _load("judge_factors")
    yaw = np.array([-70.0, -45.0, -30.0, -10.0, 0.0, 29.9, 30.0, 60.0, 60.1])
    assert F.yaw_band(yaw, 30, 60).tolist() == [False, True, True, False, False, False, True, True, False]
    assert F.yaw_band(yaw, 0, 30).tolist() == [False, False, True, True, True, True, True, False, False]
    assert F.yaw_band(None, 0, 30) is None
    with pytest.raises(ValueError, match="--min-yaw"):
        F.yaw_band(yaw, 60, 30)


def test_judge_factors_rejects_an_empty_yaw_band_before_rendering(capsys):
    F = _load("judge_factors")
    with pytest.raises(SystemExit):
        F.main(["--ids", "2", "--min-yaw", "50", "--max-yaw", "20"])
    assert "--min-yaw (50.0) is above --max-yaw (20.0)" in capsys.readouterr().err


def test_factor_rates_per_value_and_quartile_sorted_by_spread():
    F = _load("judge_factors")
    rng = np.random.default_rng(0)
    n = 400
    patch = (np.arange(n) % 4 == 0).astype(float)  # two values: per value
    light = rng.uniform(-1, 1, n)  # many values: per quartile
    noise = rng.uniform(0, 1, n)  # unrelated to detection
    det = (patch == 0) & (light > -0.5)
    rates = F.factor_rates({"patch": patch, "light": light, "noise": noise, "const": np.ones(n)}, det)
    assert [r["factor"] for r in rates][:2] == ["patch", "light"] and "const" not in [r["factor"] for r in rates]
    by = {r["factor"]: r for r in rates}
    assert by["patch"]["rate_n"]["=1"] == (0.0, 100)
    quartiles = list(by["light"]["rate_n"].values())  # in order of the factor's value
    assert len(quartiles) == 4 and quartiles[0][0] < 0.6 and quartiles[-1][0] > 0.6
    assert by["noise"]["spread"] < by["light"]["spread"]


def test_shape_proportions_of_the_mean_face_and_a_stretched_one(capsys):
    import torch

    from morphable import load_default_model
    from morphable.model import face_proportions

    m = load_default_model()
    z = torch.zeros(2, m.shape_basis.shape[0])
    r0 = face_proportions(m, z)
    assert set(r0) == {"nose", "mouth", "chin", "mouth_width", "face_width"}
    assert 0.3 < float(r0["nose"][0]) < 0.7 and 0.8 < float(r0["mouth"][0]) < 1.4  # a human mean face
    assert 1.5 < float(r0["chin"][0]) < 2.3 and 1.7 < float(r0["face_width"][0]) < 2.5
    # the shape components move the proportions (3 sd along one of the first ten changes the nose ratio)
    d = [float(face_proportions(m, torch.eye(z.shape[1])[k: k + 1] * 3)["nose"][0] - r0["nose"][0]) for k in range(10)]
    assert max(abs(x) for x in d) > 0.01
    _load("shape_proportions").main(["--ids", "30", "--show", "0"])
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["ratio"] for x in lines] == ["nose", "mouth", "chin", "mouth_width", "face_width"]
    assert all(x["p01"] <= x["mean"] <= x["p99"] and x["cv"] > 0 and "0" in x["show_z"] for x in lines)


def test_gender_direction_and_auc_separate_two_gaussian_classes():
    G = _load("judge_gender")
    rng = np.random.default_rng(0)
    female = rng.uniform(size=600) < 0.25  # unbalanced, as in LFW
    x = rng.normal(size=(600, 16)) + 1.5 * female[:, None] * np.eye(16)[3]
    w, b = G.gender_direction(x, female)
    s = x @ w + b
    assert float(s[female].mean()) > 0 > float(s[~female].mean())  # balanced: the sides straddle 0
    assert G.auc(s, female) > 0.85 and 0.8 < G.cross_validated_auc(x, female) <= G.auc(s, female) + 0.02
    assert G.auc(rng.normal(size=600), female) < 0.6 and G.auc(s, ~female) < 0.15
    assert np.isnan(G.auc(s, np.zeros(600, bool)))
    with pytest.raises(ValueError, match="both labels"):
        G.gender_direction(x, np.ones(600, bool))
    assert G.is_female_name("Mary_Smith") and not G.is_female_name("John_Smith")


def test_spread_by_direction_recovers_a_known_shortfall():
    S = _load("judge_spread")
    rng = np.random.default_rng(0)
    scale = np.array([3.0, 2.0, 1.0, 1.0])
    real = rng.normal(size=(4000, 4)) * scale
    ours = rng.normal(size=(4000, 4)) * scale * np.array([0.5, 1.0, 1.0, 1.0]) + 5.0  # half the sd along the first
    s = S.spread_by_direction(real, ours)
    assert abs(s["ratio"][0] - 0.25) < 0.03 and all(abs(v - 1) < 0.1 for v in s["ratio"][1:])
    assert abs(s["share"][0] - 9 / 15) < 0.03 and abs(s["share"].sum() - 1) < 1e-9
    assert abs(s["shortfall"][0] - 0.75 * 9 / 15) < 0.03  # the offset of our mean does not count
    assert abs(s["total_ratio"] - (1 - 0.75 * 9 / 15)) < 0.03
    assert abs(S.spread_by_direction(real, real)["total_ratio"] - 1) < 1e-9
    with pytest.raises(ValueError, match="one D"):
        S.spread_by_direction(real, ours[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        S.spread_by_direction(real, ours[:1])


def _stand_in_real_folder(root: Path, people: int, name=lambda i: f"P{i}") -> None:
    """``root/<name(i)>/<name(i)>_0001.jpg``: 2 * ``people`` rendered faces as a real face folder,
    one image per person."""
    from PIL import Image
    faces = _load("judge_regions").synthetic_faces("frontal", people, {})
    for i, f in enumerate(faces):
        d = root / name(i)
        d.mkdir()
        Image.fromarray(f.astype(np.uint8)).save(d / f"{d.name}_0001.jpg")


def test_judge_gender_prints_real_and_synthetic_figures(models, tmp_path, capsys):
    G = _load("judge_gender")
    _stand_in_real_folder(tmp_path, 6, lambda i: f"{'Mary' if i % 2 else 'John'}_P{i}")  # 12 people
    G.main(["--real", str(tmp_path), "--ids", "4", "--per-id", "2", "--workers", "1"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["real_people"] >= 8 and 0 < line["real_female"] < line["real_people"]
    assert 0.0 <= line["auc"] <= 1.0 or np.isnan(line["auc"])
    assert 0.0 <= line["detection"] <= 1.0 and line["impostor"] > 0


def test_judge_spread_prints_the_directions(models, tmp_path, capsys):
    S = _load("judge_spread")
    _stand_in_real_folder(tmp_path, 6)  # 12 people
    S.main(["--real", str(tmp_path), "--ids", "6", "--workers", "1", "--show", "3"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["real_people"] >= 8 and 2 <= line["ours"] <= 6 and line["total_ratio"] > 0
    assert [d["k"] for d in line["directions"]] == [0, 1, 2]
    assert all(0 < d["share"] <= 1 and d["ratio"] >= 0 for d in line["directions"])


def test_judge_degradations_prints_real_and_synthetic_detection(models, tmp_path, capsys):
    from engine import judge as J
    D = _load("judge_degradations")
    _stand_in_real_folder(tmp_path, 3)  # 6 people
    real = D.real_images(tmp_path, 8)  # more images than people: people repeat
    assert tuple(real.shape) == (8, 3, 112, 112) and 0.0 <= float(real.min()) and float(real.max()) <= 1.0
    D.main(["--real", str(tmp_path), "--ids", "3", "--per-id", "2", "--workers", "1", "--max-yaw", "90"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["images"] == 6 and line["ours_images"] == 6 and 0 <= line["ours_no_occluder_images"] <= 6
    for k in ("real_clean", "real_degraded", "real_wild", "real_wild_paired", "ours", "ours_clean", "degraded_share"):
        assert 0.0 <= line[k] <= 1.0
    for k in ("real_clean_score", "real_degraded_score", "real_wild_score", "ours_score", "ours_clean_score"):
        assert line[k] >= J.SCORE_FLOOR
    # every image with a patch: the real faces carry the renders' patches, and are counted by occluder
    D.main(["--real", str(tmp_path), "--ids", "3", "--per-id", "2", "--workers", "1", "--max-yaw", "90",
            "-o", "occluders.patch_prob=1", "occluders.glasses_prob=0"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["patch_images"] == 6 and line["glasses_images"] == 0 and line["ours_glasses"] is None
    assert 0.0 <= line["real_wild_patch"] <= 1.0 and line["real_wild_patch"] == line["real_wild_paired"]
    with pytest.raises(SystemExit, match="no person folders"):
        D.real_images(tmp_path / "P0", 2)


def test_piecewise_affine_is_the_identity_for_equal_points_and_moves_content_with_them():
    import torch
    W = _load("judge_warp")
    img = torch.linspace(0, 1, 112).view(1, 1, 112).expand(3, 112, 112).contiguous()  # value = x / 111
    pts = np.array([[40.0, 40.0], [70.0, 40.0], [55.0, 60.0], [45.0, 80.0], [65.0, 80.0]])
    assert torch.allclose(W.piecewise_affine(img, pts, pts), img, atol=1e-5)
    out = W.piecewise_affine(img, pts, pts + [4.0, 0.0])  # the features move 4 px right
    for x, y in pts.astype(int):  # what was at x now sits at x + 4
        assert abs(float(out[0, y, x + 4]) - x / 111) < 1e-4
    assert float(out[0, :, 0].abs().max()) < 1e-5 and float((out[0, :, 111] - 1).abs().max()) < 1e-5  # edges stay put
    assert out.shape == img.shape


def test_paste_region_replaces_the_region_only_and_outer_is_its_complement():
    import torch
    W = _load("judge_warp")
    ours, real = torch.zeros(3, 112, 112), torch.ones(3, 112, 112)
    lm = np.stack(np.meshgrid(np.linspace(30, 80, 9), np.linspace(30, 90, 8)), -1).reshape(-1, 2)[:68]
    eyes = W.paste_region(ours, lm, real, lm, "eyes")  # rows 38:62, columns 22:92
    assert float(eyes[0, 50, 57]) == 1.0 and float(eyes[0, 80, 57]) == 0.0 and float(eyes[0, 50, 5]) == 0.0
    inner, outer = W.paste_region(ours, lm, real, lm, "inner"), W.paste_region(ours, lm, real, lm, "outer")
    assert float(inner[0, 60, 56]) == 1.0 and float(outer[0, 60, 56]) == 0.0 and float(outer[0, 2, 2]) == 1.0
    with pytest.raises(ValueError, match="expected one of"):
        W.paste_region(ours, lm, real, lm, "ears")
    feats = W.paste_region(ours, lm, real, lm, "features")  # brows and eyes, nose, mouth; not the cheeks
    assert float(feats[0, 50, 57]) == 1.0 and float(feats[0, 70, 56]) == 1.0 and float(feats[0, 90, 56]) == 1.0
    assert float(feats[0, 72, 26]) == 0.0 and float(feats[0, 2, 2]) == 0.0


def test_paste_region_bands_split_the_real_region_into_detail_and_coarse():
    import torch
    W = _load("judge_warp")
    lm = np.stack(np.meshgrid(np.linspace(30, 80, 9), np.linspace(30, 90, 8)), -1).reshape(-1, 2)[:68]
    g = torch.Generator().manual_seed(0)
    ours, real = torch.rand(3, 112, 112, generator=g) * 0.5 + 0.25, torch.rand(3, 112, 112, generator=g) * 0.5 + 0.25
    # a face's own detail and coarse part add up to itself
    for band in ("detail", "coarse"):
        assert torch.allclose(W.paste_region(ours, lm, ours, lm, "inner", band), ours, atol=1e-5)
    flat = torch.full((3, 112, 112), 0.5)
    detail = W.paste_region(ours, lm, flat, lm, "inner", "detail")  # a flat donor has no detail: ours blurred
    coarse = W.paste_region(ours, lm, flat, lm, "inner", "coarse")  # ours' detail on a flat 0.5
    inside = (slice(None), slice(40, 90), slice(35, 80))
    assert float(detail[inside].std()) < 0.5 * float(ours[inside].std())
    assert abs(float(coarse[inside].mean()) - 0.5) < 0.01 and float(coarse[inside].std()) > 0.5 * float(ours[inside].std())
    assert torch.equal(detail[:, 5, 5], ours[:, 5, 5]) and torch.equal(coarse[:, 5, 5], ours[:, 5, 5])  # outside
    with pytest.raises(ValueError, match="band 'fine'"):
        W.paste_region(ours, lm, real, lm, "inner", "fine")


def test_is_frontal_by_the_nose_tip_against_the_eyes():
    W = _load("judge_warp")
    lm = np.zeros((68, 2))
    lm[36:42], lm[42:48] = [40.0, 50.0], [72.0, 50.0]  # eye distance 32, midline x = 56
    lm[30] = [58.0, 70.0]
    assert W.is_frontal(lm) and not W.is_frontal(None)
    lm[30] = [62.0, 70.0]  # 6 / 32 = 0.19 eye distances off the midline
    assert not W.is_frontal(lm)


def test_judge_warp_prints_appearance_and_geometry_sets(models, tmp_path, capsys):
    pytest.importorskip("scipy")
    W = _load("judge_warp")
    try:
        from engine.attributes import find_shape_predictor
        find_shape_predictor()
    except (ImportError, FileNotFoundError, ValueError) as e:
        pytest.skip(f"68-point shape predictor unavailable: {e}")
    _stand_in_real_folder(tmp_path, 4)  # 8 people
    W.main(["--real", str(tmp_path), "--ids", "3", "--donors", "1", "--workers", "1", "--blur", "2", "--paste", "eyes",
            "--paste-band", "detail"])
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    sets = {x["set"]: x for x in lines if "set" in x}
    assert {"real", "ours", "real_appearance", "ours_appearance", "real_appearance_blur", "ours_appearance_blur",
            "real_donor_real_geometry", "ours_donor_ours_geometry"} <= set(sets)
    for x in sets.values():
        assert 0.0 <= x["detection"] <= 1.0 and x["faces"] >= 2
    assert set(lines[-1]["summary"]) == set(sets) and lines[-1]["paste"] == "eyes"
    assert lines[-1]["paste_band"] == "detail"
    with pytest.raises(SystemExit, match="no person folders"):
        W.main(["--real", str(tmp_path / "P0"), "--ids", "3"])


def test_face_sharpness_falls_with_blur_and_rises_with_noise():
    S = _load("sharpness_range")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:112, 0:112]
    base = 128 + 60 * np.sin(xx / 3.0) * np.cos(yy / 4.0)  # structure at a few pixels
    img = np.repeat(base[..., None], 3, -1)
    blurred = base.copy()
    for _ in range(3):  # three 3x3 box passes: about a 1.4 px gaussian
        p = np.pad(blurred, 1, mode="edge")
        blurred = sum(p[i:i + 112, j:j + 112] for i in range(3) for j in range(3)) / 9
    soft = np.repeat(blurred[..., None], 3, -1)
    noisy = img + rng.normal(0, 12, img.shape)
    faces = np.stack([img, soft, noisy]).clip(0, 255).astype(np.uint8)
    s = S.face_sharpness(faces)
    assert s[1] < s[0] < s[2]
    with pytest.raises(ValueError, match="aligned faces"):
        S.face_sharpness(faces[:, :64])


def test_band_contrast_puts_fine_texture_in_the_finest_band_of_its_box():
    S = _load("sharpness_range")
    rng = np.random.default_rng(0)
    flat = np.full((2, 112, 112, 3), 128, np.uint8)
    speckled = flat.copy()
    r0, r1, c0, c1 = S.CHEEK_BOX
    speckled[:, r0:r1, c0:c1] = rng.integers(88, 168, (2, r1 - r0, c1 - c0, 1))  # pixel-scale grey speckle
    a, b = S.band_contrast(flat), S.band_contrast(speckled)
    assert set(a) == {"brows", "eyes", "nose", "mouth", "cheek"} and all(v == [0.0, 0.0, 0.0] for v in a.values())
    fine, mid, coarse = b["cheek"]
    assert fine > 2 * mid > 0 and mid > coarse
    assert b["brows"] == [0.0, 0.0, 0.0]  # far from the speckle
    with pytest.raises(ValueError, match="aligned faces"):
        S.band_contrast(flat[:, :64])


def test_sharpness_compare_counts_ours_outside_the_real_range_and_splits_by_degradation():
    S = _load("sharpness_range")
    real = np.linspace(1.0, 2.0, 101)
    ours = np.array([0.5, 1.5, 1.5, 2.5])
    noise = np.array([0.0, 0.0, 0.01, 0.02])
    lines = S.compare(real, ours, {"noise": noise, "lowres": np.ones(4)})
    by = {x["set"]: x for x in lines}
    assert by["ours"]["below_real_p1"] == 0.25 and by["ours"]["above_real_p99"] == 0.25
    assert by["ours, noise on"]["n"] == 2 and by["ours, noise off"]["n"] == 2
    assert by["ours, lowres off"]["n"] == 4 and "ours, lowres on" not in by  # a state nobody has is left out
    assert by["real"]["p50"] == 1.5


def test_sharpness_range_runs_end_to_end_on_a_tiny_real_folder(tmp_path, capsys):
    from PIL import Image
    S = _load("sharpness_range")
    rng = np.random.default_rng(1)
    for i in range(3):
        (tmp_path / f"P{i}").mkdir()
        Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(tmp_path / f"P{i}" / "0.png")
    S.main(["--real", str(tmp_path), "--real-n", "3", "--ids", "2", "--per-id", "2", "--workers", "1",
            "--max-yaw", "90", "--bands"])
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert lines[0]["set"] == "real" and lines[0]["n"] == 3 and lines[1]["set"] == "ours" and lines[1]["n"] == 4
    real_b, ours_b = lines[-2], lines[-1]
    assert real_b["set"].startswith("real, bands") and real_b["n"] == 3 and len(real_b["eyes"]) == 3
    assert ours_b["set"].startswith("ours, bands") and ours_b["n"] == 4


def test_nearest_real_distance_per_identity():
    M = _load("judge_memorisation")
    real = np.array([[0.0, 0.0], [10.0, 0.0]])
    desc = np.array([[1.0, 0.0], [3.0, 0.0], [10.0, 2.0], [9.0, 0.0]])
    assert np.allclose(M.nearest(desc, np.array([0, 0, 1, 1]), real), [1.0, 1.0])
    s = M.summary("x", np.array([0.4, 0.55, 0.7, 0.9]))
    assert s["under_0.6"] == 0.5 and s["under_0.5"] == 0.25 and s["identities"] == 4


def _tiny_detail_model(name: str, k: int = 3):
    import torch
    from morphable.detail import fit_detail_model
    lay = np.stack(np.meshgrid(np.linspace(30, 82, 9), np.linspace(34, 98, 8)), -1).reshape(-1, 2)[:68]
    g = torch.Generator().manual_seed(0)
    return fit_detail_model(torch.rand(5, 3, 112, 112, generator=g) * 0.5 + 0.25, np.repeat(lay[None], 5, 0), lay, name, k=k)


def test_judge_memorisation_prints_the_reference_and_both_sets(models, tmp_path, capsys, default_model):
    M = _load("judge_memorisation")
    (tmp_path / "real").mkdir()
    _stand_in_real_folder(tmp_path / "real", 4)  # 8 people; P6, P7 held out of the "fit"
    (tmp_path / "held.txt").write_text("P6\nP7\n")
    _tiny_detail_model(default_model.name, k=2).save(tmp_path / "d.npz")
    M.main(["--real", str(tmp_path / "real"), "--exclude", str(tmp_path / "held.txt"), "--ids", "3", "--per-id", "1",
            "--workers", "1", "-o", f"identity.detail_model={tmp_path / 'd.npz'}"])
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert lines[0]["real_faces"] == 6
    sets = {x["set"]: x for x in lines[1:]}
    assert set(sets) == {"real people not fitted", "ours, no detail model", "ours, with the detail model"}
    assert sets["ours, no detail model"]["identities"] >= 1
    for x in sets.values():
        assert x["identities"] == 0 or (0.0 <= x["under_0.6"] <= 1.0 and x["nearest_real_mean"] > 0)


def test_detail_ablation_variants_keep_or_drop_what_they_name(default_model):
    import torch
    A = _load("detail_ablation")
    dm = _tiny_detail_model(default_model.name)
    assert A.variant(dm, "none") is None
    assert torch.equal(A.variant(dm, "full").basis, dm.basis)
    assert torch.equal(A.variant(dm, "k2").basis, dm.basis[:2])
    z = torch.randn(4, 3)
    mean = A.variant(dm, "mean")
    assert torch.equal(mean.mean, dm.mean) and float(mean.maps(z[:, :1]).sub(dm.mean).abs().max()) == 0.0
    assert float(A.variant(dm, "zero").maps(z[:, :1]).abs().max()) == 0.0
    ours = torch.full_like(dm.mean, 0.1)
    assert torch.equal(A.variant(dm, "ours_mean", ours).mean, ours)
    m = A.variant(dm, "mean@eyes").mask
    r0, r1, c0, c1 = A.REGIONS["eyes"]
    assert torch.allclose(m[(r0 + r1) // 2, 56], dm.mask[(r0 + r1) // 2, 56])
    assert float(m[95, 56]) == 0.0 and float(m[30, 56]) < 1e-3  # the mouth and brows keep our own detail
    for bad in ("k9", "mean@ears", "blurred"):
        with pytest.raises(ValueError):
            A.variant(dm, bad)
    with pytest.raises(ValueError, match="ours_mean"):
        A.variant(dm, "ours_mean")


def test_detail_ablation_prints_one_line_per_variant(models, default_model, tmp_path, capsys):
    A = _load("detail_ablation")
    _tiny_detail_model(default_model.name).save(tmp_path / "d.npz")
    A.main(["--model", str(tmp_path / "d.npz"), "--ids", "2", "--per-id", "2", "--workers", "1",
            "--variants", "none,mean,ours_mean,mean@mouth", "--ks", "1", "--ours", "8"])
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert 2 <= lines[0]["ours_mean_renders"] <= 8
    assert [x["variant"] for x in lines[1:]] == ["none", "mean", "ours_mean", "mean@mouth", "k1"]
    assert all(x["overrides"] == [] and 0.0 <= x["detection"] <= 1.0 for x in lines[1:])


def test_mean_detail_rms_is_zero_for_equal_means_and_grows_in_the_region_that_differs():
    import torch
    M = _load("mean_detail")
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 112, 112, generator=g) * 0.2 - 0.1
    mask = torch.ones(112, 112)
    same = M.region_rms(real, real, mask)
    assert set(same) == {"all", *M.REGIONS} and all(v == 0 for v in same.values())
    ours = real.clone()
    r0, r1, c0, c1 = M.REGIONS["mouth"]
    ours[:, r0:r1, c0:c1] += 0.1
    rms = M.region_rms(ours, real, mask)
    assert rms["mouth"] > 0.05 and rms["brows"] < 0.01 and 0 < rms["all"] < rms["mouth"]


def test_mean_detail_prints_one_line_per_model_and_saves_our_mean(models, default_model, tmp_path, capsys):
    import torch
    M = _load("mean_detail")
    _tiny_detail_model(default_model.name).save(tmp_path / "d.npz")
    M.main(["--model", str(tmp_path / "d.npz"), "--model", str(tmp_path / "d.npz"), "--ours", "8",
            "--save", str(tmp_path / "ours.pt"), "-o", "light.occlusion_power=1"])
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 2 and lines[0] == lines[1]
    assert 2 <= lines[0]["renders"] <= 8 and lines[0]["overrides"] == ["light.occlusion_power=1"]
    assert all(v > 0 for v in lines[0]["rms"].values())
    assert torch.load(tmp_path / "ours.pt").shape == (3, 112, 112)
    with pytest.raises(SystemExit, match="--ours"):
        M.main(["--model", str(tmp_path / "d.npz"), "--ours", "1"])
