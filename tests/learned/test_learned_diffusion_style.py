"""The diffusion source's layout/style condition: a low-pass image as a second condition (issue 6,
"controlled variation"): network, training, checkpoints, style providers, determinism, errors."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from engine.interface import derive_seed, generator
from learned.checkpoint import load_checkpoint
from learned.diffusion import StyleConfig, UNet, UNetConfig, build_model, low_pass
from tests.conformance import check_conformance
from tests.learned_helpers import TINY_CONFIG, make_face_folder, session_run, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

STYLE = ("style.enabled=true", "style.size=4")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The session's tiny identity-only run (trained without a style)."""
    return session_run("diffusion", tmp_path_factory)


@pytest.fixture(scope="module")
def style_run(tmp_path_factory):
    """A tiny style-enabled model trained for 40 steps on CPU."""
    from learned.train import run_training

    base = tmp_path_factory.mktemp("style")
    data = make_face_folder(base / "faces")
    out = base / "run"
    metrics = run_training(tiny_config(data, *STYLE, "train.steps=40"), out, printer=lambda s: None)
    return {"data": data, "out": out, "checkpoint": out / "checkpoint", "metrics": metrics}


def _unet(style_channels: int) -> UNet:
    torch.manual_seed(0)
    m = UNet(UNetConfig(base_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8],
                        embedding_dim=8, groups=8, head_channels=16, identity_tokens=2), 16, style_channels=style_channels)
    for p in m.parameters():  # break the zero-inits so every input reaches the output
        p.data.add_(torch.randn_like(p) * 0.05)
    return m.eval()


# ---------------------------------------------------------------------------------------------- network


def test_low_pass_is_a_blurred_layout():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    s = low_pass(x, 4)
    assert s.shape == (2, 3, 32, 32)
    # constant within what 4x4 blocks can say: downsampling the style again gives the same blocks
    torch.testing.assert_close(low_pass(s, 4), s, atol=0.15, rtol=0)
    torch.testing.assert_close(s.mean((2, 3)), x.mean((2, 3)), atol=1e-5, rtol=0)
    g = low_pass(x, 4, gray=True, out_size=16)
    assert g.shape == (2, 1, 16, 16)
    c = torch.full((1, 3, 8, 8), 0.5)
    torch.testing.assert_close(low_pass(c, 2, gray=True), torch.full((1, 1, 8, 8), 0.5))
    with pytest.raises(ValueError, match="style images must be"):
        low_pass(torch.rand(1, 1, 8, 8), 2)


