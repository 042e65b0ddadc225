"""learned.evaluate: metric functions on hand-made embeddings, and the report end to end (CPU, tiny)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engine.formats import encode_jpeg, to_uint8_hwc, write_rec_dataset
from engine.interface import Identities
from learned.encoder import FREncoder
from learned.evaluate import (
    DEFINITIONS,
    EvaluateError,
    consistency,
    embed_dataset,
    equal_error_rate,
    evaluate,
    frechet_distance,
    identity_centres,
    identity_preservation,
    main,
    memorisation,
    nearest_neighbours,
    uniqueness,
    verification_scores,
)
from tests.fake_source import FakeSource

TINY = {"arch": "tiny", "embedding_size": 32, "input_size": 56, "random_init_seed": 0}
TINY_JSON = json.dumps(TINY)

pytestmark = pytest.mark.usefixtures("one_thread")


def pixel_encoder(size: int = 16, dim: int = 64) -> FREncoder:
    """A deterministic 'FR encoder' for tests: a fixed random projection of the centred pixels.

    Unlike an untrained CNN (whose embeddings of any two images have cosine ~0.999), it keeps images
    apart in proportion to how different they look, so the metrics have something to measure.
    """
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(3 * size * size, dim, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(dim, 3 * size * size, generator=g) / math.sqrt(3 * size * size))

    class Centre(nn.Module):
        def forward(self, x):
            x = x.flatten(1)
            return x - x.mean(1, keepdim=True)

    return FREncoder(nn.Sequential(Centre(), lin), (size, size), dim, {"test": "pixel projection"})


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.double(), dim=1)


# --------------------------------------------------------------------------------------------------
# metric functions on constructed embeddings
# --------------------------------------------------------------------------------------------------


def test_eer_zero_on_perfectly_separated_embeddings():
    # 3 identities on orthogonal axes, 4 images each with small noise: genuine ~1, impostor ~0
    g = torch.Generator().manual_seed(1)
    base = torch.eye(8)[:3]
    labels = torch.arange(3).repeat_interleave(4)
    emb = unit(base[labels] + 0.05 * torch.randn(12, 8, generator=g))
    scores, issame = verification_scores(emb, labels)
    assert issame.sum() == 3 * 6 and (~issame).sum() == 12 * 11 // 2 - 18  # every pair, exactly once
    eer, thr = equal_error_rate(scores, issame)
    assert eer == 0.0
    assert scores[~issame].max() < thr <= scores[issame].min()


def test_eer_on_hand_computed_scores():
    # accept if score >= t. At t = 0.5: FAR = 1/3 (0.5), FRR = 1/3 (0.4): the EER is 1/3 at 0.5
    scores = np.array([0.9, 0.8, 0.4, 0.5, 0.3, 0.2])
    issame = np.array([True, True, True, False, False, False])
    eer, thr = equal_error_rate(scores, issame)
    assert eer == pytest.approx(1 / 3) and thr == pytest.approx(0.5)
    # inverted: every genuine score below every impostor score -> EER 1
    assert equal_error_rate(np.array([0.1, 0.2, 0.8, 0.9]), np.array([True, True, False, False]))[0] == 1.0
    with pytest.raises(EvaluateError, match="both genuine and impostor"):
        equal_error_rate(scores[:3], issame[:3])


def test_pair_sampling_beyond_max_pairs():
    # identical images within an identity, orthogonal identities: every genuine score 1, impostor 0
    labels = torch.arange(6).repeat_interleave(10)
    emb = torch.eye(16)[labels]
    scores, issame = verification_scores(emb, labels, max_pairs=50, seed=3)
    assert issame.sum() == 50 and (~issame).sum() == 50
    assert np.allclose(scores[issame], 1.0) and np.allclose(scores[~issame], 0.0)
    again, _ = verification_scores(emb, labels, max_pairs=50, seed=3)
    assert np.array_equal(scores, again)  # seeded
    with pytest.raises(EvaluateError, match="2 or more images"):
        verification_scores(torch.eye(4), torch.arange(4))
    with pytest.raises(EvaluateError, match="at least 2 identities"):
        verification_scores(torch.eye(4), torch.zeros(4))


def test_uniqueness_counts_duplicates_greedily():
    e = torch.eye(4, dtype=torch.float64)
    # identities 0, 1, 2 distinct; identity 3 a near copy of 0
    centres = torch.stack([e[0], e[1], e[2], e[0] + 0.1 * e[3]])
    u = uniqueness(centres, threshold=0.3)
    assert u["unique_identities"] == 3 and u["uniqueness"] == pytest.approx(0.75)
    assert u["duplicate_pairs"] == 1 and u["num_identities"] == 4
    assert uniqueness(torch.eye(5))["uniqueness"] == 1.0
    assert uniqueness(torch.ones(6, 3))["uniqueness"] == pytest.approx(1 / 6)  # all the same person
    # a chain A ~ B ~ C with A !~ C: greedy keeps A, drops B (like A), keeps C (only like the dropped B)
    a = torch.tensor([1.0, 0.0])
    ang = math.radians(60)
    chain = torch.stack([a, torch.tensor([math.cos(ang), math.sin(ang)]),
                         torch.tensor([math.cos(2 * ang), math.sin(2 * ang)])])
    u = uniqueness(chain, threshold=0.3)  # cos(A,B) = cos(B,C) = 0.5 > 0.3, cos(A,C) = -0.5
    assert u["unique_identities"] == 2 and u["duplicate_pairs"] == 2


def test_consistency_identical_images_and_leave_one_out():
    labels = torch.arange(5).repeat_interleave(3)
    same = torch.eye(8)[labels]  # identical images within each identity
    c = consistency(same, labels)
    assert c["consistency"] == 1.0 and c["mean_similarity"] == pytest.approx(1.0)
    assert c["label_agreement"] == 1.0 and c["scored_images"] == 15
    # random unrelated images labelled as pairs: the leave-one-out centre is the *other* image, so the
    # cosine is ~0 (a centre including the image itself would give ~0.7 and call them consistent)
    g = torch.Generator().manual_seed(0)
    labels2 = torch.arange(20).repeat_interleave(2)
    rnd = torch.randn(40, 512, generator=g)
    c2 = consistency(rnd, labels2)
    assert c2["consistency"] == 0.0 and abs(c2["mean_similarity"]) < 0.1
    # single-image identities are not scored
    labels3 = torch.tensor([0, 0, 1])
    c3 = consistency(torch.eye(3)[[0, 0, 2]], labels3)
    assert c3["scored_images"] == 2 and c3["unscored_images"] == 1 and c3["consistency"] == 1.0
    with pytest.raises(EvaluateError, match="2 or more images"):
        consistency(torch.eye(3), torch.arange(3))


def test_identity_centres():
    labels = torch.tensor([0, 0, 1])
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    centres, sums, counts = identity_centres(emb, labels)
    assert torch.allclose(centres, torch.tensor([[1, 1], [1, 0]], dtype=torch.float64) / torch.tensor([[2 ** 0.5], [1]]))
    assert counts.tolist() == [2, 1]
    with pytest.raises(EvaluateError, match="missing"):
        identity_centres(emb, torch.tensor([0, 0, 2]))


def test_identity_preservation():
    g = torch.Generator().manual_seed(0)
    cond = unit(torch.randn(4, 16, generator=g))
    labels = torch.arange(4).repeat_interleave(2)
    res = identity_preservation(cond[labels], labels, cond)
    assert res["mean"] == pytest.approx(1.0) and res["std"] == pytest.approx(0.0, abs=1e-12)
    assert identity_preservation(-cond[labels], labels, cond)["mean"] == pytest.approx(-1.0)
    with pytest.raises(EvaluateError, match="dimension"):
        identity_preservation(cond[labels], labels, torch.randn(4, 8))


def test_memorised_copy_is_detected():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(50, 64, generator=g)
    samples = torch.randn(10, 64, generator=g)
    samples[7] = train[23]  # an exact copy of a training image
    mem = memorisation(samples, train, threshold=0.7)
    assert mem["top"][0] == 7 and int(mem["nearest"][7]) == 23
    assert float(mem["max_similarity"][7]) == pytest.approx(1.0, abs=1e-6)
    assert mem["num_above"] == 1 and mem["fraction_above"] == pytest.approx(0.1)
    others = torch.cat([mem["max_similarity"][:7], mem["max_similarity"][8:]])
    assert float(others.max()) < 0.7
    sim, idx = nearest_neighbours(samples, train, chunk=3)  # chunking does not change the answer
    assert torch.equal(idx, mem["nearest"]) and torch.allclose(sim, mem["max_similarity"])


def test_frechet_distance():
    from scipy.linalg import sqrtm

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g).double()
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    # a pure shift of the mean by delta adds exactly |delta|^2
    prev = 0.0
    for s in (0.1, 0.5, 1.0, 2.0):
        fd = frechet_distance(x, x + s)
        assert fd == pytest.approx(6 * s * s, rel=1e-6)
        assert fd > prev
        prev = fd
    # agrees with the textbook scipy.linalg.sqrtm formula on a well-conditioned case
    y = (torch.randn(300, 6, generator=g) * torch.linspace(0.5, 2, 6) + 0.3).double()
    a, b = x.numpy(), y.numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    assert frechet_distance(x, y) == pytest.approx(float(ref), rel=1e-8)
    # fewer samples than dimensions (singular covariances): finite, non-negative, 0 against itself
    z = torch.randn(5, 64, generator=g)
    assert frechet_distance(z, z) == pytest.approx(0.0, abs=1e-9)
    assert math.isfinite(frechet_distance(z, torch.randn(7, 64, generator=g))) and frechet_distance(z, z + 1) > 60
    with pytest.raises(EvaluateError, match="at least 2"):
        frechet_distance(z[:1], z)


# --------------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------------


def _fake_images(ids: int, per_id: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    src = FakeSource(preset="frontal", size=size)
    table = src.sample_identities(ids, seed)
    return src.render(table, torch.arange(ids).repeat_interleave(per_id), torch.arange(per_id).repeat(ids), seed).images


def write_folder(root: Path, images: torch.Tensor, per_id: int, names=None, ext: str = ".png") -> Path:
    arr = to_uint8_hwc(images)
    for i, im in enumerate(arr):
        ident, k = divmod(i, per_id)
        d = root / (names[ident] if names else f"id{ident:03d}")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{k:03d}{ext}")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    gen = write_folder(base / "gen", _fake_images(4, 3, seed=0), 3)
    train = write_folder(base / "train", _fake_images(5, 2, seed=7), 2)
    # the memorised sample: an exact copy of generated image id002/001 among the training images
    shutil.copy(gen / "id002" / "001.png", train / "id004" / "099.png")
    real = write_folder(base / "real", _fake_images(6, 2, seed=11), 2, ext=".jpg")
    return {"gen": gen, "train": train, "real": real, "base": base}


def _png_ok(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return im.size


def test_report_on_dataset_folder(folders, tmp_path):
    out = tmp_path / "report"
    rep = evaluate(pixel_encoder(), dataset=folders["gen"], train=folders["train"], real=folders["real"],
                   out=out, batch_size=5)
    assert rep["num_images"] == 12 and rep["num_identities"] == 4
    v = rep["verification"]
    assert 0.0 <= v["eer"] <= 1.0 and v["num_genuine"] == 4 * 3 and v["num_impostor"] == 66 - 12
    assert -1.0 <= v["impostor_mean"] < v["genuine_mean"] <= 1.0  # fake identities differ in colour/stripes
    for key in ("uniqueness", "consistency"):
        assert 0.0 < rep[key][key] <= 1.0
    assert rep["identity_preservation"]["applicable"] is False
    assert "no identity conditions" in rep["identity_preservation"]["reason"]
    mem = rep["memorisation"]
    top = mem["most_similar"][0]
    assert top["sample"] == "id002/001.png" and top["nearest_training_image"] == "id004/099.png"
    assert top["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert mem["num_above"] >= 1 and 0.0 < mem["fraction_above"] <= 1.0
    assert rep["frechet"]["applicable"] and rep["frechet"]["distance"] > 0
    assert rep["frechet"]["note"]  # 12 images < 64 dimensions: flagged
    assert rep["separability"]["n"] == 4
    for name in ("similarity_histograms", "consistency_histogram", "memorisation_histogram",
                 "memorisation_pairs", "contact_sheet"):
        _png_ok(out / rep["files"][name])
    assert _png_ok(out / "contact_sheet.png") == (2 + 3 * 34, 2 + 4 * 34)  # 4 identities x 3 variations
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["uniqueness"] == rep["uniqueness"]
    md = (out / "report.md").read_text()
    for text in (DEFINITIONS["uniqueness"], DEFINITIONS["consistency"], "contact_sheet.png", "Not applicable"):
        assert text in md


def test_same_folder_is_embedded_once_and_rec_datasets_read(folders, tmp_path):
    enc = pixel_encoder()
    calls = {"n": 0}
    orig = enc.embed

    def counting(x, batch_size=256):
        calls["n"] += len(x)
        return orig(x, batch_size)

    enc.embed = counting
    evaluate(enc, dataset=folders["gen"], train=folders["gen"], real=folders["gen"])
    assert calls["n"] == 12  # one pass over the 12 images serves all three roles
    # the same images as an insightface RecordIO dataset give the same embeddings (up to JPEG)
    imgs = _fake_images(4, 3, seed=0)
    rec = tmp_path / "rec"
    write_rec_dataset(rec, [encode_jpeg(a) for a in to_uint8_hwc(imgs)], [i // 3 for i in range(12)], 32, 32)
    a = embed_dataset(folders["gen"], pixel_encoder())
    b = embed_dataset(rec, pixel_encoder())
    assert a.labels.tolist() == b.labels.tolist() and b.describe["format"] == "rec"
    assert float((a.embeddings * b.embeddings).sum(1).min()) > 0.98


class CondFake(FakeSource):
    """FakeSource whose identity condition lives in the encoder's space: the encoder's embedding of the
    identity's variation-0 image (the graphics-plus-learned path of issue 6, in miniature)."""

    def __init__(self, encoder, **kw):
        super().__init__(**kw)
        self.encoder = encoder

    def config(self):
        return {**super().config(), "encoder": self.encoder.spec}  # as the learned sources name theirs

    def sample_identities(self, n: int, seed: int) -> Identities:
        ids = super().sample_identities(n, seed)
        front = self.render(ids, torch.arange(n), torch.zeros(n, dtype=torch.long), seed).images
        ids.embedding = self.encoder.embed(front * 2 - 1)
        return ids


