"""Identity mixup (SynFace; engine.mixup): the separability rule for mixed identities, determinism and
prefix stability, the morphable and learned hooks, config errors, and the id_mix_* dataset columns."""
from __future__ import annotations

import math

import pytest
import torch

from common.errors import ConfigError
from engine.interface import Identities
from engine.mixup import MixupConfig, mixed_rule_violations, mixup_slots, sample_with_mixup

pytestmark = pytest.mark.usefixtures("one_thread")


class _Toy:
    """A mixable source over fixed 2-D points: candidate c is ``points[c]``; ``mix`` maps
    (a, b, lam) to an embedding (default the convex combination)."""

    def __init__(self, points, mix=None):
        self.points = torch.tensor(points, dtype=torch.float32)
        self.mix = mix

    def identity_candidates(self, seed, start, count):
        idx = torch.arange(start, start + count) % len(self.points)
        e = self.points[idx]
        return Identities(params={"e": e.clone()}, embedding=e, seed=seed)

    def mix_identities(self, a, b, lam):
        w = lam.float().reshape(-1, 1)
        e = self.mix(a.embedding, b.embedding, w) if self.mix else w * a.embedding + (1 - w) * b.embedding
        return Identities(params={"e": e.clone()}, embedding=e, seed=a.seed)


def _seed_with_slots(fraction: float, pattern: list[bool]) -> int:
    """A seed whose first rows are mixed exactly where ``pattern`` says."""
    for s in range(2000):
        if mixup_slots(len(pattern), s, fraction).tolist() == pattern:
            return s
    raise AssertionError("no seed found")


def test_rule_rejects_mixed_candidate_close_to_a_non_parent():
    # bases A, B, C (pairwise >= 1 apart); the midpoint of A and B lies 0.5 from C: not allowed
    pts = [[0.0, 0.0], [10.0, 0.0], [5.0, 0.5], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0]]
    cfg = MixupConfig(fraction=0.5, lam=[0.5, 0.5])
    seed = _seed_with_slots(0.5, [False, False, False, True])
    t = sample_with_mixup(_Toy(pts), 4, seed, cfg, 1.0, 10, "toy")
    a, b = int(t.meta["mix_parent_a"][3]), int(t.meta["mix_parent_b"][3])
    assert {a, b} != {0, 1}  # the (A, B) midpoint would sit 0.5 from C
    assert float(t.meta["mix_lambda"][3]) == 0.5
    assert mixed_rule_violations(t, 1.0) == []
    # three bases 0.6 from the origin, 1.04 apart; every mix lands at the origin, 0.6 from the base that is no
    # parent: every try is rejected -> an error naming the knob
    tri = [[0.6, 0.0], [-0.3, 0.5196], [-0.3, -0.5196]]
    with pytest.raises(ValueError, match="identity.mixup"):
        sample_with_mixup(_Toy(tri, mix=lambda x, y, w: torch.zeros(1, 2)), 4, seed, cfg, 1.0, 10, "toy")
    # parents may be close (that is the point); the rule check sees a violating pair among non-parents
    other = ({0, 1, 2} - {a, b}).pop()
    t.embedding[3] = t.embedding[other] + 0.5
    assert mixed_rule_violations(t, 1.0)


def test_base_candidate_near_an_earlier_mixed_identity_is_rejected():
    # row 2 is mixed from A=(0,0), B=(10,0) at 0.5 -> (5,0); the next base candidate (5,0.3) is then too close
    seed = _seed_with_slots(0.5, [False, False, True, False])
    pts = [[0.0, 0.0], [10.0, 0.0], [5.0, 0.3], [50.0, 0.0]]
    t = sample_with_mixup(_Toy(pts), 4, seed, MixupConfig(fraction=0.5, lam=[0.5, 0.5]), 1.0, 10, "toy")
    assert t.report["mixup"]["rejected_base"] == 1
    assert torch.equal(t.embedding[3], torch.tensor([50.0, 0.0]))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"identity.mixup.fraction"):
        MixupConfig(fraction=1.5).validate()
    with pytest.raises(ConfigError, match=r"identity.mixup.lam"):
        MixupConfig(fraction=0.3, lam=[0.9, 0.1]).validate()
    from morphable import MorphableSource

    with pytest.raises(ConfigError, match=r"identity.mixup.lam"):
        MorphableSource(preset="wild", size=32, overrides={"identity": {"mixup": {"fraction": 0.3, "lam": [0.0, 1.0]}}})
    with pytest.raises(ConfigError, match=r"identity.mixup.nope"):
        MorphableSource(preset="wild", size=32, overrides={"identity": {"mixup": {"nope": 1}}})


@pytest.fixture(scope="module")
def mix_source(default_model):
    from morphable import MorphableSource

    return MorphableSource(preset="wild", size=32, overrides={"identity": {"mixup": {"fraction": 0.3, "lam": [0.2, 0.8]}}})


