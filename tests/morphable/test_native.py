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
