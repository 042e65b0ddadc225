"""SynFace on the training side: the soft-label margin loss (vs a hand-written reference, and equal to the
hard loss at lambda 1), soft labels of an identity-mixup dataset, domain mixup (batch composition and
label weights), config errors, and a tiny training run with both."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from common.config import ConfigError
from training.config import parse_config
from training.heads import create_head, soft_margin_loss
from training.mixup import domain_mixup, soft_label_table

from tests.training.test_training_utils import make_image_folder, tiny_train_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def _ref_target(name: str, cos_t: torch.Tensor, norms: torch.Tensor, head) -> torch.Tensor:
    """Margin-adjusted target cosine, written out from the papers' formulas."""
    if name == "normface":
        return cos_t
    if name == "cosface":
        return cos_t - head.m
    if name == "arcface":
        th = math.cos(math.pi - head.m)
        theta = torch.acos(cos_t)
        return torch.where(cos_t > th, torch.cos(theta + head.m), cos_t - math.sin(math.pi - head.m) * head.m)
    # adaface with the head's (fixed, eval-mode) norm statistics
    z = ((norms - head.batch_mean) / (head.batch_std + head.eps) * head.h).clip(-1, 1)
    theta = torch.acos(cos_t.clamp(-1 + head.eps, 1 - head.eps))
    return torch.cos((theta - head.m * z).clip(head.eps, math.pi - head.eps)) - (head.m + head.m * z)


def _ref_ce(name, head, e, y) -> torch.Tensor:
    """(B,) cross-entropy with the margin at y, computed by hand."""
    cos = F.normalize(e, dim=1) @ F.normalize(head.weight.detach(), dim=1).T
    if name == "adaface":
        cos = cos.clamp(-1 + head.eps, 1 - head.eps)
    logits = cos.clone()
    r = torch.arange(len(y))
    logits[r, y] = _ref_target(name, cos[r, y], e.norm(dim=1).clip(0.001, 100), head)
    logits = logits * head.s
    return torch.logsumexp(logits, 1) - logits[r, y]


@pytest.mark.parametrize("name", ["arcface", "cosface", "adaface", "normface"])
def test_soft_margin_loss_matches_reference_and_hard_loss(name):
    torch.manual_seed(0)
    margins = {"arcface": {"m": 0.5, "s": 32.0}, "cosface": {"m": 0.35, "s": 32.0},
               "adaface": {"m": 0.4, "s": 32.0}, "normface": {"s": 32.0}}[name]
    head = create_head(name, 16, 7, **margins).eval()
    if name == "adaface":
        head.batch_mean.fill_(3.0), head.batch_std.fill_(1.0)
    e = torch.randn(9, 16) * 3
    ya, yb = torch.randint(0, 7, (9,)), torch.randint(0, 7, (9,))
    lam = torch.rand(9)
    loss, logits_a = soft_margin_loss(head, e, ya, yb, lam)
    ref = lam * _ref_ce(name, head, e, ya) + (1 - lam) * _ref_ce(name, head, e, yb)
    torch.testing.assert_close(loss, ref.mean(), rtol=1e-5, atol=1e-4)
    # each term has its own margin: not the soft-target CE of one margin-adjusted logit row
    if name != "normface":
        one = -(lam * F.log_softmax(logits_a, 1)[torch.arange(9), ya]
                + (1 - lam) * F.log_softmax(logits_a, 1)[torch.arange(9), yb]).mean()
        assert not torch.allclose(loss, one)
    # lambda 1: exactly the hard loss, row by row
    per_row, _ = soft_margin_loss(head, e, ya, yb, torch.ones(9), reduction="none")
    assert torch.equal(per_row, F.cross_entropy(head(e, ya), ya, reduction="none"))
    torch.testing.assert_close(soft_margin_loss(head, e, ya, yb, torch.ones(9))[0], F.cross_entropy(head(e, ya), ya))
    # gradients flow to both target classes' centres
    head.weight.grad = None
    soft_margin_loss(head, e, ya, yb, torch.full((9,), 0.5))[0].backward()
    assert float(head.weight.grad[yb].abs().sum()) > 0


