"""The default morphable model, the source's determinism, separability, alignment and knobs."""
import math

import pytest
import torch

from common.errors import ConfigError
from morphable import MorphableSource, rasterize, template
from morphable.camera import similarity_transform, apply_affine, euler_to_matrix
from morphable.raster import interpolate


@pytest.fixture(scope="module")
def frontal(default_model):
    return MorphableSource(preset="frontal", size=112, model=default_model)


@pytest.fixture(scope="module")
def wild(default_model):
    return MorphableSource(preset="wild", size=112, model=default_model)


def test_default_model_is_a_face(default_model):
    m = default_model
    assert m.num_vertices > 3000 and m.num_shape >= 40 and m.num_expression == 52
    lm = m.landmark_points(m.mean[None])[0]
    # interpupillary distance of an adult (5.5 - 7.5 cm), nose in front of the eyes, mouth below the nose
    ipd = (lm[1] - lm[0]).norm()
    assert 0.055 < ipd < 0.075
    assert lm[2, 2] > lm[0, 2] + 0.015 and lm[3, 1] < lm[2, 1] < lm[0, 1]
    assert lm[3, 0] < 0 < lm[4, 0]
    # identity coefficients move the surface by millimetres to centimetres
    z = torch.zeros(1, m.num_shape)
    z[0, 0] = 1.0
    d = (m.vertices(z) - m.mean).norm(dim=-1).max()
    assert 0.003 < d < 0.08
    assert m.meta["explained_variance"] > 0.95


def test_rasterizer_depth_order_and_coverage():
    # two overlapping squares: the nearer (depth 1) must win where they overlap
    v = torch.tensor([[[2, 2, 1], [10, 2, 1], [10, 10, 1], [2, 10, 1], [6, 6, 2], [14, 6, 2], [14, 14, 2], [6, 14, 2]]],
                     dtype=torch.float32)
    f = torch.tensor([[0, 2, 1], [0, 3, 2], [4, 6, 5], [4, 7, 6]])
    fr = rasterize(v, f, 16, 16, cull_backfaces=False)
    assert fr.face[0, 8, 8] in (0, 1)  # overlap -> near square
    assert fr.face[0, 12, 12] in (2, 3)
    assert fr.face[0, 0, 0] == -1
    assert fr.mask[0].sum() == 64 + 64 - 16
    b = fr.bary[fr.mask]
    assert torch.allclose(b.sum(-1), torch.ones(len(b)), atol=1e-5) and (b >= -1e-5).all()
    # perspective-correct interpolation reproduces depth for a slanted triangle
    v2 = torch.tensor([[[0, 0, 1.0], [16, 0, 3.0], [0, 16, 1.0]]])
    fr2 = rasterize(v2, torch.tensor([[0, 2, 1]]), 16, 16, cull_backfaces=False)
    z = interpolate(fr2, torch.tensor([[0, 2, 1]]), v2[0, :, 2:])[..., 0]
    assert torch.allclose(z[fr2.mask], fr2.depth[fr2.mask], rtol=1e-4)
    # the depth-only mode (shadow maps) reads the quantised z-buffer: same faces, depth within 1e-5
    fr3 = rasterize(v2, torch.tensor([[0, 2, 1]]), 16, 16, cull_backfaces=False, barycentrics=False)
    assert torch.equal(fr3.face, fr2.face)
    assert torch.allclose(fr3.depth, fr2.depth, atol=1e-5)
    # back-face culling drops the reversed winding
    assert not rasterize(v2, torch.tensor([[0, 1, 2]]), 16, 16).mask.any()


def test_similarity_alignment_exact_for_similar_points():
    src = template(112)[None] * 0.5 + torch.tensor([10.0, 20.0])
    th = math.radians(20)
    R = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    src = src @ R.T
    M = similarity_transform(src, template(112))
    assert torch.allclose(apply_affine(M, src), template(112)[None], atol=1e-3)


def test_same_seed_same_tensors_and_prefix_stable(frontal):
    a = frontal.sample_identities(5, seed=3)
    b = frontal.sample_identities(5, seed=3)
    c = frontal.sample_identities(3, seed=3)
    assert torch.equal(a.embedding, b.embedding)
    assert torch.equal(a.embedding[:3], c.embedding)
    rows, ks = torch.tensor([0, 1, 4]), torch.tensor([0, 2, 7])
    x = frontal.render(a, rows, ks, seed=3)
    y = frontal.render(b, rows, ks, seed=3)
    assert torch.equal(x.images, y.images)
    # image depends on (identity, variation), not on the rest of the batch
    z = frontal.render(a, torch.tensor([4, 1]), torch.tensor([7, 2]), seed=3)
    assert torch.allclose(z.images[0], x.images[2], atol=2e-3)
    d = frontal.sample_identities(5, seed=4)
    assert not torch.equal(a.embedding, d.embedding)


def test_separability_enforced_and_reported(default_model):
    src = MorphableSource(preset="frontal", size=32, model=default_model, overrides={"identity": {"min_distance": 1.3}})
    ids = src.sample_identities(40, seed=0)
    rep = ids.report
    assert rep["achieved_min_distance"] >= 1.3
    assert rep["rejected"] > 0 and rep["candidates"] == 40 + rep["rejected"]
    assert rep["pairwise_quantiles"]["q50"] > rep["achieved_min_distance"]
    d = torch.cdist(ids.embedding.double(), ids.embedding.double())
    d.fill_diagonal_(10)
    assert float(d.min()) >= 1.3 - 1e-6
    with pytest.raises(ValueError, match="min_distance"):
        MorphableSource(preset="frontal", size=32, model=default_model,
                        overrides={"identity": {"min_distance": 5.0, "max_tries": 2}}).sample_identities(5, seed=0)


