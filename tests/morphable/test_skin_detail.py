"""Facial relief (morphable.relief), skin lines, moles and the eyes' colours (morphable.appearance)."""
import math

import pytest
import torch

from morphable.appearance import APPEARANCE_PARAMS, SMILE_FOLD, shade_albedo, skin_lines, smile_folds
from morphable.default_model import REGION_IDS
from morphable.relief import (FEATURE_FIELDS, FEATURE_SD, NUM_FEATURE, NUM_RELIEF, feature_displacement, feature_fields,
                              relief_basis, relief_displacement, relief_mask)

EYES = torch.tensor([[-0.032, 0.0, 0.0], [0.032, 0.0, 0.0]])


def _points(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([(torch.rand(n, generator=g) - 0.5) * 0.16, (torch.rand(n, generator=g) - 0.7) * 0.2,
                        (torch.rand(n, generator=g) - 0.5) * 0.12], 1)


def test_relief_basis_is_symmetric_and_unit_rms():
    p = _points()
    b = relief_basis(p)
    assert b.shape == (len(p), NUM_RELIEF)
    mirrored = relief_basis(p * torch.tensor([-1.0, 1.0, 1.0]))
    torch.testing.assert_close(b, mirrored)
    # standard-normal coefficients give unit rms displacement (mask 1, amplitude 1)
    c = torch.randn(2000, NUM_RELIEF, generator=torch.Generator().manual_seed(1))
    d = relief_displacement(c, b, torch.ones(len(p)), 1.0)
    assert 0.95 < float(d.pow(2).mean().sqrt()) < 1.05


def test_relief_mask_spares_eyes_and_the_back_of_the_head():
    pts = torch.tensor([[0.032, 0.0, 0.0], [-0.032, 0.0, 0.0], [0.0, -0.04, 0.02], [0.0, 0.02, -0.15], [0.0, 0.2, 0.0]])
    m = relief_mask(pts, EYES)
    assert float(m[0]) < 0.02 and float(m[1]) < 0.02  # eye centres
    assert float(m[2]) > 0.9  # nose / upper lip area
    assert float(m[3]) == 0.0 and float(m[4]) == 0.0  # back of the head, above the forehead
    assert bool(((m >= 0) & (m <= 1)).all())


def test_a_smile_deepens_the_nasolabial_folds():
    naso = torch.tensor([[0.025, -0.046, 0.02], [-0.025, -0.046, 0.02]])  # on both folds
    elsewhere = torch.tensor([[0.05, -0.03, 0.0], [0.0, 0.03, 0.01], [0.0, -0.09, 0.01]])  # cheek, forehead, chin
    p = torch.cat([naso, elsewhere])
    none, half, full = (smile_folds(p, torch.full((len(p),), s)) for s in (0.0, 0.5, 1.0))
    assert float(none.abs().max()) == 0.0  # no smile, no change: the resting face's fold is baked
    assert float(full[0]) == pytest.approx(float(full[1]))  # both sides
    assert SMILE_FOLD * 0.8 < float(full[0]) <= SMILE_FOLD and float(half[0]) == pytest.approx(float(full[0]) / 2)
    assert float(full[2:].max()) < 0.02  # only the folds
    assert float(smile_folds(p, torch.full((len(p),), 3.0))[0]) == pytest.approx(float(full[0]))  # strength capped at 1


def test_skin_lines_deepen_with_wrinkles():
    forehead = torch.tensor([[0.0, 0.0355 + 0.007 * k, 0.01] for k in range(3)])  # on the forehead lines
    naso = torch.tensor([[0.025, -0.046, 0.02]])
    cheek = torch.tensor([[0.05, -0.03, 0.0]])
    p = torch.cat([forehead, naso, cheek])
    young, old = skin_lines(p, torch.zeros(len(p)), EYES), skin_lines(p, torch.ones(len(p)), EYES)
    assert float(young[:3].max()) == 0.0 and float(old[:3].min()) > 0.1  # forehead lines only with age
    assert float(old[3]) > float(young[3]) > 0.05  # a nasolabial fold at every adult age, deeper with age
    assert float(old[4]) < 0.02  # the open cheek stays clear
    assert bool(((old >= 0) & (old <= 0.6)).all())


def _albedo(points, region, **params):
    app = torch.full((len(points), len(APPEARANCE_PARAMS)), 0.5)
    for k, v in params.items():
        app[:, APPEARANCE_PARAMS.index(k)] = v
    off = torch.zeros(len(points), 3)
    return shade_albedo(points, torch.full((len(points),), REGION_IDS[region]), app, off, EYES)[0]


def test_moles_add_a_few_dark_spots():
    g = torch.Generator().manual_seed(3)
    p = torch.stack([(torch.rand(20000, generator=g) - 0.5) * 0.1, (torch.rand(20000, generator=g) - 0.6) * 0.12,
                     torch.full((20000,), 0.01)], 1)
    lum = lambda a: a.mean(-1)  # noqa: E731
    none, many = lum(_albedo(p, "skin", moles=0.0, freckles=0.0)), lum(_albedo(p, "skin", moles=1.0, freckles=0.0))
    dark = (many < 0.8 * none).float().mean()
    assert 0.0005 < float(dark) < 0.05  # spots, not a pattern over the face
    assert float((none - many).clamp_min(0).max()) > 0.05


def test_brown_irises_are_darker_than_light_ones_and_the_sclera(monkeypatch):
    import morphable.appearance as A
    monkeypatch.setattr(A, "FEATURE_SHADES", {})  # the eye's own colours, without the lids' shades
    p = torch.tensor([[0.032 + 0.004, 0.0, 0.012], [0.032 + 0.011, 0.0, 0.008]])  # iris, sclera
    brown = _albedo(p, "eye", iris_melanin=1.0).mean(-1)
    light = _albedo(p, "eye", iris_melanin=0.0).mean(-1)
    assert float(brown[0]) < float(light[0])
    assert float(brown[1]) > 3 * float(brown[0])  # the white of the eye around a brown iris
    assert 0.3 < float(brown[1]) < 0.65  # an off-white, not paper white


def test_relief_changes_the_face_but_not_the_eyes():
    from morphable import MorphableSource
    src = MorphableSource(preset="frontal", size=64)
    flat = MorphableSource(preset="frontal", size=64, overrides={"identity": {"relief": 0.0}})
    ids = src.sample_identities(2, seed=0)
    assert ids.params["relief"].shape == (2, NUM_RELIEF + NUM_FEATURE)
    rows, var = torch.tensor([0, 1]), torch.tensor([0, 0])
    a, b = src.render(ids, rows, var, seed=0).images, flat.render(ids, rows, var, seed=0).images
    assert float((a.float() - b.float()).abs().mean()) > 0.001
    # without relief coefficients in the identities the source renders as with relief and feature shape 0
    ids2 = type(ids)(params={k: v for k, v in ids.params.items() if k != "relief"}, embedding=ids.embedding,
                     seed=ids.seed, report=ids.report, meta=ids.meta)
    plain = MorphableSource(preset="frontal", size=64, overrides={"identity": {"relief": 0.0, "feature_shape": 0.0}})
    torch.testing.assert_close(src.render(ids2, rows, var, seed=0).images, plain.render(ids, rows, var, seed=0).images)


def test_negative_relief_is_refused():
    from morphable import MorphableSource
    with pytest.raises(ValueError, match="identity.relief"):
        MorphableSource(preset="frontal", size=64, overrides={"identity": {"relief": -0.001}})


NOSE = torch.tensor([0.0, -0.031, 0.026])


def test_feature_fields_are_mirror_symmetric_and_local():
    p = _points()
    f = feature_fields(p, EYES, NOSE)
    assert f.shape == (len(p), 3, NUM_FEATURE) and len(FEATURE_SD) == NUM_FEATURE
    fm = feature_fields(p * torch.tensor([-1.0, 1.0, 1.0]), EYES, NOSE)
    flip = torch.tensor([-1.0, 1.0, 1.0])[None, :, None]
    torch.testing.assert_close(fm, f * flip)  # the mirrored point moves by the mirrored displacement
    far = torch.tensor([[0.0, 0.09, 0.0], [0.0, -0.12, 0.0], [0.07, -0.08, -0.02], [0.0, 0.0, -0.15]])
    assert float(feature_fields(far, EYES, NOSE).abs().max()) == 0.0  # forehead top, chin, jaw, back of the head


def test_feature_fields_move_an_eye_as_one_piece_and_keep_eyeballs_round():
    centre = torch.tensor([[0.032, 0.0, 0.0], [0.036, 0.004, 0.0], [0.028, -0.003, -0.005]])
    f = feature_fields(centre, EYES, NOSE, eyeball=torch.tensor([False, True, True]))
    k = {n: i for i, n in enumerate(FEATURE_FIELDS)}
    for name in ("eye_spacing", "eye_height", "eye_depth"):  # translations: the same move inside the plateau
        torch.testing.assert_close(f[1:, :, k[name]], f[:1, :, k[name]].expand(2, 3))
    assert float(f[1:, :, k["eye_size"]].abs().max()) == 0.0 and float(f[1:, :, k["eye_aspect"]].abs().max()) == 0.0
    # canthal tilt turns the region: the outer corner (further from the midline) goes up
    outer = feature_fields(torch.tensor([[0.045, 0.0, 0.0], [-0.045, 0.0, 0.0]]), EYES, NOSE)[:, 1, k["eye_tilt"]]
    assert float(outer[0]) > 0 and float(outer[1]) > 0


def test_feature_displacement_scales_each_field_by_its_sd():
    p = _points(500)
    f = feature_fields(p, EYES, NOSE)
    c = torch.zeros(1, NUM_FEATURE)
    c[0, FEATURE_FIELDS.index("nose_projection")] = 1.0
    d = feature_displacement(c, f, 2.0)
    assert d.shape == (1, len(p), 3)
    torch.testing.assert_close(d[0], f[..., FEATURE_FIELDS.index("nose_projection")] * FEATURE_SD[FEATURE_FIELDS.index("nose_projection")] * 2.0)


def test_feature_shape_changes_faces_is_logged_and_can_be_off():
    from morphable import MorphableSource
    src = MorphableSource(preset="frontal", size=64)
    off = MorphableSource(preset="frontal", size=64, overrides={"identity": {"feature_shape": 0.0}})
    ids = src.sample_identities(2, seed=0)
    for name in FEATURE_FIELDS:
        torch.testing.assert_close(ids.meta[f"feature_{name}"], ids.params["relief"][:, NUM_RELIEF + FEATURE_FIELDS.index(name)])
    rows, var = torch.tensor([0, 1]), torch.tensor([0, 0])
    a, b = src.render(ids, rows, var, seed=0), off.render(ids, rows, var, seed=0)
    assert float((a.images - b.images).abs().mean()) > 0.001
    assert not torch.equal(a.landmarks, b.landmarks)  # the eyes and nose moved: other alignment residuals
    with pytest.raises(ValueError, match="identity.feature_shape"):
        MorphableSource(preset="frontal", size=64, overrides={"identity": {"feature_shape": -1.0}})


def _paired_candidates(knob: str, before: float, after: float, n: int):
    """The first ``n`` candidates (seed 0) of two sources that differ only in ``identity.<knob>``,
    and the second source."""
    from morphable import MorphableSource

    a, b = (MorphableSource(preset="frontal", size=64, overrides={"identity": {knob: v}}) for v in (before, after))
    return a._candidates(0, 0, n), b._candidates(0, 0, n), b


def test_proportions_shrink_the_vertical_proportions_spread_and_keep_gender():
    from morphable import MorphableSource
    from morphable.model import face_proportions

    a, b, src = _paired_candidates("proportions", 1.0, 0.4, 400)
    ra, rb = face_proportions(src.model, a[0]), face_proportions(src.model, b[0])
    r0 = face_proportions(src.model, torch.zeros(1, src.model.num_shape))
    for k in ("nose", "mouth", "chin"):  # deviations from the mean face scaled by 0.4 (linear to ~1%)
        da, db = ra[k] - r0[k], rb[k] - r0[k]
        assert abs(float(db.std() / da.std()) - 0.4) < 0.03
        assert float(torch.corrcoef(torch.stack([da, db]))[0, 1]) > 0.99
    # the gender regression (semantic column 0) is left alone; the other semantics follow the shape
    torch.testing.assert_close(b[3][:, 0], a[3][:, 0], atol=1e-4, rtol=0)
    assert not torch.allclose(b[3][:, 1:], a[3][:, 1:])
    with pytest.raises(ValueError, match="identity.proportions"):
        MorphableSource(preset="frontal", size=64, overrides={"identity": {"proportions": -0.1}})


def test_sex_features_shift_eyes_and_nose_by_the_gender_estimate():
    from morphable import MorphableSource
    from morphable.relief import FEATURE_FIELDS, NUM_RELIEF, SEX_FEATURES

    a, b, on = _paired_candidates("sex_features", 0.0, 0.8, 300)
    for x, y in zip(a[:4], b[:4]):  # shape, appearance, noise offset and semantics are untouched
        assert torch.equal(x, y)
    g = a[3][:, 0].clamp(0, 1)  # 0 female-read .. 1 male-read
    d = b[4] - a[4]
    assert torch.equal(d[:, :NUM_RELIEF], torch.zeros_like(d[:, :NUM_RELIEF]))  # fine relief untouched
    for k, f in enumerate(FEATURE_FIELDS):
        fs, ms = SEX_FEATURES.get(f, (0.0, 0.0))
        torch.testing.assert_close(d[:, NUM_RELIEF + k], 0.8 * ((1 - g) * fs + g * ms), atol=1e-6, rtol=0)
    fem, male = g < 0.25, g > 0.75
    assert fem.sum() > 50 and male.sum() > 50
    eye = NUM_RELIEF + FEATURE_FIELDS.index("eye_size")
    assert float(b[4][fem, eye].mean() - b[4][male, eye].mean()) > 0.5  # larger eyes on female-read faces
    # one candidate at a time gives the bits of the batch
    one = on._candidates(0, 17, 1)
    assert torch.equal(one[4][0], b[4][17])
    with pytest.raises(ValueError, match="identity.sex_features"):
        MorphableSource(preset="frontal", size=64, overrides={"identity": {"sex_features": -1}})


def test_ancestry_contrast_moves_faces_to_one_ancestry_and_keeps_gender_and_age():
    from morphable import MorphableSource

    a, b, on = _paired_candidates("ancestry_contrast", 0.0, 1.0, 300)
    # the gender and age estimates are held (age to the proportions' shrink, which follows the push)
    torch.testing.assert_close(b[3][:, 0], a[3][:, 0], atol=2e-4, rtol=0)
    torch.testing.assert_close(b[3][:, 1], a[3][:, 1], atol=0.03, rtol=0)
    assert torch.equal(b[2], a[2])  # the identity stream's other draws are untouched (noise offset)
    wa, wb = a[3][:, 2:5], b[3][:, 2:5]  # African, East Asian, European estimates
    # the model's Gaussian makes most faces blends; pushed, each face reads as one ancestry
    assert float(wa.max(1).values.mean()) < 0.75 and float(wb.max(1).values.mean()) > 0.9
    share = torch.bincount(wb.argmax(1), minlength=3).float() / 300
    assert bool((share > 0.25).all()) and bool((share < 0.42).all())
    # the skin follows the pushed estimates, as it follows the model's own
    mel = b[1][:, APPEARANCE_PARAMS.index("melanin")]
    assert float(mel[wb.argmax(1) == 0].mean()) > float(mel[wb.argmax(1) == 2].mean()) + 0.3
    # one candidate at a time gives the bits of the batch
    one = on._candidates(0, 17, 1)
    assert torch.equal(one[0][0], b[0][17])
    only = MorphableSource(preset="frontal", size=64, overrides={"identity": {"ancestry_contrast": 1.0,
                                                                           "ancestry_shares": [0, 0, 1]}})
    assert bool((only._candidates(0, 0, 50)[3][:, 2:5].argmax(1) == 2).all())
    # off, the dataset config is that of before the option; on, it records it
    assert "ancestry_contrast" not in MorphableSource(preset="frontal", size=64).config()["identity"]
    assert on.config()["identity"]["ancestry_contrast"] == 1.0
    for bad, match in (({"ancestry_contrast": -1}, "identity.ancestry_contrast"),
                       ({"ancestry_shares": [1, 1]}, "identity.ancestry_shares"),
                       ({"ancestry_shares": [0, 0, 0]}, "identity.ancestry_shares")):
        with pytest.raises(ValueError, match=match):
            MorphableSource(preset="frontal", size=64, overrides={"identity": bad})
    from morphable.model import MorphableModel
    m = on.model
    bare = MorphableModel(**{**{k: getattr(m, k) for k in m.__dataclass_fields__},
                             "regions": {k: v for k, v in m.regions.items() if k != "semantic_weights"}})
    with pytest.raises(ValueError, match="semantic_weights"):
        MorphableSource(preset="frontal", size=64, model=bare, overrides={"identity": {"ancestry_contrast": 1.0}})


def test_brows_and_make_up_follow_the_gender_estimate():
    from morphable import MorphableSource
    from morphable.appearance import APPEARANCE_PARAMS

    src = MorphableSource(preset="frontal", size=64)
    _, app, _, sem, _ = src._candidates(0, 0, 600)
    col = {k: app[:, APPEARANCE_PARAMS.index(k)] for k in ("brow_thickness", "brow_height", "brow_arch", "lipstick", "eye_makeup")}
    fem, male = sem[:, 0] < 0.3, sem[:, 0] > 0.7
    assert float(col["brow_thickness"][fem].mean()) + 0.3 < float(col["brow_thickness"][male].mean())
    assert float(col["brow_height"][fem].mean()) > float(col["brow_height"][male].mean()) + 0.15
    assert float(col["brow_arch"][fem].mean()) > float(col["brow_arch"][male].mean()) + 0.2
    assert float((col["lipstick"][fem] > 0).float().mean()) > 0.6 > float((col["lipstick"][male] > 0).float().mean())


def test_metering_exposes_dark_faces_brighter_and_light_faces_darker():
    from morphable import MorphableSource
    from morphable.appearance import APPEARANCE_PARAMS

    def face_mean(metering):
        src = MorphableSource(preset="frontal", size=64, overrides={"light": {"metering": metering}})
        ids = src.sample_identities(24, seed=0)
        mel = ids.params["appearance"][:, APPEARANCE_PARAMS.index("melanin")]
        pick = torch.stack([mel.argmin(), mel.argmax()])
        b = src.render(ids, pick, torch.zeros(2, dtype=torch.long), seed=0)
        return b.images[:, :, 24:40, 20:44].mean((1, 2, 3)), mel[pick]  # the cheeks, eyes and nose

    off, mel = face_mean(0.0)
    on, _ = face_mean(0.7)  # the default
    assert float(mel[1] - mel[0]) > 0.3
    assert float(on[1]) > float(off[1]) * 1.2  # the darkest face exposed brighter
    assert float(on[0]) < float(off[0])  # the lightest one a little darker
    assert float(on[1] / on[0]) > float(off[1] / off[0])  # closer in brightness, still ordered
    assert float(on[1]) < float(on[0])
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="light.metering"):
            MorphableSource(preset="frontal", size=64, overrides={"light": {"metering": bad}})