def test_morphable_mixup_table_rule_determinism_prefix(mix_source):
    n = 80
    t = mix_source.sample_identities(n, 3)
    md = mix_source.cfg.identity.min_distance
    lam, pa, pb = t.meta["mix_lambda"], t.meta["mix_parent_a"], t.meta["mix_parent_b"]
    mixed = lam < 1
    assert 10 <= int(mixed.sum()) <= 40 and t.report["mixup"]["mixed"] == int(mixed.sum())
    r = torch.arange(n)
    assert torch.equal(pa[~mixed], r[~mixed]) and torch.equal(pb[~mixed], r[~mixed])
    assert bool((pa[mixed] < r[mixed]).all() and (pb[mixed] < r[mixed]).all() and (pa[mixed] != pb[mixed]).all())
    assert bool((lam[pa[mixed]] == 1).all() and (lam[pb[mixed]] == 1).all())  # parents are base identities
    assert bool(((lam[mixed] >= 0.2) & (lam[mixed] <= 0.8)).all())
    assert mixed_rule_violations(t, md) == []
    assert t.report["achieved_min_distance"] >= md
    # a mixed identity's parameters: shape convex, hair style from the dominant parent
    i = int(torch.nonzero(mixed)[0])
    w, a, b = float(lam[i]), int(pa[i]), int(pb[i])
    torch.testing.assert_close(t.params["shape"][i], w * t.params["shape"][a] + (1 - w) * t.params["shape"][b])
    dom = a if w >= 0.5 else b
    assert float(t.meta["hair_style"][i]) == float(t.meta["hair_style"][dom])
    assert torch.equal(t.params["noise_offset"][i], t.params["noise_offset"][dom])
    # deterministic by seed, prefix-stable, and another seed gives another table
    t2 = mix_source.sample_identities(n, 3)
    p = mix_source.sample_identities(50, 3)
    for k in t.params:
        assert torch.equal(t.params[k], t2.params[k])
        assert torch.equal(t.params[k][:50], p.params[k])
    for k in t.meta:
        assert torch.equal(t.meta[k][:50], p.meta[k]), k
    assert not torch.equal(mix_source.sample_identities(20, 4).params["shape"], t.params["shape"][:20])


def test_mixup_off_keeps_config_and_identities(default_model):
    from morphable import MorphableSource

    plain = MorphableSource(preset="wild", size=32)
    assert "mixup" not in plain.config()["identity"]
    off = MorphableSource(preset="wild", size=32, overrides={"identity": {"mixup": {"fraction": 0.0}}})
    a, b = plain.sample_identities(12, 0), off.sample_identities(12, 0)
    assert "mix_lambda" not in a.meta and a.meta.keys() == b.meta.keys()
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])


def test_learned_hooks_mix_and_renormalise():
    from learned.source import LearnedSource

    src = object.__new__(LearnedSource)  # only the identity hooks: no checkpoint needed
    src.embedding_dim, src._cond_stats = 16, None
    t = sample_with_mixup(src, 40, 0, MixupConfig(fraction=0.4), 0.9, 50, "unit vectors")
    torch.testing.assert_close(t.embedding.norm(dim=1), torch.ones(40))
    assert mixed_rule_violations(t, 0.9) == []
    m = t.meta["mix_lambda"] < 1
    i = int(torch.nonzero(m)[0])
    a, b, w = int(t.meta["mix_parent_a"][i]), int(t.meta["mix_parent_b"][i]), float(t.meta["mix_lambda"][i])
    ref = w * t.embedding[a].double() + (1 - w) * t.embedding[b].double()
    torch.testing.assert_close(t.embedding[i], (ref / ref.norm()).float())
    assert torch.equal(t.params["embedding"], t.embedding)


def test_rendered_dataset_has_mix_columns(tmp_path, mix_source):
    import pyarrow.parquet as pq

    from engine.render import render_dataset

    render_dataset(8, per_id=2, source="morphable", preset="wild", size=32, out=str(tmp_path / "ds"),
                   overrides={"identity": {"mixup": {"fraction": 0.4}}}, progress=False, render_workers=0, workers=0,
                   log=lambda *a, **k: None)
    t = pq.read_table(tmp_path / "ds" / "metadata.parquet").to_pandas()
    for c in ("id_mix_parent_a", "id_mix_parent_b", "id_mix_lambda"):
        assert c in t.columns
    ids = mix_source.sample_identities(8, 0)
    got = t.drop_duplicates("identity").sort_values("identity")
    assert got["id_mix_lambda"].tolist() == pytest.approx(ids.meta["mix_lambda"].tolist())
    assert not math.isnan(float(got["id_mix_parent_a"].iloc[0]))