def test_aligned_landmarks_land_on_template(default_model):
    z = {"lo": 0, "hi": 0}
    src = MorphableSource(preset="frontal", size=112, model=default_model,
                          overrides={"expression": {"prob": 0.0}, "pose": {"yaw": z, "pitch": z, "roll": z}})
    ids = src.sample_identities(8, seed=0)
    # the mean face, frontal and neutral: every warped landmark within 2 px of the template
    mean_ids = src.sample_identities(8, seed=0)
    mean_ids.params["shape"].zero_()
    mean_ids.params["relief"].zero_()  # relief and the eyes' and nose's proportions too
    b = src.render(mean_ids, torch.arange(4), torch.zeros(4, dtype=torch.long), seed=0)
    err = (b.landmarks - template(112)).norm(dim=-1)
    assert float(err.max()) < 2.0, err
    # random identities: the similarity leaves only the identity's own deviation from the
    # template's proportions (as for real faces), on average about 3 px (2.99-3.01 over variations
    # 0-3 before facial relief, which adds ~0.04: the camera's perspective moves it a little; the
    # eyes' and nose's own proportions (identity.feature_shape) add ~0.3)
    b = src.render(ids, torch.arange(8), torch.zeros(8, dtype=torch.long), seed=0)
    err = (b.landmarks - template(112)).norm(dim=-1)
    assert float(err.mean()) < 3.6, err
    # landmarks are where the features are drawn: the pupil (within 1 px of the eye landmark) is
    # darker than the skin between the eyes
    img = b.images
    g = img.mean(1)
    dark = -torch.nn.functional.max_pool2d(-g[:, None], 3, stride=1, padding=1)[:, 0]  # 3x3 minimum
    for i in range(8):
        (lx, ly), (rx, ry) = b.landmarks[i, 0].round().long().tolist(), b.landmarks[i, 1].round().long().tolist()
        mid = g[i, (ly + ry) // 2, (lx + rx) // 2]
        assert dark[i, ly, lx] < mid and dark[i, ry, rx] < mid
    assert img.shape == (8, 3, 112, 112) and img.min() >= 0 and img.max() <= 1
    # the face is actually there: the centre of the crop differs from the corners
    assert (img[:, :, 40:90, 35:80].std() > 0.05)


def test_unaligned_256(default_model):
    src = MorphableSource(preset="frontal", size=256, aligned=False, model=default_model)
    ids = src.sample_identities(1, seed=0)
    b = src.render(ids, torch.tensor([0]), torch.tensor([0]), seed=0)
    assert b.images.shape == (1, 3, 256, 256)
    assert ((b.landmarks >= 0) & (b.landmarks < 256)).all()


KNOBS = {
    "pose": {"pose": {"yaw": {"lo": 30, "hi": 30}}},
    "expression": {"expression": {"prob": 1.0, "presets": False, "units": ["jawOpen"], "intensity": {"lo": 1, "hi": 1}}},
    "light": {"light": {"azimuth": {"lo": 90, "hi": 90}, "intensity": {"lo": 2, "hi": 2}}},
    "temperature": {"light": {"temperature": {"lo": 3000, "hi": 3000}, "white_balance": {"lo": 0, "hi": 0}}},
    "camera": {"camera": {"distance": {"lo": 0.3, "hi": 0.3}, "focal_mm": {"lo": 20, "hi": 20}}},
    "shadows": {"light": {"shadows": 1.0, "azimuth": {"lo": 70, "hi": 70}, "elevation": {"lo": 10, "hi": 10},
                          "intensity": {"lo": 2, "hi": 2}}},
    "blur": {"degradation": {"blur_prob": 1.0, "blur": {"lo": 2, "hi": 2}}},
    "noise": {"degradation": {"noise_prob": 1.0, "noise": {"lo": 0.1, "hi": 0.1}}},
    "jpeg": {"degradation": {"jpeg_prob": 1.0, "jpeg": {"lo": 10, "hi": 10}}},
    "lowres": {"degradation": {"lowres_prob": 1.0, "lowres": {"lo": 0.25, "hi": 0.25}}},
    "jitter": {"degradation": {"jitter_prob": 1.0, "brightness": {"lo": 0.2, "hi": 0.2}}},
    "gray": {"degradation": {"gray_prob": 1.0}},
    "background": {"background": {"saturation": {"lo": 0, "hi": 0}}},
    "glasses": {"occluders": {"glasses_prob": 1.0, "sunglasses_prob": 1.0}},
    "patch": {"occluders": {"patch_prob": 1.0, "patch_size": {"lo": 0.3, "hi": 0.3}}},
}


@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_each_knob_changes_the_image(default_model, knob):
    base_over = {"pose": {"yaw": {"lo": 0, "hi": 0}, "pitch": {"lo": 0, "hi": 0}, "roll": {"lo": 0, "hi": 0}},
                 "expression": {"prob": 0.0}, "supersample": 1, "occluders": {"glasses_prob": 0.0, "patch_prob": 0.0}}
    base = MorphableSource(preset="frontal", size=64, model=default_model, overrides=base_over)
    ids = base.sample_identities(1, seed=0)
    r, k = torch.tensor([0]), torch.tensor([0])
    a = base.render(ids, r, k, seed=0)
    import copy

    over = copy.deepcopy(base_over)
    for sec, vals in KNOBS[knob].items():
        over.setdefault(sec, {}).update(vals) if isinstance(vals, dict) else over.__setitem__(sec, vals)
    b = MorphableSource(preset="frontal", size=64, model=default_model, overrides=over).render(ids, r, k, seed=0)
    assert (a.images - b.images).abs().mean() > 0.005, knob


def test_soft_shadow_penumbra_is_normalised_over_the_face():
    from morphable.source import _soften_shadow

    S = 16
    lit = torch.zeros(1, S, S)
    lit[..., 8:] = 1.0  # a shadow edge down the middle
    covered = torch.zeros(1, S, S, dtype=torch.bool)
    covered[:, :, 2:14] = True  # the face; columns 0-1 and 14-15 are background
    idx = covered.nonzero(as_tuple=True)
    flat = (idx[0] * S + idx[1]) * S + idx[2]
    hard = lit[idx]
    assert torch.equal(_soften_shadow(hard, flat, 1, S, torch.tensor([0.0])), hard)  # a point light: unchanged
    soft = torch.zeros(1, S, S)
    soft[idx] = _soften_shadow(hard, flat, 1, S, torch.tensor([2.0]))
    row = soft[0, 8, 2:14]
    assert bool((row[1:] >= row[:-1] - 1e-6).all())  # still dark to lit, now a gradient
    assert 0.05 < float(row[5]) < 0.5 and 0.5 < float(row[6]) < 0.95  # the penumbra straddles the edge
    assert float(row[-1]) > 0.99 and float(row[0]) < 0.01  # the background does not darken the face's edge


def test_light_softness_softens_cast_shadows_only(default_model):
    base = {"pose": {"yaw": {"lo": 0, "hi": 0}, "pitch": {"lo": 0, "hi": 0}, "roll": {"lo": 0, "hi": 0}},
            "expression": {"prob": 0.0}, "occluders": {"glasses_prob": 0.0},
            "degradation": {"jpeg_prob": 0.0, "noise_prob": 0.0},
            "light": {"shadows": 1.0, "azimuth": {"lo": 60, "hi": 60}, "elevation": {"lo": 10, "hi": 10},
                      "intensity": {"lo": 2, "hi": 2}, "ambient": {"lo": 0.2, "hi": 0.2}}}

    def render(softness: float, shadows: float = 1.0) -> torch.Tensor:
        over = {**base, "light": {**base["light"], "shadows": shadows, "softness": {"lo": softness, "hi": softness}}}
        src = MorphableSource(preset="frontal", size=96, model=default_model, overrides=over)
        b = src.render(src.sample_identities(1, seed=0), torch.tensor([0]), torch.tensor([0]), seed=0)
        assert float(b.factors["light_softness"][0]) == softness
        return b.images[0]

    hard, soft = render(0.0), render(1.0)
    assert (hard - soft).abs().mean() > 0.002
    # a soft edge has smaller steps between neighbouring pixels than a hard one
    step = lambda im: (im[:, :, 1:] - im[:, :, :-1]).abs().mean()  # noqa: E731
    assert float(step(soft)) < float(step(hard))
    # without cast shadows the light's size changes nothing
    assert torch.equal(render(0.0, shadows=0.0), render(1.0, shadows=0.0))


def test_occlusion_power_deepens_the_creases_only(default_model):
    """light.occlusion_power raises the head's ambient visibility to a power: pixels of low visibility
    (creases) darken more than open ones; 1 keeps the visibility as computed; the hair keeps its own."""
    base = {"pose": {"yaw": {"lo": 0, "hi": 0}, "pitch": {"lo": 0, "hi": 0}, "roll": {"lo": 0, "hi": 0}},
            "expression": {"prob": 0.0}, "occluders": {"glasses_prob": 0.0},
            "degradation": {"jpeg_prob": 0.0, "noise_prob": 0.0}, "light": {"metering": 0.0}}
    V = default_model.num_vertices

    def render(power: float):
        src = MorphableSource(preset="frontal", size=64, model=default_model,
                              overrides={**base, "light": {**base["light"], "occlusion_power": power}})
        seen = {}
        light = src._light

        def spy(b, geo, px, surf):  # the visibility of each covered pixel, as a (64, 64) map
            seen["ao"] = torch.full((64 * 64,), float("nan")).index_copy_(0, px.flat, px.occlusion).view(64, 64)
            return light(b, geo, px, surf)

        src._light = spy
        img = src.render(src.sample_identities(1, seed=0), torch.tensor([0]), torch.tensor([0]), seed=0).images[0]
        return src._rest_ao[:, 3], seen["ao"], img.mean(0)

    ao1, map1, lum1 = render(1.0)
    ao3, _, lum3 = render(3.0)
    assert torch.equal(ao1[:V], default_model.regions["vertex_ao"].to(ao1))  # 1: as computed
    assert torch.allclose(ao3[:V], ao1[:V] ** 3) and torch.equal(ao3[V:], ao1[V:])  # the hair's is not the head's
    ratio = lum3 / lum1.clamp_min(1e-3)
    enclosed, open_ = map1 < 0.7, map1 > 0.95
    assert int(enclosed.sum()) >= 10 and int(open_.sum()) >= 100
    assert float(ratio[enclosed].mean()) < float(ratio[open_].mean()) - 0.1


def test_flash_is_drawn_last_and_lights_the_face_from_the_camera(default_model):
    base = {"pose": {"yaw": {"lo": 0, "hi": 0}, "pitch": {"lo": 0, "hi": 0}, "roll": {"lo": 0, "hi": 0}},
            "expression": {"prob": 0.0}, "occluders": {"glasses_prob": 0.0},
            "degradation": {"jpeg_prob": 0.0, "noise_prob": 0.0},
            "light": {"shadows": 1.0, "azimuth": {"lo": 70, "hi": 70}, "elevation": {"lo": 10, "hi": 10},
                      "intensity": {"lo": 2, "hi": 2}, "ambient": {"lo": 0.2, "hi": 0.2}, "sh_detail": {"lo": 0, "hi": 0},
                      "flash": {"lo": 0.9, "hi": 0.9}}}

    def render(prob: float):
        src = MorphableSource(preset="frontal", size=96, model=default_model,
                              overrides={**base, "light": {**base["light"], "flash_prob": prob}})
        return src.render(src.sample_identities(2, seed=0), torch.tensor([0, 1]), torch.tensor([0, 0]), seed=0)

    off, on = render(0.0), render(1.0)
    assert torch.equal(off.factors["light_flash"], torch.zeros(2))
    assert torch.allclose(on.factors["light_flash"], torch.full((2,), 0.9))
    for k, v in off.factors.items():  # drawn after every other factor: they keep their values
        if k != "light_flash":
            assert torch.equal(v, on.factors[k]), k
    # the key light comes from one side; the flash, from the camera, lights the other side too
    face = lambda im: im[:, 30:75].mean(0)  # noqa: E731  (rows through the eyes, nose and mouth)
    halves = lambda im: sorted([float(face(im)[:, 24:44].mean()), float(face(im)[:, 52:72].mean())])  # noqa: E731
    for i in range(2):
        (dark0, bright0), (dark1, bright1) = halves(off.images[i]), halves(on.images[i])
        assert dark1 / bright1 > dark0 / bright0 + 0.05


def test_camera_psf_softens_the_clean_images_only_and_is_drawn_last(default_model):
    """camera.psf blurs the images that the degradations neither blur nor downsample (each by its own
    drawn sigma, logged as ``camera_psf``; 0 for the others, which stay as they were); it is drawn
    after every other factor, so they keep their values; a sigma under 0 is refused."""
    base = {"degradation": {"jpeg_prob": 0.0, "noise_prob": 0.0, "blur_prob": 0.5, "lowres_prob": 0.3,
                            "jitter_prob": 0.0, "gray_prob": 0.0}}

    def render(lo: float, hi: float):
        src = MorphableSource(preset="wild", size=64, model=default_model,
                              overrides={**base, "camera": {"psf": {"lo": lo, "hi": hi}}})
        ids = src.sample_identities(4, seed=0)
        return src.render(ids, torch.arange(4).repeat_interleave(4), torch.arange(4).repeat(4), seed=0)

    sharp, soft = render(0.0, 0.0), render(0.6, 0.9)
    assert torch.equal(sharp.factors["camera_psf"], torch.zeros(16))
    for k, v in sharp.factors.items():  # drawn after every other factor: they keep their values
        if k != "camera_psf":
            assert torch.equal(v, soft.factors[k]), k
    degraded = (soft.factors["blur"] > 0) | (soft.factors["lowres"] < 1)
    assert 0 < int(degraded.sum()) < 16
    psf = soft.factors["camera_psf"]
    assert torch.equal(psf[degraded], torch.zeros(int(degraded.sum())))
    assert bool(((psf[~degraded] >= 0.6) & (psf[~degraded] <= 0.9)).all())
    assert torch.equal(sharp.images[degraded], soft.images[degraded])  # they carry their own softness

    def detail(im):  # mean squared Laplacian of the grey image
        g = im.mean(1, keepdim=True)
        k = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])[None, None]
        return torch.nn.functional.conv2d(g, k).pow(2).mean((1, 2, 3))

    ratio = detail(soft.images[~degraded]) / detail(sharp.images[~degraded])
    assert bool((ratio < 0.9).all()) and float(ratio.mean()) < 0.75, ratio
    with pytest.raises(ValueError, match="camera.psf must not go below 0"):
        MorphableSource(preset="frontal", size=32, model=default_model, overrides={"camera": {"psf": {"lo": -0.1, "hi": 0.5}}})


