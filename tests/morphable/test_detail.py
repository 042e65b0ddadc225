"""morphable.detail: a feature-detail model learnt from faces, and the renderer drawing it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import ConfigError
from morphable import MorphableSource
from morphable.detail import DetailModel, fit_detail_model, inner_face_mask, ratio_detail

T = 112


def _layout() -> np.ndarray:
    """68 points spread over the inner face (a stand-in for dlib's landmarks)."""
    g = np.stack(np.meshgrid(np.linspace(30, 82, 9), np.linspace(34, 98, 8)), -1).reshape(-1, 2)
    return g[:68].astype(np.float64)


def _faces(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, T, T) smooth random images in (0.2, 0.8) with fine texture of different strengths."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(n, 3, 7, 7, generator=g), size=(T, T), mode="bilinear")
    fine = torch.rand(n, 3, T, T, generator=g) - 0.5
    amp = torch.rand(n, 1, 1, 1, generator=g) * 0.3
    return (0.3 + 0.4 * base) * (1 + amp * fine)


def _fitted(model_name: str, n: int = 12, k: int = 5) -> DetailModel:
    lay = _layout()
    return fit_detail_model(_faces(n), np.repeat(lay[None], n, 0), lay, model_name, k=k, sigma=2.0)


def test_inner_face_mask_is_one_inside_and_falls_to_zero_outside():
    m = inner_face_mask()
    assert m.shape == (T, T) and float(m.min()) == 0.0 and float(m.max()) == 1.0
    assert float(m[62, 56]) == 1.0 and float(m[52, 38]) == 1.0 and float(m[92, 41]) == 1.0  # centre, eye, mouth corner
    assert float(m[0, 0]) == 0.0 and float(m[62, 5]) == 0.0 and float(m[2, 56]) == 0.0
    big = inner_face_mask(224)
    assert torch.allclose(big[1::2, 1::2][::8, ::8], m[::8, ::8], atol=0.05)  # the same shape at any size


def test_ratio_detail_is_zero_on_flat_images_and_scales_with_nothing_but_contrast():
    flat = torch.full((2, 3, T, T), 0.4)
    assert float(ratio_detail(flat, 3.0).abs().max()) < 1e-6
    x = _faces(2)
    assert torch.allclose(ratio_detail(x, 3.0), ratio_detail(x * 0.5, 3.0), atol=1e-4)  # a ratio: brightness-free
    with pytest.raises(ValueError, match="sigma"):
        ratio_detail(x, 0.0)


def test_fit_keeps_the_principal_directions_and_samples_follow_them():
    n, lay = 12, _layout()
    x = _faces(n)
    dm = fit_detail_model(x, np.repeat(lay[None], n, 0), lay, "m", k=n - 1, sigma=2.0)
    assert dm.k == n - 1 and dm.size == T and dm.info["faces"] == n
    assert dm.mean.shape == (3, T, T) and dm.basis.shape == (n - 1, 3, T, T)
    # with every direction kept, each face's masked detail is the mean plus a combination of the basis
    d = (ratio_detail(x, 2.0) * dm.mask).flatten(1) - dm.mean.flatten()
    B = dm.basis.flatten(1)
    z = torch.linalg.lstsq(B.T.double(), d.T.double()).solution
    assert float((z.T.float() @ B - d).abs().max()) < 1e-3
    # coefficients ~ N(0, 1) reproduce the data's variance (the basis is scaled by the sd)
    assert abs(float((z ** 2).sum(0).mean()) - (n - 1) * (n - 1) / n) < 1e-2 * n
    maps = dm.maps(torch.zeros(2, n - 1))
    assert torch.equal(maps[0], dm.mean) and torch.equal(maps[1], dm.mean)
    assert float((dm.maps(torch.ones(1, n - 1))[0] - dm.mean).abs().max()) > 0
    assert float(dm.mean[:, dm.mask == 0].abs().max()) == 0.0  # nothing outside the inner face


def test_fit_rejects_bad_input():
    n, lay = 6, _layout()
    lms = np.repeat(lay[None], n, 0)
    with pytest.raises(ValueError, match="k must be"):
        fit_detail_model(_faces(n), lms, lay, "m", k=n)
    with pytest.raises(ValueError, match=r"\(N, 3, T, T\)"):
        fit_detail_model(_faces(n)[:, :1], lms, lay, "m", k=2)
    with pytest.raises(ValueError, match="landmarks"):
        fit_detail_model(_faces(n), lms[:, :5], lay, "m", k=2)
    with pytest.raises(ValueError, match="coefficients"):
        _fitted("m").maps(torch.zeros(1, 3))


def test_save_and_load_round_trip_and_clear_errors(tmp_path):
    dm = _fitted("anny-head")
    p = tmp_path / "d.npz"
    dm.save(p)
    back = DetailModel.load(p)
    assert back.k == dm.k and back.model == dm.model and back.sigma == dm.sigma and back.info == dm.info
    assert torch.equal(back.mean, dm.mean) and torch.equal(back.mask, dm.mask)
    moved = back.to("cpu")
    assert torch.equal(moved.basis, back.basis) and moved.model == back.model and moved.sigma == back.sigma
    import hashlib
    assert back.sha1 == moved.sha1 == hashlib.sha1(p.read_bytes()).hexdigest() and dm.sha1 == ""
    assert float((back.basis - dm.basis).abs().max()) <= 1e-3 * float(dm.basis.abs().max())  # float16 on disk
    with pytest.raises(FileNotFoundError, match="engine.detail_fit"):
        DetailModel.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a synthface detail model"):
        DetailModel.load(tmp_path / "junk.npz")


@pytest.fixture(scope="module")
def detail_file(tmp_path_factory, default_model):
    p = tmp_path_factory.mktemp("detail") / "detail.npz"
    _fitted(default_model.name).save(p)
    return str(p)


def _source(default_model, **identity):
    """``frontal`` at 48 px, facing the camera, without degradations or the camera's point spread (so
    that only the detail differs, where it is drawn)."""
    over = {"identity": identity, "pose": {k: {"lo": 0, "hi": 0} for k in ("yaw", "pitch", "roll")},
            "degradation": {"jpeg_prob": 0.0, "noise_prob": 0.0, "blur_prob": 0.0, "lowres_prob": 0.0, "jitter_prob": 0.0},
            "camera": {"psf": {"lo": 0.0, "hi": 0.0}}}
    return MorphableSource(preset="frontal", size=48, model=default_model, overrides=over)


def test_identities_draw_detail_coefficients_apart_from_the_rest(default_model, detail_file):
    plain = _source(default_model).sample_identities(4, seed=3)
    ids = _source(default_model, detail_model=detail_file).sample_identities(4, seed=3)
    assert set(ids.params) == set(plain.params) | {"detail"}
    for k, v in plain.params.items():  # the rest of each identity is unchanged
        assert torch.equal(ids.params[k], v), k
    z = ids.params["detail"]
    assert z.shape == (4, 5) and len({tuple(r.tolist()) for r in z}) == 4
    again = _source(default_model, detail_model=detail_file).sample_identities(4, seed=3)
    assert torch.equal(again.params["detail"], z)
    src = _source(default_model, detail_model=detail_file)
    mixed = src.mix_identities(ids.select(torch.tensor([0])), ids.select(torch.tensor([1])), torch.tensor([0.25]))
    assert torch.allclose(mixed.params["detail"][0], 0.25 * z[0] + 0.75 * z[1])


def test_rendered_detail_is_deterministic_and_confined_to_the_face(default_model, detail_file):
    rows, var = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 0, 0])
    base = _source(default_model)
    ids = _source(default_model, detail_model=detail_file).sample_identities(3, seed=1)
    plain = base.render(ids, rows, var, seed=1).images
    src = _source(default_model, detail_model=detail_file)
    a, b = src.render(ids, rows, var, seed=1).images, src.render(ids, rows, var, seed=1).images
    assert torch.equal(a, b)
    diff = (a - plain).abs().amax(1)  # (B, S, S)
    assert float(diff.max()) > 0.01
    # the inner face's ellipse reaches neither the top rows nor the side columns: untouched
    assert float(diff[:, :4].max()) == 0.0 and float(diff[:, :, :4].max()) == 0.0 and float(diff[:, :, -4:].max()) == 0.0
    off = _source(default_model, detail_model=detail_file, detail_strength=0.0).render(ids, rows, var, seed=1).images
    assert torch.equal(off, plain)


