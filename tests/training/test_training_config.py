"""Config schema: validation errors name the bad key; overrides; path resolution; shipped configs."""
from __future__ import annotations

import copy

import pytest
import yaml

from common.config import ConfigError, apply_overrides
from training.config import LRConfig, load_config, parse_config
from training.curriculum import Curriculum

from tests.training.test_training_utils import FAKE_SOURCE, REPO_ROOT, tiny_train_dict


@pytest.fixture()
def raw(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    return tiny_train_dict(tmp_path / "imgs", out=tmp_path / "run")


def _err(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(raw, resolve=False)


def test_valid_config_parses(raw):
    cfg = parse_config(raw, resolve=False)
    assert cfg.model.backbone == "tiny" and cfg.trainer.batch_size == 16
    assert cfg.phases[0].start_weights == {"real": 1.0}


def test_unknown_key_is_named_with_suggestion(raw):
    raw["trainer"]["batchsize"] = 3
    _err(raw, r"^trainer\.batchsize: unknown key \(did you mean 'batch_size'\?\)")


def test_unknown_top_level_key(raw):
    raw["phase"] = []
    _err(raw, r"^phase: unknown key \(did you mean 'phases'\?\)")


def test_phase_weight_unknown_source(raw):
    raw["phases"][0]["weights"] = {"reel": 1.0}
    _err(raw, r"^phases\[0\]\.weights\.reel: unknown source 'reel' \(did you mean 'real'\?\)")


def test_phase_needs_steps_or_epochs(raw):
    del raw["phases"][0]["steps"]
    _err(raw, r"^phases\[0\]: give exactly one of 'steps' or 'epochs'")
    raw["phases"][0].update(steps=3, epochs=1)
    _err(raw, r"^phases\[0\]: give exactly one of")


def test_bad_types_and_values(raw):
    r = copy.deepcopy(raw)
    r["trainer"]["batch_size"] = "many"
    _err(r, r"^trainer\.batch_size: expected an integer")
    r = copy.deepcopy(raw)
    r["trainer"]["precision"] = "bf16"
    _err(r, r"^trainer\.precision: must be one of .*did you mean 'bf16-true'|^trainer\.precision: must be one of")
    r = copy.deepcopy(raw)
    r["phases"][0]["optimizer"] = {"name": "adamm"}
    _err(r, r"^phases\[0\]\.optimizer\.name: must be one of .*\(did you mean 'adam")
    r = copy.deepcopy(raw)
    r["phases"][0]["weights"] = {"real": {"start": 0.0, "end": 0.0}}
    _err(r, r"^phases\[0\]\.weights: all start weights are 0")
    r = copy.deepcopy(raw)
    r["phases"][0]["weights"] = {"real": -1}
    _err(r, r"^phases\[0\]\.weights\.real: weights must be finite and >= 0")
    r = copy.deepcopy(raw)
    r["model"]["backbone"] = "iresnet51"
    _err(r, r"^model\.backbone: unknown backbone 'iresnet51'")
    r = copy.deepcopy(raw)
    r["phases"].append(copy.deepcopy(r["phases"][0]))
    _err(r, r"^phases\[1\]\.name: duplicate phase name 'main'")
    r = copy.deepcopy(raw)
    r["phases"][0]["lr"] = {"base": 0.1, "schedule": "cosin"}
    _err(r, r"^phases\[0\]\.lr\.schedule: must be one of .*did you mean 'cosine'")


def test_source_errors(raw):
    r = copy.deepcopy(raw)
    r["sources"]["synth"] = {"type": "stream", "source": FAKE_SOURCE}
    _err(r, r"^sources\.synth\.num_ids: required")
    r = copy.deepcopy(raw)
    r["sources"]["synth"] = {"type": "strem", "source": FAKE_SOURCE}
    _err(r, r"^sources\.synth\.type: must be one of .*did you mean 'stream'")
    r = copy.deepcopy(raw)
    r["sources"]["real"]["augment"] = {"jpeg": {"qualty": [30, 90]}}
    _err(r, r"^sources\.real\.augment\.jpeg\.qualty: unknown parameter")
    r = copy.deepcopy(raw)
    r["sources"]["real"]["augment"] = {"blurr": 0.3}
    _err(r, r"^sources\.real\.augment\.blurr: unknown augmentation \(did you mean 'blur'\?\)")
    r = copy.deepcopy(raw)
    r["sources"]["real"]["augment"] = {"flip": 1.5}
    _err(r, r"^sources\.real\.augment\.flip\.p: probability must be in \[0, 1\]")
    r = copy.deepcopy(raw)
    r["sources"]["real"]["max_ids"] = 0
    _err(r, r"^sources\.real\.max_ids: must be > 0")
    r = copy.deepcopy(raw)
    r["sources"]["synth"] = {"type": "stream", "source": FAKE_SOURCE, "num_ids": 3, "cache": True}
    _err(r, r"^sources\.synth\.cache: needs fixed_variations")
    r = copy.deepcopy(raw)
    del r["sources"]["real"]["path"]
    _err(r, r"^sources\.real\.path: required for type 'folder'")


def test_yaml_quirks_and_shorthands(raw):
    raw["phases"][0]["lr"] = "5e-3"  # YAML 1.1 reads 5e-3 as a string; a bare number is {base: ...}
    raw["phases"][0]["optimizer"] = {"name": "SGD", "weight_decay": "5e-4"}
    raw["phases"][0]["weights"] = {"real": [1.0, 0.5]}
    cfg = parse_config(raw, resolve=False)
    ph = cfg.phases[0]
    assert ph.lr.base == pytest.approx(5e-3) and ph.optimizer.weight_decay == pytest.approx(5e-4)
    assert ph.optimizer.name == "sgd"
    assert ph.start_weights == {"real": 1.0} and ph.end_weights == {"real": 0.5}
    raw["trainer"]["precision"] = 32
    assert parse_config(raw, resolve=False).trainer.precision == "32"


def test_overrides(raw):
    d = apply_overrides(raw, ["trainer.batch_size=8", "phases.0.steps=7", "model.margins.m=0.1",
                              "sources.real.augment={flip: 1.0}"])
    cfg = parse_config(d, resolve=False)
    assert cfg.trainer.batch_size == 8 and cfg.phases[0].steps == 7 and cfg.model.margins["m"] == 0.1
    assert cfg.sources["real"].augment == {"flip": 1.0}
    with pytest.raises(ConfigError, match="not a valid list index"):
        apply_overrides(raw, ["phases.3.steps=1"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides(raw, ["trainer.batch_size"])
    with pytest.raises(ConfigError, match=r"^trainer\.batch_size: expected an integer"):
        parse_config(raw, ["trainer.batch_size=lots"], resolve=False)


def test_load_config_resolves_relative_paths(tmp_path, monkeypatch):
    (tmp_path / "data" / "imgs" / "a").mkdir(parents=True)
    cfg_dir = tmp_path / "cfgs"
    cfg_dir.mkdir()
    raw = tiny_train_dict("../data/imgs", out="runs/x")
    (cfg_dir / "c.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)  # not relative to cwd -> relative to the config's directory
    cfg = load_config(cfg_dir / "c.yaml", ["phases.0.steps=3"])
    assert cfg.sources["real"].path == str((tmp_path / "data" / "imgs").resolve())
    assert cfg.phases[0].steps == 3


def test_lr_schedules():
    lr = LRConfig(base=1.0, schedule="cosine", warmup_steps=10, min_lr=0.0)
    assert lr.factor(0, 110) == 0.0 and lr.factor(5, 110) == pytest.approx(0.5)
    assert lr.factor(10, 110) == pytest.approx(1.0) and lr.factor(110, 110) == pytest.approx(0.0, abs=1e-9)
    assert lr.factor(60, 110) == pytest.approx(0.5)
    st = LRConfig(base=1.0, schedule="step", milestones=[0.5, 0.75], gamma=0.1)
    assert st.factor(49, 100) == 1.0 and st.factor(50, 100) == pytest.approx(0.1) and st.factor(80, 100) == pytest.approx(0.01)
    poly = LRConfig(base=1.0, schedule="poly", power=2.0)
    assert poly.factor(50, 100) == pytest.approx(0.25)


def test_epochs_need_sizes_and_resolve(raw):
    raw["phases"][0] = {"name": "main", "epochs": 2, "weights": {"real": 1.0}}
    cfg = parse_config(raw, resolve=False)
    cur = Curriculum(cfg, {"real": 5}, {"real": 40})
    assert cur.total_steps == 5  # ceil(2 * 40 / 16)
    raw["sources"]["synth"] = {"type": "stream", "source": FAKE_SOURCE, "num_ids": 3, "per_id": None}
    raw["phases"][0]["weights"] = {"synth": 1.0}
    cfg = parse_config(raw, resolve=False)
    with pytest.raises(ConfigError, match=r"phases\[0\]\.epochs: the size of source 'synth' is unknown"):
        Curriculum(cfg, {"synth": 3}, {"synth": None})


@pytest.mark.parametrize("name", ["pretrain_finetune.yaml", "gpu30/fr_encoder.yaml"])
def test_shipped_train_configs_parse(name):
    cfg = load_config(REPO_ROOT / "configs" / name)
    assert len(cfg.phases) == 2 and cfg.phases[1].reinit_head and cfg.phases[1].head_init == "mean"
    assert cfg.phases[0].active_sources() == ["synthetic"] and cfg.phases[1].active_sources() == ["authentic"]
    assert cfg.phases[1].lr.base < cfg.phases[0].lr.base and cfg.phases[1].freeze
    assert cfg.sources["authentic"].identities_from_pairs.folds == [1, 2, 3]


@pytest.mark.parametrize("name", ["bench_small.yaml", "bench_cpu.yaml", "bench_gpu.yaml"])
def test_shipped_benchmark_configs_parse(name):
    from training.benchmark import load_benchmark_config

    bc = load_benchmark_config(REPO_ROOT / "configs" / name)
    assert bc.lfw.eval_folds == [4, 5] and bc.lfw.train_folds == [1, 2, 3]
    assert sorted(bc.sweep) == [100, 300, 1000]


@pytest.mark.parametrize("path", ["gpu30/bench_learned.yaml", "bench_learned_cpu.yaml"])
def test_learned_benchmark_configs_parse(path):
    from training.benchmark import load_benchmark_config

    bc = load_benchmark_config(REPO_ROOT / "configs" / path)
    assert bc.lfw.eval_folds == [4, 5] and bc.lfw.train_folds == [1, 2, 3]
    assert [v for v in bc.variants if v != "diffusion-fitted"] == ["diffusion", "gan", "morphable+diffusion"]
    assert bc.variants["morphable+diffusion"].mix() == {"morphable": 0.5, "diffusion": 0.5}


def test_benchmark_config_errors():
    from training.benchmark import BenchmarkConfig
    from common.config import from_dict

    base = {"lfw": {"root": "x"}, "synthetic": {"type": "stream", "source": FAKE_SOURCE, "num_ids": 3},
            "sweep": [2], "pretrain": {"steps": 1}, "finetune": {"steps": 1}, "authentic": {"steps": 1}}
    from_dict(BenchmarkConfig, base, "")
    with pytest.raises(ConfigError, match=r"^lfw\.eval_folds: folds \[3\] are also train folds"):
        from_dict(BenchmarkConfig, {**base, "lfw": {"root": "x", "eval_folds": [3, 4]}}, "")
    with pytest.raises(ConfigError, match=r"^finetune\.lr\.bse: unknown key"):
        from_dict(BenchmarkConfig, {**base, "finetune": {"steps": 1, "lr": {"bse": 1}}}, "")
    with pytest.raises(ConfigError, match=r"^eval\.pairs: the benchmark sets its own"):
        from_dict(BenchmarkConfig, {**base, "eval": {"pairs": []}}, "")


def test_benchmark_phase_templates_are_typed():
    """The benchmark's phase templates load as PhaseTemplate (typed, checked at load: errors name the
    key) and make each arm's phase: the arm's name and weights unless the template sets its own."""
    from common.config import from_dict
    from training.config import PhaseTemplate

    t = from_dict(PhaseTemplate, {"steps": 30, "lr": {"base": 0.05}, "head_init": "mean"}, "finetune")
    assert isinstance(t, PhaseTemplate) and t.lr.base == 0.05
    ph = t.phase("finetune", {"authentic": 1.0})
    assert ph["name"] == "finetune" and ph["weights"] == {"authentic": 1.0} and ph["steps"] == 30
    own = from_dict(PhaseTemplate, {"steps": 30, "weights": {"synthetic": 0.2, "authentic": 0.8}}, "finetune")
    assert own.phase("finetune", {"authentic": 1.0})["weights"] == {"synthetic": 0.2, "authentic": 0.8}
    with pytest.raises(ConfigError, match=r"finetune\.steps"):
        from_dict(PhaseTemplate, {"steps": "many"}, "finetune")
    with pytest.raises(ConfigError, match=r"finetune\.name: unknown key"):
        from_dict(PhaseTemplate, {"steps": 30, "name": "x"}, "finetune")
    with pytest.raises(ConfigError, match="exactly one of 'steps' or 'epochs'"):
        from_dict(PhaseTemplate, {}, "finetune").phase("finetune", {"authentic": 1.0})