def test_unet_style_input_and_no_style_path():
    m = _unet(3)
    assert m.stem.in_channels == 3 + 3 + 1  # z, style, presence
    z, t, c = torch.randn(3, 3, 16, 16), torch.rand(3), torch.randn(3, 8)
    s1, s2 = low_pass(torch.rand(3, 3, 16, 16) * 2 - 1, 4), low_pass(torch.rand(3, 3, 16, 16) * 2 - 1, 4)
    a, b, none = m(z, t, c, style=s1), m(z, t, c, style=s2), m(z, t, c)
    assert not torch.allclose(a, b) and not torch.allclose(a, none)
    # no style == every style dropped (exactly), and dropping acts per image
    assert torch.equal(none, m(z, t, c, style=s1, style_drop=torch.ones(3, dtype=torch.bool)))
    mixed = m(z, t, c, style=s1, style_drop=torch.tensor([True, False, True]))
    torch.testing.assert_close(mixed[0], none[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[1], a[1], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"style must be \(B, 3, 16, 16\)"):
        m(z, t, c, style=s1[:, :1])
    plain = _unet(0)
    assert plain.stem.in_channels == 3
    with pytest.raises(ValueError, match="takes no style"):
        plain(z, t, c, style=s1)


def test_model_without_style_is_the_identity_only_model():
    """A model built without (or from a config.json predating) the style section has exactly the
    identity-only parameters and outputs."""
    cfg = {"image_size": 16, "model": _unet(0).cfg.to_dict()}
    old, new = build_model(cfg), build_model({**cfg, "style": StyleConfig().to_dict()})
    assert {k: v.shape for k, v in old.state_dict().items()} == {k: v.shape for k, v in new.state_dict().items()}
    assert not old.takes_style and old.config_dict()["style"]["enabled"] is False
    with pytest.raises(ValueError, match="trained without a style"):
        old.sample(torch.randn(1, 8), [generator(0)], steps=2, style=torch.zeros(1, 3, 16, 16))
    gray = build_model({**cfg, "style": {"enabled": True, "gray": True, "size": 4}})
    assert gray.takes_style and gray.unet.stem.in_channels == 3 + 1 + 1
    assert gray.style_of(torch.rand(2, 3, 40, 40)).shape == (2, 1, 16, 16)


# ---------------------------------------------------------------------------------------------- training


def test_style_training_loss_falls_and_checkpoint_records_style(style_run):
    m = style_run["metrics"]
    assert m["global_step"] == 40 and m["loss_last"] < 0.8 * m["loss_first"], m
    ck = load_checkpoint(style_run["checkpoint"], kind="diffusion")
    assert ck.config["style"] == {"enabled": True, "size": 4, "gray": False, "drop": 0.5, "flip": 0.0}
    assert ck.model.takes_style and ck.model.unet.stem.in_channels == 7


def test_style_changes_the_output_and_no_style_is_the_dropped_style(style_run):
    m = load_checkpoint(style_run["checkpoint"]).model
    c = torch.nn.functional.normalize(torch.randn(2, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    gens = lambda: [generator(1, i) for i in range(2)]  # noqa: E731
    dark, light = m.style_of(torch.full((2, 3, 16, 16), -0.8)), m.style_of(torch.full((2, 3, 16, 16), 0.8))
    a = m.sample(c, gens(), steps=6, guidance=2.0, style=dark)
    b = m.sample(c, gens(), steps=6, guidance=2.0, style=light)
    assert float((a - b).abs().mean()) > 0.05  # same seed and identity, another style: another image
    assert float(a.mean()) < float(b.mean())  # ... that follows the style's brightness
    # the no-style path (style=None) is the style-dropped path of the network
    z, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.5)
    assert torch.equal(m(z, t, c), m(z, t, c, style=dark, style_drop=torch.ones(2, dtype=torch.bool)))


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_training_style_is_the_images_own_low_pass_dropped_independently(tmp_path, flip):
    from learned.diffusion.trainer import DiffusionModule

    cfg = tiny_config(tmp_path, *STYLE, f"style.flip={flip}", "model.embedding_dim=8")
    module = DiffusionModule(cfg)
    seen = {}

    def net(z, t, cond, drop=None, style=None, style_drop=None):
        seen.update(drop=drop, style=style, style_drop=style_drop)
        return torch.zeros_like(z)

    module._net = lambda: net
    x = torch.rand(64, 3, 16, 16) * 2 - 1
    torch.manual_seed(0)
    module.diffusion_loss(x, torch.randn(64, 8))
    torch.testing.assert_close(seen["style"], low_pass(x.flip(-1) if flip else x, 4))
    sd, d = seen["style_drop"], seen["drop"]
    assert 10 < int(sd.sum()) < 54 and not torch.equal(sd, d)  # p = 0.5, not the identity dropout


def test_old_run_configs_resume_and_style_changes_do_not(tmp_path):
    from learned.config import config_changes
    from common.config import config_to_dict

    off = config_to_dict(tiny_config(tmp_path))
    on = config_to_dict(tiny_config(tmp_path, "style.enabled=true"))
    before = {k: v for k, v in off.items() if k != "style"}  # a run made before the style section
    assert config_changes(before, off) == []
    assert config_changes(before, on) == ["style"] and config_changes(off, on) == ["style.enabled"]


def test_style_config_errors(tmp_path):
    from learned.train import parse_config
    from common.config import ConfigError

    import yaml

    base = yaml.safe_load(TINY_CONFIG.read_text())
    base["data"]["path"] = str(tmp_path)
    assert parse_config(base, ["style.enabled=true", "style.size=8", "style.gray=true"]).style.channels == 1
    for ov, msg in ((["style.enabled=true", "style.size=9"], r"style.size \(9\) must be at most half of data.image_size \(16\)"),
                    (["style.drop=1.0"], r"style.drop must be in \[0, 1\)"),
                    (["style.size=0"], "style.size must be >= 1"),
                    (["style.flip=2"], r"style.flip must be in \[0, 1\]"),
                    (["style.bogus=1"], "style.bogus: unknown key"),
                    (["style.enabled=maybe"], "style.enabled")):
        with pytest.raises(ConfigError, match=msg):
            parse_config(base, ov)


# ---------------------------------------------------------------------------------------------- source


def _faces(tmp_path, seed: int):
    return make_face_folder(tmp_path / f"styles{seed}", ids=3, per_id=2, singletons=0, size=24, seed=seed)


def test_provider_none_is_todays_source(style_run, run):
    """``none`` (the default): the style checkpoint samples with no style; an identity-only checkpoint
    renders exactly what the model's style-less sampler gives."""
    from learned.diffusion.source import DiffusionSource

    for ck in (style_run["checkpoint"], run["checkpoint"]):
        src = DiffusionSource(checkpoint=str(ck))
        assert src.style_provider is None and src.config()["style"]["provider"] == "none"
        ids = src.sample_identities(2, seed=3)
        rb = src.render(ids, torch.tensor([0, 1]), torch.tensor([0, 2]), seed=3)
        assert not any(k.startswith("style_") for k in rb.factors)
        gens = [generator(3, "learned-noise", 0, 0), generator(3, "learned-noise", 1, 2)]
        want = src.model.sample(ids.embedding, gens, steps=6, guidance=2.0)
        assert torch.equal(rb.images, ((want + 1) / 2).clamp(0, 1))


def test_old_checkpoint_config_without_style_section_loads_the_same(tmp_path, run):
    old = tmp_path / "old"
    shutil.copytree(run["checkpoint"], old)
    cfg = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "style"}))
    a, b = load_checkpoint(old).model, load_checkpoint(run["checkpoint"]).model
    assert not a.takes_style
    c = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    assert torch.equal(a.sample(c, [generator(0, i) for i in range(2)], steps=3),
                       b.sample(c, [generator(0, i) for i in range(2)], steps=3))