def test_flash_highlight_spares_the_eyes(default_model):
    """The flash's broad skin highlight (scaled by ``light.specular``) leaves the eyes, which have their
    own sharp catchlight, alone: the eye centres do not change with the skin's specular strength, the
    skin does."""
    clean = {"blur_prob": 0.0, "noise_prob": 0.0, "jpeg_prob": 0.0, "lowres_prob": 0.0, "jitter_prob": 0.0, "gray_prob": 0.0}

    def render(specular: float):
        src = MorphableSource(preset="frontal", size=96, model=default_model, overrides={
            "pose": {"yaw": {"lo": 0, "hi": 0}, "pitch": {"lo": 0, "hi": 0}, "roll": {"lo": 0, "hi": 0}},
            "expression": {"prob": 0.0}, "occluders": {"glasses_prob": 0.0}, "degradation": clean,
            "camera": {"psf": {"lo": 0.0, "hi": 0.0}, "eye_softness": 0.0},  # pixel-sharp: no skin highlight blurred into the eyes
            "light": {"flash_prob": 1.0, "flash": {"lo": 0.9, "hi": 0.9}, "specular": {"lo": specular, "hi": specular}}})
        return src.render(src.sample_identities(2, seed=0), torch.tensor([0, 1]), torch.tensor([0, 0]), seed=0)

    dull, shiny = render(0.0), render(0.25)
    assert not torch.equal(dull.images, shiny.images)  # the skin's highlight follows light.specular
    for i in range(2):
        for x, y in dull.landmarks[i, :2].round().long().tolist():  # the eye centres
            torch.testing.assert_close(dull.images[i, :, y - 1:y + 2, x - 1:x + 2], shiny.images[i, :, y - 1:y + 2, x - 1:x + 2],
                                       rtol=0, atol=1e-5)


