"""The compiled CPU kernels (morphable/native.py) give bit-identical results to the torch path."""
import pytest
import torch

from morphable import native
from morphable.raster import interpolate_at, rasterize, vertex_normals
from morphable.texture import sample_at

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler: native kernels unavailable")


def _grid_mesh(g, B=3, n=24, size=64):
    """A wavy, partly off-screen triangulated sheet plus random triangles: small and large faces,
    both windings, occlusion."""
    ys, xs = torch.meshgrid(torch.linspace(-8, size * 0.7, n), torch.linspace(-6, size * 0.5, n), indexing="ij")
    base = torch.stack([xs, ys, 2 + 0.3 * torch.sin(xs / 5) * torch.cos(ys / 7)], -1).reshape(-1, 3)
    v = base[None] + torch.randn(B, base.shape[0], 3, generator=g) * torch.tensor([0.4, 0.4, 0.05])
    idx = torch.arange(n * n).view(n, n)
    a, b, c, d = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1), idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    f = torch.cat([torch.stack([a, c, b], -1), torch.stack([b, c, d], -1)])
    i = torch.randint(0, n * (n - 2) - 2, (60,), generator=g)
    extra = torch.stack([i, i + 2 * n + 1, i + 2], -1)  # overlapping, reversed-winding faces
    return v, torch.cat([f, extra])


@pytest.mark.parametrize("cull", [True, False])
def test_rasterize_and_interpolate_match_torch(cull):
    g = torch.Generator().manual_seed(1)
    v, f = _grid_mesh(g)
    a = rasterize(v, f, 64, 48, cull_backfaces=cull, native=False)
    b = rasterize(v, f, 64, 48, cull_backfaces=cull, native=True)
    assert 0.2 < a.mask.float().mean() < 1.0  # partial coverage: edges and background exercised
    assert torch.equal(a.face, b.face) and torch.equal(a.bary, b.bary) and torch.equal(a.depth, b.depth)
    a0 = rasterize(v, f, 64, 48, cull_backfaces=cull, native=False, barycentrics=False)
    b0 = rasterize(v, f, 64, 48, cull_backfaces=cull, native=True, barycentrics=False)
    assert torch.equal(a0.face, a.face) and torch.equal(a0.face, b0.face) and torch.equal(a0.depth, b0.depth)
    idx = a.mask.nonzero(as_tuple=True)
    for attrs in (torch.randn(3, v.shape[1], 5, generator=g), torch.randn(v.shape[1], 2, generator=g)):
        assert torch.equal(interpolate_at(a, idx, f, attrs, native=False), interpolate_at(b, idx, f, attrs, native=True))


def test_vertex_normals_and_texture_match_torch(monkeypatch):
    g = torch.Generator().manual_seed(2)
    v, f = _grid_mesh(g)
    assert torch.equal(vertex_normals(v, f, native=True), vertex_normals(v, f, native=False))
    tex = torch.rand(3, 16, 16, 4, generator=g).permute(0, 3, 1, 2)  # channels-last memory, as baked
    grid = torch.rand(500, 2, generator=g) * 2.4 - 1.2  # includes out-of-range points (border padding)
    which = torch.randint(0, 3, (500,), generator=g)
    a = sample_at(tex, which, grid)
    monkeypatch.setenv("SYNTHFACE_NATIVE", "0")
    b = sample_at(tex, which, grid)
    assert torch.equal(a, b)
    ref = torch.nn.functional.grid_sample(tex[which], grid[:, None, None], align_corners=False, padding_mode="border")
    torch.testing.assert_close(a, ref[:, :, 0, 0], atol=1e-5, rtol=0)


def test_render_is_bit_identical_with_and_without_native(default_model, monkeypatch):
    from morphable import MorphableSource

    src = MorphableSource(preset="wild", size=64, model=default_model)
    ids = src.sample_identities(2, seed=3)
    rows, ks = torch.tensor([0, 0, 1, 1, 0, 1]), torch.tensor([0, 1, 0, 1, 2, 2])
    a = src.render(ids, rows, ks, seed=5).images
    monkeypatch.setenv("SYNTHFACE_NATIVE", "0")
    b = src.render(ids, rows, ks, seed=5).images
    assert torch.equal(a, b)