def test_soft_label_table():
    pa = np.array([0, 1, 0, 3, 1])
    pb = np.array([0, 1, 1, 3, 3])
    lam = np.array([1.0, 1.0, 0.3, 1.0, 0.7])
    # bases: rows 0, 1, 3 -> classes 0, 1, 2; row 2 mixes rows 0 and 1, row 4 rows 1 and 3
    ya, yb, w, c = soft_label_table(pa, pb, lam)
    assert c == 3 and ya.tolist() == [0, 1, 0, 2, 1] and yb.tolist() == [0, 1, 1, 2, 2]
    assert w.tolist() == [1.0, 1.0, 0.3, 1.0, 0.7]
    with pytest.raises(ValueError, match="not a base identity"):
        soft_label_table(np.array([0, 0, 1]), np.array([0, 1, 2]), np.array([1.0, 0.5, 0.5]))


def test_domain_mixup_batch_composition_and_label_weights():
    B = 12
    x = torch.rand(B, 3, 4, 4)
    source = torch.tensor([0] * 5 + [1] * 4 + [2] * 3)
    label = torch.arange(B) + 100
    lam0 = torch.ones(B)
    lam0[1] = 0.4  # an identity-mixup row of source 0: left alone
    args = dict(a=0, b=1, lam_range=[0.2, 0.8], seed=3, step=7)
    x2, y2, yb2, lam2 = domain_mixup(x, label, label.clone(), lam0, source, p=1.0, **args)
    assert torch.equal(y2, label)
    changed = (x2 != x).flatten(1).any(1)
    assert changed[[0, 2, 3, 4]].all() and not changed[[1] + list(range(5, B))].any()
    for r in (0, 2, 3, 4):
        w = float(lam2[r])
        assert 0.2 <= w <= 0.8
        j = int(yb2[r]) - 100
        assert int(source[j]) == 1  # the partner is a sample of source b, its label the second class
        torch.testing.assert_close(x2[r], w * x[r] + (1 - w) * x[j])
    assert torch.equal(lam2[5:], torch.ones(B - 5)) and torch.equal(yb2[5:], label[5:]) and float(lam2[1]) == pytest.approx(0.4)
    # deterministic by (seed, step); p = 0 or no sample of b: nothing changes
    again = domain_mixup(x, label, label.clone(), lam0, source, p=1.0, **args)
    assert all(torch.equal(u, v) for u, v in zip(again, (x2, y2, yb2, lam2)))
    other = domain_mixup(x, label, label.clone(), lam0, source, p=1.0, **{**args, "step": 8})
    assert not torch.equal(other[3], lam2)
    assert domain_mixup(x, label, label, lam0, source, p=0.0, **args)[0] is x
    assert domain_mixup(x, label, label, lam0, torch.zeros(B, dtype=torch.long), p=1.0, **args)[0] is x
    # p = 0.5: about half of source a's hard rows over many steps
    n = sum(int((domain_mixup(x, label, label, torch.ones(B), source, a=0, b=1, lam_range=[0.5, 0.5], p=0.5,
                              seed=0, step=s)[3] < 1).sum()) for s in range(200))
    assert 0.4 < n / (200 * 5) < 0.6


def _phase_cfg(**dm):
    return {"sources": {"a": {"type": "folder", "path": "/x"}, "b": {"type": "folder", "path": "/y"}},
            "phases": [{"name": "p", "steps": 3, "weights": {"a": 1.0, "b": 1.0}, "domain_mixup": dm}]}


def test_config_errors_name_the_key():
    parse_config(_phase_cfg(sources=["a", "b"], p=0.5), resolve=False)
    cases = [
        (_phase_cfg(sources=["a", "c"]), r"phases\[0\].domain_mixup.sources\[1\]: 'c' has no positive weight"),
        (_phase_cfg(sources=["a"]), r"phases\[0\].domain_mixup.sources: need two different"),
        (_phase_cfg(sources=["a", "a"]), r"phases\[0\].domain_mixup.sources: need two different"),
        (_phase_cfg(sources=["a", "b"], p=1.5), r"phases\[0\].domain_mixup.p: must be in \[0, 1\]"),
        (_phase_cfg(sources=["a", "b"], lam=[0.9, 0.1]), r"phases\[0\].domain_mixup.lam"),
        (_phase_cfg(sources=["a", "b"], alpha=1), r"phases\[0\].domain_mixup.*alpha"),
    ]
    zero = _phase_cfg(sources=["a", "b"])
    zero["phases"][0]["weights"]["b"] = 0.0
    cases.append((zero, r"domain_mixup.sources\[1\]: 'b' has no positive weight"))
    soft = _phase_cfg(sources=["a", "b"])
    soft["sources"]["a"]["soft_labels"] = True
    cases.append((soft, r"sources.a.soft_labels: needs a rendered dataset"))
    for raw, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            parse_config(raw, resolve=False)