def test_identity_preservation_for_a_source_in_encoder_space(tmp_path):
    enc = pixel_encoder()
    rep = evaluate(enc, source=CondFake(enc, preset="wild", size=32), ids=5, per_id=3, seed=2, out=tmp_path)
    ip = rep["identity_preservation"]
    assert ip["applicable"] is True and ip["same_encoder"] is True
    assert ip["quantiles"]["q100"] == pytest.approx(1.0, abs=1e-5)  # variation 0 is the condition image itself
    assert -1.0 <= ip["quantiles"]["q00"] <= ip["mean"] <= 1.0
    _png_ok(tmp_path / rep["files"]["identity_preservation_histogram"])
    assert rep["input"]["kind"] == "source" and rep["num_images"] == 15


def test_same_encoder_comparison(tmp_path):
    from learned.evaluate import _same_encoder

    spec = {"arch": "tiny", "embedding_size": 32, "input_size": 56, "random_init_seed": 0}
    assert _same_encoder(None, spec) is None
    assert _same_encoder({"arch": "tiny", "random_init_seed": 0, "input_size": [56, 56]}, spec) is True
    assert _same_encoder({"arch": "tiny", "random_init_seed": 1}, spec) is False
    pth = tmp_path / "r50.pth"
    pth.write_bytes(b"")
    resolved = {"arch": "iresnet50", "checkpoint": str(pth), "embedding_size": 512, "input_size": 112}
    assert _same_encoder(f"iresnet50:{pth}", resolved) is True
    run = tmp_path / "run"
    run.mkdir()
    (run / "backbone.pt").write_bytes(b"")
    assert _same_encoder(str(run), {"path": str(run / "backbone.pt")}) is True  # a run dir is its backbone.pt
    assert _same_encoder(str(run), resolved) is False


