"""End-to-end: tiny training runs (loss decreases, outputs), head re-init at fine-tune, kill -9 +
resume in a real subprocess, the benchmark on tiny fake LFW data, and a cheap check on lfw-dev."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from training.config import parse_config

from tests.training.test_training_utils import (FAKE_SOURCE, LFW_DEV, REPO_ROOT, make_fake_lfw, make_image_folder,
                                       tiny_train_dict)



pytestmark = pytest.mark.usefixtures("one_thread")


def _quiet(*_a, **_k):
    pass


def test_tiny_train_loss_decreases_and_writes_outputs(tmp_path):
    from training.module import load_backbone
    from training.train import run_training

    folder = make_image_folder(tmp_path / "imgs", n_ids=6, per_id=4, size=32)
    lfw = make_fake_lfw(tmp_path / "lfw", n_folds=2, people_per_fold=6, pairs_per_fold=4, size=32)
    raw = tiny_train_dict(folder, steps=40, out=tmp_path / "run")
    raw["eval"] = {"pairs": [{"name": "fake", "root": str(lfw)}], "batch_size": 32}
    cfg = parse_config(raw, resolve=False)
    m = run_training(cfg, printer=_quiet)
    out = tmp_path / "run"
    assert m["complete"] and m["global_step"] == 40 == m["total_steps"]
    tr = m["phases"][0]["train"]
    assert tr["loss_last"] < 0.7 * tr["loss_first"], tr
    for f in ("metrics.json", "roc.png", "backbone.pt", "model_config.json", "config.yaml"):
        assert (out / f).is_file(), f
    assert 0.0 <= m["final_eval"]["fake"]["accuracy"] <= 1.0
    assert list((out / "phases" / "00-main" / "logs").glob("version_*/metrics.csv"))
    sd = torch.load(out / "backbone.pt", weights_only=True)
    bb = load_backbone(out)
    assert set(sd) == set(bb.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert bb(x).shape == (2, 32)
    # re-running a finished run is a no-op that rewrites the same metrics
    m2 = run_training(cfg, printer=_quiet)
    assert m2["global_step"] == 40 and len(m2["phases"][0]["attempts"]) == 1


def test_head_reinit_at_finetune_changes_num_classes(tmp_path):
    from training.train import run_training

    folder = make_image_folder(tmp_path / "imgs", n_ids=6, per_id=3, size=32)
    phases = [
        {"name": "synth", "steps": 6, "weights": {"synth": 1.0}, "lr": 0.05},
        {"name": "mix", "steps": 4, "weights": {"synth": 1.0, "real": [0.0, 1.0]}, "lr": 0.05},
        {"name": "ft", "steps": 6, "weights": {"real": 1.0}, "reinit_head": True, "head_init": "mean",
         "freeze": ["body.0", "backbone.body.1"], "lr": 0.01, "optimizer": {"head_lr_mult": 10}},
    ]
    raw = tiny_train_dict(folder, out=tmp_path / "run", phases=phases, extra_sources={
        "synth": {"type": "stream", "source": FAKE_SOURCE, "num_ids": 10, "per_id": 2}})
    cfg = parse_config(raw, resolve=False)
    m = run_training(cfg, printer=_quiet)
    ph = {p["name"]: p for p in m["phases"]}
    # no re-init between synth and mix: one head over synth + real classes; ft: a new head, real only
    assert ph["synth"]["num_classes"] == ph["mix"]["num_classes"] == 16
    assert ph["ft"]["num_classes"] == 6 and ph["ft"]["reinit_head"] and not ph["mix"]["reinit_head"]
    assert ph["ft"]["frozen_params"] > 0 and ph["synth"]["frozen_params"] == 0
    assert [p["start"] for p in m["phases"]] == [0, 6, 10] and m["global_step"] == 16
    ft = torch.load(tmp_path / "run" / "phases" / "02-ft" / "final.pt", weights_only=True)
    pre = torch.load(tmp_path / "run" / "phases" / "01-mix" / "final.pt", weights_only=True)
    assert ft["state_dict"]["head.weight"].shape[0] == 6 and pre["state_dict"]["head.weight"].shape[0] == 16
    # frozen layers did not move during fine-tuning, the rest did
    assert torch.equal(ft["state_dict"]["backbone.body.0.weight"], pre["state_dict"]["backbone.body.0.weight"])
    assert not torch.equal(ft["state_dict"]["backbone.fc.weight"], pre["state_dict"]["backbone.fc.weight"])


def test_freeze_prefix_error_names_the_key(tmp_path):
    from common.config import ConfigError
    from training.curriculum import Curriculum
    from training.module import FaceRecognitionModule

    raw = tiny_train_dict(tmp_path, steps=2)
    raw["phases"][0]["freeze"] = ["body.0", "layer9"]
    cfg = parse_config(raw, resolve=False)
    m = FaceRecognitionModule(cfg, Curriculum(cfg, {"real": 3}, {"real": 9}))
    with pytest.raises(ConfigError, match=r"^phases\[0\]\.freeze\[1\]: prefix 'layer9' matches no parameter"):
        m.enter_phase(0)


def _resume_config(tmp_path) -> tuple[str, str]:
    folder = make_image_folder(tmp_path / "imgs", n_ids=5, per_id=3, size=24)
    phases = [
        {"name": "pre", "steps": 30, "weights": {"synth": 1.0, "real": [0.0, 0.5]}, "lr": {"base": 0.05}},
        {"name": "ft", "steps": 8, "weights": {"real": 1.0}, "reinit_head": True, "lr": 0.01},
    ]
    raw = tiny_train_dict(folder, size=24, batch_size=8, out=tmp_path / "run", phases=phases, extra_sources={
        "synth": {"type": "stream", "source": FAKE_SOURCE, "num_ids": 7, "per_id": 2,
                  # slow renders so that the run is still mid-phase when it is killed
                  "source_kwargs": {"overrides": {"delay": 0.15}}}})
    raw["trainer"].update(ckpt_every_steps=4, log_every=1)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path), str(tmp_path / "run")


def test_kill9_mid_phase_then_resume(tmp_path):
    cfg_path, out = _resume_config(tmp_path)
    cmd = [sys.executable, "-m", "training.train", "--config", cfg_path, "--out", out, "--threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    ckpt = os.path.join(out, "phases", "00-pre", "last.ckpt")
    lines = []
    try:
        deadline = time.time() + 90
        for line in proc.stdout:
            lines.append(line)
            if "[pre] step 10/" in line and os.path.isfile(ckpt):
                break
            assert time.time() < deadline, "".join(lines[-20:])
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "".join(lines[-20:])
    killed_at = torch.load(ckpt, weights_only=False)["global_step"]
    assert 4 <= killed_at < 30
    state = json.load(open(os.path.join(out, "run_state.json")))
    assert not state["phases"].get("pre", {}).get("done")
    assert not os.path.exists(os.path.join(out, "metrics.json"))

    # same command again: resumes mid-phase 1, then runs phase 2
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"[pre] phase 1/2: global steps 0..30 (30 steps), starting at {killed_at}" in res.stdout
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["complete"] and m["global_step"] == m["total_steps"] == 38
    pre, ft = m["phases"]
    assert pre["completed_steps"] == 30 and pre["global_step"] == 30
    assert pre["attempts"] == [{"start_step": killed_at, "resumed": True, "wall_s": pre["attempts"][0]["wall_s"]}]
    assert ft["start"] == 30 and ft["completed_steps"] == 8 and ft["global_step"] == 38
    assert ft["attempts"][0]["resumed"] is False and ft["num_classes"] == 5 and pre["num_classes"] == 12
    ck = torch.load(os.path.join(out, "phases", "01-ft", "last.ckpt"), weights_only=False)
    assert ck["global_step"] == 8 and ck["synthface"]["phase"] == 1 and ck["synthface"]["global_step"] == 38


def test_benchmark_end_to_end_on_fake_lfw(tmp_path):
    from training.benchmark import BenchmarkConfig, run_benchmark
    from common.config import from_dict

    root = make_fake_lfw(tmp_path / "lfw", n_folds=5, people_per_fold=8, pairs_per_fold=5, size=24)
    raw = {
        "name": "bench-test", "lfw": {"root": str(root)}, "sweep": [3, 8, 1000],
        "synthetic": {"type": "stream", "source": FAKE_SOURCE, "num_ids": 8, "per_id": 2, "fixed_variations": True,
                      "cache": True},
        "model": {"backbone": "tiny", "embedding_size": 16, "input_size": 24, "backbone_kwargs": {"width": 8},
                  "margins": {"s": 16.0, "m": 0.2}},
        "pretrain": {"steps": 6, "lr": 0.05}, "authentic": {"steps": 4, "lr": 0.05},
        "finetune": {"steps": 4, "lr": 0.01, "head_init": "mean"},
        "trainer": {"accelerator": "cpu", "batch_size": 8, "num_workers": 0, "log_every": 2, "ckpt_every_steps": 0},
        "eval": {"batch_size": 64}, "seeds": [0], "matched_steps": False, "extended_pairs": None,
    }
    bc = from_dict(BenchmarkConfig, raw, "")
    res = run_benchmark(bc, tmp_path / "out", printer=_quiet)
    out = tmp_path / "out"
    for f in ("results.csv", "results.md", "accuracy_vs_ids.png", "benchmark.json", "split.json"):
        assert (out / f).is_file(), f
    rows = res["rows"]
    pool = res["split"]["pool_size"]
    assert pool == len((out / "people" / f"authentic_{pool}.txt").read_text().split())
    assert [(r["arm"], r["authentic_ids"]) for r in rows] == [
        ("synthetic", 0), ("authentic", 3), ("finetune", 3), ("authentic", 8), ("finetune", 8),
        ("authentic", pool), ("finetune", pool)]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows) and all(r["num_pairs"] == 20 for r in rows)
    # training people come from folds 1-3 only; eval pairs are folds 4-5 only
    people = (out / "people" / f"authentic_{pool}.txt").read_text().split()
    assert all(p.startswith(("F1_", "F2_", "F3_")) for p in people)
    two_plus = [p for p in people if len(list((root / "images" / p).iterdir())) >= 2]
    assert people[: len(two_plus)] == two_plus  # people with >= 2 images first
    md = (out / "results.md").read_text()
    assert "Identity-disjointness checked in code" in md and "| finetune | 8 |" in md
    assert res["split"]["disjointness"][pool]["overlap"] == 0
    ft = json.load(open(out / "runs" / "s0" / "finetune_3" / "metrics.json"))
    assert ft["model"]["init_backbone"].endswith(os.path.join("runs", "s0", "synthetic", "backbone.pt"))
    assert ft["sources"]["authentic"]["num_classes"] == 3


def test_train_cli_reports_config_errors(tmp_path):
    from training.train import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sources": {}, "phases": [], "trainr": {}}))
    assert main(["--config", str(bad)]) == 2


@pytest.mark.skipif(not (LFW_DEV / "pairs.txt").is_file(), reason="lfw-dev not available at ../shared/data/lfw-dev")
def test_lfw_dev_split_is_identity_disjoint():
    """Real lfw-dev: folds 1-3 training pool vs folds 4-5 eval pairs (cheap: no training)."""
    from training.benchmark import LFWSplitConfig, authentic_people, check_disjoint, lfw_fold_people

    folds, pairs = lfw_fold_people(LFW_DEV / "pairs.txt")
    assert sorted(folds) == [1, 2, 3, 4, 5] and len(pairs) == 3000
    split = authentic_people(LFWSplitConfig(root=str(LFW_DEV)))
    pool = split["ordered"]
    assert len(pool) == len(set(pool)) == split["train_fold_people"]
    assert len(split["eval_pairs"]) == 1200
    assert check_disjoint(pool, split["eval_pairs"])["overlap"] == 0
    assert not set(pool) & (folds[4] | folds[5])
    counts = split["image_counts"]
    k = split["pool_two_plus"]
    assert all(counts[p] >= 2 for p in pool[:k]) and all(counts[p] == 1 for p in pool[k:])


@pytest.mark.skipif(not (LFW_DEV / "pairs.txt").is_file(), reason="lfw-dev not available at ../shared/data/lfw-dev")
def test_lfw_dev_eval_uses_only_the_requested_folds():
    from training.backbones import create_backbone
    from training.config import EvalConfig, PairSetConfig
    from training.train import Evaluator

    ev = Evaluator(EvalConfig(pairs=[PairSetConfig(root=str(LFW_DEV), name="f45", folds=[4, 5], pairs_per_fold=5)],
                              batch_size=64), image_size=32)
    pairs = ev.pair_sets()["f45"]
    assert len(pairs) == 2 * 2 * 5 and {p[3] for p in pairs} == {3, 4}  # 0-based folds 4, 5
    res = ev(create_backbone("tiny", 16, input_size=32, width=8))["f45"]
    assert res["num_pairs"] == 20 and res["num_folds"] == 2 and 0.0 <= res["accuracy"] <= 1.0


def test_benchmark_reuses_finished_runs_and_retrains_changed_ones(tmp_path):
    from training.benchmark import BenchmarkConfig, run_benchmark
    from common.config import from_dict

    root = make_fake_lfw(tmp_path / "lfw", n_folds=5, people_per_fold=6, pairs_per_fold=3, size=16)
    raw = {
        "lfw": {"root": str(root)}, "sweep": [4], "arms": ["authentic"],
        "synthetic": {"type": "stream", "source": FAKE_SOURCE, "num_ids": 4},
        "model": {"backbone": "tiny", "embedding_size": 8, "input_size": 16, "backbone_kwargs": {"width": 4}},
        "pretrain": {"steps": 2}, "authentic": {"steps": 3}, "finetune": {"steps": 2},
        "trainer": {"accelerator": "cpu", "batch_size": 4, "num_workers": 0, "ckpt_every_steps": 0},
        "seeds": [0], "extended_pairs": None,
    }
    msgs = []
    run_benchmark(from_dict(BenchmarkConfig, raw, ""), tmp_path / "out", printer=msgs.append)
    run_benchmark(from_dict(BenchmarkConfig, raw, ""), tmp_path / "out", printer=msgs.append)
    assert any("reusing finished run" in m for m in msgs)
    raw["authentic"]["steps"] = 4
    res = run_benchmark(from_dict(BenchmarkConfig, raw, ""), tmp_path / "out", printer=msgs.append)
    assert any("changed; retraining" in m for m in msgs) and res["rows"][0]["steps"] == 4


def test_benchmark_variants_mix_sources_in_one_curriculum(tmp_path):
    """Extra synthetic arms (e.g. morphable + diffusion mixed): each is pretrained on its own sources
    with its weights, fine-tuned from its own backbone, and gets its own rows and plot lines."""
    from training.benchmark import BenchmarkConfig, run_benchmark
    from common.config import ConfigError, from_dict

    root = make_fake_lfw(tmp_path / "lfw", n_folds=5, people_per_fold=6, pairs_per_fold=4, size=24)
    fake = {"type": "stream", "source": FAKE_SOURCE, "per_id": 2, "fixed_variations": True, "cache": True}
    raw = {
        "name": "bench-variants", "lfw": {"root": str(root)}, "sweep": [3],
        "synthetic": {**fake, "num_ids": 6},
        "variants": {"a+b": {"sources": {"a": {**fake, "num_ids": 4}, "b": {**fake, "num_ids": 5, "seed": 3}},
                             "weights": {"a": 3.0, "b": 1.0}},
                     "b": {"sources": {"b": {**fake, "num_ids": 5, "seed": 3}}}},
        "model": {"backbone": "tiny", "embedding_size": 16, "input_size": 24, "backbone_kwargs": {"width": 8},
                  "margins": {"s": 16.0, "m": 0.2}},
        "pretrain": {"steps": 4, "lr": 0.05}, "authentic": {"steps": 3, "lr": 0.05},
        "finetune": {"steps": 3, "lr": 0.01, "weights": {"authentic": 0.5, "synthetic": 0.5}},
        "trainer": {"accelerator": "cpu", "batch_size": 8, "num_workers": 0, "log_every": 2, "ckpt_every_steps": 0},
        "eval": {"batch_size": 64}, "seeds": [0], "matched_steps": False, "extended_pairs": None,
    }
    bc = from_dict(BenchmarkConfig, raw, "")
    res = run_benchmark(bc, tmp_path / "out", printer=_quiet)
    out = tmp_path / "out"
    assert [r["arm"] for r in res["rows"]] == ["synthetic", "synthetic:a+b", "synthetic:b", "authentic", "finetune",
                                               "finetune:a+b", "finetune:b"]
    pre = json.load(open(out / "runs" / "s0" / "synthetic_a+b" / "metrics.json"))
    assert {k: v["num_classes"] for k, v in pre["sources"].items()} == {"a": 4, "b": 5}
    cfg = (out / "runs" / "s0" / "synthetic_a+b" / "config.yaml").read_text()
    assert "a: 0.75" in cfg and "b: 0.25" in cfg
    ft = json.load(open(out / "runs" / "s0" / "finetune_a+b_3" / "metrics.json"))
    assert ft["model"]["init_backbone"].endswith(os.path.join("runs", "s0", "synthetic_a+b", "backbone.pt"))
    ft_cfg = (out / "runs" / "s0" / "finetune_a+b_3" / "config.yaml").read_text()
    assert "authentic: 0.5" in ft_cfg and "a: 0.375" in ft_cfg and "b: 0.125" in ft_cfg
    md = (out / "results.md").read_text()
    assert "| finetune:a+b | 3 |" in md and md.index("Variant `a+b`") < md.index("Variant `b`")  # config order
    bad = {**raw, "variants": {"x": {"sources": {"a": {**fake, "num_ids": 4}}, "weights": {"zz": 1.0}}}}
    with pytest.raises(ConfigError, match="variants.x.weights"):
        from_dict(BenchmarkConfig, bad, "")


def test_variant_fine_tune_weights_keep_their_form():
    """A template's synthetic weight (number, [start, end] or {start, end}) is shared out over a
    variant's sources in its own form (a ramp stays a ramp); the main arm keeps it untouched."""
    from training.benchmark import _scale_weight

    w = {"start": 0.5, "end": 0.0}
    assert _scale_weight(w, 1.0) is w
    assert _scale_weight(w, 0.25) == {"start": 0.125, "end": 0.0}
    assert _scale_weight([0.5, 0.1], 0.5) == [0.25, 0.05]
    assert _scale_weight(0.4, 0.5) == 0.2