def _fake_mixup_dataset(root, n_ids=6, per_id=4, size=32):
    """An ImageFolder whose class names are identity numbers, and a metadata.parquet with id_mix_*
    columns: rows 4 and 5 are mixed from (0, 1) and (2, 3)."""
    import pandas as pd

    root.mkdir(parents=True)
    make_image_folder(root / "images", n_ids=n_ids, per_id=per_id, size=size)
    for i in range(n_ids):  # person_00i -> 00000i
        (root / "images" / f"person_{i:03d}").rename(root / "images" / f"{i:06d}")
    pa, pb, lam = [0, 1, 2, 3, 0, 2], [0, 1, 2, 3, 1, 3], [1, 1, 1, 1, 0.3, 0.75]
    rows = [{"identity": i, "k": k, "id_mix_parent_a": pa[i], "id_mix_parent_b": pb[i], "id_mix_lambda": lam[i]}
            for i in range(n_ids) for k in range(per_id)]
    pd.DataFrame(rows).to_parquet(root / "metadata.parquet")
    return root


def test_map_source_soft_labels(tmp_path):
    from training.config import SourceConfig
    from training.data import MapSource

    ds = _fake_mixup_dataset(tmp_path / "ds")
    hard = MapSource("s", SourceConfig(type="folder", path=str(ds / "images")), 0)
    assert hard.num_classes == 6 and not hard.soft
    cfg = SourceConfig(type="rendered", path=str(ds / "images"), soft_labels=True)
    with pytest.raises(ValueError, match="metadata.parquet"):
        MapSource("s", cfg, 0)
    cfg.path = str(ds)  # the dataset root (engine-rendered layout: images/ + metadata.parquet)
    src = MapSource("s", cfg, 0)
    assert src.num_classes == 4 and src.epoch_size == 24
    items = [(0, i) for i in range(24)]
    _, ya = src.fetch(items)
    yb, lam = src.soft_targets(items)
    by_class = {src.class_names[c]: c for c in range(4)}
    for i in range(24):
        ident = int(src.dataset.classes[int(src.dataset.labels[int(src.indices[i])])])
        if ident < 4:
            assert ya[i] == yb[i] == by_class[f"{ident:06d}"] and lam[i] == 1
        elif ident == 4:
            assert (ya[i], yb[i], lam[i]) == (by_class["000000"], by_class["000001"], pytest.approx(0.3))
        else:
            assert (ya[i], yb[i], lam[i]) == (by_class["000002"], by_class["000003"], pytest.approx(0.75))


def test_tiny_training_with_soft_labels_and_domain_mixup(tmp_path):
    from tests.training.test_training_utils import FAKE_SOURCE  # noqa: F401
    from training.data import MixedBatchStream, build_sources
    from training.curriculum import Curriculum
    from training.train import run_training

    real = make_image_folder(tmp_path / "real", n_ids=5, per_id=4, size=32)
    phases = [{"name": "main", "steps": 12, "weights": {"real": 1.0, "synth": 1.0}, "lr": 0.05,
               "domain_mixup": {"sources": ["synth", "real"], "p": 0.5, "lam": [0.3, 0.7]}}]
    raw = tiny_train_dict(real, out=tmp_path / "run", phases=phases, extra_sources={
        "synth": {"type": "stream", "source": "morphable", "num_ids": 12, "per_id": 2, "soft_labels": True,
                  "fixed_variations": True, "cache": True,
                  "source_kwargs": {"preset": "wild", "overrides": {"identity": {"mixup": {"fraction": 0.4}}}}}})
    cfg = parse_config(raw, resolve=False)
    srcs = build_sources(cfg)
    syn = srcs["synth"]
    lam_id = syn.identities.meta["mix_lambda"]
    assert syn.num_classes == int((lam_id >= 1).sum()) < 12
    curr = Curriculum(cfg, {n: s.num_classes for n, s in srcs.items()})
    batch = MixedBatchStream(srcs, curr, 0, 1, seed=0, image_size=32).make_batch(
        0, np.array([8, 8]), np.array([0, 0]))
    assert {"label_b", "lam"} <= set(batch)
    assert int(batch["label"].max()) < curr.num_classes(0) and int(batch["label_b"].max()) < curr.num_classes(0)
    assert curr.source_names == ["real", "synth"]  # config order: real rows first, classes 0..4; synth after
    assert bool((batch["lam"][8:] < 1).any()) and bool((batch["lam"][:8] == 1).all())  # synth identity-mixup images
    # the module applies the phase's domain mixup after augmentation: synth rows mixed with real ones
    from training.module import FaceRecognitionModule

    mod = FaceRecognitionModule(cfg, curr)
    n_soft = int((batch["lam"] < 1).sum())
    out = mod.prepare_batch({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}, train=True)
    assert int((out["lam"] < 1).sum()) > n_soft and bool((out["lam"][:8] == 1).all())
    mixed = (out["lam"] < 1) & (batch["lam"] == 1)
    assert bool((out["label_b"][mixed] < 5).all())  # synth rows mixed with real samples: second class is real
    m = run_training(cfg, printer=lambda *a, **k: None)
    assert m["complete"] and m["global_step"] == 12
    tr = m["phases"][0]["train"]
    assert math.isfinite(tr["loss_last"])


