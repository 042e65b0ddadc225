"""morphable.mean_shades: the fitted light and dark patches over the features, their fit and their place in the render."""
from __future__ import annotations

import math

import pytest
import torch

from morphable import MorphableSource
from morphable import mean_shades as MS
from morphable.mean_shades import Shade, fit_shades, rest_to_template, shade_log_gain, template_rest_grid

_STILL = {"pose": {k: {"lo": 0, "hi": 0} for k in ("yaw", "pitch", "roll")}}


def test_a_shade_is_a_mirrored_gaussian_of_log_gain():
    pair = Shade(centre=(0.03, -0.01), sd=(0.005, 0.004), gain=(0.2, 0.1, -0.3))
    mid = Shade(centre=(0.0, -0.05), sd=(0.01, 0.003), gain=(-0.2, -0.2, -0.2))
    x = torch.tensor([0.03, -0.03, 0.035, 0.0, 0.0, 0.08])
    y = torch.tensor([-0.01, -0.01, -0.01, -0.05, -0.053, 0.05])
    g = shade_log_gain(x.abs(), y, [pair, mid])
    assert g.shape == (6, 3)
    torch.testing.assert_close(g[0], torch.tensor([0.2, 0.1, -0.3]), atol=1e-4, rtol=0)  # the centre: the gain
    torch.testing.assert_close(g[1], g[0])  # its mirror image
    torch.testing.assert_close(g[2], g[0] * math.exp(-1))  # one sd (as the gaussian is written) away
    torch.testing.assert_close(g[3], torch.full((3,), -0.2), atol=1e-4, rtol=0)
    torch.testing.assert_close(g[4], g[3] * math.exp(-1))
    assert float(g[5].abs().max()) < 1e-6  # far from both
    assert shade_log_gain(x, y, []).abs().max() == 0
    assert len(MS.MEAN_SHADES) > 0 and torch.equal(shade_log_gain(x.abs(), y), shade_log_gain(x.abs(), y, MS.MEAN_SHADES))


def test_the_template_grid_inverts_the_rest_to_template_map(default_model):
    M = rest_to_template(default_model, 112)
    grid = template_rest_grid(M, 112)  # (112, 112, 2) rest (x, y) at each pixel centre
    uv = grid @ M[:, :2].T + M[:, 2]
    c = torch.arange(112, dtype=torch.float32) + 0.5
    torch.testing.assert_close(uv[..., 0], c[None, :].expand(112, 112), atol=1e-3, rtol=0)
    torch.testing.assert_close(uv[..., 1], c[:, None].expand(112, 112), atol=1e-3, rtol=0)
    assert float(grid[0, 56, 1]) > float(grid[111, 56, 1])  # y up: the template's top row is higher on the face
    assert abs(float(grid[56, 56, 0])) < 0.003  # the template's middle column: near the face's midline


def test_fit_shades_recovers_shades_it_was_given(default_model):
    T = 56  # half the template: a quarter of the work
    M = rest_to_template(default_model, T)
    grid, per_m = template_rest_grid(M, T), float(M[0, 0])
    truth = [Shade(centre=(0.03, 0.0), sd=(0.006, 0.004), gain=(0.25, 0.15, 0.1)),
             Shade(centre=(0.0, -0.045), sd=(0.004, 0.005), gain=(-0.3, -0.3, -0.3))]
    target = shade_log_gain(grid[..., 0].abs(), grid[..., 1], truth).permute(2, 0, 1)
    weight = torch.ones(T, T)
    kw = dict(pairs=1, mids=1, steps=200, sigma=1.5, px_per_m=per_m)
    shades, explained = fit_shades(target, weight, grid, **kw)
    assert explained > 0.9 and len(shades) == 2
    pair, mid = shades
    assert abs(pair.centre[0] - 0.03) < 0.002 and abs(pair.centre[1]) < 0.002 and pair.gain[0] > pair.gain[2] > 0
    assert mid.centre[0] == 0.0 and abs(mid.centre[1] + 0.045) < 0.002 and mid.gain[0] < -0.15
    again, _ = fit_shades(target, weight, grid, **kw)
    assert again == shades  # deterministic
    lum, _ = fit_shades(target.mean(0, keepdim=True), weight, grid, **{**kw, "steps": 40})
    assert all(s.gain[0] == s.gain[1] == s.gain[2] for s in lum)  # one channel: the same gain on all three
    with pytest.raises(ValueError, match="target"):
        fit_shades(target[:2], weight, grid)
    with pytest.raises(ValueError, match="pairs and mids"):
        fit_shades(target, weight, grid, pairs=0, mids=0)


def test_the_renderer_puts_the_shades_on_the_front_of_the_face(default_model, monkeypatch):
    on = MorphableSource(preset="frontal", size=112, model=default_model, overrides=_STILL)
    off = MorphableSource(preset="frontal", size=112, model=default_model,
                          overrides={**_STILL, "identity": {"mean_shades": 0.0}})
    ids = on.sample_identities(2, seed=0)
    rows, var = torch.tensor([0, 1]), torch.tensor([0, 0])
    a, b = on.render(ids, rows, var, seed=0).images, off.render(ids, rows, var, seed=0).images
    diff = (a - b).abs().amax(1)
    assert float(diff.mean()) > 1e-3
    assert float(diff[:, :12].max()) == 0 and float(diff[:, :, :6].max()) == 0  # background, hair: untouched
    assert "mean_shades" in on.config()["identity"] and "mean_shades" not in off.config()["identity"]
    table = on.config()["identity"]["mean_shades_sha1"]
    assert table == MS.table_sha1() and "mean_shades_sha1" not in off.config()["identity"]
    # one strong shade on the nose tip's rest position: the render darkens where the front view puts it
    M = rest_to_template(default_model, 112)
    tip = (0.0, -0.035)
    monkeypatch.setattr(MS, "MEAN_SHADES", (Shade(centre=tip, sd=(0.006, 0.006), gain=(-1.0, -1.0, -1.0)),))
    c = on.render(ids, rows, var, seed=0).images
    assert on.config()["identity"]["mean_shades_sha1"] == MS.table_sha1() != table  # another table: another config
    ratio = ((c + 1e-3) / (b + 1e-3)).mean((0, 1))  # (112, 112)
    r, col = divmod(int(ratio.argmin()), 112)
    u, v = (M[:, :2] @ torch.tensor(tip) + M[:, 2]).tolist()
    assert abs(col + 0.5 - u) < 4 and abs(r + 0.5 - v) < 4 and float(ratio.min()) < 0.6
    with pytest.raises(Exception, match="mean_shades"):
        MorphableSource(preset="frontal", size=64, overrides={"identity": {"mean_shades": -1.0}})