def test_flash_presets_and_probability_checked(default_model):
    assert MorphableSource(preset="wild", size=32, model=default_model).cfg.light.flash_prob == 0.3
    assert MorphableSource(preset="frontal", size=32, model=default_model).cfg.light.flash_prob == 0.0
    with pytest.raises(ConfigError, match=r"light\.flash_prob: a probability must be in \[0, 1\], got 1\.5"):
        MorphableSource(preset="wild", size=32, model=default_model, overrides={"light": {"flash_prob": 1.5}})


def test_background_folder(default_model, tmp_path):
    from PIL import Image

    Image.new("RGB", (50, 40), (255, 0, 0)).save(tmp_path / "red.png")
    src = MorphableSource(preset="frontal", size=32, model=default_model,
                          overrides={"background": {"folder": str(tmp_path), "image_prob": 1.0, "blur": {"lo": 0, "hi": 0}}})
    ids = src.sample_identities(1, seed=0)
    b = src.render(ids, torch.tensor([0]), torch.tensor([0]), seed=0)
    assert b.factors["background_image"][0] == 0
    corner = b.images[0, :, 0, 0]
    assert corner[0] > corner[1] + 0.3
    with pytest.raises(ValueError, match="does not exist"):
        MorphableSource(preset="frontal", size=32, model=default_model,
                        overrides={"background": {"folder": str(tmp_path / "none_here")}})