def test_the_eye_socket_is_darker_than_the_cheek_by_orbit_shade(monkeypatch):
    import morphable.appearance as A
    below_eye = torch.tensor([[0.032, -0.004, 0.0], [-0.032, -0.004, 0.0]])  # the lower lid, both sides
    cheek = torch.tensor([[0.055, -0.045, 0.0]])
    p = torch.cat([below_eye, cheek])
    k = A.ORBIT_SHADE
    assert 0 < k < 1
    shaded = _albedo(p, "skin", eye_makeup=0.0, wrinkles=0.0, moles=0.0)
    eye = _albedo(below_eye, "eye")
    monkeypatch.setattr(A, "ORBIT_SHADE", 0.0)
    flat = _albedo(p, "skin", eye_makeup=0.0, wrinkles=0.0, moles=0.0)
    ratio = shaded / flat
    assert torch.allclose(ratio[:2], torch.full_like(ratio[:2], 1 - k * math.exp(-(0.002 / 0.0132) ** 2)), atol=1e-4)
    assert float((ratio[2] - 1).abs().max()) < 0.01  # the cheek keeps its colour
    torch.testing.assert_close(_albedo(below_eye, "eye"), eye)  # the eyeball is shaded by the lids, not by this


def test_nostrils_and_mouth_corners_are_dark_hollows(monkeypatch):
    import morphable.appearance as A
    p = torch.tensor([[0.0065, -0.0475, 0.02], [-0.0065, -0.0475, 0.02], [0.0255, -0.0696, 0.008],
                      [0.0065, -0.0475, 0.0], [0.0, -0.02, 0.03]])  # nostrils, a corner, behind, nose bridge
    k = dict(A.CREASE_SHADES)
    assert 0 < k["nostril"] < 1 and 0 < k["mouth_corner"] < 1
    shaded = _albedo(p, "skin", wrinkles=0.0, moles=0.0, beard=0.0, beard_shadow=0.0)
    monkeypatch.setattr(A, "CREASE_SHADES", {"nostril": 0.0, "mouth_corner": 0.0})
    ratio = shaded / _albedo(p, "skin", wrinkles=0.0, moles=0.0, beard=0.0, beard_shadow=0.0)
    torch.testing.assert_close(ratio[:2], torch.full((2, 3), 1 - k["nostril"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(ratio[2], torch.full((3,), 1 - k["mouth_corner"]), atol=1e-3, rtol=0)
    torch.testing.assert_close(ratio[3:], torch.ones(2, 3), atol=1e-3, rtol=0)  # no hollow inside the head or on the bridge


def test_feature_shades_darken_the_canthi_and_nostrils_and_light_the_eye_centre(monkeypatch):
    import morphable.appearance as A
    shades = dict(A.FEATURE_SHADES)
    at = lambda name, side=1.0: [side * shades[name][0][0], shades[name][0][1]]  # noqa: E731
    skin_pts = torch.tensor([at("medial_canthus") + [0.01], at("medial_canthus", -1) + [0.01], at("nostril_wing") + [0.02],
                             at("outer_canthus") + [0.0], at("eye_bag") + [0.0], [0.06, -0.06, 0.0]])  # the last: the cheek
    eye_pts = torch.tensor([at("outer_canthus") + [0.01], at("eye_centre") + [0.012]])
    kw = dict(wrinkles=0.0, moles=0.0, beard=0.0, beard_shadow=0.0, eye_makeup=0.0, freckles=0.0)
    skin, eye = _albedo(skin_pts, "skin", **kw), _albedo(eye_pts, "eye")
    monkeypatch.setattr(A, "FEATURE_SHADES", {})
    r_skin, r_eye = skin / _albedo(skin_pts, "skin", **kw), eye / _albedo(eye_pts, "eye")
    k = {n: v[2] for n, v in shades.items()}
    assert shades["medial_canthus"][3] == "skin" and shades["outer_canthus"][3] == "eye"
    # at each centre the albedo is 1 - k times its own (the neighbours' tails add a little)
    torch.testing.assert_close(r_skin[:2], torch.full((2, 3), 1 - k["medial_canthus"]), atol=0.02, rtol=0)  # both sides
    torch.testing.assert_close(r_skin[2], torch.full((3,), 1 - k["nostril_wing"]), atol=0.02, rtol=0)
    torch.testing.assert_close(r_skin[3], torch.full((3,), 1 - k["outer_canthus"]), atol=0.02, rtol=0)
    assert float(r_skin[4].mean()) < 1 and float(r_skin[5].sub(1).abs().max()) < 1e-3  # the eye bag; the cheek as it was
    torch.testing.assert_close(r_eye[0], torch.full((3,), 1 - k["outer_canthus"]), atol=0.02, rtol=0)  # the eye's corner
    assert float(r_eye[1].mean()) > 1.2  # the eye's centre: lighter


def test_a_grown_beard_is_dense_hair_that_widens_with_beard_and_stubble_is_sparser():
    p = torch.tensor([[0.0, -0.10, 0.01], [0.05, -0.09, 0.0], [0.0, -0.02, 0.03]])  # chin, jaw side, nose bridge
    kw = dict(hair_melanin=1.0, hair_grey=0.0, beard_shadow=0.0, wrinkles=0.0, moles=0.0, freckles=0.0)
    lum = lambda **k: _albedo(p, "skin", **kw, **k).mean(-1)  # noqa: E731
    bare = lum(beard=0.0)
    chin_beard, full = lum(beard=0.2, beard_stubble=0.0), lum(beard=1.0, beard_stubble=0.0)
    stubble = lum(beard=1.0, beard_stubble=1.0)
    assert float(chin_beard[0]) < 0.5 * float(bare[0]) and float(full[0]) < 0.5 * float(bare[0])  # dense at the chin
    assert abs(float(chin_beard[1] / bare[1]) - 1) < 0.05  # a chin beard leaves the jaw's side bare
    assert float(full[1]) < 0.6 * float(bare[1])  # a full beard reaches it
    assert float(full[0]) < float(stubble[0]) < 0.95 * float(bare[0])  # stubble: a sparser hair tone
    torch.testing.assert_close(full[2], bare[2])  # none on the nose


def test_a_full_beard_s_upper_edge_runs_down_the_cheek_from_the_sideburn_to_the_mouth_corner():
    # at the height of the nostrils (45 mm below the eyes): bare beside the nose, bearded at the jaw's
    # side near the sideburn (the old zone's flat edge across the face, at the nostrils' height, half
    # covered the cheek beside the nose and left the sideburn's end bare)
    p = torch.tensor([[0.032, -0.045, 0.0], [0.062, -0.03, -0.01], [0.032, -0.075, 0.0]])
    kw = dict(hair_melanin=1.0, hair_grey=0.0, beard_shadow=0.0, wrinkles=0.0, moles=0.0, freckles=0.0,
              blotches=0.0)
    lum = lambda **k: _albedo(p, "skin", **kw, **k).mean(-1)  # noqa: E731
    ratio = lum(beard=1.0, beard_stubble=0.0) / lum(beard=0.0)
    assert abs(float(ratio[0]) - 1) < 0.05  # the cheek beside the nose stays skin
    assert float(ratio[1]) < 0.6 and float(ratio[2]) < 0.6  # the sideburn's end and beside the mouth: hair


def test_lashes_are_dark_without_make_up_and_darker_with_it():
    from morphable.appearance import appearance_from_draws
    n = 2000
    g = torch.Generator().manual_seed(0)
    sem = torch.tensor([[1.0, 0.7, 0.0, 0.0, 1.0]]).repeat(n, 1)  # male-read: no make-up
    a = appearance_from_draws(sem, lambda: torch.rand(n, generator=g), lambda: torch.randn(n, generator=g))
    lashes, make_up = a[:, APPEARANCE_PARAMS.index("lashes")], a[:, APPEARANCE_PARAMS.index("eye_makeup")]
    assert float(make_up.max()) == 0.0
    assert float(lashes.min()) >= 0.4  # a visible lash line on every face (a detector looks for it)
    fem = torch.tensor([[0.0, 0.5, 0.0, 0.0, 1.0]]).repeat(n, 1)
    b = appearance_from_draws(fem, lambda: torch.rand(n, generator=g), lambda: torch.randn(n, generator=g))
    made = b[:, APPEARANCE_PARAMS.index("eye_makeup")] > 0.5
    assert float(b[made, APPEARANCE_PARAMS.index("lashes")].mean()) > float(lashes.mean()) + 0.2


def test_texel_noise_is_the_point_noise_of_every_identity():
    """A bake's noise (one matrix product per field over cached texel phases) is the per-point noise
    of each identity at its texels, to float rounding, whatever the offsets' size."""
    from morphable.appearance import TexelNoise, point_noise

    p = _points(3000)
    off = (torch.rand(5, 3, generator=torch.Generator().manual_seed(2)) - 0.5) * 200.0  # offsets of up to 100 m
    texel = TexelNoise(p).fields(off)
    point = point_noise(p.repeat(5, 1), off.repeat_interleave(len(p), 0))
    for args in ((0.045, slice(0, 6)), (0.0012, slice(0, 12), (0.3, 1.0, 1.0)), (0.011, slice(12, 24), 1.7)):
        t, q = texel(*args), point(*args)
        assert t.shape == (5, len(p))
        torch.testing.assert_close(t.reshape(-1), q, rtol=0, atol=2e-4)
        assert 0.6 < float(q.std()) < 1.0  # a field, not a constant
    # each identity has its own field
    f = texel(0.003, slice(0, 12))
    assert float((f[0] - f[1]).abs().mean()) > 0.3


def test_shade_albedo_broadcasts_texels_against_identities():
    """Shading N texels for U identities by broadcasting ((1, N) points against (U, 1) identities, as
    the texture bake does) gives each identity's per-point shading."""
    from morphable.appearance import TexelNoise

    p = _points(2000)
    region = torch.where(torch.arange(len(p)) % 5 == 0, REGION_IDS["lips"], REGION_IDS["skin"])
    g = torch.Generator().manual_seed(4)
    app = torch.rand(3, len(APPEARANCE_PARAMS), generator=g)
    off = (torch.rand(3, 3, generator=g) - 0.5) * 200.0
    texel = TexelNoise(p).fields(off)
    alb, spec = shade_albedo(p[None], region[None], app[:, None], off[:, None], EYES, noise=texel)
    assert alb.shape == (3, len(p), 3) and spec.shape == (3, len(p))
    for u in range(3):
        flat = (p, region, app[u].expand(len(p), -1), off[u].expand(len(p), -1), EYES)
        # the same noise fields: broadcasting changes no bit
        a0, s0 = shade_albedo(*flat, noise=lambda *args, u=u: texel(*args)[u])
        assert torch.equal(alb[u], a0) and torch.equal(spec[u], s0)
        # the per-point noise: the same to float rounding
        a1, s1 = shade_albedo(*flat)
        torch.testing.assert_close(alb[u], a1, rtol=0, atol=2e-3)
        torch.testing.assert_close(spec[u], s1, rtol=0, atol=2e-3)
        assert float((alb[u] - a1).abs().mean()) < 1e-5
