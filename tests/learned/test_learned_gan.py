"""GAN source of issue 6: networks, sampling, DiffAugment, R1, losses, training, resume, checkpoints, source, errors."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.interface import generator
from learned.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from learned.gan import (Discriminator, DiscriminatorConfig, GANGenerator, GeneratorConfig, build_model, diff_augment,
                         hash_normal)
from learned.gan.augment import cutout, parse_policy, translation
from learned.gan.losses import r1_penalty
from tests.learned_helpers import (GAN_TINY_CONFIG, LEARNED_SOURCE_BAD_INPUT, make_face_folder, session_run,
                                   tiny_gan_config)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return session_run("gan", tmp_path_factory)


def _gcfg(D=8, **kw):
    return GeneratorConfig(**{**dict(z_dim=16, w_dim=16, embedding_dim=D, mapping_layers=2, channels=[16, 8, 8]), **kw})


def _perturbed(model: torch.nn.Module, scale=0.3, seed=0):
    """Break zero inits (noise strengths, biases) so every input reaches the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def _unit(n, d, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _module(data_dir=None, encoder=None, *overrides):
    from learned.gan.trainer import GANModule
    from learned.train import parse_config

    import yaml

    raw = yaml.safe_load(GAN_TINY_CONFIG.read_text())
    raw["data"]["path"] = str(data_dir or "/unused")
    cfg = parse_config(raw, ["model.embedding_dim=32", *overrides], resolve=False)
    return GANModule(cfg, encoder)


# ---------------------------------------------------------------------------------------------- networks


@pytest.mark.parametrize("size, gch, dch, start", [
    (64, [16, 16, 8, 8, 8], [8, 8, 8, 16, 16], 4),
    (112, [16, 16, 8, 8, 8], [8, 8, 8, 16, 16], 7),
    (16, [16, 8, 8], [8, 8, 16], 4),
])
def test_generator_and_discriminator_sizes_and_conditioning(size, gch, dch, start):
    torch.manual_seed(0)
    G = _perturbed(GANGenerator(_gcfg(channels=gch), size))
    D = _perturbed(Discriminator(DiscriminatorConfig(channels=dch, cmap_dim=16), size, 8))
    assert G.synthesis.start == start and D.start == start
    assert tuple(G.synthesis.const.shape[1:]) == (start, start)
    z, e = torch.randn(4, 16), _unit(4, 8)
    noise = G.noise_inputs(torch.arange(4), torch.device("cpu"))
    assert len(noise) == 1 + 2 * (len(gch) - 1) and noise[-1].shape == (4, 1, size, size)
    x = G(z, e, noise)
    assert x.shape == (4, 3, size, size) and torch.isfinite(x).all()
    assert not torch.allclose(x, G(z, _unit(4, 8, seed=1), noise), atol=1e-4)  # identity condition matters
    assert not torch.allclose(x, G(torch.randn(4, 16), e, noise), atol=1e-4)  # z matters
    assert not torch.allclose(x, G(z, e, G.noise_inputs(torch.arange(4) + 9, torch.device("cpu"))), atol=1e-5)  # noise
    out = D(x, e)
    assert out.shape == (4,) and not torch.allclose(out, D(x, _unit(4, 8, seed=1)))  # projection head sees e
    with pytest.raises(ValueError, match=f"built for {size} px"):
        D(torch.randn(4, 3, size * 2, size * 2), e)
    with pytest.raises(ValueError, match="levels do not fit image_size"):
        GANGenerator(_gcfg(channels=gch), size + 2)


def test_demodulation_makes_the_output_invariant_to_the_style_scale():
    from learned.gan.networks import ModulatedConv

    torch.manual_seed(0)
    conv = ModulatedConv(6, 5, 3, w_dim=4)
    x, w = torch.randn(2, 6, 8, 8), torch.randn(2, 4)
    y = conv(x, w)
    # demodulated: unit-variance inputs give about unit-variance outputs per channel
    xs = torch.randn(64, 6, 16, 16)
    ys = conv(xs, torch.randn(64, 4)).detach()
    assert abs(float(ys[..., 2:-2, 2:-2].std()) - 1.0) < 0.2
    with torch.no_grad():
        conv.affine.weight.mul_(3.0)
        conv.affine.bias.mul_(3.0)
    torch.testing.assert_close(conv(x, w), y, atol=1e-5, rtol=1e-4)
    conv.demodulate = False  # without demodulation the scale goes straight through
    assert not torch.allclose(conv(x, w), y, atol=1e-3)


def test_hash_normal_is_per_seed_and_standard_normal():
    s = torch.tensor([3, 2**62 + 5, 7])
    a = hash_normal(s, 50_000)
    assert a.shape == (3, 50_000)
    torch.testing.assert_close(hash_normal(s[[2, 0]], 50_000), a[[2, 0]], rtol=0, atol=0)  # batch-independent
    assert abs(float(a.mean())) < 0.02 and abs(float(a.std()) - 1) < 0.02
    assert float((a[0] - a[2]).abs().mean()) > 0.5  # different seeds, different noise
    assert abs(float(torch.corrcoef(a[:2])[0, 1])) < 0.02
    torch.testing.assert_close(hash_normal(s, 100), a[:, :100])  # a prefix of the stream


def test_sampling_deterministic_batch_independent_and_truncation():
    torch.manual_seed(0)
    G = _perturbed(build_model({"image_size": 16, "model": _gcfg().to_dict()}))
    c = _unit(4, 8)
    gens = lambda idx: [generator(7, "n", i) for i in idx]  # noqa: E731
    for kw in ({}, {"truncation": 0.5}, {"noise_mode": "const"}, {"noise_mode": "none", "truncation": 0.7}):
        a = G.sample(c, gens(range(4)), **kw)
        assert a.shape == (4, 3, 16, 16) and float(a.abs().max()) <= 1.0
        assert torch.equal(a, G.sample(c, gens(range(4)), **kw))
        torch.testing.assert_close(G.sample(c[[3, 1]], gens([3, 1]), **kw), a[[3, 1]], atol=1e-5, rtol=0)
        assert not torch.allclose(a[0], a[1])
    # psi = 0 collapses every latent of an identity onto its mean w: without noise, one image per identity
    same = c[:1].expand(3, -1)
    zero = G.sample(same, gens(range(3)), truncation=0.0, noise_mode="none")
    torch.testing.assert_close(zero[1], zero[0], atol=1e-5, rtol=0)
    full = G.sample(same, gens(range(3)), truncation=1.0, noise_mode="none")
    half = G.sample(same, gens(range(3)), truncation=0.5, noise_mode="none")
    spread = lambda x: float((x - x.mean(0)).abs().mean())  # noqa: E731
    assert spread(zero) < 1e-5 < spread(half) < spread(full)
    # the mean w is the identity's own: two identities keep different centres
    wc = G.w_center(torch.cat([c[:2], c[:1]]), samples=32)
    assert not torch.allclose(wc[0], wc[1]) and torch.equal(wc[0], wc[2])
    with pytest.raises(ValueError, match="one generator per image"):
        G.sample(c, gens(range(3)))
    with pytest.raises(ValueError, match="truncation psi"):
        G.sample(c, gens(range(4)), truncation=1.5)
    with pytest.raises(ValueError, match="unknown noise_mode"):
        G.sample(c, gens(range(4)), noise_mode="fresh")


# ---------------------------------------------------------------------------------------------- DiffAugment, R1


def test_diffaugment_translation_cutout_colour():
    x = torch.zeros(2, 3, 8, 8)
    x[:, :, 3, 4] = 1.0
    y = translation(x, shift=torch.tensor([[2, -1], [-4, 0]]))
    assert float(y[0, :, 5, 3].min()) == 1.0 and float(y[0].sum()) == 3.0  # moved by (+2, -1)
    assert float(y[1].sum()) == 0.0  # shifted out: zero fill, no wrap-around
    ones = torch.ones(2, 3, 8, 8)
    c = cutout(ones, ratio=0.5, center=torch.tensor([[4, 4], [0, 7]]))
    assert float((c[0, 0] == 0).sum()) == 16 and float(c[0, 0, 2:6, 2:6].sum()) == 0  # a 4x4 hole
    assert float((c[1, 0] == 0).sum()) == 6  # clipped at the corner (rows 0-1, cols 5-7)
    # random draws: per image, deterministic with a generator, differentiable, memory format kept
    img = torch.rand(6, 3, 16, 16, requires_grad=True)
    a = diff_augment(img, "color,translation,cutout", torch.Generator().manual_seed(1))
    b = diff_augment(img, "color,translation,cutout", torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a[0] - img[0], a[1] - img[1])
    a.sum().backward()
    assert img.grad is not None and float(img.grad.abs().sum()) > 0
    cl = torch.rand(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    assert diff_augment(cl, "translation,cutout").is_contiguous(memory_format=torch.channels_last)
    # colour: brightness/saturation/contrast change pixel statistics but keep the shape
    col = diff_augment(torch.rand(64, 3, 8, 8) * 2 - 1, "color", torch.Generator().manual_seed(0))
    assert col.shape == (64, 3, 8, 8) and float(col.mean(dim=(1, 2, 3)).std()) > 0.1
    assert parse_policy("") == [] and parse_policy(" color , cutout") == ["color", "cutout"]
    with pytest.raises(ValueError, match="unknown DiffAugment policy 'rotate'"):
        parse_policy("color,rotate")


def test_r1_penalty_and_lazy_weighting():
    a = torch.randn(3, 4, 4, requires_grad=True)
    d = lambda x: (x * a).sum(dim=(1, 2, 3))  # noqa: E731  grad_x = a for every image
    pen, logits = r1_penalty(d, torch.randn(5, 3, 4, 4))
    torch.testing.assert_close(pen, a.detach().square().sum())
    assert logits.shape == (5,)
    (g,) = torch.autograd.grad(pen, a)  # differentiable in D's parameters
    torch.testing.assert_close(g, 2 * a.detach())
    # the module adds gamma / 2 * r1_every * penalty on R1 steps only
    torch.manual_seed(0)
    m = _module(None, None, "gan.identity_weight=0", "gan.augment=''", "gan.r1_gamma=0.5", "gan.r1_every=4")
    x, c = torch.rand(4, 3, 16, 16) * 2 - 1, _unit(4, 32)
    torch.manual_seed(1)
    total, st = m.d_loss(x, c, r1=True)
    assert st["r1"] > 0
    torch.testing.assert_close(float(total.detach()), st["d_loss"] + 0.5 / 2 * 4 * st["r1"], rtol=1e-5, atol=1e-6)
    total0, st0 = m.d_loss(x, c, r1=False)
    assert "r1" not in st0 and abs(float(total0.detach()) - st0["d_loss"]) < 1e-6


def test_d_and_g_losses_move_as_expected():
    """D trained alone on a fixed real batch separates it from fakes; G trained alone against that
    frozen D lowers its non-saturating loss."""
    torch.manual_seed(0)
    m = _module(None, None, "gan.identity_weight=0", "gan.augment=''", "gan.r1_gamma=0")
    x = (torch.rand(8, 3, 16, 16) * 2 - 1) * 0.5 + 0.3
    c = _unit(8, 32)
    opt = torch.optim.Adam(m.D.parameters(), lr=2e-3, betas=(0.0, 0.99))
    hist = []
    for _ in range(25):
        loss, st = m.d_loss(x, c)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(st["d_loss"])
    assert sum(hist[-5:]) / 5 < 0.7 * sum(hist[:5]) / 5, hist
    for p in m.D.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(m.G.parameters(), lr=2e-3, betas=(0.0, 0.99))
    gh = []
    for _ in range(25):
        loss, st = m.g_loss(c)
        opt.zero_grad()
        loss.backward()
        opt.step()
        gh.append(st["g_loss"])
    assert sum(gh[-5:]) / 5 < 0.7 * sum(gh[:5]) / 5, gh


class _LinearEncoder(torch.nn.Module):
    """A fixed differentiable 'FR encoder': a random projection of the 8x8-pooled image, normalised."""

    def __init__(self, d=32):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, d)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return F.normalize(self.proj(F.adaptive_avg_pool2d(x, 8).flatten(1)), dim=-1)


def test_identity_loss_falls_when_only_it_is_trained():
    torch.manual_seed(0)
    m = _module(None, _LinearEncoder(), "gan.identity_weight=1.0")
    c = _unit(8, 32, seed=3)
    opt = torch.optim.Adam(m.G.parameters(), lr=3e-3, betas=(0.0, 0.99))
    from learned.gan.losses import identity_loss

    hist = []
    for _ in range(60):
        loss, cos = identity_loss(m.encoder, m.generate(c), c)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
    assert sum(hist[-5:]) / 5 < 0.6 * sum(hist[:5]) / 5, hist
    # the module's G loss includes it with its weight
    _, st = m.g_loss(c)
    assert 0 < st["id_loss"] < 1 and abs(st["id_cos"] - (1 - st["id_loss"])) < 1e-5


# ---------------------------------------------------------------------------------------------- training


def test_training_run_checkpoint_round_trips(run):
    m = run["metrics"]
    assert m["kind"] == "gan" and m["global_step"] == 30  # global_step counts generator steps
    for k in ("d_loss_first", "d_loss_last", "g_loss_first", "g_loss_last", "id_cos_last"):
        assert m[k] is not None and m[k] == m[k], k
    out = run["out"]
    assert (out / "last.ckpt").is_file() and (out / "train_config.json").is_file()
    assert [Path(p).name for p in m["samples"]] == ["step-0000015.png", "step-0000030.png"]
    from PIL import Image

    grid = Image.open(out / "samples" / "step-0000030.png")  # 3 identities x 4 latents of 16 px, 2 px margins
    assert grid.size == (4 * 18 + 2, 3 * 18 + 2)
    csv = next((out / "logs").rglob("metrics.csv")).read_text().splitlines()[0]
    assert all(k in csv for k in ("train/d_loss", "train/g_loss", "train/id_cos", "train/r1", "train/lr"))
    ck = load_checkpoint(run["checkpoint"], kind="gan")
    cfg = ck.config
    assert cfg["kind"] == "gan" and cfg["image_size"] == 16 and cfg["train"]["step"] == 30
    assert cfg["embedding_dim"] == 32 and cfg["model"]["channels"] == [32, 16, 16] and cfg["data"]["num_images"] == 26
    assert cfg["sample"] == {"truncation": 1.0, "truncation_samples": 64, "noise_mode": "random"}
    assert cfg["gan"]["r1_every"] == 4 and cfg["encoder"]["random_init_seed"] == 0
    raw = load_checkpoint(run["checkpoint"] / "model.pt")
    assert raw.weights == "raw" and isinstance(raw.model, GANGenerator)
    assert any(not torch.equal(a, b) for a, b in zip(ck.model.state_dict().values(), raw.model.state_dict().values()))
    # the exported EMA generator is the one in the Lightning training state (with D and both optimisers)
    state = torch.load(out / "last.ckpt", map_location="cpu", weights_only=False)
    assert len(state["optimizer_states"]) == 2 and any(k.startswith("D.") for k in state["state_dict"])
    fresh = build_model(cfg)
    fresh.load_state_dict({k[len("G_ema."):]: v for k, v in state["state_dict"].items() if k.startswith("G_ema.")})
    c = _unit(2, 32)
    g = lambda: [generator(1, i) for i in range(2)]  # noqa: E731
    assert torch.equal(ck.model.sample(c, g()), fresh.eval().sample(c, g()))
    # the fit of the training conditions travels with the generator (identity.mode=fitted)
    from learned.checkpoint import load_condition_stats
    from learned import GANSource

    st = load_condition_stats(run["checkpoint"])
    assert int(st["count"]) == 26 and st["cov"].shape == (32, 32)
    ids = GANSource(checkpoint=str(run["checkpoint"]),
                    overrides={"identity": {"mode": "fitted", "min_distance": 0.005}}).sample_identities(4, seed=0)
    assert ids.report["mode"] == "fitted" and ids.embedding.shape == (4, 32)


def test_resume_after_kill_9(tmp_path):
    data = make_face_folder(tmp_path / "faces", ids=3, per_id=2, singletons=0, size=16)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "learned.train", "--config", str(GAN_TINY_CONFIG), "--out", str(out), "--threads", "1",
           "-o", f"data.path={data}", "train.steps=100000", "train.checkpoint_every=3", "train.sample_every=0",
           "train.batch_size=4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while not (out / "last.ckpt").is_file() and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)
        assert p.poll() is None, "training exited early"
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    step = int(torch.load(out / "last.ckpt", map_location="cpu", weights_only=False)["global_step"])
    assert step >= 3 and step % 3 == 0
    from learned.train import run_training

    lines = []
    m = run_training(tiny_gan_config(data, "train.steps=100000", "train.checkpoint_every=3", "train.sample_every=0",
                                     "train.batch_size=4", f"train.steps={step + 2}"), out, printer=lines.append)
    assert any("resuming" in ln for ln in lines) and m["global_step"] == step + 2
    assert load_checkpoint(out / "checkpoint", kind="gan").config["train"]["step"] == step + 2


# ---------------------------------------------------------------------------------------------- config and checkpoint errors


def test_config_errors_name_the_key(tmp_path):
    from learned.train import main, parse_config
    from common.config import ConfigError

    import yaml

    base = yaml.safe_load(GAN_TINY_CONFIG.read_text())
    base["data"]["path"] = str(tmp_path)
    for ov, msg in [("model.bogus=1", "model.bogus: unknown key"), ("gan.augment=color,rotate", "gan.augment: unknown DiffAugment"),
                    ("discriminator.channels=[16,32]", "discriminator.channels: 2 levels"),
                    ("data.image_size=18", "model.channels: 3 levels do not fit data.image_size 18"),
                    ("train.compile=true", "train.compile: not supported"), ("train.precision=16-mixed", "train.precision"),
                    ("sample.noise_mode=fresh", "sample.noise_mode"), ("sample.truncation=1.5", "sample.truncation"),
                    ("gan.r1_every=0", "gan.r1_every"), ("kind=vae", "kind: unknown trainer 'vae'")]:
        with pytest.raises(ConfigError, match=msg):
            parse_config(base, [ov], resolve=False)
    assert main(["--config", str(GAN_TINY_CONFIG), "--override", "gan.bogus=1"]) == 2
    assert main(["--config", str(GAN_TINY_CONFIG), "-o", f"data.path={tmp_path}", "--dry-run"]) == 0


def test_real_configs_parse_and_build():
    from learned.gan.trainer import GANModule
    from learned.train import parse_config

    import yaml

    for name, size, start in (("gan_lfw64.yaml", 64, 4), ("gan_lfw112.yaml", 112, 7), ("gan_lfw32_cpu.yaml", 32, 4)):
        data = yaml.safe_load((GAN_TINY_CONFIG.parent / name).read_text())
        cfg = parse_config(data, ["encoder=/some/backbone"], resolve=False)
        assert cfg.kind == "gan" and cfg.data.image_size == size and cfg.data.path.endswith("lfw-dev/images")
        assert cfg.gan.identity_weight > 0 and cfg.gan.r1_gamma > 0 and set(parse_policy(cfg.gan.augment)) == {"color", "translation", "cutout"}
        with torch.device("meta"):  # the architecture builds at its size (no memory)
            m = GANModule(cfg, torch.nn.Identity())
        assert m.G.synthesis.start == start and m.D.start == start


def _fake_diffusion_checkpoint(path: Path, D: int = 32) -> Path:
    from learned.diffusion import UNetConfig
    from learned.diffusion import build_model as build_diffusion

    mcfg = UNetConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], embedding_dim=D,
                      groups=8, head_channels=8, identity_tokens=1).to_dict()
    config = {"kind": "diffusion", "image_size": 16, "embedding_dim": D, "model": mcfg,
              "sample": {"solver": "ddim", "steps": 2, "guidance": 1.0, "eta": 0.0, "clip": True}}
    return save_checkpoint(path, config, {"ema": build_diffusion(config)})


