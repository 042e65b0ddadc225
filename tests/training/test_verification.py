"""Face verification: pairs parsing, .bin reading, embedding, metrics and plots."""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from training.backbones import create_backbone
from training.verification import (
    MissingImageError,
    UnsafePickleError,
    embed,
    evaluate_pairs,
    evaluate_scores,
    load_image,
    plot_roc,
    plot_score_histograms,
    read_bin,
    read_lfw_pairs,
    verify_bin,
    verify_lfw,
)

LFW_DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lfw-dev"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _jpeg(seed: int, size: int = 112) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _pairs_from_scores(scores):
    """2-D unit embeddings whose pairwise cosines equal ``scores``."""
    s = np.asarray(scores, dtype=np.float64)
    a = np.tile([1.0, 0.0], (len(s), 1))
    b = np.stack([s, np.sqrt(1 - s ** 2)], axis=1)
    return a, b


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_backbone("tiny", embedding_size=32, width=8)


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def test_close_genuine_pairs_give_perfect_accuracy():
    rng = np.random.default_rng(0)
    n, d = 600, 64
    a = rng.normal(size=(n, d))
    issame = np.arange(n) % 2 == 0
    b = rng.normal(size=(n, d))
    b[issame] = a[issame] + 0.3 * rng.normal(size=(issame.sum(), d))
    res = evaluate_pairs(a.astype(np.float32), b.astype(np.float32), issame)
    assert res["accuracy"] > 0.99 and res["accuracy_std"] < 0.02
    assert res["auc"] > 0.999 and res["eer"] < 0.01
    assert res["num_folds"] == 10 and res["num_genuine"] == 300 and res["num_impostors"] == 300
    assert res["tar_at_far"][1e-1] == pytest.approx(1.0) and res["tar_at_far"][1e-2] > 0.99
    assert res["tar_at_far"][1e-3] is None and res["tar_at_far"][1e-4] is None  # 1/300 > FAR
    assert 0.0 < res["best_threshold"] < 1.0


def test_random_embeddings_give_chance_accuracy():
    rng = np.random.default_rng(1)
    n = 2000
    a, b = rng.normal(size=(n, 32)), rng.normal(size=(n, 32))
    issame = rng.random(n) < 0.5
    res = evaluate_pairs(torch.from_numpy(a), torch.from_numpy(b), issame)
    assert 0.44 < res["accuracy"] < 0.56
    assert 0.45 < res["auc"] < 0.55 and 0.4 < res["eer"] < 0.6


def test_threshold_is_chosen_on_the_other_folds():
    # fold 0: genuine 0.9, impostor 0.8; fold 1: genuine 0.3, impostor 0.2. Each fold is perfectly
    # separable on its own, but the threshold learnt on the other fold misclassifies half of it.
    scores = [0.9, 0.9, 0.8, 0.8, 0.3, 0.3, 0.2, 0.2]
    issame = [True, True, False, False, True, True, False, False]
    a, b = _pairs_from_scores(scores)
    res = evaluate_pairs(a, b, issame, folds=[0, 0, 0, 0, 1, 1, 1, 1])
    assert res["fold_thresholds"] == pytest.approx([0.25, 0.85])  # fold 0 uses fold 1's threshold
    assert res["fold_accuracies"] == [0.5, 0.5]
    assert res["accuracy"] == 0.5
    # insightface-style contiguous folds give the same split here
    assert evaluate_pairs(a, b, issame, n_folds=2)["fold_accuracies"] == [0.5, 0.5]
    assert res["best_accuracy"] == 0.75  # the global optimum is only a reference number


def test_tar_at_far_hand_computed():
    impostor = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    genuine = [0.95, 0.85, 0.99, 0.5]
    a, b = _pairs_from_scores(genuine + impostor)
    issame = [True] * 4 + [False] * 10
    res = evaluate_pairs(a, b, issame, n_folds=2, fars=(0.1, 0.2, 0.01, 1e-3))
    assert res["num_impostors"] == 10
    # FAR 0.1 -> 1 false accept allowed -> threshold = 2nd highest impostor (0.8): accept 0.85, 0.95, 0.99
    assert res["tar_at_far_thresholds"][0.1] == pytest.approx(0.8)
    assert res["tar_at_far"][0.1] == pytest.approx(0.75)
    assert res["far_achieved"][0.1] == pytest.approx(0.1)
    assert res["tar_at_far"][0.2] == pytest.approx(0.75)  # threshold 0.7: 0.5 still rejected
    assert res["tar_at_far"][0.01] is None and res["tar_at_far"][1e-3] is None  # 1/10 > FAR