def test_missing_compiler_falls_back_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_LIB", None)
    monkeypatch.setenv("SYNTHFACE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.warns(RuntimeWarning, match="native rasterizer unavailable"):
        assert native.library() is None
    assert not native.usable(torch.zeros(1))
    g = torch.Generator().manual_seed(0)
    v, f = _grid_mesh(g, B=1)
    assert rasterize(v, f, 32, 32).mask.any()  # the torch path serves
    monkeypatch.setattr(native, "_LIB", None)  # let later tests rebuild it


def test_edge_antialias_matches_torch_and_the_pooling_definition():
    import torch.nn.functional as F

    from morphable.raster import edge_antialias

    g = torch.Generator().manual_seed(4)
    v, f = _grid_mesh(g, B=2)
    mask = rasterize(v, f, 40, 36).mask
    img = torch.rand(2, 40, 36, 3, generator=g)
    a, b = edge_antialias(img, mask, native=True), edge_antialias(img, mask, native=False)
    assert torch.equal(a, b)
    m = mask[:, None].float()  # the definition, with torch's pooling ops
    edge = (F.max_pool2d(m, 3, 1, 1) - (-F.max_pool2d(-m, 3, 1, 1))) > 0
    x = img.permute(0, 3, 1, 2)
    ref = torch.where(edge, 0.5 * x + 0.5 * F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), x).permute(0, 2, 3, 1)
    torch.testing.assert_close(a, ref, atol=1e-6, rtol=0)
    assert edge.any() and (a != img).any() and torch.equal(a[~edge[:, 0]], img[~edge[:, 0]])


def test_out_of_range_indices_raise_instead_of_reading_memory():
    v = torch.rand(1, 4, 3) * 10 + torch.tensor([0.0, 0.0, 1.0])
    with pytest.raises(IndexError, match="faces index out of range"):
        rasterize(v, torch.tensor([[0, 1, 7]]), 8, 8)
    with pytest.raises(IndexError, match="faces index out of range"):
        vertex_normals(v, torch.tensor([[0, 1, -1]]))
    with pytest.raises(IndexError, match="texture index out of range"):
        sample_at(torch.rand(2, 4, 8, 8), torch.tensor([0, 2]), torch.zeros(2, 2))


def _light_inputs(g, flash: bool, P=4000, B=4):
    import torch.nn.functional as F

    from morphable.shading import EYE, SKIN, TEETH

    n = F.normalize(torch.randn(P, 3, generator=g) + torch.tensor([0.0, 0.0, 1.5]), dim=-1)
    pos = torch.randn(P, 3, generator=g) * 0.08
    bsel = torch.randint(0, B, (P,), generator=g)
    flags = torch.tensor([0, SKIN, EYE, TEETH, SKIN])[torch.randint(0, 5, (P,), generator=g)].to(torch.uint8)
    ldir = F.normalize(torch.randn(B, 3, generator=g) + torch.tensor([0.0, 0.5, 1.0]), dim=-1)
    table = torch.cat([torch.randn(B, 9, generator=g) * 0.3, torch.rand(B, 2, generator=g) + 0.2, ldir,
                       torch.rand(B, 3, generator=g) + 0.5, torch.rand(B, 2, generator=g) + 0.3,
                       (torch.rand(B, 1, generator=g) * 0.8) * torch.tensor([[1.0], [0.0], [1.0], [0.0]]) * flash,
                       torch.randn(B, 3, generator=g) * 0.05 + torch.tensor([0.0, 0.0, 0.6]),
                       torch.tensor([[1.0], [1.0], [0.0], [0.0]])], 1)
    spec = torch.rand(P, generator=g) * 0.4 * ((flags & EYE) == 0)
    return (n, pos, torch.rand(P, generator=g), torch.rand(P, 3, generator=g), spec, torch.rand(P, generator=g),
            (n * ldir[bsel]).sum(-1), flags, bsel, table)


@pytest.mark.parametrize("flash", [True, False])
def test_light_pixels_match_torch_and_the_plain_formulas(flash):
    """The native lighting kernel gives the torch path's bits; both are the textbook formulas
    (F.normalize, ``**``) up to float rounding."""
    import torch.nn.functional as F

    from morphable.shading import EYE, SKIN, light_pixels

    g = torch.Generator().manual_seed(5)
    args = _light_inputs(g, flash)
    a, b = light_pixels(*args, native=True), light_pixels(*args, native=False)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    n, pos, occ, alb, specw, shadow, ndl_raw, flags, bsel, table = args
    lin, lum, shadow_out, half = b
    t = table[bsel]
    view = F.normalize(t[:, 20:23] - pos, dim=-1)
    torch.testing.assert_close(half, F.normalize(t[:, 11:14] + view, dim=-1), atol=1e-6, rtol=0)
    # the specular term where the irradiance is the light's colour times a scalar (no skin wrap, no
    # flash) and there are no catchlights: the lit colour less the diffuse part
    spec = t[:, 18] * specw * t[:, 17] * shadow_out * (n * half).sum(-1).clamp_min(0) ** 24
    irr = lum[:, None] * 3 * t[:, 14:17] / t[:, 14:17].sum(-1, keepdim=True)
    plain = ((flags & (EYE | SKIN)) == 0) & (t[:, 19] == 0)
    assert int(plain.sum()) > 300
    torch.testing.assert_close((lin - alb * irr)[plain], (spec[:, None] * t[:, 14:17])[plain], atol=2e-5, rtol=1e-4)
    assert bool((lin >= 0).all()) and bool((shadow_out >= 0).all()) and bool((shadow_out <= 1).all())
    with pytest.raises(ValueError, match=r"the light table must be \(B, 24\)"):
        light_pixels(*args[:-1], table[:, :23])
