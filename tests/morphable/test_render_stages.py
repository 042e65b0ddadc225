"""benchmarks/render_throughput.py --stages: per-stage timers that leave the renders unchanged."""
from __future__ import annotations

import torch

from morphable import MorphableSource
from tests.bench_helpers import load_benchmark


def test_stage_timers_cover_every_stage_and_change_nothing(default_model):
    R = load_benchmark("render_throughput")
    src = MorphableSource(preset="wild", size=32, model=default_model,
                          overrides={"light": {"shadows": 1.0}})
    ids = src.sample_identities(2, seed=0)
    rows, ks = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    plain = src.render(ids, rows, ks, seed=0).images
    acc = R.time_stages(src, "cpu")
    timed = src.render(ids, rows, ks, seed=0).images
    assert torch.equal(plain, timed)
    assert set(acc) == set(R.STAGES)
    assert all(v > 0 for v in acc.values()), acc
    assert acc["_bake"] <= acc["_albedo"] and acc["_shadow"] <= acc["_light"]  # nested stages
    other = MorphableSource(preset="wild", size=32, model=default_model)
    assert "_light" not in vars(other)  # the class itself is left alone
