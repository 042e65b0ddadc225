"""Lightning DDP of the FR trainer, run for real (issue 16): two CPU processes over gloo, launched by
torchrun and by hand (the environment SLURM or any launcher sets), against one process with the same
global batch; every sample once per epoch across ranks; kill -9 of either rank, then resume."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from training.config import parse_config
from training.curriculum import Curriculum

from tests.training.test_training_utils import FAKE_SOURCE, REPO_ROOT, make_image_folder, tiny_train_dict

pytestmark = pytest.mark.usefixtures("one_thread")

#: |loss(2 processes) - loss(1 process)| per logged step: the same samples and weights, only the
#: float summation order of the gradient / batch-norm reductions differs
LOSS_TOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, world: int, *, stream: bool = False, steps: int = 9) -> dict:
    folder = make_image_folder(tmp_path / "imgs", n_ids=6, per_id=4, size=24)
    raw = tiny_train_dict(folder, steps=steps, batch_size=8 // world, size=24, out=tmp_path / f"run{world}")
    raw["sources"]["real"]["augment"] = {"flip": 0.0}  # augmentation draws differ per process count
    if stream:  # an on-the-fly source, slow enough that a kill lands mid-run
        raw["sources"] = {"synth": {"type": "stream", "source": FAKE_SOURCE, "num_ids": 6, "per_id": 4,
                                    "augment": {"flip": 0.0}, "source_kwargs": {"overrides": {"delay": 0.05}}}}
        raw["phases"][0]["weights"] = {"synth": 1.0}
    raw["trainer"].update(log_every=1, ckpt_every_steps=2, tensorboard=False)
    if world > 1:
        raw["trainer"].update(devices=world, strategy="ddp")
    return raw


def _write(tmp_path: Path, raw: dict, name: str) -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def _loss_log(out: str | Path) -> list[tuple[int, float]]:
    m = json.loads((Path(out) / "metrics.json").read_text())
    return m, torch.load(Path(out) / "phases" / "00-main" / "final.pt", weights_only=False)


def _launch_by_hand(cfg: str, out: str, world: int, port: int) -> list[subprocess.Popen]:
    """One process per rank with the variables torchrun / SLURM set (what Lightning reads)."""
    procs = []
    for r in range(world):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
               "RANK": str(r), "LOCAL_RANK": str(r), "NODE_RANK": "0", "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "training.train", "--config", cfg, "--out", out,
                                       "--threads", "1"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def _wait(procs: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    outs = []
    for p in procs:
        o, _ = p.communicate(timeout=timeout)
        outs.append(o)
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]
    return outs


def test_two_processes_train_like_one_with_the_global_batch(tmp_path):
    from training.train import run_training

    one = parse_config(_config(tmp_path, 1), resolve=False)
    m1 = run_training(one, printer=lambda *a, **k: None)
    cfg2 = _write(tmp_path, _config(tmp_path, 2), "ddp.yaml")
    out2 = str(tmp_path / "run2")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "training.train", "--config", cfg2, "--out", out2, "--threads", "1"]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    m2 = json.loads((Path(out2) / "metrics.json").read_text())
    l1 = torch.load(tmp_path / "run1" / "phases" / "00-main" / "final.pt", weights_only=False)["loss_log"]
    l2 = torch.load(Path(out2) / "phases" / "00-main" / "final.pt", weights_only=False)["loss_log"]
    assert [s for s, _ in l1] == [s for s, _ in l2] == list(range(9))
    diff = max(abs(a - b) for (_, a), (_, b) in zip(l1, l2))
    assert diff < LOSS_TOL, (l1, l2)
    assert l1[-1][1] < l1[0][1]  # it does learn
    assert m1["total_steps"] == m2["total_steps"] == 9
    # the 2-process run kept one set of weights: close to the 1-process ones
    w1 = torch.load(tmp_path / "run1" / "backbone.pt", weights_only=True)
    w2 = torch.load(Path(out2) / "backbone.pt", weights_only=True)
    assert max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1) < 1e-3
    (tmp_path / "curves.json").write_text(json.dumps({"one": l1, "two": l2}))


@pytest.mark.parametrize("stream", [False, True], ids=["disk", "on-the-fly"])
def test_every_sample_once_per_epoch_across_ranks(tmp_path, stream):
    """The two ranks' batches of one epoch are disjoint and together cover the epoch exactly once
    (what each rank fetches, recorded at the source)."""
    from training.data import MixedBatchStream, build_sources

    cfg = parse_config(_config(tmp_path, 2, stream=stream), resolve=False)
    sources = build_sources(cfg)
    (name, src), = sources.items()
    curr = Curriculum(cfg, {n: s.num_classes for n, s in sources.items()},
                      {n: s.epoch_size for n, s in sources.items()}, world_size=2)
    seen: dict[int, list] = {0: [], 1: []}
    orig = src.fetch
    E = src.epoch_size
    steps = 2 * E // 8  # two epochs of the global batch of 8
    for rank in (0, 1):
        src.fetch = lambda items, _r=rank: (seen[_r].extend(items), orig(items))[1]
        for _ in MixedBatchStream(sources, curr, 0, steps, rank=rank, world_size=2, seed=0, image_size=24):
            pass
    src.fetch = orig
    assert len(seen[0]) == len(seen[1]) == E  # 4 samples per rank and step
    both = seen[0] + seen[1]
    for epoch in (0, 1):
        idx = sorted(i for e, i in both if e == epoch)
        assert idx == list(range(E)), (epoch, idx)
    assert not set(seen[0]) & set(seen[1])


def _kill_rank_mid_run(cfg: str, out: str, rank: int, after_step: int) -> None:
    procs = _launch_by_hand(cfg, out, 2, _free_port())
    ckpt = Path(out) / "phases" / "00-main" / "last.ckpt"
    lines: list[str] = []
    deadline = time.time() + 180
    try:
        for line in procs[0].stdout:
            lines.append(line)
            if f"step {after_step}/" in line and ckpt.is_file():
                break
            assert time.time() < deadline, "".join(lines[-30:])
        assert procs[rank].poll() is None, "".join(lines[-30:])  # still mid-run
        os.kill(procs[rank].pid, signal.SIGKILL)
        procs[rank].wait(30)
        # the survivor fails on its next collective; a launcher (torchrun, srun) would end it too
        other = procs[1 - rank]
        try:
            other.wait(20)
        except subprocess.TimeoutExpired:
            other.kill()
            other.wait(10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            if p.stdout:
                p.stdout.close()
    assert json.loads((Path(out) / "run_state.json").read_text()).get("phases", {}).get("main", {}).get("done") is not True


def test_kill9_of_either_rank_then_resume_gives_the_uninterrupted_run(tmp_path):
    steps = 12
    raw = _config(tmp_path, 2, stream=True, steps=steps)
    raw["trainer"]["log_every"] = 1
    cfg = _write(tmp_path, raw, "ddp.yaml")
    ref, out = str(tmp_path / "ref"), str(tmp_path / "killed")
    _wait(_launch_by_hand(cfg, ref, 2, _free_port()))
    _kill_rank_mid_run(cfg, out, rank=1, after_step=4)
    _kill_rank_mid_run(cfg, out, rank=0, after_step=8)
    outs = _wait(_launch_by_hand(cfg, out, 2, _free_port()))
    assert "resuming from" in outs[0]
    a = torch.load(Path(ref) / "phases" / "00-main" / "final.pt", weights_only=False)
    b = torch.load(Path(out) / "phases" / "00-main" / "final.pt", weights_only=False)
    la, lb = dict(a["loss_log"]), dict(b["loss_log"])
    assert sorted(la) == list(range(steps)) and set(lb) >= set(range(8, steps))
    assert max(abs(la[s] - lb[s]) for s in lb) < LOSS_TOL
    assert max(float((a["state_dict"][k].float() - b["state_dict"][k].float()).abs().max())
               for k in a["state_dict"]) < 1e-4
    m = json.loads((Path(out) / "metrics.json").read_text())
    attempts = m["phases"][0]["attempts"]
    assert m["complete"] and attempts[-1]["resumed"]
