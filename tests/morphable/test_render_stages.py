"""benchmarks/render_throughput.py --stages: per-stage timers that leave the renders unchanged."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from morphable import MorphableSource

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stage_timers_cover_every_stage_and_change_nothing(default_model):
    R = _load("render_throughput")
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
