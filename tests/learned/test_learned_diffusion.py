"""Diffusion source of issue 6: network, schedule, samplers, training, checkpoints, data, errors."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from engine.interface import generator
from learned.checkpoint import CheckpointError, load_checkpoint
from learned.diffusion import CosineSchedule, ScheduleConfig, UNet, UNetConfig, build_model, sample
from tests.learned_helpers import LEARNED_SOURCE_BAD_INPUT, TINY_CONFIG, make_face_folder, session_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return session_run("diffusion", tmp_path_factory)


def _small(D=8, **kw):
    return UNetConfig(**{**dict(base_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8],
                                embedding_dim=D, groups=8, head_channels=16, identity_tokens=2), **kw})


# ---------------------------------------------------------------------------------------------- network


@pytest.mark.parametrize("size, mult, attn", [(64, [1, 1, 2, 2], [16, 8]), (112, [1, 1, 2, 2, 2], [14, 7]), (20, [1, 2], [10])])
def test_unet_sizes_and_conditioning(size, mult, attn):
    torch.manual_seed(0)
    m = UNet(_small(channel_mult=mult, attention_resolutions=attn, base_channels=8), size)
    for p in m.parameters():  # break the zero-inits so the condition reaches the output
        p.data.add_(torch.randn_like(p) * 0.02)
    x, t, c = torch.randn(2, 3, size, size), torch.rand(2), torch.randn(2, 8)
    out = m(x, t, c)
    assert out.shape == x.shape
    n_attn = sum(type(mod).__name__ == "AttentionBlock" for mod in m.modules())
    assert n_attn > 1  # middle + at least one listed resolution
    # the identity condition and the null embedding both change the output
    assert not torch.allclose(out, m(x, t, torch.randn(2, 8)))
    dropped = m(x, t, c, drop=torch.tensor([True, False]))
    assert not torch.allclose(dropped[0], out[0]) and torch.allclose(dropped[1], out[1], atol=1e-6)
    with pytest.raises(ValueError, match=f"built for {size} px"):
        m(torch.randn(1, 3, size + 2, size + 2), t[:1], c[:1])


def test_schedule_v_parameterisation():
    s = CosineSchedule(ScheduleConfig())
    t = torch.linspace(0, 1, 11)
    a, sg = s.alpha_sigma(t)
    torch.testing.assert_close(a ** 2 + sg ** 2, torch.ones_like(a, dtype=torch.float64))
    assert (s.logsnr(t).diff() < 0).all()
    assert abs(float(s.logsnr(torch.tensor([0.0]))) - 15.0) < 1e-6 and abs(float(s.logsnr(torch.tensor([1.0]))) + 15.0) < 1e-6
    x, eps = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    tt = torch.rand(4)
    z, v = s.add_noise(x, tt, eps)
    a, sg = (q.float().view(-1, 1, 1, 1) for q in s.alpha_sigma(tt))
    torch.testing.assert_close(a * z - sg * v, x, atol=1e-5, rtol=1e-5)
    shifted = CosineSchedule(ScheduleConfig(shift=2 * math.log(64 / 112)))
    assert float(shifted.logsnr(torch.tensor([0.5]))) < float(s.logsnr(torch.tensor([0.5])))


class _Oracle(torch.nn.Module):
    """The exact v of a Gaussian data distribution N(mu, std^2) per pixel; ``cond`` shifts mu."""

    def __init__(self, schedule, std):
        super().__init__()
        self.s, self.std = schedule, std

    def forward(self, z, t, cond, drop=None):
        a, s = (q.float().view(-1, 1, 1, 1) for q in self.s.alpha_sigma(t))
        mu = cond[:, :1, None, None].float() * 0.5
        if drop is not None:
            mu = torch.where(drop[:, None, None, None], torch.zeros_like(mu), mu)
        x0 = mu + a * self.std ** 2 / (a ** 2 * self.std ** 2 + s ** 2) * (z - a * mu)
        eps = (z - a * x0) / s
        return a * eps - s * x0


@pytest.mark.parametrize("solver, steps, tol, eta", [("dpmpp2m", 25, 0.06, 0.0), ("ddim", 25, 0.1, 0.0),
                                                      ("dpmpp2m", 10, 0.1, 0.0), ("ddim", 25, 0.1, 1.0)])
def test_samplers_recover_the_data_distribution(solver, steps, tol, eta):
    sch = CosineSchedule(ScheduleConfig())
    model = _Oracle(sch, std=0.3)
    cond = torch.full((64, 2), 1.0)
    gens = [generator(0, "oracle", i) for i in range(64)]
    x = sample(model, sch, cond, gens, image_size=8, steps=steps, solver=solver, guidance=1.0, eta=eta, clip=False)
    assert abs(float(x.mean()) - 0.5) < tol
    assert abs(float(x.std()) - 0.3) / 0.3 < tol * 2
    # guidance extrapolates away from the unconditional mean (0) past the conditional one (0.5)
    xg = sample(model, sch, cond, gens, image_size=8, steps=steps, solver=solver, guidance=2.0, eta=eta, clip=False)
    assert float(xg.mean()) > float(x.mean()) + 0.2


def test_ddim_eta_noise_is_the_ancestral_posterior_std():
    """eta = 1: DDIM's per-step noise std is that of the forward posterior q(z_s | z_t, x)
    (Song et al. eq. 16: sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)), never above sigma_s."""
    from learned.diffusion.sampling import ddim_noise_std

    sch = CosineSchedule(ScheduleConfig())
    a, s = (q.tolist() for q in sch.alpha_sigma(torch.linspace(1, 0.04, 25, dtype=torch.float64)))
    for i in range(len(a) - 1):
        a_t, s_t, a_s, s_s = a[i], s[i], a[i + 1], s[i + 1]
        want = math.sqrt(s_s ** 2 / s_t ** 2) * math.sqrt(1 - a_t ** 2 / a_s ** 2)
        assert abs(ddim_noise_std(a_t, s_t, a_s, s_s, 1.0) - want) < 1e-9
        assert ddim_noise_std(a_t, s_t, a_s, s_s, 1.0) <= s_s
        assert abs(ddim_noise_std(a_t, s_t, a_s, s_s, 0.5) - 0.5 * want) < 1e-9


def test_sampling_deterministic_and_independent_of_the_batch():
    torch.manual_seed(0)
    m = build_model({"image_size": 16, "model": _small().to_dict()}).eval()
    for p in m.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    c = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    gens = lambda idx: [generator(7, "n", i) for i in idx]  # noqa: E731
    for kw in ({"solver": "dpmpp2m"}, {"solver": "ddim"}, {"solver": "ddim", "eta": 1.0}):
        a = m.sample(c, gens(range(4)), steps=5, guidance=2.0, **kw)
        b = m.sample(c, gens(range(4)), steps=5, guidance=2.0, **kw)
        assert torch.equal(a, b)
        sub = m.sample(c[[3, 1]], gens([3, 1]), steps=5, guidance=2.0, **kw)
        torch.testing.assert_close(sub, a[[3, 1]], atol=1e-5, rtol=0)
        assert not torch.allclose(a[0], a[1])
    with pytest.raises(ValueError, match="unknown solver"):
        m.sample(c, gens(range(4)), solver="euler")
    with pytest.raises(ValueError, match="one generator per image"):
        m.sample(c, gens(range(3)))


# ---------------------------------------------------------------------------------------------- training


def test_training_loss_falls_checkpoint_round_trips(run):
    m = run["metrics"]
    assert m["global_step"] == 40 and m["loss_last"] < 0.8 * m["loss_first"], m
    out = run["out"]
    assert (out / "last.ckpt").is_file() and (out / "train_config.json").is_file()
    assert m["samples"] and (out / "samples" / "step-0000040.png").is_file()
    assert list((out / "logs").rglob("metrics.csv"))
    ck = load_checkpoint(run["checkpoint"], kind="diffusion")
    cfg = ck.config
    assert cfg["kind"] == "diffusion" and cfg["image_size"] == 16 and cfg["train"]["step"] == 40
    assert cfg["encoder"]["random_init_seed"] == 0 and cfg["data"]["num_images"] == 26
    assert cfg["model"]["embedding_dim"] == 32 and cfg["sample"]["solver"] == "dpmpp2m"
    # config beside the weights rebuilds the model; EMA and raw weights are both there and differ
    raw = load_checkpoint(run["checkpoint"] / "model.pt")
    assert raw.weights == "raw"
    sd_e, sd_r = ck.model.state_dict(), raw.model.state_dict()
    assert any(not torch.equal(sd_e[k], sd_r[k]) for k in sd_e)
    # same outputs as the EMA network inside the Lightning training state
    state = torch.load(out / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    fresh = build_model(cfg)
    fresh.load_state_dict({k[len("ema."):]: v for k, v in state.items() if k.startswith("ema.")})
    fresh.eval()
    c = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    g = lambda: [generator(1, i) for i in range(2)]  # noqa: E731
    assert torch.equal(ck.model.sample(c, g(), steps=3), fresh.sample(c, g(), steps=3))


def test_checkpoint_errors(tmp_path, run):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="training run dir: use"):
        load_checkpoint(run["out"])
    with pytest.raises(CheckpointError, match="Lightning training state"):
        load_checkpoint(run["out"] / "last.ckpt")
    bad = tmp_path / "gan"
    shutil.copytree(run["checkpoint"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "kind": "gan"}))
    with pytest.raises(CheckpointError, match="is a 'gan' checkpoint, not a 'diffusion' one"):
        load_checkpoint(bad, kind="diffusion")
    (bad / "config.json").write_text(json.dumps({**cfg, "model": {**cfg["model"], "base_channels": 24}}))
    with pytest.raises(CheckpointError, match="do not match the model"):
        load_checkpoint(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "model": {**cfg["model"], "bogus": 1}}))
    with pytest.raises(CheckpointError, match="bogus"):
        load_checkpoint(bad)
    (bad / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a synthface learned checkpoint"):
        load_checkpoint(bad)


def test_config_errors_name_the_key(tmp_path):
    from learned.train import main, parse_config
    from common.config import ConfigError

    import yaml

    base = yaml.safe_load(TINY_CONFIG.read_text())
    base["data"]["path"] = str(tmp_path)
    with pytest.raises(ConfigError, match="model.bogus: unknown key"):
        parse_config(base, ["model.bogus=1"])
    with pytest.raises(ConfigError, match="kind: unknown trainer 'vae'"):
        parse_config({**base, "kind": "vae"})
    with pytest.raises(ConfigError, match="kind: required"):
        parse_config({k: v for k, v in base.items() if k != "kind"})
    with pytest.raises(ConfigError, match="sample.solver"):
        parse_config(base, ["sample.solver=euler"])
    with pytest.raises(ConfigError, match="data.path: required"):
        parse_config(base, ["data.path="])
    assert main(["--config", str(TINY_CONFIG), "--override", "train.bogus=1"]) == 2
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert main(["--config", str(TINY_CONFIG), "-o", f"data.path={tmp_path}", "--dry-run"]) == 0


def test_real_configs_parse():
    from learned.train import parse_config

    import yaml

    from tests.learned_helpers import TINY_CONFIG as T

    for name, size in (("diffusion_lfw64.yaml", 64), ("diffusion_lfw112.yaml", 112), ("diffusion_lfw32_cpu.yaml", 32)):
        data = yaml.safe_load((T.parent / name).read_text())
        cfg = parse_config(data, ["encoder=/some/backbone"], resolve=False)
        assert cfg.kind == "diffusion" and cfg.data.image_size == size and cfg.diffusion.cond_drop == 0.25
        assert cfg.sample.steps <= 25
        UNet(cfg.model, size)  # the architecture builds at its size


# ---------------------------------------------------------------------------------------------- data


def test_face_data_embeddings_cached_and_conditions(tmp_path):
    from learned.data import FaceTrainSet, cached_embeddings
    from learned.encoder import load_encoder

    root = make_face_folder(tmp_path / "faces", ids=3, per_id=3, singletons=2, size=24)
    ds = FaceTrainSet(root, 16)
    assert len(ds) == 11 and ds.num_identities == 5  # the 2 one-image people count
    enc = load_encoder({"arch": "tiny", "embedding_size": 16, "input_size": 32, "random_init_seed": 1},
                       allow_random=True)
    logs = []
    e1 = cached_embeddings(ds, enc, tmp_path / "cache", log=logs.append)
    e2 = cached_embeddings(ds, enc, tmp_path / "cache", log=logs.append)
    assert torch.equal(e1, e2) and "cached" in logs[-1] and len(list((tmp_path / "cache").glob("*.pt"))) == 1
    torch.testing.assert_close(e1.norm(dim=-1), torch.ones(11))
    # flip-averaged: a mirrored image gets the same condition
    x = ds.original(0)[None].float() / 127.5 - 1
    torch.testing.assert_close(torch.nn.functional.normalize(enc(x) + enc(x.flip(-1)), dim=-1)[0], e1[0])
    # another encoder: another cache entry
    enc2 = load_encoder({"arch": "tiny", "embedding_size": 16, "input_size": 32, "random_init_seed": 2}, allow_random=True)
    cached_embeddings(ds, enc2, tmp_path / "cache", log=logs.append)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    ds.attach_embeddings(e1, "image")
    item = ds[4]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.uint8
    torch.testing.assert_close(item["embedding"], e1[4])
    ds.preload()
    batch = ds.__getitems__([0, 10])
    assert batch["image"].shape == (2, 3, 16, 16) and batch["label"].tolist() == [0, 4]
    ds.attach_embeddings(e1, "mean")
    same = ds.labels == ds.labels[0]
    assert torch.allclose(ds.embeddings[same], ds.embeddings[0].expand(int(same.sum()), -1))
    torch.testing.assert_close(ds.embeddings[10], e1[10])  # a singleton's mean is its own embedding


# ---------------------------------------------------------------------------------------------- source


def test_identities_separable_prefix_stable_and_reported(run):
    from learned.diffusion.source import DiffusionSource

    src = DiffusionSource(checkpoint=str(run["checkpoint"]), overrides={"identity": {"min_distance": 1.2}})
    ids = src.sample_identities(20, seed=0)
    rep = ids.report
    assert rep["rejected"] > 0 and rep["candidates"] == 20 + rep["rejected"] and rep["achieved_min_distance"] >= 1.2
    assert "encoder" in rep["space"] and rep["mode"] == "random"
    torch.testing.assert_close(ids.embedding.norm(dim=-1), torch.ones(20))
    assert torch.equal(src.sample_identities(7, seed=0).embedding, ids.embedding[:7])
    with pytest.raises(ValueError, match=r"median distance \d\.\d{3}, 90th percentile \d\.\d{3}.*lower identity.min_distance"):
        DiffusionSource(checkpoint=str(run["checkpoint"]),
                        overrides={"identity": {"min_distance": 1.9, "max_tries": 2}}).sample_identities(10, seed=0)


def test_condition_stats_exported_and_fitted_identities(run, tmp_path):
    from learned.checkpoint import load_condition_stats
    from learned.diffusion.source import DiffusionSource

    st = load_condition_stats(run["checkpoint"])  # the training run saved the fit of its conditions
    n_img = sum(1 for _ in Path(run["data"]).glob("*/*.png"))
    D = st["mean"].numel()
    assert int(st["count"]) == n_img and st["cov"].shape == (D, D) and torch.allclose(st["cov"], st["cov"].T)
    assert torch.linalg.eigvalsh(st["cov"]).min() > -1e-9
    fit = DiffusionSource(checkpoint=str(run["checkpoint"]), overrides={"identity": {"mode": "fitted", "min_distance": 0.005}})
    ids = fit.sample_identities(12, seed=0)
    assert ids.report["mode"] == "fitted" and ids.report["achieved_min_distance"] >= 0.005
    assert fit.config()["condition_stats_sha256"] == st["sha256"] and fit.config()["identity"]["mode"] == "fitted"
    torch.testing.assert_close(ids.embedding.norm(dim=-1), torch.ones(12))
    assert torch.equal(fit.sample_identities(5, seed=0).embedding, ids.embedding[:5])  # prefix-stable
    assert not torch.equal(fit.sample_identities(5, seed=1).embedding, ids.embedding[:5])
    # in the region of the training conditions: closer to their mean direction than uniform ones
    mu = torch.nn.functional.normalize(st["mean"].float(), dim=0)
    rnd = DiffusionSource(checkpoint=str(run["checkpoint"]), overrides={"identity": {"min_distance": 0.05}})
    assert (ids.embedding @ mu).mean() > (rnd.sample_identities(12, seed=0).embedding @ mu).mean() + 0.2
    # a checkpoint exported without the statistics: a clear error naming the way out
    old = tmp_path / "old"
    shutil.copytree(run["checkpoint"], old)
    cfg = json.loads((old / "config.json").read_text())
    (old / cfg.pop("condition_stats")).unlink()
    (old / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="no condition statistics.*identity.mode=random"):
        DiffusionSource(checkpoint=str(old), overrides={"identity": {"mode": "fitted"}})
    DiffusionSource(checkpoint=str(old))  # random mode does not need them
    with pytest.raises(ValueError, match="'random', 'fitted' or 'morphable'"):
        DiffusionSource(checkpoint=str(run["checkpoint"]), overrides={"identity": {"mode": "uniform"}})


def test_morphable_identities_embedded_by_the_encoder(run, default_model):
    from learned.diffusion.source import DiffusionSource

    src = DiffusionSource(checkpoint=str(run["checkpoint"]), overrides={"identity": {"mode": "morphable", "min_distance": 0.0}})
    ids = src.sample_identities(3, seed=0)
    assert ids.embedding.shape == (3, 32) and ids.report["mode"] == "morphable"
    assert "gender" in ids.meta and ids.meta["gender"].shape == (3,)
    torch.testing.assert_close(ids.embedding.norm(dim=-1), torch.ones(3))
    rb = src.render(ids, torch.tensor([0, 2]), torch.tensor([0, 0]), seed=0)
    assert rb.images.shape == (2, 3, 16, 16)


def test_render_labels_and_factors(run):
    from engine import create_source
    from learned.source import ARCFACE_112

    src = create_source("diffusion", checkpoint=str(run["checkpoint"]), size=32, overrides={"resize": True, "guidance": 3.0})
    ids = src.sample_identities(2, seed=1)
    rb = src.render(ids, torch.tensor([0, 1]), torch.tensor([0, 5]), seed=1)
    assert rb.images.shape == (2, 3, 32, 32)
    torch.testing.assert_close(rb.landmarks[1], ARCFACE_112 * 32 / 112)
    assert rb.factors["guidance"].tolist() == [3.0, 3.0] and rb.factors["steps"].tolist() == [6, 6]
    assert rb.factors["noise_seed"].dtype == torch.int64 and rb.factors["noise_seed"][0] != rb.factors["noise_seed"][1]
    cfg = src.config()
    # dotted keys (engine --override identity.min_distance=0.5) reach the nested settings
    dotted = create_source("diffusion", checkpoint=str(run["checkpoint"]), overrides={"identity.min_distance": 0.5, "steps": "4"})
    assert dotted.cfg.identity.min_distance == 0.5 and dotted.config()["steps"] == 4
    assert cfg["guidance"] == 3.0 and cfg["solver"] == "dpmpp2m" and cfg["checkpoint_step"] == 40 and cfg["native_size"] == 16
    json.dumps(cfg)


@pytest.mark.parametrize("kwargs, msg", LEARNED_SOURCE_BAD_INPUT + [
    ({"overrides": {"bogus": 1}}, "overrides.bogus: unknown key"),
    ({"overrides": {"solver": "euler"}}, "unknown solver"),
    ({"overrides": {"steps": 2.5}}, "overrides.steps: expected an integer"),
    ({"overrides": {"identity.bogus": 1}}, "overrides.identity.bogus: unknown key"),
])
def test_source_bad_input(run, kwargs, msg):
    from learned.diffusion.source import DiffusionSource

    kw = {"checkpoint": str(run["checkpoint"]), **kwargs} if kwargs != {} else {}
    with pytest.raises(ValueError, match=msg):
        DiffusionSource(**kw)


def test_throughput_benchmark_runs_on_the_tiny_model(tmp_path):
    import importlib.util

    from tests.learned_helpers import TINY_CONFIG as T

    spec = importlib.util.spec_from_file_location("learned_throughput", T.parents[2] / "benchmarks" / "learned_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "bench.json"
    assert mod.main(["--config", str(T), "--device", "cpu", "--batch", "4", "--iters", "1", "--steps", "2",
                     "--embedding-dim", "32", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert r["image_size"] == 16 and r["train_img_s"] > 0 and r["sample_img_s"] > 0 and r["gflop_per_img"] > 0


def test_face_data_excludes_evaluation_people(tmp_path):
    """A generator whose data are judged on some LFW folds must not train on those people."""
    from learned.config import DataConfig
    from learned.data import FaceTrainSet
    from common.people import PairsPeopleConfig

    root = make_face_folder(tmp_path / "faces", ids=3, per_id=3, singletons=2, size=24)
    pairs = tmp_path / "pairs.txt"  # LFW format: fold 1 names person00 + person03, fold 2 person01
    pairs.write_text("2\t1\nperson00\t1\t2\nperson03\t1\tperson02\t2\nperson01\t1\t2\nperson01\t1\tperson04\t1\n")
    cfg = DataConfig(path=str(root), exclude_from_pairs=PairsPeopleConfig(pairs=str(pairs), folds=[2]))
    cfg.validate()
    assert cfg.excluded_people() == {"person01", "person04"}
    full, ds = FaceTrainSet(root, 16), FaceTrainSet(root, 16, exclude_people=cfg.excluded_people())
    assert ds.excluded_people == 2 and len(ds) == len(full) - 4 and ds.num_identities == 3
    names = {full.source.classes[int(full.source.labels[int(i)])] for i in ds.index}
    assert names == {"person00", "person02", "person03"}
    assert torch.equal(ds.original(0), full.original(0))  # person00's first image either way
    assert ds.fingerprint()["content"] != full.fingerprint()["content"]  # another embedding cache entry
    with pytest.raises(ValueError, match="no image is left"):
        FaceTrainSet(root, 16, exclude_people={f"person{i:02d}" for i in range(5)})