def test_eer_and_auc_hand_computed():
    scores = [0.6, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.65]
    issame = [True] * 4 + [False] * 4
    res = evaluate_scores(scores, issame, n_folds=2)
    assert res["eer"] == pytest.approx(0.25)
    assert res["auc"] == pytest.approx(15 / 16)
    roc = res["roc"]
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == 1 and roc["fpr"][-1] == 1


def test_evaluate_rejects_bad_input():
    with pytest.raises(ValueError, match="genuine and impostor"):
        evaluate_scores([0.1, 0.2], [True, True], n_folds=2)
    with pytest.raises(ValueError):
        evaluate_pairs(np.ones((3, 4)), np.ones((2, 4)), [True, False, True])


# ----------------------------------------------------------------------------------------------
# LFW pairs.txt
# ----------------------------------------------------------------------------------------------


def _write_lfw(root: Path, text: str, names=("Ann_A", "Bob_B", "Cid_C")):
    for name in names:
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        for i in (1, 2):
            (root / "images" / name / f"{name}_{i:04d}.jpg").write_bytes(_jpeg(i))
    (root / "pairs.txt").write_text(text)
    return root / "pairs.txt"


def test_read_lfw_pairs(tmp_path):
    txt = "2\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t2\nCid_C\t2\t1\nBob_B\t1\tCid_C\t1\n"
    p = _write_lfw(tmp_path, txt)
    pairs = read_lfw_pairs(p)  # image_root defaults to the folder of pairs.txt
    img = lambda n, i: str(tmp_path / "images" / n / f"{n}_{i:04d}.jpg")  # noqa: E731
    assert pairs == [
        (img("Ann_A", 1), img("Ann_A", 2), True, 0),
        (img("Ann_A", 1), img("Bob_B", 2), False, 0),
        (img("Cid_C", 2), img("Cid_C", 1), True, 1),
        (img("Bob_B", 1), img("Cid_C", 1), False, 1),
    ]
    assert read_lfw_pairs(p, image_root=tmp_path) == pairs


def test_read_lfw_pairs_errors(tmp_path):
    p = _write_lfw(tmp_path, "1\t1\nAnn_A\t1\tx\nAnn_A\t1\tBob_B\t2\n")
    with pytest.raises(ValueError, match=r"pairs.txt:2: malformed line .*integer"):
        read_lfw_pairs(p)
    p.write_text("1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\n")  # 3 fields in the different-person block
    with pytest.raises(ValueError, match=r":3: malformed line.*different-person"):
        read_lfw_pairs(p)
    p.write_text("one\ttwo\nAnn_A\t1\t2\n")
    with pytest.raises(ValueError, match=r":1: expected a header"):
        read_lfw_pairs(p)
    p.write_text("1\t2\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t2\n")
    with pytest.raises(ValueError, match="announces"):
        read_lfw_pairs(p)
    p.write_text("1\t1\nAnn_A\t1\t7\nAnn_A\t1\tBob_B\t2\n")
    with pytest.raises(MissingImageError, match="Ann_A_0007.jpg") as ei:
        read_lfw_pairs(p)
    assert isinstance(ei.value, ValueError)
    assert len(read_lfw_pairs(p, check_files=False)) == 2
    p.write_text("1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t2\n")  # pairsDevTrain-style single-number header
    assert [x[2:] for x in read_lfw_pairs(p)] == [(True, 0), (False, 0)]


def test_verify_lfw_on_tmp_layout(tmp_path, tiny_model):
    txt = "2\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t2\nCid_C\t2\t1\nBob_B\t1\tCid_C\t1\n"
    _write_lfw(tmp_path, txt)
    res = verify_lfw(tiny_model, tmp_path, batch_size=3, out_dir=tmp_path / "out")
    assert res["num_pairs"] == 4 and res["num_folds"] == 2
    assert res["num_images"] == 6  # 8 references, 6 distinct images, each embedded once
    for k in ("roc_png", "hist_png", "json"):
        assert os.path.getsize(res[k]) > 0


# ----------------------------------------------------------------------------------------------
# insightface .bin
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4])
def test_read_bin_roundtrip(tmp_path, protocol):
    bins = [_jpeg(i, 112) for i in range(4)]
    issame = [True, False]
    path = tmp_path / "toy.bin"
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=protocol)
    got, same = read_bin(path)
    assert got == bins and same.dtype == bool and same.tolist() == issame

    # numpy-array images and numpy bools are accepted too
    with open(path, "wb") as f:
        pickle.dump(([np.frombuffer(b, dtype=np.uint8) for b in bins], [np.bool_(True), np.bool_(False)]), f,
                    protocol=protocol)
    got, same = read_bin(path)
    assert got == bins and same.tolist() == issame