def test_folder_styles_deterministic_batch_independent_and_change_images(tmp_path, style_run):
    from engine import create_source

    ck = str(style_run["checkpoint"])
    src = create_source("diffusion", checkpoint=ck, size=16,
                        overrides={"style.provider": "folder", "style.folder": str(_faces(tmp_path, 1))})
    check_conformance(src, atol=1e-4)
    ids = src.sample_identities(2, seed=0)
    rows, var = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])
    rb = src.render(ids, rows, var, seed=0)
    n = len(src.style_provider.files)
    assert rb.factors["style_image"].dtype == torch.int64 and int(rb.factors["style_image"].max()) < n
    want = [int(torch.randint(n, (1,), generator=generator(0, "learned-style", r, k))) for r, k in ((0, 0), (0, 1), (1, 0))]
    assert rb.factors["style_image"].tolist() == want
    # one image at a time (max_batch 1) gives the same images and factors as one batch
    one = create_source("diffusion", checkpoint=ck, size=16, overrides={
        "max_batch": 1, "style": {"provider": "folder", "folder": str(_faces(tmp_path, 1))}})
    rb1 = one.render(ids, rows, var, seed=0)
    torch.testing.assert_close(rb1.images, rb.images, atol=1e-4, rtol=0)
    assert torch.equal(rb1.factors["style_image"], rb.factors["style_image"])
    # the same seed, identity and variation with other style images: other images
    other = create_source("diffusion", checkpoint=ck, size=16,
                          overrides={"style.provider": "folder", "style.folder": str(_faces(tmp_path, 2))})
    assert float((other.render(ids, rows, var, seed=0).images - rb.images).abs().mean()) > 0.01