def test_bad_parameters_are_named(default_model):
    with pytest.raises(ValueError, match="unknown preset"):
        MorphableSource(preset="studio", model=default_model)
    with pytest.raises(ValueError, match=r"^pose\.yawn: unknown key \(did you mean 'yaw'\?\)"):
        MorphableSource(model=default_model, overrides={"pose": {"yawn": 3}})
    with pytest.raises(ValueError, match="unknown expression units"):
        MorphableSource(model=default_model, overrides={"expression": {"units": ["smile_big"]}})
    with pytest.raises(ValueError, match="size"):
        MorphableSource(size=4, model=default_model)
    src = MorphableSource(preset="frontal", size=32, model=default_model)
    with pytest.raises(ValueError, match=">= 1"):
        src.sample_identities(0, seed=0)
    ids = src.sample_identities(2, seed=0)
    with pytest.raises(ValueError, match="at least one"):
        src.render(ids, torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), seed=0)
    with pytest.raises(ValueError, match="rows must index"):
        src.render(ids, torch.tensor([5]), torch.tensor([0]), seed=0)
    with pytest.raises(ConfigError, match=r"^pose\.yaw: lo \(5\) > hi \(-5\)$"):  # refused when loaded, not at render
        MorphableSource(preset="frontal", size=32, model=default_model, overrides={"pose": {"yaw": {"lo": 5, "hi": -5}}})


@pytest.mark.parametrize("overrides, match", [
    ({"pose": {"yaw": {"lo": 30, "hi": -30}}}, r"^pose\.yaw: lo \(30\) > hi \(-30\)$"),
    ({"light": {"azimuth": {"mean": 0, "std": 10, "lo": 5, "hi": -5}}}, r"^light\.azimuth: lo \(5\) > hi \(-5\)$"),
    ({"pose": {"roll": {"mean": 0, "std": -1}}}, r"^pose\.roll: std must be >= 0, got -1$"),
    ({"degradation": {"blur_prob": 1.5}}, r"^degradation\.blur_prob: a probability must be in \[0, 1\], got 1\.5$"),
    ({"expression": {"prob": -0.1}}, r"^expression\.prob: a probability must be in \[0, 1\]"),
    ({"light": {"occlusion_power": 0}}, r"^light\.occlusion_power: an exponent must be > 0, got 0$"),
])
def test_render_config_values_checked_when_loaded(overrides, match):
    from morphable.variation import apply_overrides, preset

    with pytest.raises(ConfigError, match=match):
        apply_overrides(preset("wild"), overrides)
    assert apply_overrides(preset("wild"), {"pose": {"yaw": {"lo": -30, "hi": 30}}}).pose.yaw.hi == 30


def test_rotation_matrix_is_proper():
    R = euler_to_matrix(torch.tensor([30.0]), torch.tensor([-10.0]), torch.tensor([5.0]))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3)[None], atol=1e-6)
    assert torch.allclose(torch.det(R), torch.ones(1), atol=1e-6)


def test_eye_visibility_dims_the_eyes_only(default_model, monkeypatch):
    import morphable.source as S
    # no JPEG: its 8 x 8 blocks would spread the eyes' change over their neighbours
    frontal = MorphableSource(preset="frontal", size=112, model=default_model,
                              overrides={"degradation": {"jpeg_prob": 0.0}})
    ids = frontal.sample_identities(2, seed=0)
    rows, var = torch.tensor([0, 1]), torch.tensor([0, 0])
    dim = frontal.render(ids, rows, var, seed=0)
    monkeypatch.setattr(S, "EYE_VISIBILITY", 1.0)
    lit = frontal.render(ids, rows, var, seed=0)
    d = lit.images - dim.images  # (2, 3, 112, 112)
    changed = d.abs().amax(1) > 0.02  # (2, 112, 112)
    assert 0 < int(changed.sum()) < 0.03 * changed.numel()  # a few pixels: the eyes
    assert float(d.mean(1)[changed].mean()) > 0.03  # brighter with the eyeball fully visible
    ys, xs = changed.nonzero()[:, 1].float(), changed.nonzero()[:, 2].float()
    eyes = dim.landmarks[:, :2].mean(0)  # (2, 2): the two eye landmarks, x y in pixels
    near = ((ys[:, None] - eyes[None, :, 1]).abs() < 10) & ((xs[:, None] - eyes[None, :, 0]).abs() < 14)
    assert float(near.any(1).float().mean()) > 0.9  # around the eyes


def test_soften_eyes_blurs_the_eyes_and_their_margin_only():
    from morphable.default_model import REGION_IDS
    from morphable.source import _soften_eyes

    S = 64
    reg = torch.full((2, S, S), REGION_IDS["skin"], dtype=torch.int8)
    reg[:, 30:34, 20:30] = REGION_IDS["eye"]
    img = torch.zeros(2, 3, S, S)
    img[:, :, 30:34, 20:30] = 1.0  # a bright eye on dark skin: a sharp edge
    img[:, :, 50:, :] = torch.rand(2, 3, S - 50, S, generator=torch.Generator().manual_seed(0))  # detail far away
    out = _soften_eyes(img, reg, torch.tensor([1.5, 0.0]))
    assert torch.equal(out[1], img[1])  # sigma 0: as drawn
    a = out[0]
    assert 0.2 < float(a[0, 29, 25]) < 0.8 and 0.1 < float(a[0, 32, 30]) < 0.8  # the edges are soft now
    assert float(a[0, 32, 25]) < 1.0  # the eye's inside mixes with its rim
    assert torch.equal(a[:, 50:], img[0, :, 50:]) and torch.equal(a[:, :20], img[0, :, :20])  # far away: untouched
    alone = _soften_eyes(img[:1], reg[:1], torch.tensor([1.5]))
    assert torch.equal(alone[0], a)  # an image's result does not depend on its batch
    no_eye = torch.full_like(reg[:1], REGION_IDS["skin"])
    assert torch.equal(_soften_eyes(img[:1], no_eye, torch.tensor([1.5])), img[:1])  # closed eyes: nothing to soften