def test_read_bin_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([Evil()], [True])))
    with pytest.raises(UnsafePickleError, match="refusing to load global .*system"):
        read_bin(path)
    assert not marker.exists()
    from collections import OrderedDict

    path.write_bytes(pickle.dumps(([OrderedDict(a=b"x")], [True])))  # harmless, but not on the allow-list
    with pytest.raises(UnsafePickleError, match="OrderedDict"):
        read_bin(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a valid pickle"):
        read_bin(path)
    path.write_bytes(pickle.dumps(([b"x", b"y", b"z"], [True])))
    with pytest.raises(ValueError, match="3 images for 1 pairs"):
        read_bin(path)


def test_verify_bin(tmp_path, tiny_model):
    bins = [_jpeg(i % 5, 112) for i in range(12)]  # duplicates are embedded once
    issame = [True, False, True, False, True, False]
    path = tmp_path / "toy.bin"
    path.write_bytes(pickle.dumps((bins, issame), protocol=2))
    res = verify_bin(tiny_model, path, n_folds=3, batch_size=4, out_dir=tmp_path / "out")
    assert res["num_pairs"] == 6 and res["num_images"] == 5 and res["num_folds"] == 3
    assert 0.0 <= res["accuracy"] <= 1.0 and 0.0 <= res["auc"] <= 1.0
    assert (tmp_path / "out" / "toy_roc.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "out" / "toy_results.json").exists()


# ----------------------------------------------------------------------------------------------
# images, embedding, plots
# ----------------------------------------------------------------------------------------------


def test_load_image_and_embed(tmp_path, tiny_model):
    jpg = _jpeg(0, 100)
    x = load_image(jpg)  # resized to 112
    assert x.shape == (3, 112, 112) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    (tmp_path / "a.jpg").write_bytes(jpg)
    assert torch.equal(load_image(tmp_path / "a.jpg"), x)

    torch.manual_seed(0)
    imgs = torch.rand(5, 3, 112, 112) * 2 - 1
    tiny_model.train()
    e = embed(tiny_model, imgs, batch_size=2)
    assert tiny_model.training  # mode restored
    assert e.shape == (5, 32) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # iterable of single images / batches gives the same result
    e2 = embed(tiny_model, [imgs[0], imgs[1:3], imgs[3], imgs[4]], batch_size=3)
    assert np.allclose(e, e2, atol=1e-5)
    # flip test = normalise(f(x) + f(flip(x)))
    tiny_model.eval()
    with torch.no_grad():
        ref = torch.nn.functional.normalize(tiny_model(imgs) + tiny_model(imgs.flip(-1)), dim=1).numpy()
    assert np.allclose(e, ref, atol=1e-5)
    e_nf = embed(tiny_model, imgs, flip=False)
    assert not np.allclose(e, e_nf, atol=1e-4)
    # encoded bytes are decoded on the fly
    e3 = embed(tiny_model, [jpg, jpg], batch_size=1)
    assert np.allclose(e3[0], e3[1])


def test_plots_written(tmp_path):
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(0.6, 0.1, 200), rng.normal(0.1, 0.1, 200)]
    issame = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    res = evaluate_scores(scores, issame)
    for p in (plot_roc(res, tmp_path / "roc.png"),
              plot_roc({"a": res, "b": res}, tmp_path / "roc2.png", title="two"),
              plot_roc((scores, issame), tmp_path / "sub" / "roc3.png"),
              plot_score_histograms(scores, issame, tmp_path / "hist.png", threshold=res["threshold"])):
        assert Path(p).read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------------------------
# real data (skips without ../shared/data/lfw-dev)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lfw_dev():
    if not (LFW_DEV / "pairs.txt").is_file():
        pytest.skip(f"LFW dev data not found at {LFW_DEV}")
    return LFW_DEV


def test_lfw_dev_pipeline(lfw_dev, tiny_model):
    pairs = read_lfw_pairs(lfw_dev / "pairs.txt", image_root=lfw_dev)  # also checks every file exists
    assert len(pairs) == 3000 and {p[3] for p in pairs} == set(range(5))
    assert sum(p[2] for p in pairs) == 1500
    res = verify_lfw(tiny_model, lfw_dev, pairs_per_fold=20, batch_size=64)  # 200 pairs, untrained model
    assert res["num_pairs"] == 200 and res["num_folds"] == 5
    assert res["num_genuine"] == 100 and res["num_impostors"] == 100
    assert 0.0 <= res["accuracy"] <= 1.0 and 0.0 <= res["auc"] <= 1.0 and 0.0 <= res["eer"] <= 1.0
    assert np.all(np.abs(res["scores"]) <= 1.0 + 1e-6)
    assert res["tar_at_far"][1e-2] is not None and res["tar_at_far"][1e-3] is None
    assert not math.isnan(res["accuracy_std"])