def test_benchmark_variant_pretrained_and_finetune_options(tmp_path):
    """A variant can fine-tune another arm's backbone (``pretrained``) with its own fine-tune phase keys
    (weights mixing synthetic in, ``domain_mixup``); no pretraining and no synthetic row of its own."""
    from common.config import from_dict
    from training.benchmark import BenchmarkConfig, run_benchmark

    from tests.training.test_training_utils import FAKE_SOURCE, make_fake_lfw

    root = make_fake_lfw(tmp_path / "lfw", n_folds=5, people_per_fold=6, pairs_per_fold=4, size=24)
    fake = {"type": "stream", "source": FAKE_SOURCE, "num_ids": 6, "per_id": 2, "fixed_variations": True, "cache": True}
    raw = {
        "name": "bench-synface-test", "lfw": {"root": str(root)}, "sweep": [3], "arms": ["synthetic", "finetune"],
        "synthetic": fake,
        "variants": {"dmix": {"pretrained": "main", "sources": {"synthetic": fake},
                              "finetune": {"weights": {"synthetic": 0.5, "authentic": 0.5},
                                           "domain_mixup": {"sources": ["synthetic", "authentic"], "p": 1.0}}}},
        "compare": [["finetune:dmix_3", "finetune_3"]],
        "model": {"backbone": "tiny", "embedding_size": 16, "input_size": 24, "backbone_kwargs": {"width": 8},
                  "margins": {"s": 16.0, "m": 0.2}},
        "pretrain": {"steps": 4, "lr": 0.05}, "authentic": {"steps": 3, "lr": 0.05},
        "finetune": {"steps": 3, "lr": 0.01},
        "trainer": {"accelerator": "cpu", "batch_size": 8, "num_workers": 0, "log_every": 1, "ckpt_every_steps": 0},
        "eval": {"batch_size": 64}, "seeds": [0, 1], "matched_steps": False, "extended_pairs": None, "eval_all_pairs": False,
    }
    res = run_benchmark(from_dict(BenchmarkConfig, raw, ""), tmp_path / "out", printer=lambda *a, **k: None)
    names = [(r["arm"], r["authentic_ids"]) for r in res["rows"]]
    assert names == [("synthetic", 0), ("finetune", 3), ("finetune:dmix", 3)]
    run = tmp_path / "out" / "runs" / "s0" / "finetune_dmix_3"
    m = json.loads((run / "metrics.json").read_text())
    assert m["model"]["init_backbone"].endswith(os.path.join("runs", "s0", "synthetic", "backbone.pt"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["phases"][0]["domain_mixup"]["sources"] == ["synthetic", "authentic"]
    assert set(cfg["phases"][0]["weights"]) == {"synthetic", "authentic"}
    assert {(c["a"], c["b"]) for c in res["comparisons"]} == {("finetune:dmix_3", "finetune_3")}
    bad = {**raw, "variants": {"x": {**raw["variants"]["dmix"], "pretrained": "nope"}}}
    with pytest.raises(ConfigError, match=r"variants.x.pretrained"):
        from_dict(BenchmarkConfig, bad, "")
