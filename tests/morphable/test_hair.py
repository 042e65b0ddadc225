"""Hair geometry (morphable.hair), its style priors, make-up and gender contrast in the source."""
import math

import pytest
import torch

from morphable import MorphableSource
from morphable.appearance import APPEARANCE_PARAMS, shade_hair
from morphable.hair import CENTRE, STYLES, hair_highlights, sample_style, strand_tangent, style_table
from morphable.source import SAMPLING_VERSION


@pytest.fixture(scope="module")
def src(default_model):
    return MorphableSource(preset="frontal", size=112, model=default_model)


def _freq(style: torch.Tensor, name: str) -> float:
    return float((style == STYLES.index(name)).float().mean())


def test_style_priors_follow_gender_age_and_ancestry():
    n = 20000
    g = torch.Generator().manual_seed(0)
    u = torch.rand(n, generator=g)
    z, o = torch.zeros(n), torch.ones(n)
    fem = sample_style(z, 0.6 * o, z, u)
    male = sample_style(o, 0.6 * o, z, u)
    old_male = sample_style(o, 0.95 * o, z, u)
    afr = sample_style(o, 0.6 * o, o, u)
    assert fem.min() >= 0 and fem.max() < len(STYLES)
    long_f = _freq(fem, "long") + _freq(fem, "bob")
    long_m = _freq(male, "long") + _freq(male, "bob")
    assert long_f > 0.3 and long_m < 0.1
    assert _freq(old_male, "bald") + _freq(old_male, "receding") > 2 * (_freq(male, "bald") + _freq(male, "receding"))
    assert _freq(afr, "afro") + _freq(afr, "curly") > 3 * (_freq(male, "afro") + _freq(male, "curly"))
    # every style is reachable
    assert set(torch.cat([fem, male, old_male, afr]).tolist()) == set(range(len(STYLES)))


def _identities_with(src, styles, n=200, seed=3):
    ids = src.sample_identities(n, seed=seed)
    st = (ids.params["appearance"][:, APPEARANCE_PARAMS.index("hair_style")] * len(STYLES)).long()
    rows = {}
    for name in styles:
        w = (st == STYLES.index(name)).nonzero().flatten()
        assert len(w), f"no {name} identity among {n}"
        rows[name] = int(w[0])
    return ids, rows


def test_hair_mesh_geometry_per_style(src):
    ids, rows = _identities_with(src, ["bald", "short", "long", "afro"])
    sel = torch.tensor(list(rows.values()))
    shape, app = ids.params["shape"][sel], ids.params["appearance"][sel]
    h = src._hair_mesh(shape, app)  # (4, H, 3)
    rig = src._hair
    Nc = rig.n_phi * rig.n_theta
    cap, cur = h[:, :Nc], h[:, Nc:]
    rest = src.model.vertices(shape)
    mid = src.model.landmark_points(rest)[:, :2].mean(1, keepdim=True)
    c = torch.tensor(CENTRE) + mid[:, 0]
    R = ((rest[:, rig.support] - c[:, None]) * rig.dirs[None]).sum(-1)
    r = ((cap - c[:, None]) * rig.dirs[None]).sum(-1)
    crown = rig.theta < 0.5
    bald, short, long_, afro = range(4)
    assert bool((r[bald] <= R[bald] + 1e-6).all())  # no hair stands out of a bald head
    assert float((r[short] - R[short])[crown].mean()) > 0.004  # a short cap on the crown
    assert float((r[afro] - R[afro])[crown].mean()) > 0.03  # an afro is much thicker
    chin_y = float(src.model.landmark_points(rest)[long_, 3:, 1].mean())
    assert float(cur[long_, :, 1].min()) < chin_y - 0.1  # long hair falls well below the mouth
    assert float((cur[short] - cur[short].mean(0)).abs().max()) < 0.2  # no curtain to speak of
    span = cur[short].view(rig.n_hang + 1, rig.n_phi, 3)
    assert float((span - span[:1]).abs().max()) < 1e-6  # short hair: the curtain rows collapse onto the ring


def test_hair_changes_the_image_and_is_logged(default_model):
    on = MorphableSource(preset="frontal", size=64, model=default_model)
    off = MorphableSource(preset="frontal", size=64, model=default_model, overrides={"identity": {"hair_mesh": False}})
    ids, rows = _identities_with(on, ["long"])
    r = torch.tensor([rows["long"]])
    a = on.render(ids, r, torch.zeros(1, dtype=torch.int64), seed=0).images
    b = off.render(ids, r, torch.zeros(1, dtype=torch.int64), seed=0).images
    assert float((a - b).abs().mean()) > 0.01
    assert "hair_style" in ids.meta and "lipstick" in ids.meta
    assert on.config()["identity"]["hair_mesh"] is True and on.config()["sampling_version"] == SAMPLING_VERSION