def test_checkpoint_kinds_are_not_interchangeable(tmp_path, run):
    from learned.gan.source import GANSource
    from learned.diffusion.source import DiffusionSource

    diff = _fake_diffusion_checkpoint(tmp_path / "diffusion")
    with pytest.raises(CheckpointError, match="is a 'diffusion' checkpoint, not a 'gan' one.*--source diffusion"):
        GANSource(checkpoint=str(diff))
    with pytest.raises(CheckpointError, match="is a 'gan' checkpoint, not a 'diffusion' one.*--source gan"):
        DiffusionSource(checkpoint=str(run["checkpoint"]))
    with pytest.raises(CheckpointError, match="Lightning training state"):
        GANSource(checkpoint=str(run["out"] / "last.ckpt"))
    bad = tmp_path / "bad"
    shutil.copytree(run["checkpoint"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model": {**cfg["model"], "channels": [32, 16, 8]}}))
    with pytest.raises(CheckpointError, match="do not match the model"):
        load_checkpoint(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "model": {**cfg["model"], "bogus": 1}}))
    with pytest.raises(CheckpointError, match="bogus"):
        load_checkpoint(bad)


# ---------------------------------------------------------------------------------------------- source


def test_gan_source_conformance(run):
    from engine import create_source
    from tests.conformance import check_conformance

    check_conformance(create_source("gan", checkpoint=str(run["checkpoint"])))
    check_conformance(create_source("gan", checkpoint=str(run["checkpoint"]), preset="consistent",
                                    overrides={"noise_mode": "const", "max_batch": 4}))