def test_per_image_jitter_is_keyed_by_the_image_not_its_batch(default_model, detail_file):
    src = _source(default_model, detail_model=detail_file, detail_jitter=0.5)
    ids = src.sample_identities(2, seed=4)
    batch = src.render(ids, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), seed=4).images
    alone = src.render(ids, torch.tensor([0]), torch.tensor([1]), seed=4).images
    # the same photograph in another batch: the same detail (renders agree to float rounding, as without it)
    assert torch.allclose(batch[1], alone[0], atol=1e-4)
    still = _source(default_model, detail_model=detail_file, detail_jitter=0.0)
    fixed = still.render(ids, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), seed=4).images
    assert float((batch - fixed).abs().max()) > 0.005  # the jitter moves each photograph's detail


def test_config_names_the_model_file_by_content_and_is_unchanged_when_off(default_model, detail_file):
    off = _source(default_model).config()
    assert not {"detail_model", "detail_strength", "detail_eyes", "detail_jitter"} & set(off["identity"])  # as before
    assert "detail_scale" in off["identity"]
    on = _source(default_model, detail_model=detail_file).config()["identity"]
    assert on["detail_model"] == detail_file and len(on["detail_model_sha1"]) == 40 and on["detail_jitter"] == 0.3


def test_detail_config_errors(default_model, detail_file, tmp_path):
    with pytest.raises(ConfigError, match="detail_strength"):
        _source(default_model, detail_model=detail_file, detail_strength=1.5)
    with pytest.raises(ConfigError, match="detail_eyes"):
        _source(default_model, detail_model=detail_file, detail_eyes=-0.1)
    other = tmp_path / "other.npz"
    _fitted("some-other-model").save(other)
    with pytest.raises(ValueError, match="fitted to the layout of morphable model 'some-other-model'"):
        _source(default_model, detail_model=str(other))
    with pytest.raises(FileNotFoundError, match="no such file"):
        _source(default_model, detail_model=str(tmp_path / "none.npz"))
    ids = _source(default_model).sample_identities(2, seed=0)  # drawn without the detail model
    with pytest.raises(ValueError, match="no detail coefficients"):
        _source(default_model, detail_model=detail_file).render(ids, torch.tensor([0]), torch.tensor([0]), seed=0)