def run_cli(args, capsys):
    rc = main(["-q", *args])
    return rc, capsys.readouterr()


def test_cli_dataset_end_to_end(folders, tmp_path, capsys):
    out = tmp_path / "cli"
    rc, cap = run_cli(["--encoder", TINY_JSON, "--allow-random-encoder", "--dataset", str(folders["gen"]),
                       "--train", str(folders["train"]), "--out", str(out), "--device", "cpu"], capsys)
    assert rc == 0, cap.err
    assert "EER" in cap.out and "report.md" in cap.out
    rep = json.loads((out / "report.json").read_text())
    assert rep["encoder"]["spec"]["random_init_seed"] == 0 and rep["num_images"] == 12
    assert rep["memorisation"]["most_similar"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_cli_morphable_source(tmp_path, capsys):
    out = tmp_path / "morph"
    rc, cap = run_cli(["--encoder", TINY_JSON, "--allow-random-encoder", "--source", "morphable", "--ids", "4",
                       "--per-id", "3", "--size", "48", "--seed", "1", "--out", str(out), "--device", "cpu"], capsys)
    assert rc == 0, cap.err
    rep = json.loads((out / "report.json").read_text())
    assert rep["input"]["source"] == "morphable" and rep["num_images"] == 12
    assert rep["identity_preservation"]["applicable"] is False
    assert "dimension" in rep["identity_preservation"]["reason"]
    assert _png_ok(out / "contact_sheet.png") == (2 + 3 * 50, 2 + 4 * 50)
    assert rep["verification"]["num_genuine"] == 12


@pytest.mark.parametrize("args, message", [
    (["--dataset", "{missing}"], "dataset not found"),
    (["--dataset", "{empty}"], "no images"),
    (["--dataset", "{one}"], "need at least 2"),
    (["--dataset", "{gen}", "--real", "{missing}"], "real folder not found"),
    (["--dataset", "{gen}", "--max-images", "1"], "max_images must be an integer >= 2"),
    (["--dataset", "{gen}", "--batch-size", "0"], "batch_size must be"),
    (["--dataset", "{gen}", "--consistency-threshold", "2"], "consistency threshold must be a cosine"),
    (["--dataset", "{gen}", "--source", "morphable"], "exactly one of"),
    (["--dataset", "{gen}", "--ids", "3"], "go with --source"),
    (["--source", "morphable", "--ids", "3"], "needs --ids N and --per-id K"),
    (["--source", "morphable", "--ids", "1", "--per-id", "3"], "ids must be an integer >= 2"),
    (["--source", "morphable", "--ids", "3", "--per-id", "1"], "per_id must be an integer >= 2"),
    (["--source", "no-such-source", "--ids", "3", "--per-id", "2"], "unknown source"),
    (["--source", "morphable", "--ids", "3", "--per-id", "2", "--preset", "nope"], "cannot create source"),
    (["--source", "morphable", "--ids", "3", "--per-id", "2", "--checkpoint", "{missing}"], "checkpoint not found"),
    (["--source", "morphable", "--ids", "3", "--per-id", "2", "--checkpoint", "{file}"], "takes no --checkpoint"),
])
def test_cli_bad_input(folders, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "one", _fake_images(1, 2), 2)
    (tmp_path / "ck.pt").write_bytes(b"x")
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "one": tmp_path / "one",
             "gen": folders["gen"], "file": tmp_path / "ck.pt"}
    args = [a.format(**paths) for a in args]
    rc, cap = run_cli(["--encoder", TINY_JSON, "--allow-random-encoder", "--device", "cpu",
                       "--out", str(tmp_path / "o"), *args], capsys)
    assert rc == 2 and cap.err.startswith("error: ") and message in cap.err, cap.err