def test_morphable_styles_log_pose_and_follow_the_render(style_run, default_model):
    from learned.diffusion.source import DiffusionSource
    from morphable import MorphableSource

    ck = str(style_run["checkpoint"])
    src = DiffusionSource(checkpoint=ck, overrides={"style": {"provider": "morphable", "preset": "wild"}})
    check_conformance(src, n=4, k=2, atol=1e-3)  # batched rasterisation moves a few edge pixels (< 2e-3)
    ids = src.sample_identities(3, seed=0)
    rows, var = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 0, 1])
    rb = src.render(ids, rows, var, seed=0)
    for k in ("style_yaw", "style_pitch", "style_roll", "style_light_azimuth"):
        assert rb.factors[k].shape == (4,), k
    assert rb.factors["style_identity"].tolist() == [0, 1, 2, 2]  # random identities: the row's counterpart
    # the factors (and style) are those of the morphable render of (identity, variation) itself
    msrc = MorphableSource(preset="wild", size=16, model=default_model)
    want = msrc.render(msrc.sample_identities(3, 0), rows, var, derive_seed(0, "learned-style"))
    torch.testing.assert_close(rb.factors["style_yaw"], want.factors["yaw"])
    assert rb.factors["style_yaw"].unique().numel() == 4
    # a fixed morphable identity: every identity gets the same layouts (variation k: layout k)
    fixed = DiffusionSource(checkpoint=ck, overrides={"style": {"provider": "morphable", "identity": "fixed",
                                                                "fixed_identity": 5}})
    rf = fixed.render(ids, rows, var, seed=0)
    assert rf.factors["style_identity"].tolist() == [5, 5, 5, 5]
    assert rf.factors["style_yaw"][0] == rf.factors["style_yaw"][1] != rf.factors["style_yaw"][3]
    # morphable identities: the style is rendered from the morphable identity each was embedded from
    morph = DiffusionSource(checkpoint=ck, overrides={"identity": {"mode": "morphable", "min_distance": 0.0},
                                                      "style": {"provider": "morphable",
                                                                "morphable_overrides": {"pose.yaw": {"lo": 30, "hi": 40}}}})
    mids = morph.sample_identities(2, seed=0)
    # (the tiny random encoder cannot keep morphable faces apart: say candidates 3 and 1 were accepted)
    mids = dataclasses.replace(mids, params={**mids.params, "morphable_index": torch.tensor([3.0, 1.0])})
    rm = morph.render(mids, torch.tensor([0, 1]), torch.tensor([0, 0]), seed=0)
    assert rm.factors["style_identity"].tolist() == [3, 1]
    assert ((rm.factors["style_yaw"] >= 30) & (rm.factors["style_yaw"] <= 40)).all()


def test_engine_render_with_morphable_styles(tmp_path, style_run, default_model):
    import pyarrow.parquet as pq

    from engine import render as R
    from tests.learned_helpers import render_args

    out = tmp_path / "ds"
    assert R.main(render_args("diffusion", style_run, out, "--override", "style.provider=morphable",
                              "--override", "style.preset=frontal")) == 0
    meta = pq.read_table(out / "metadata.parquet").to_pydict()
    assert len(meta["style_yaw"]) == 10 and max(abs(y) for y in meta["style_yaw"]) <= 25  # the frontal preset (|yaw| <= 25)
    desc = json.loads((out / "dataset.json").read_text())
    assert desc["source"]["config"]["style"]["provider"] == "morphable"


@pytest.mark.parametrize("which, overrides, msg", [
    ("plain", {"style": {"provider": "morphable"}}, "trained without a style condition"),
    ("plain", {"style.provider": "folder", "style.folder": "."}, "trained without a style condition"),
    ("style", {"style": {"provider": "gan"}}, "unknown style.provider 'gan'"),
    ("style", {"style": {"provider": "folder"}}, "needs style.folder"),
    ("style", {"style": {"provider": "folder", "folder": "/does/not/exist"}}, "style.folder not found"),
    ("style", {"style": {"provider": "morphable", "preset": "studio"}}, "style.preset must be a morphable preset"),
    ("style", {"style": {"provider": "morphable", "identity": "mean"}}, "style.identity must be"),
    ("style", {"style": {"provider": "morphable", "fixed_identity": 1.5}}, "overrides.style.fixed_identity: expected an integer"),
    ("style", {"style": {"provider": "morphable", "morphable_overrides": {"pose": {"bogus": 1}}}},
     "style.morphable_overrides: pose.bogus: unknown key"),
    ("style", {"style": {"bogus": 1}}, "overrides.style.bogus: unknown key"),
])
def test_style_source_errors(run, style_run, which, overrides, msg):
    from learned.diffusion.source import DiffusionSource

    ck = (run if which == "plain" else style_run)["checkpoint"]
    with pytest.raises(ValueError, match=msg):
        DiffusionSource(checkpoint=str(ck), overrides=overrides)


def test_empty_style_folder_is_an_error(tmp_path, style_run):
    from learned.diffusion.source import DiffusionSource

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        DiffusionSource(checkpoint=str(style_run["checkpoint"]),
                        overrides={"style": {"provider": "folder", "folder": str(tmp_path / "empty")}})
