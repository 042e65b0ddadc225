"""Benchmark rows that can decide: the paired comparison over seeds, the extended identity-disjoint
pair list, and the multi-seed benchmark with the matched-step authentic arm on fake LFW data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.test_training_utils import FAKE_SOURCE, make_fake_lfw


# ----------------------------------------------------------------------------------------------
# paired comparison
# ----------------------------------------------------------------------------------------------


def test_paired_comparison_hand_computed():
    from scipy import stats

    from training.compare import paired_comparison

    a = [0.80, 0.82, 0.81]
    b = [0.70, 0.73, 0.70]
    c = paired_comparison(a, b, "ft", "auth", "acc")
    d = np.array(a) - np.array(b)  # 0.10, 0.09, 0.11
    assert c.diffs == pytest.approx(d.tolist()) and c.mean == pytest.approx(0.10) and c.std == pytest.approx(0.01)
    t = 0.10 / (0.01 / np.sqrt(3))
    assert c.t == pytest.approx(t) and c.p == pytest.approx(2 * stats.t.sf(t, 2))
    half = stats.t.ppf(0.975, 2) * 0.01 / np.sqrt(3)
    assert c.ci95 == pytest.approx((0.10 - half, 0.10 + half))
    assert c.decided and c.wins == 3 and c.verdict.startswith("ft better")


def test_paired_comparison_gap_within_seed_spread_is_not_decided():
    from training.compare import paired_comparison

    # the same mean gap as above, but the seeds disagree: 3 points up, 2 down, 2 up
    c = paired_comparison([0.83, 0.70, 0.84], [0.80, 0.72, 0.82], "ft", "auth", "acc")
    assert not c.decided and c.verdict.startswith("within seed spread") and c.wins == 2
    assert c.ci95[0] < 0 < c.ci95[1]
    # pairing matters: arm means differ by less than each arm's seed std, yet every seed moves the same way
    base = np.array([0.60, 0.75, 0.90])
    c2 = paired_comparison(base + 0.02 + np.array([0.0, 0.001, -0.001]), base, "a", "b")
    assert c2.decided and c2.mean == pytest.approx(0.02) and np.std(base) > 0.1


def test_paired_comparison_lower_is_better_and_edge_cases():
    from training.compare import paired_comparison

    c = paired_comparison([0.10, 0.11, 0.12], [0.20, 0.22, 0.21], "a", "b", "eer", higher_is_better=False)
    assert c.decided and c.verdict.startswith("a better") and c.wins == 3
    same = paired_comparison([0.5, 0.6], [0.4, 0.5])  # identical differences: std 0, decided
    assert same.decided and same.p == 0.0
    one = paired_comparison([0.9], [0.1])
    assert not one.decided and "one seed" in one.verdict
    with pytest.raises(ValueError, match="one value per seed"):
        paired_comparison([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="not finite"):
        paired_comparison([0.1, float("nan")], [0.1, 0.2])


# ----------------------------------------------------------------------------------------------
# extended pair list
# ----------------------------------------------------------------------------------------------


def test_extended_pairs_are_identity_disjoint_complete_and_seeded(tmp_path):
    from common.people import read_pair_list
    from training.pairsets import ExtendedPairsConfig, ensure_extended_pairs, extended_pairs

    rng = np.random.default_rng(0)
    counts = {f"P{i:03d}": int(rng.integers(1, 6)) for i in range(60)}
    cfg = ExtendedPairsConfig(impostors=3000, folds=5, seed=1)
    pairs = extended_pairs(counts, cfg)
    gen = [p for p in pairs if p[4]]
    imp = [p for p in pairs if not p[4]]
    assert len(gen) == sum(c * (c - 1) // 2 for c in counts.values())  # every genuine pair
    assert len(imp) == 3000 and len({(a, i, b, j) for a, i, b, j, _, _ in imp}) == 3000  # no repeats
    fold_of: dict[str, int] = {}
    for a, i, b, j, same, f in pairs:
        assert 1 <= i <= counts[a] and 1 <= j <= counts[b] and (a == b) == same
        for n in (a, b):
            assert fold_of.setdefault(n, f) == f  # a person lives in one fold: folds are identity-disjoint
    assert sorted(set(fold_of.values())) == [1, 2, 3, 4, 5]
    assert extended_pairs(counts, cfg) == pairs  # seeded
    assert extended_pairs(counts, ExtendedPairsConfig(impostors=3000, folds=5, seed=2)) != pairs
    with pytest.raises(ValueError, match="allow .* impostor pairs"):
        extended_pairs(counts, ExtendedPairsConfig(impostors=10 ** 7, folds=5))

    msgs: list[str] = []
    path = tmp_path / "ext.txt"
    ensure_extended_pairs(path, counts, cfg, msgs.append)
    first = path.read_bytes()
    ensure_extended_pairs(path, counts, cfg, msgs.append)
    assert "reusing" in msgs[-1] and path.read_bytes() == first  # written once, reused
    ensure_extended_pairs(path, counts, ExtendedPairsConfig(impostors=2000, folds=5, seed=1), msgs.append)
    assert "other parameters" in msgs[-2] and len(read_pair_list(path, check_files=False)) == len(gen) + 2000


# ----------------------------------------------------------------------------------------------
# the benchmark, several seeds
# ----------------------------------------------------------------------------------------------


def test_benchmark_seeds_extended_pairs_matched_steps_and_comparisons(tmp_path):
    from common.config import from_dict
    from training.benchmark import BenchmarkConfig, run_benchmark

    root = make_fake_lfw(tmp_path / "lfw", n_folds=5, people_per_fold=10, pairs_per_fold=4, size=24)
    raw = {
        "name": "bench-seeds", "lfw": {"root": str(root)}, "sweep": [4],
        "synthetic": {"type": "stream", "source": FAKE_SOURCE, "num_ids": 6, "per_id": 2, "fixed_variations": True,
                      "cache": True},
        "model": {"backbone": "tiny", "embedding_size": 16, "input_size": 24, "backbone_kwargs": {"width": 8},
                  "margins": {"s": 16.0, "m": 0.2}},
        "pretrain": {"steps": 5, "lr": 0.05}, "authentic": {"steps": 3, "lr": 0.05},
        "finetune": {"steps": 2, "lr": 0.01, "head_init": "mean"},
        "trainer": {"accelerator": "cpu", "batch_size": 8, "num_workers": 0, "log_every": 50, "ckpt_every_steps": 0},
        "eval": {"batch_size": 64}, "seeds": [0, 1],
        "extended_pairs": {"impostors": 60, "folds": 4, "seed": 0},
    }
    bc = from_dict(BenchmarkConfig, raw, "")
    res = run_benchmark(bc, tmp_path / "out", printer=lambda *_: None)
    out = tmp_path / "out"
    rows = {(r["arm"], r["authentic_ids"]): r for r in res["rows"]}
    assert list(rows) == [("synthetic", 0), ("authentic", 4), ("finetune", 4), ("authentic-matched", 4)]
    assert rows[("authentic-matched", 4)]["steps"] == 5 + 2 and rows[("authentic", 4)]["steps"] == 3
    assert all(r["seeds"] == 2 for r in res["rows"])
    # every (arm, seed) is its own run; the two seeds give different weights
    seed_rows = res["seed_rows"]
    assert sorted((r["arm"], r["seed"]) for r in seed_rows) == sorted(
        (a, s) for a in ("synthetic", "authentic", "finetune", "authentic-matched") for s in (0, 1))
    s0 = (out / "runs" / "s0" / "authentic_4" / "backbone.pt").read_bytes()
    assert s0 != (out / "runs" / "s1" / "authentic_4" / "backbone.pt").read_bytes()
    # mean and seed std of each metric are those of the per-seed rows
    ft = [r for r in seed_rows if r["arm"] == "finetune"]
    agg = rows[("finetune", 4)]
    vals = [r["lfw-ext/eer"] for r in ft]
    assert agg["lfw-ext/eer"] == pytest.approx(np.mean(vals)) and agg["lfw-ext/eer:seed_std"] == pytest.approx(np.std(vals))
    # the sets: folds 4-5 LFW pairs for all, the extended list for all, all pairs for synthetic-only
    syn = [r for r in seed_rows if r["arm"] == "synthetic"][0]
    assert syn["lfw-eval/num_pairs"] == 16 and syn["lfw-all/num_pairs"] == 40 and "lfw-all/accuracy" not in ft[0]
    ext = res["extended_pairs"]
    assert ext["impostors"] == 60 and syn["lfw-ext/num_pairs"] == ext["genuine"] + 60
    lines = (out / "pairs_extended.txt").read_text().splitlines()[2:]
    names = {ln.split("\t")[k] for ln in lines for k in (0, 2)}
    assert names and all(n.startswith(("F4_", "F5_")) for n in names)  # eval people only
    # paired comparisons: fine-tune vs both authentic arms, on 3 metrics
    comps = {(c["a"], c["b"], c["metric"]) for c in res["comparisons"]}
    assert ("finetune_4", "authentic-matched_4", "lfw-ext/tar@1e-3") not in comps  # 60 impostors: not measurable
    assert {("finetune_4", "authentic-matched_4", "lfw-eval/accuracy"), ("finetune_4", "authentic_4", "lfw-ext/eer")} <= comps
    md = (out / "results.md").read_text()
    assert "| authentic-matched | 4 |" in md and "Paired comparisons" in md and "ext TAR@1e-4" in md
    assert (out / "results_per_seed.csv").is_file()
    # re-running reuses every run and its evaluation
    msgs: list[str] = []
    again = run_benchmark(bc, tmp_path / "out", printer=msgs.append)
    assert sum("reusing finished run" in m for m in msgs) == 8
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]  # noqa: E731
    assert strip(again["rows"]) == strip(res["rows"]) and again["comparisons"] == res["comparisons"]