def test_cli_bad_encoder(folders, tmp_path, capsys):
    base = ["--dataset", str(folders["gen"]), "--out", str(tmp_path / "o"), "--device", "cpu"]
    rc, cap = run_cli(["--encoder", str(tmp_path / "no_run_dir"), *base], capsys)
    assert rc == 2 and "bad encoder spec" in cap.err and "not found" in cap.err
    rc, cap = run_cli(["--encoder", TINY_JSON, *base], capsys)  # random weights need the tests-only flag
    assert rc == 2 and "allow_random" in cap.err
    rc, cap = run_cli(["--encoder", "{not json", *base], capsys)
    assert rc == 2 and "not valid JSON" in cap.err
    rc, cap = run_cli(["--encoder", "nosucharch:" + str(tmp_path / "x.pth"), *base], capsys)
    assert rc == 2 and "bad encoder spec" in cap.err


def test_real_lfw_dev_frechet(lfw_dev, folders):
    rep = evaluate(pixel_encoder(), dataset=folders["gen"], real=lfw_dev, max_images=80)
    fd = rep["frechet"]
    assert fd["applicable"] and fd["num_real"] == 80 and math.isfinite(fd["distance"]) and fd["distance"] > 0


def test_memorisation_is_calibrated_against_real_other_person_neighbours():
    """With a weak encoder every face is at cosine ~0.9+: the fixed threshold flags everything, the
    calibrated fraction flags only samples closer to a training image than real faces come to another
    person's image."""
    from learned.evaluate import memorisation, real_reference

    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.ones(16), dim=0)
    def weak(n):  # embeddings crowded around one direction, as a weak encoder gives
        return torch.nn.functional.normalize(base + 0.15 * torch.randn(n, 16, generator=g), dim=1)
    train = weak(200)
    labels = torch.arange(200) // 2  # 100 people, 2 images each
    ref = real_reference(train, labels)
    assert ref.numel() == 200 and float(ref.min()) > 0.5
    new = weak(100)
    copies = train[:10] + 1e-4 * torch.randn(10, 16, generator=g)
    m = memorisation(torch.cat([new, copies]), train, threshold=0.7, training_labels=labels)
    assert m["fraction_above"] > 0.9  # the fixed threshold cannot tell
    assert m["real_other_q50"] < m["real_other_q99"] < 1.0
    # the 10 copies are above the calibrated line, most new faces are not
    assert 10 / 110 <= m["fraction_above_real_q99"] < 0.2
