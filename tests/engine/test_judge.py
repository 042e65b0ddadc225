"""engine.judge: dlib real-face judge (metrics on hand-made distances, the command on tiny renders, errors)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import judge as J

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------
# pure metric functions (no dlib needed)
# ------------------------------------------------------------------------------------------------


def test_eer_separated_and_overlapping():
    assert J.equal_error_rate(np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5])) == (0.0, 0.3)
    # t = 0.3: FAR = 1/2 (0.3 accepted), FRR = 1/2 (0.5 rejected) -> exactly equal
    eer, t = J.equal_error_rate(np.array([0.1, 0.5]), np.array([0.3, 0.7]))
    assert eer == pytest.approx(0.5) and t == pytest.approx(0.3)
    # fully inverted: every impostor closer than every genuine
    eer, _ = J.equal_error_rate(np.array([0.8, 0.9]), np.array([0.1, 0.2]))
    assert eer == pytest.approx(1.0)
    # interpolated: G = {0.1, 0.2, 0.35, 0.5}, I = {0.3, 0.6, 0.7, 0.8}
    # t = 0.2: FAR 0, FRR 0.5; t = 0.3: FAR 0.25, FRR 0.5; t = 0.35: FAR 0.25, FRR 0.25 -> EER 0.25
    eer, t = J.equal_error_rate(np.array([0.1, 0.2, 0.35, 0.5]), np.array([0.3, 0.6, 0.7, 0.8]))
    assert eer == pytest.approx(0.25) and t == pytest.approx(0.35)
    # between points: G = {0.1, 0.4}, I = {0.3}; t=0.1: FAR 0 FRR .5; t=0.3: FAR 1, FRR .5 -> 0.5 by interpolation
    eer, _ = J.equal_error_rate(np.array([0.1, 0.4]), np.array([0.3]))
    assert eer == pytest.approx(0.5)
    assert all(np.isnan(J.equal_error_rate(np.array([]), np.array([0.3]))))


def test_far_at_threshold():
    assert J.false_accept_rate(np.array([0.1, 0.59, 0.6, 0.9])) == 0.5  # strictly below 0.6
    assert J.false_accept_rate(np.array([0.2, 0.3]), threshold=0.25) == 0.5
    assert np.isnan(J.false_accept_rate(np.array([])))


def test_pairwise_distances_match_direct():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 128)), rng.normal(size=(7, 128))
    want = np.linalg.norm(a[:, None] - b[None], axis=2)
    np.testing.assert_allclose(J.pairwise_distances(a, b), want, rtol=1e-10, atol=1e-10)


def _points(labels, spread=0.01, gap=1.0, seed=0):
    """Descriptors (N, 2): identity k at (gap * k, 0) plus small noise."""
    rng = np.random.default_rng(seed)
    lab = np.asarray(labels)
    return np.c_[gap * lab, np.zeros(len(lab))] + spread * rng.normal(size=(len(lab), 2)), lab


def test_genuine_impostor_counts_and_sampling():
    x, lab = _points([0, 0, 0, 1, 1, 2])
    p = J.genuine_impostor_distances(x, lab)
    assert len(p["genuine"]) == 3 + 1 and len(p["impostor"]) == 15 - 4
    assert p["genuine_total"] == 4 and p["impostor_total"] == 11 and not p["impostor_sampled"]
    assert p["genuine"].max() < 0.1 and p["impostor"].min() > 0.9
    # impostor distances are exactly the different-label pairs
    d = J.pairwise_distances(x, x)
    iu = np.triu_indices(6, 1)
    want = np.sort(d[iu][lab[iu[0]] != lab[iu[1]]])
    np.testing.assert_allclose(np.sort(p["impostor"]), want, rtol=1e-5)
    # sampled beyond max_pairs, deterministically by seed
    s1 = J.genuine_impostor_distances(x, lab, max_pairs=3, seed=1)
    s2 = J.genuine_impostor_distances(x, lab, max_pairs=3, seed=1)
    assert s1["impostor_sampled"] and s1["genuine_sampled"] and len(s1["impostor"]) == 3 == len(s1["genuine"])
    np.testing.assert_array_equal(s1["impostor"], s2["impostor"])
    assert s1["impostor"].min() > 0.9 and s1["genuine"].max() < 0.1


def test_rank1_known_answer():
    # identity 2 (single image) is excluded from probes and gallery
    x, lab = _points([0, 0, 1, 1, 2])
    r = J.rank1_identification(x, lab)
    assert r == {"rank1": 1.0, "probes": 4, "identities": 2}
    # the third image of each identity sits far from its own two, next to the other's third: 2 of 6 wrong
    x = np.array([[0.0], [0.1], [5.0], [1.0], [1.1], [5.2]])
    lab = np.array([0, 0, 0, 1, 1, 1])
    r = J.rank1_identification(x, lab)
    assert r["probes"] == 6 and r["rank1"] == pytest.approx(4 / 6)
    assert np.isnan(J.rank1_identification(x[:2], np.array([0, 1]))["rank1"])


def test_detection_by_yaw_bins():
    yaw = np.array([-3.0, 14.9, 15.0, -40.0, 59.9, 60.0, -85.0, 95.0])
    det = np.array([1, 1, 0, 1, 0, 1, 0, 0], dtype=bool)
    rows = J.detection_by_yaw(det, yaw)
    assert [r["bin"] for r in rows] == ["0-15", "15-30", "30-45", "45-60", "60-90"]
    assert [r["images"] for r in rows] == [2, 1, 1, 1, 3]
    assert [r["detected"] for r in rows] == [2, 0, 1, 0, 1]
    assert rows[4]["rate"] == pytest.approx(1 / 3)
    assert "score_mean" not in rows[0]
    scored = J.detection_by_yaw(det, yaw, scores=np.arange(8.0) - 3)
    assert [r["score_mean"] for r in scored] == pytest.approx([-2.5, -1.0, 0.0, 1.0, 3.0])
    with pytest.raises(ValueError, match="7 detection scores"):
        J.detection_by_yaw(det, yaw, scores=np.zeros(7))


def test_summarise_on_synthetic_descriptions():
    x, lab = _points([0, 0, 0, 1, 1, 1, 2, 2], spread=0.05)
    det = np.array([1, 1, 0, 1, 1, 1, 1, 1], dtype=bool)
    scores = np.where(det, 0.5, -0.7).astype(np.float32)
    desc = J.Descriptions(descriptors=x.astype(np.float32), detected=det, boxes=np.zeros((8, 4), np.int64),
                          num_faces=det.astype(np.int64), scores=scores, seconds=0.8)
    s = J.summarise(desc, lab, yaw=np.zeros(8))
    assert s["num_detected"] == 7 and s["detection_rate"] == pytest.approx(7 / 8)
    assert s["detection_score"]["mean"] == pytest.approx((7 * 0.5 - 0.7) / 8) and s["detection_score"]["median"] == 0.5
    assert s["detection_by_yaw"][0]["score_mean"] == pytest.approx(s["detection_score"]["mean"])
    d = s["detected"]
    assert d["genuine_pairs"] == 1 + 3 + 1 and d["impostor_pairs"] == 21 - 5
    assert d["eer"] == 0.0 and d["far_at_0.6"] == 0.0 and d["rank1"] == 1.0
    assert s["all_images"]["genuine_pairs"] == 3 + 3 + 1
    assert s["seconds_per_1000_images"] == pytest.approx(100.0)
    json.dumps(J._public(s), allow_nan=False)


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------


def test_load_face_set_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        J.load_face_set(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        J.load_face_set(tmp_path / "empty")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        J.load_face_set(f)
    with pytest.raises(ValueError, match="max_ids"):
        J.load_face_set(tmp_path / "empty", max_ids=0)


def test_missing_extra_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[judge\]"') as e:
        J.require_dlib()
    assert isinstance(e.value, J.JudgeExtraMissing)


def test_model_paths(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nope.dat"):
        J.find_models(shape_predictor=tmp_path / "nope.dat")
    a, b = tmp_path / "a.dat", tmp_path / "b.dat"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    monkeypatch.setenv(J.ENV_SHAPE_PREDICTOR, str(a))
    monkeypatch.setenv(J.ENV_FACE_RECOGNITION_MODEL, str(b))
    assert J.find_models() == J.JudgeModels(a, b)
    assert J.find_models(face_recognition=a).face_recognition == a


# ------------------------------------------------------------------------------------------------
# dlib: the command on tiny renders
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    pytest.importorskip("dlib")
    from engine import render as R

    out = tmp_path_factory.mktemp("judge") / "ds"
    R.render_dataset(ids=3, per_id=3, source="morphable", preset="frontal", size=112, out=str(out), seed=2,
                     workers=0, render_workers=0, progress=False, log=None, fsync=False)
    return out


def test_command_writes_report(tiny_dataset, models, tmp_path, capsys):
    out = tmp_path / "report"
    rc = J.main([str(tiny_dataset), "--real", str(tiny_dataset / "images"), "--out", str(out), "--workers", "1",
                 "-q"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "detection rate" in printed and "0-15" in printed and "detection score" in printed
    r = json.loads((out / "report.json").read_text())
    assert set(r["sets"]) == {"dataset", "real"}
    for name in ("dataset", "real"):
        s = r["sets"][name]
        assert s["num_images"] == 9 and s["num_identities"] == 3
        assert 0.0 <= s["detection_rate"] <= 1.0
        a = s["all_images"]
        assert a["genuine_pairs"] == 3 * 3 and a["impostor_pairs"] == 36 - 9 and not a["impostor_sampled"]
        d = s["detected"]
        n = s["num_detected"]
        assert d["images"] == n and d["genuine_pairs"] + d["impostor_pairs"] == n * (n - 1) // 2
        for key in ("genuine_mean", "impostor_mean", "far_at_0.6", "eer", "rank1"):
            assert key in d
    # the synthface dataset has yaw bins, the plain folder has none; both judged identically otherwise
    assert [b["bin"] for b in r["sets"]["dataset"]["detection_by_yaw"]][0] == "0-15"
    assert r["sets"]["real"]["detection_by_yaw"] is None
    assert r["sets"]["dataset"]["detected"]["genuine_mean"] == r["sets"]["real"]["detected"]["genuine_mean"]
    assert (out / "report.md").read_text().count("| detection rate |") == 1
    assert {"distance_histograms.png", "detection_by_yaw.png"} <= {p.name for p in out.iterdir()}


@pytest.fixture(scope="module")
def small_set(tiny_dataset, models):
    """2 identities x 2 images of the tiny dataset, described in this process."""
    fs = J.load_face_set(tiny_dataset, max_ids=2, per_id=2, seed=0)
    return fs, J.describe_face_set(fs, models, workers=1)


def test_subsampling_and_descriptions(small_set):
    fs, one = small_set
    assert len(fs) == 4 and len(fs.names) == 2 and fs.yaw is not None
    assert [fs.dataset.paths[i].split("/")[1] for i in fs.indices] == ["000.jpg", "001.jpg"] * 2
    assert one.descriptors.shape == (4, 128) and np.isfinite(one.descriptors).all()
    assert one.boxes.shape == (4, 4) and one.detected.dtype == bool
    assert one.scores.shape == (4,) and (one.scores >= J.SCORE_FLOOR).all()
    np.testing.assert_array_equal(one.detected, one.scores >= 0)  # a detection is a window scoring >= 0


def test_scored_detections_are_the_detector_s_own(tiny_dataset, models):
    """Asking dlib for windows down to SCORE_FLOOR leaves the detections and boxes of detector(img)."""
    import dlib
    fs = J.load_face_set(tiny_dataset)
    imgs = [np.ascontiguousarray(fs.dataset[int(i)][0].permute(1, 2, 0).numpy()) for i in fs.indices]
    # harder cases too: dimmed, and cut to the lower half (no face: the score sits below 0)
    imgs += [(im * 0.35).astype(np.uint8) for im in imgs[:3]] + [np.ascontiguousarray(im[56:]) for im in imgs[:2]]
    desc = J.describe_arrays([imgs], models, workers=1)
    det = dlib.get_frontal_face_detector()
    for k, im in enumerate(imgs):
        own = det(im, J.DEFAULT_UPSAMPLE)
        assert bool(desc.detected[k]) == (len(own) > 0) and int(desc.num_faces[k]) == len(own)
        if len(own):
            r = max(own, key=lambda d: d.width() * d.height())
            assert tuple(desc.boxes[k]) == (r.left(), r.top(), r.right(), r.bottom())
    assert (desc.scores[~desc.detected] < 0).all() and (desc.scores[desc.detected] >= 0).all()
    assert not desc.detected.all()  # the cut images are missed


def test_pool_matches_in_process(small_set, models):
    fs, one = small_set
    two = J.describe_face_set(fs, models, workers=2, chunk=1)
    np.testing.assert_array_equal(one.descriptors, two.descriptors)
    np.testing.assert_array_equal(one.detected, two.detected)
    np.testing.assert_array_equal(one.scores, two.scores)


def test_in_memory_images_match_files(small_set, models):
    fs, one = small_set
    imgs = [fs.dataset[int(i)][0] for i in fs.indices]  # uint8 (3, H, W) tensors
    mem = J.describe_arrays([imgs[:3], [im.float() / 255 for im in imgs[3:]]], models, workers=1)
    np.testing.assert_array_equal(one.descriptors, mem.descriptors)
    np.testing.assert_array_equal(one.detected, mem.detected)


def test_command_errors(tmp_path, capsys):
    assert J.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_lfw_dev_detects_real_faces(lfw_dev, models):
    """A slice of real LFW: the recogniser must see real faces as faces and tell people apart."""
    fs = J.load_face_set(lfw_dev / "images", max_ids=12, per_id=2, seed=0)
    desc = J.describe_face_set(fs, models, workers=1)
    s = J.summarise(desc, fs.labels)
    assert s["detection_rate"] >= 0.8
    d = s["detected"]
    if d["genuine_pairs"] and d["impostor_pairs"]:
        assert d["impostor_mean"] > d["genuine_mean"]


# ------------------------------------------------------------------------------------------------
# learned.evaluate --judge
# ------------------------------------------------------------------------------------------------

TINY_ENCODER = {"arch": "tiny", "embedding_size": 32, "input_size": 56, "random_init_seed": 0}


def test_evaluate_judge_flag(tiny_dataset, models, tmp_path, capsys):
    from learned.evaluate import main

    out = tmp_path / "eval"
    rc = main(["--encoder", json.dumps(TINY_ENCODER), "--allow-random-encoder", "--dataset", str(tiny_dataset),
               "--out", str(out), "--device", "cpu", "--judge", "-q"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    s = rep["judge"]["sets"]["dataset"]
    assert s["num_images"] == 9 and 0.0 <= s["detection_rate"] <= 1.0
    assert "Real-face judge (dlib)" in (out / "report.md").read_text()


def test_evaluate_judge_without_extra(monkeypatch, tmp_path):
    from learned.evaluate import EvaluateError, evaluate

    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(EvaluateError, match=r'--judge: .*pip install -e "\.\[judge\]"'):
        evaluate(TINY_ENCODER, dataset=tmp_path, allow_random_encoder=True, judge=True)