def test_shade_hair_range_and_colour_follows_melanin():
    P = 500
    app = torch.full((P, len(APPEARANCE_PARAMS)), 0.5)
    coords = torch.stack([torch.linspace(-1, 1, P), torch.linspace(0, 1, P)], 1)
    app[:, APPEARANCE_PARAMS.index("hair_grey")] = 0
    app[:, APPEARANCE_PARAMS.index("hair_melanin")] = 0.05
    light, s1 = shade_hair(coords, app, torch.zeros(P, 3))
    assert float(s1.abs().max()) <= 1  # the strand noise
    app[:, APPEARANCE_PARAMS.index("hair_melanin")] = 0.95
    dark, _ = shade_hair(coords, app, torch.zeros(P, 3))
    assert light.shape == (P, 3) and s1.shape == (P,)
    assert float(light.min()) >= 0 and float(light.max()) <= 1
    assert float(light.mean()) > 3 * float(dark.mean())


def test_gender_contrast_makes_faces_female_or_male_read(default_model):
    hi = MorphableSource(preset="frontal", size=64, model=default_model)
    lo = MorphableSource(preset="frontal", size=64, model=default_model, overrides={"identity": {"gender_contrast": 0.0}})
    g_hi = hi.sample_identities(200, seed=0).meta["gender"]
    g_lo = lo.sample_identities(200, seed=0).meta["gender"]
    mid = lambda g: float(((g > 0.3) & (g < 0.7)).float().mean())  # noqa: E731
    assert mid(g_hi) < 0.1 and mid(g_lo) > 0.25
    assert 0.35 < float((g_hi < 0.5).float().mean()) < 0.65


def test_style_table_covers_every_style():
    t = style_table(torch.arange(len(STYLES)))
    assert all(v.shape == (len(STYLES),) for v in t.values())
    assert bool((t["thick_lo"] <= t["thick_hi"]).all()) and bool((t["len_lo"] <= t["len_hi"]).all())
    assert float(t["len_hi"][STYLES.index("long")]) > 0.15 and float(t["thick_hi"][STYLES.index("bald")]) == 0.0
    assert math.isclose(float(t["opening"][STYLES.index("short")]), math.pi, rel_tol=1e-6)


def test_the_hair_cap_is_smooth_where_it_carries_hair(src):
    # each grid direction reads the head at one mesh vertex, which stepped the cap's radius and its
    # hairline from one vertex to the next; smoothed over the grid, the covered cap has no such kinks
    ids = src.sample_identities(200, seed=3)
    st = (ids.params["appearance"][:, APPEARANCE_PARAMS.index("hair_style")] * len(STYLES)).long()
    sel = (st == STYLES.index("short")).nonzero().flatten()[:10]
    assert len(sel) >= 5
    shape, app = ids.params["shape"][sel], ids.params["appearance"][sel]
    rig = src._hair
    Nc = rig.n_phi * rig.n_theta
    h = src._hair_mesh(shape, app)[:, :Nc]
    rest = src.model.vertices(shape)
    c = torch.tensor(CENTRE) + src.model.landmark_points(rest)[:, :2].mean(1)
    r = ((h - c[:, None]) * rig.dirs[None]).sum(-1).view(-1, rig.n_theta, rig.n_phi)
    R = ((rest[:, rig.support] - c[:, None]) * rig.dirs[None]).sum(-1).view_as(r)
    up = (r - R) > 0.003  # grid points that stand out of the scalp: the cap proper
    inner = up & up.roll(1, -1) & up.roll(-1, -1)
    kink = (r.roll(1, -1) + r.roll(-1, -1) - 2 * r).abs()[inner]  # second difference around the head
    assert int(inner.sum()) > 1000
    assert float(kink.mean()) < 0.0012  # 0.0018 m when each point followed its own support vertex


def test_strand_tangent_runs_down_the_surface():
    g = torch.Generator().manual_seed(0)
    n = torch.nn.functional.normalize(torch.randn(200, 3, generator=g), dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0]).expand(200, 3)
    t = strand_tangent(n, up)
    keep = n[:, 1].abs() < 0.95  # away from the crown and the chin, where the projection vanishes
    assert torch.allclose(t[keep].norm(dim=-1), torch.ones(int(keep.sum())), atol=1e-5)
    assert float((t * n).sum(-1).abs().max()) < 1e-5  # on the surface
    assert bool(((t * up).sum(-1)[keep] < 0).all())  # downwards


def test_hair_highlights_are_two_shifted_lobes_across_the_strands():
    # strand along -y on a surface facing +z; the half vector sweeps the (tangent, normal) plane
    P = 721
    a = torch.linspace(-math.pi / 2, math.pi / 2, P)
    t = torch.tensor([0.0, -1.0, 0.0]).expand(P, 3)
    n = torch.tensor([0.0, 0.0, 1.0]).expand(P, 3)
    h = torch.stack([torch.zeros(P), -torch.sin(a), torch.cos(a)], -1)  # a > 0 tilts it towards the tip
    prim, sec = hair_highlights(t, n, h, torch.zeros(P))
    assert float(prim.min()) >= 0 and float(prim.max()) <= 1 and float(sec.max()) <= 1
    # each lobe peaks where the half vector is across its shifted tangent, on opposite sides of the normal
    pa, sa = float(a[prim.argmax()]), float(a[sec.argmax()])
    assert pa * sa < 0 and abs(pa - sa) > 0.15
    assert float((prim > 0.5).float().mean()) < float((sec > 0.5).float().mean())  # primary narrower
    # the strand noise moves the band
    p2, _ = hair_highlights(t, n, h, torch.ones(P))
    assert abs(float(a[p2.argmax()]) - pa) > 0.03