def test_eye_softness_changes_the_eyes_only_and_is_checked(default_model):
    over = {"pose": {"yaw": {"lo": 0, "hi": 0}, "pitch": {"lo": 0, "hi": 0}, "roll": {"lo": 0, "hi": 0}},
            "expression": {"prob": 0.0}, "occluders": {"glasses_prob": 0.0}}
    ids = MorphableSource(preset="frontal", size=112, model=default_model, overrides=over).sample_identities(1, seed=0)
    r, k = torch.tensor([0]), torch.tensor([0])
    imgs = {v: MorphableSource(preset="frontal", size=112, model=default_model,
                               overrides={**over, "camera": {"eye_softness": v}}).render(ids, r, k, seed=0).images[0]
            for v in (0.0, 2.0)}
    diff = (imgs[2.0] - imgs[0.0]).abs().amax(0)  # (112, 112)
    rows = diff.amax(1)
    assert float(rows[44:60].max()) > 0.05  # the eyes (ArcFace template: eyes on row ~52)
    assert float(rows[70:].max()) < 0.02 and float(rows[:30].max()) < 0.02  # mouth, chin, forehead: as drawn
    blurred = {**over, "degradation": {"blur_prob": 1.0, "blur": {"lo": 0.8, "hi": 0.8}}}  # soft already: as drawn
    a, b = (MorphableSource(preset="frontal", size=112, model=default_model,
                            overrides={**blurred, "camera": {"eye_softness": v}}).render(ids, r, k, seed=0).images
            for v in (0.0, 2.0))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="camera.eye_softness must be >= 0"):
        MorphableSource(preset="frontal", size=32, model=default_model, overrides={"camera": {"eye_softness": -1.0}})


def test_lid_shading_darkens_the_lash_line_the_lid_fold_and_the_corners_only():
    from morphable.default_model import REGION_IDS
    from morphable.source import LASH_CORNERS, LID_FOLD, LID_SHADES, _flat_index, _lid_shading, _region_map

    S = 112
    reg = torch.full((1, S, S), REGION_IDS["skin"])
    reg[0, 50:56, 40:60] = REGION_IDS["eye"]  # an eye opening under skin
    reg[0, :, :10] = -1  # uncovered pixels (background)
    mask = reg >= 0
    idx = mask.nonzero(as_tuple=True)
    f = torch.ones(1, S, S)
    flat = _flat_index(idx, S)
    f[idx] = _lid_shading(_region_map(reg[idx], flat, 1, S), flat)
    assert torch.all(f[0, 50, 40:60] == LID_SHADES["lash"])  # top row of the eye: lashes
    assert torch.all(f[0, 49, 40:60] == LID_SHADES["lash_skin"])  # skin just above: the lash line on the lid
    assert torch.all(f[0, 51, 40:60] < 1) and torch.all(f[0, 53, 40:60] == 1)  # lid shadow, then open eye
    assert torch.all(f[0, 55, 40:60] == LID_SHADES["lower"])  # lower lash line
    # the lid's fold: the skin 2, 3 and 4 rows above the eye, lighter with distance
    for d, v in zip((2, 3, 4), LID_FOLD):
        torch.testing.assert_close(f[0, 50 - d, 42:58], torch.full((16,), v))
    assert LID_FOLD[0] < LID_FOLD[-1] < 1 and torch.all(f[0, 50 - 2 - len(LID_FOLD), 40:60] == 1)
    # the lash line past the corners: the skin 1 and 2 columns beside the eye
    for d, v in zip((1, 2), LASH_CORNERS):
        torch.testing.assert_close(f[0, 52:54, [40 - d, 59 + d]], torch.full((2, 2), v))
    assert torch.all(f[0, 52:54, 40 - 1 - len(LASH_CORNERS)] == 1)
    assert torch.all(f[0, 10:40] == 1) and torch.all(f[0, 60:] == 1)  # elsewhere untouched
    # at 224 px every band is 2 px wide
    reg2 = torch.nn.functional.interpolate(reg[None].float(), scale_factor=2, mode="nearest")[0].long()
    idx2 = (reg2 >= 0).nonzero(as_tuple=True)
    flat2 = _flat_index(idx2, 2 * S)
    f2 = torch.ones(1, 2 * S, 2 * S)
    f2[idx2] = _lid_shading(_region_map(reg2[idx2], flat2, 1, 2 * S), flat2)
    torch.testing.assert_close(f2[0, 96:98, 90], torch.full((2,), LID_FOLD[0]))  # rows 3-4 above the eye (row 100)
    torch.testing.assert_close(f2[0, 104:108, [78, 79, 120, 121]], torch.full((4, 4), LASH_CORNERS[0]))