def test_gan_source_identities_factors_and_config(tmp_path, run):
    from engine import create_source
    from learned.source import ARCFACE_112

    src = create_source("gan", checkpoint=str(run["checkpoint"]), size=32, overrides={"resize": True, "truncation": 0.8})
    ids = src.sample_identities(4, seed=1)
    # identities are sampled exactly like the diffusion source's (same code, same encoder space)
    dsrc = create_source("diffusion", checkpoint=str(_fake_diffusion_checkpoint(tmp_path / "d")))
    assert torch.equal(dsrc.sample_identities(4, seed=1).embedding, ids.embedding)
    assert "encoder" in ids.report["space"] and ids.report["achieved_min_distance"] >= 1.1
    rb = src.render(ids, torch.tensor([0, 1, 1]), torch.tensor([0, 0, 5]), seed=1)
    assert rb.images.shape == (3, 3, 32, 32)
    torch.testing.assert_close(rb.landmarks[1], ARCFACE_112 * 32 / 112)
    assert rb.factors["truncation"].tolist() == pytest.approx([0.8] * 3)
    assert rb.factors["noise_seed"].dtype == torch.int64 and len(set(rb.factors["noise_seed"].tolist())) == 3
    cfg = src.config()
    assert cfg["truncation"] == 0.8 and cfg["noise_mode"] == "random" and cfg["truncation_samples"] == 64
    assert cfg["kind"] == "gan" and cfg["checkpoint_step"] == 30 and cfg["native_size"] == 16
    json.dumps(cfg)
    assert create_source("gan", checkpoint=str(run["checkpoint"]), preset="consistent").sampling()["truncation"] == 0.7
    raw = create_source("gan", checkpoint=str(run["checkpoint"]), overrides={"weights": "raw"})
    r2 = raw.render(ids, torch.tensor([0]), torch.tensor([0]), seed=1)
    e2 = create_source("gan", checkpoint=str(run["checkpoint"])).render(ids, torch.tensor([0]), torch.tensor([0]), seed=1)
    assert not torch.allclose(r2.images, e2.images)


