"""Batched, counter-based sampling of the morphable source (issue 18, sampling version 3): every
per-image factor, background and noise field is a pure function of (seed, identity, variation) drawn
for the whole batch at once, with the distributions the config names."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from morphable import MorphableSource
from morphable import rng
from morphable.background import compose_procedural, draw_procedural
from morphable.degrade import lowres
from morphable.source import SAMPLING_VERSION
from morphable.variation import Bernoulli, Normal, Uniform


def test_keys_and_draws_are_per_image_and_batch_independent():
    ids, var = torch.arange(50).repeat_interleave(4), torch.arange(4).repeat(50)
    k = rng.image_keys(7, "variation", ids, var)
    assert k.unique().numel() == 200  # every image its own stream
    assert not torch.equal(k, rng.image_keys(8, "variation", ids, var))  # the seed matters
    assert not torch.equal(k, rng.image_keys(7, "other", ids, var))  # and the stream name
    full, sub = rng.Draws(k), rng.Draws(k[13:29])
    a = (full.uniform(5), full.normal(3, 3), full.integers(2, 6))
    b = (sub.uniform(5), sub.normal(3, 3), sub.integers(2, 6))
    for x, y in zip(a, b):
        assert torch.equal(x[13:29], y)
    assert int(a[2].min()) >= 2 and int(a[2].max()) <= 6
    field = rng.normal_field(k, (3, 7, 5))
    assert field.shape == (200, 3, 7, 5) and torch.equal(field[13:29], rng.normal_field(k[13:29], (3, 7, 5)))


def test_draws_have_the_right_distributions():
    r = rng.Draws(rng.image_keys(0, "stats", torch.arange(20000), torch.zeros(20000, dtype=torch.long)))
    u, z = r.uniform(), r.normal(2)
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.003
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    assert abs(float(torch.corrcoef(z.T)[0, 1])) < 0.03  # the two Box-Muller halves are independent
    c = r.categorical(torch.tensor([3.0, 1.0, 0.0, 4.0]))
    freq = torch.bincount(c, minlength=4).float() / len(c)
    assert torch.allclose(freq, torch.tensor([0.375, 0.125, 0.0, 0.5]), atol=0.015)
    n = Normal(0, 35, -80, 80).draw(r)
    assert float(n.min()) >= -80 and float(n.max()) <= 80 and abs(float(n.std()) - 33.5) < 1.5
    assert float(Uniform(2, 5).draw(r).min()) >= 2 and abs(float(Bernoulli(0.3).draw(r).mean()) - 0.3) < 0.015


def test_factors_are_a_pure_function_of_the_image(default_model):
    src = MorphableSource(preset="wild", size=32, model=default_model)
    rows, ks = torch.arange(40).repeat_interleave(3), torch.arange(3).repeat(40)
    fac, keys = src._sample_factors(rows, ks, seed=5)
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:37]
    sub, _ = src._sample_factors(rows[perm], ks[perm], seed=5)
    for k, v in fac.items():
        assert v.dtype == torch.float32 and v.shape[0] == 120
        assert torch.equal(v[perm], sub[k]), k  # bit-exact whatever the batch
    other, _ = src._sample_factors(rows, ks, seed=6)
    assert not torch.equal(fac["yaw"], other["yaw"])
    # the configured probabilities and ranges hold over the batch
    assert float(fac["yaw"].abs().max()) <= 80 and (fac["glasses"] <= (fac["yaw"].abs() <= 50).float()).all()
    assert set(fac["jpeg"].unique().tolist()) <= {0.0, *map(float, range(30, 91))}
    on = fac["expression"].abs().sum(1) > 0
    assert 0.4 < float(on.float().mean()) < 0.95  # wild: prob 0.7
    assert ((fac["expression_preset"] >= 0) <= on).all()


def test_pair_units_moves_both_eyes_and_both_sides():
    from morphable.source import pair_units

    e = torch.tensor([[0.8, 0.0, 0.0, 0.5, 0.9, 0.3, 0.0, 0.0]])
    conj = torch.tensor([[0, 1]])  # an eye turning in: the other turns out with it
    bil = torch.tensor([[2, 3], [4, 5], [6, 7]])
    out = pair_units(e, conj, bil, torch.tensor([[0.7, 0.6, 0.9]]))
    assert out[0, :2].tolist() == pytest.approx([0.8, 0.8])
    assert out[0, 2:4].tolist() == pytest.approx([0.35, 0.5])  # the weaker side follows at asym x the stronger
    assert out[0, 4:6].tolist() == pytest.approx([0.9, 0.54])
    assert out[0, 6:].tolist() == [0.0, 0.0]  # not drawn: stays at rest


def test_free_expression_mixes_are_bilateral_with_conjugate_gaze(default_model):
    src = MorphableSource(preset="wild", size=32, model=default_model,
                          overrides={"expression": {"prob": 1.0, "presets": False, "max_units": 6}})
    L = default_model.expression_labels
    conj = [(L.index("eyeLookInLeft"), L.index("eyeLookOutRight")), (L.index("eyeLookUpLeft"), L.index("eyeLookUpRight"))]
    assert all(list(p) in src._conjugate.tolist() for p in conj)
    bil = src._bilateral
    names = {L[i] for i in bil.reshape(-1).tolist()}
    assert "mouthSmileRight" in names and "mouthLeft" not in names and "jawLeft" not in names
    assert not any(n.startswith("eyeLook") for n in names)
    fac, _ = src._sample_factors(torch.arange(300), torch.zeros(300, dtype=torch.long), seed=2)
    e = fac["expression"]
    c = src._conjugate
    assert torch.equal(e[:, c[:, 0]], e[:, c[:, 1]])
    a, b = e[:, bil[:, 0]], e[:, bil[:, 1]]
    hi, lo = torch.maximum(a, b), torch.minimum(a, b)
    drawn = hi > 0
    assert int(drawn.sum()) > 100
    ratio = lo[drawn] / hi[drawn]
    assert float(ratio.min()) >= 0.6 - 1e-6 and float(ratio.max()) <= 1.0
    # one side only is still possible for the directional units
    d = e[:, [L.index("mouthLeft"), L.index("mouthRight")]]
    assert bool(((d[:, 0] > 0) & (d[:, 1] == 0)).any())


def test_sampling_stream_version_is_recorded(default_model):
    src = MorphableSource(preset="frontal", size=32, model=default_model)
    assert SAMPLING_VERSION == 9 and src.config()["sampling_version"] == 9


def test_procedural_backgrounds_batched_per_image(default_model):
    keys = rng.image_keys(1, "background", torch.arange(12), torch.zeros(12, dtype=torch.long))
    d = draw_procedural(rng.Draws(keys))
    assert d["grid3"].shape == (12, 3, 41, 41) and d["on"].shape == (12, 3)
    full = compose_procedural(d, 40, blur=torch.linspace(0, 2, 12))
    part = compose_procedural(draw_procedural(rng.Draws(keys[4:9])), 40, blur=torch.linspace(0, 2, 12)[4:9])
    assert full.shape == (12, 3, 40, 40) and torch.allclose(full[4:9], part, atol=1e-6)
    assert float(full.std(dim=(1, 2, 3)).min()) > 0  # not flat


def test_lowres_matches_the_per_image_resampling():
    g = torch.Generator().manual_seed(0)
    x, s = torch.rand(6, 3, 40, 56, generator=g), torch.tensor([0.35, 0.5, 0.5, 0.8, 0.61, 0.1])
    y = lowres(x, s)
    for i in range(6):
        h, w = max(4, round(40 * float(s[i]))), max(4, round(56 * float(s[i])))
        small = F.interpolate(x[i : i + 1], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        ref = F.interpolate(small, size=(40, 56), mode="bilinear", align_corners=False)
        torch.testing.assert_close(y[i : i + 1], ref, atol=2e-5, rtol=0)
    assert lowres(x[:0], s[:0]).shape == (0, 3, 40, 56)


@pytest.mark.parametrize("preset", ["frontal", "wild"])
def test_render_subset_matches_batch(default_model, preset):
    # JPEG off: its uint8 rounding turns a float difference far under one step into a whole step
    # now and then (the engine renders an image in the same batch on every run and resume)
    src = MorphableSource(preset=preset, size=32, model=default_model,
                          overrides={"degradation": {"noise_prob": 1.0, "lowres_prob": 0.5, "jpeg_prob": 0.0}})
    ids = src.sample_identities(3, seed=0)
    rows, ks = torch.arange(3).repeat_interleave(3), torch.arange(3).repeat(3)
    a = src.render(ids, rows, ks, seed=2)
    b = src.render(ids, rows[2:7], ks[2:7], seed=2)
    # the image up to floating-point batching effects of the shading (well under one uint8 step)
    assert math.isclose(float((a.images[2:7] - b.images).abs().max()), 0.0, abs_tol=1 / 1024)
    for k in a.factors:
        assert torch.equal(a.factors[k][2:7], b.factors[k]), k