def test_teeth_show_under_the_upper_lip_and_over_the_lower_lip():
    from morphable.default_model import REGION_IDS
    from morphable.source import _flat_index, _region_map, _teeth

    S = 112
    reg = torch.full((1, S, S), REGION_IDS["skin"])
    reg[0, 70:73, 40:70] = REGION_IDS["lips"]  # upper lip
    reg[0, 73:83, 45:65] = REGION_IDS["mouth_cavity"]  # an open mouth
    reg[0, 83:86, 40:70] = REGION_IDS["lips"]  # lower lip
    idx = (reg >= 0).nonzero(as_tuple=True)
    t = torch.zeros(1, S, S, dtype=torch.uint8)
    flat = _flat_index(idx, S)
    t[idx] = _teeth(_region_map(reg[idx], flat, 1, S), flat)
    assert torch.all(t[0, 73:77, 45:65] == 1) and torch.all(t[0, 77:81, 45:65] == 0)  # 4 px of upper teeth
    assert torch.all(t[0, 81:83, 45:65] == 2)  # 2 px of lower teeth
    assert int((t > 0).sum()) == 20 * 6  # nothing outside the mouth
    closed = torch.full((1, S, S), REGION_IDS["skin"])
    idx = (closed >= 0).nonzero(as_tuple=True)
    flat = _flat_index(idx, S)
    assert int(_teeth(_region_map(closed[idx], flat, 1, S), flat).sum()) == 0


def test_mouth_shading_draws_the_lip_seam_and_shades_a_narrow_opening():
    from morphable.default_model import REGION_IDS
    from morphable.source import MOUTH_SHADES, _flat_index, _mouth_shading, _region_map

    S = 112
    reg = torch.full((1, S, S), REGION_IDS["skin"])
    reg[0, 70:75, 30:50] = REGION_IDS["lips"]  # closed lips on the left ...
    reg[0, 70:73, 60:90] = REGION_IDS["lips"]  # ... parted by 1 px in the middle, wide open on the right
    reg[0, 73, 60:75] = REGION_IDS["tongue"]
    reg[0, 73:83, 75:90] = REGION_IDS["mouth_cavity"]
    reg[0, 74:77, 60:75] = REGION_IDS["lips"]
    reg[0, 83:86, 75:90] = REGION_IDS["lips"]
    upper = torch.zeros(1, S, S, dtype=torch.bool)
    upper[0, 70:73] = True  # rows 70-72 belong to the upper lip
    idx = (reg >= 0).nonzero(as_tuple=True)
    flat = _flat_index(idx, S)
    f = torch.ones(1, S, S)
    f[idx] = _mouth_shading(_region_map(reg[idx], flat, 1, S), flat, upper)
    seam, up = MOUTH_SHADES["seam"], MOUTH_SHADES["upper_lip"]
    assert 0 < up < 1
    # closed: the upper lip's last row and the lower lip's first (the upper lip faces down, darker)
    torch.testing.assert_close(f[0, 72, 30:50], torch.full((20,), seam * up))
    assert torch.all(f[0, 73, 30:50] == seam)
    torch.testing.assert_close(f[0, 70:72, 30:50], torch.full((2, 20), up))  # the rest of the upper lip
    assert torch.all(f[0, 74, 30:50] == 1)  # the lower lip as lit
    torch.testing.assert_close(f[0, 72, 60:90], torch.full((30,), seam * up))  # the lips' edge at the opening
    assert torch.all(f[0, 74, 60:75] == seam)
    narrow, wide = float(f[0, 73, 65]), float(f[0, 78, 82])
    assert MOUTH_SHADES["narrow"] - 1e-6 <= narrow < 0.5 and wide == 1.0  # a 1 px gap lies in the lips' shadow
    assert torch.all(f[0, :60] == 1) and torch.all(f[0, 90:] == 1)  # nothing outside the mouth
    closed = torch.full((1, S, S), REGION_IDS["skin"])
    idx = (closed >= 0).nonzero(as_tuple=True)
    flat = _flat_index(idx, S)
    assert torch.all(_mouth_shading(_region_map(closed[idx], flat, 1, S), flat, upper) == 1)


def test_teeth_darken_towards_the_corners_and_between_teeth():
    from morphable.source import TEETH_GAPS, _teeth_shade

    left, right = torch.tensor([[40.0, 80.0]]), torch.tensor([[72.0, 80.0]])  # corners, half-width 16 px
    x = torch.linspace(40.5, 71.5, 32)
    f = _teeth_shade(x, torch.full_like(x, 81.0), left.expand(32, 2), right.expand(32, 2))
    assert torch.all((f > 0) & (f <= 1))
    assert torch.allclose(f, f.flip(0), atol=1e-5)  # symmetric about the mouth's centre
    mid = lambda g: 16 * (1 + g)  # noqa: E731  pixel position (from the left corner) of a gap on the right
    between = 16 * (1 + (TEETH_GAPS[1] + TEETH_GAPS[2]) / 2)  # the middle of the lateral incisor
    at = lambda px: float(_teeth_shade(torch.tensor([40 + px]), torch.tensor([80.0]), left, right))  # noqa: E731
    assert at(mid(TEETH_GAPS[1])) < 0.75 * at(between)  # a dark line between two teeth
    assert at(mid(TEETH_GAPS[0])) < 0.75 * at(between)  # and between the central incisors
    assert at(31.0) < 0.6 * at(between)  # the buccal corridor: dark at the corners


@pytest.mark.parametrize("name", ["smile", "grin"])
def test_smiles_pull_the_corners_out_and_up(default_model, name):
    """At intensity 1 a smile moves each mouth corner about as far out as up (filmed smiles: ~47 degrees,
    mouth ~27% wider), not the rig's mouthSmile alone (11 mm up for 6 mm out)."""
    from morphable import EXPRESSIONS

    m = default_model
    e = torch.zeros(1, m.num_expression)
    for unit, w in EXPRESSIONS[name].items():
        e[0, m.expression_labels.index(unit)] = w
    rest = m.landmark_points(m.vertices(torch.zeros(1, m.num_shape), torch.zeros(1, m.num_expression)))[0]
    moved = m.landmark_points(m.vertices(torch.zeros(1, m.num_shape), e))[0]
    for corner, out in ((3, -1.0), (4, 1.0)):
        d = (moved[corner] - rest[corner]) * 1000  # mm
        lateral, up = float(d[0]) * out, float(d[1])
        assert 4 < lateral < 10 and 3 < up < 10
        assert 30 < math.degrees(math.atan2(up, lateral)) < 60
    width = lambda p: float((p[4] - p[3]).norm())  # noqa: E731
    assert 1.15 < width(moved) / width(rest) < 1.4