@pytest.mark.parametrize("kwargs, msg", LEARNED_SOURCE_BAD_INPUT + [
    ({"overrides": {"guidance": 2.0}}, "overrides.guidance: unknown key"),
    ({"overrides": {"truncation": 1.5}}, "truncation must be in"),
    ({"overrides": {"truncation": "lots"}}, "overrides.truncation: expected a number"),
    ({"overrides": {"noise_mode": "fresh"}}, "unknown noise_mode"),
])
def test_gan_source_bad_input(run, kwargs, msg):
    from learned.gan.source import GANSource

    kw = {"checkpoint": str(run["checkpoint"]), **kwargs} if kwargs != {} else {}
    with pytest.raises(ValueError, match=msg):
        GANSource(**kw)


def test_evaluate_runs_on_a_gan_checkpoint(tmp_path, run):
    from learned.evaluate import main

    out = tmp_path / "eval"
    enc = json.dumps(load_checkpoint(run["checkpoint"]).config["encoder"])
    args = ["--encoder", enc, "--allow-random-encoder", "--source", "gan", "--checkpoint", str(run["checkpoint"]),
            "--size", "16", "--ids", "3", "--per-id", "2", "--out", str(out)]
    rc = main(args + ["--override", "identity.mode=fitted", "--override", "identity.min_distance=0.005"])
    assert rc == 0 and list(out.glob("*.json"))
    inp = json.loads((out / "report.json").read_text())["input"]  # the override reached the source
    assert inp["identity_mode"] == "fitted" and inp["overrides"]["identity.mode"] == "fitted"
    assert "`identity.mode=fitted`" in (out / "report.md").read_text()
    assert main(args + ["--override", "identity.mode"]) == 2
    assert main(args + ["--override", "identity.mode=uniform"]) == 2


def test_throughput_benchmark_runs_on_the_tiny_gan(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("learned_throughput", ROOT / "benchmarks" / "learned_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "bench.json"
    assert mod.main(["--config", str(GAN_TINY_CONFIG), "--device", "cpu", "--batch", "4", "--iters", "2",
                     "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert r["kind"] == "gan" and r["image_size"] == 16 and r["encoder"] == "tiny"
    assert r["train_img_s"] > 0 and r["sample_img_s"] > 0 and r["gflop_per_img"] > 0