def test_teeth_are_lit_at_the_front_of_the_mouth(default_model):
    """Teeth seen in a grin are lit as teeth just behind the lips (brighter than the lips), not as the
    enclosed cavity whose pixels they take."""
    from morphable import EXPRESSIONS
    from morphable.default_model import REGION_IDS

    z = {"lo": 0, "hi": 0}
    src = MorphableSource(preset="frontal", size=112, model=default_model,
                          overrides={"pose": {"yaw": z, "pitch": z, "roll": z}})
    ids = src.sample_identities(4, seed=0)
    b = src._batch(ids, torch.arange(4), torch.zeros(4, dtype=torch.long), seed=0)
    grin = torch.zeros(default_model.num_expression)
    for unit, w in EXPRESSIONS["grin"].items():
        grin[default_model.expression_labels.index(unit)] = w
    b.fac["expression"] = grin.expand(4, -1).to(b.fac["expression"])
    geo = src._geometry(b)
    px = src._rasterize(b, geo)
    surf = src._albedo(b, geo, px)
    lin = src._light(b, geo, px, surf)
    teeth, lips = surf.teeth > 0, px.region == REGION_IDS["lips"]
    assert int(teeth.sum()) > 40
    lum = lin.mean(-1)
    assert float(lum[teeth].mean()) > float(lum[lips].mean())


def test_render_stages_one_by_one(default_model):
    """The render is a chain of stages; each one can be called (and checked) on its own."""
    from morphable.default_model import REGION_IDS

    z = {"lo": 0, "hi": 0}
    src = MorphableSource(preset="frontal", size=64, model=default_model,
                          overrides={"expression": {"prob": 0.0}, "pose": {"yaw": z, "pitch": z, "roll": z}})
    ids = src.sample_identities(3, seed=0)
    ids.params["shape"].zero_()  # the mean face
    ids.params["relief"].zero_()
    rows, var = torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1])
    b = src._batch(ids, rows, var, seed=0)
    assert b.fac["yaw"].shape == (3,) and b.uniq.tolist() == [0, 1] and b.first.tolist() == [0, 1]
    # geometry: a frontal neutral mean face lands on the template; the face is in front of the camera
    geo = src._geometry(b)
    assert float((geo.landmarks - template(64)).norm(dim=-1).max()) < 1.5
    S = 64 * src.cfg.supersample
    assert geo.screen.shape == geo.vertices.shape and geo.align.shape == (3, 2, 3)
    # raster: the face centre is covered by the face (skin), not by the background or the hair
    px = src._rasterize(b, geo)
    mask = px.frag.mask
    c = S // 2
    assert bool(mask[:, c - 4 : c + 4, c - 4 : c + 4].all())
    assert px.normal.shape == (len(px.bsel), 3) and torch.allclose(px.normal.norm(dim=-1), torch.ones(1), atol=1e-4)
    centre = (px.idx[1] == c) & (px.idx[2] == c)
    assert bool((px.region[centre] == REGION_IDS["skin"]).all()) and int(centre.sum()) == 3
    assert bool((px.normal[centre, 2] > 0.5).all())  # the nose-bridge area faces the camera
    # albedo and light: finite, non-negative, per covered pixel
    surf = src._albedo(b, geo, px)
    assert surf.albedo.shape == (len(px.bsel), 3) and bool(((surf.albedo >= 0) & (surf.albedo <= 1)).all())
    lin = src._light(b, geo, px, surf)
    assert lin.shape == surf.albedo.shape and bool(torch.isfinite(lin).all()) and float(lin.min()) >= 0
    assert float(lin.mean()) > 0.05  # lit, not black
    back = src._background(b)
    assert back.shape == (3, 3, S, S) and bool(torch.isfinite(back).all())
    img = src._composite(b, geo, px, lin, back)
    assert img.shape == (3, 3, 64, 64) and float(img.min()) >= 0 and float(img.max()) <= 1
    shaded = src._mean_shades(px, img)  # the fitted shades: the face's features, not the image's corners
    assert shaded.shape == img.shape and not torch.equal(shaded, img) and torch.equal(shaded[..., :4, :4], img[..., :4, :4])
    img = src._degrade(b, src._occluders(b, geo, src._learnt_detail(b, geo, px, shaded)))
    # the stages chained by hand are the render, bit for bit
    ref = src.render(ids, rows, var, seed=0)
    assert torch.equal(img.float(), ref.images) and torch.equal(geo.landmarks.float(), ref.landmarks)
    assert src._factors(b).keys() == ref.factors.keys()


def test_pose_signs_on_screen():
    from morphable.camera import Camera
    pts = torch.tensor([[0.03, 0.0, 0.0], [-0.03, 0.0, 0.0], [0.0, -0.04, 0.03]])  # left eye, right eye, nose tip
    cam = Camera.from_35mm(torch.ones(1), torch.full((1,), 50.0), 112)

    def screen(yaw, pitch, roll):
        R = euler_to_matrix(torch.tensor([yaw]), torch.tensor([pitch]), torch.tensor([roll]))
        return cam.project(pts[None] @ R.transpose(1, 2))[0, :, :2]
    rest = screen(0.0, 0.0, 0.0)
    assert float(screen(20.0, 0.0, 0.0)[2, 0]) < float(rest[2, 0])  # yaw > 0: the nose moves to image-left
    assert float(screen(0.0, 20.0, 0.0)[2, 1]) > float(rest[2, 1])  # pitch > 0: the nose moves down, the face looks down
    rolled = screen(0.0, 0.0, 20.0)  # roll > 0: counter-clockwise, the image-right (left) eye rises
    assert float(rolled[0, 1]) < float(rest[0, 1]) and float(rolled[1, 1]) > float(rest[1, 1])
