"""The learned trainers under DDP (issue 16): rank-aware batches (every sample once per epoch across
ranks), a real two-process gloo run of each trainer, and kill -9 of either rank then resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from learned.resume import StepBatchSampler

from tests.learned_helpers import CONFIGS, make_face_folder
from tests.training.test_training_ddp import _free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_step_batch_sampler_splits_the_global_batch_over_ranks():
    n, b = 50, 4
    one = StepBatchSampler(n, 2 * b, seed=3)
    ranks = [StepBatchSampler(n, b, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert ranks[0].per_epoch == one.per_epoch == 6
    for s in range(2 * one.per_epoch):  # two epochs
        parts = [r.batch(s) for r in ranks]
        assert parts[0] + parts[1] == one.batch(s)
        assert not set(parts[0]) & set(parts[1])
    for epoch in (0, 1):
        seen = [i for s in range(epoch * 6, epoch * 6 + 6) for r in ranks for i in r.batch(s)]
        assert len(seen) == len(set(seen)) == 48  # each sample at most once; 2 left over (drop_last)
    with pytest.raises(ValueError, match="rank 2 of 2"):
        StepBatchSampler(n, b, seed=3, rank=2, world_size=2)
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        StepBatchSampler(6, 4, seed=3, rank=0, world_size=2)


def _launch(kind: str, data: Path, out: Path, steps: int, port: int, *extra: str) -> list[subprocess.Popen]:
    procs = []
    for r in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r), "NODE_RANK": "0", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "learned.train", "--config", str(CONFIGS[kind]), "--out", str(out), "--threads", "1",
               "-o", f"data.path={data}", f"train.steps={steps}", "train.batch_size=4", "train.devices=2",
               "train.strategy=ddp", "train.accelerator=cpu", "train.sample_every=0", "train.log_every=1", *extra]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]
    return outs


@pytest.mark.parametrize("kind", ["gan"])  # the diffusion trainer runs under DDP in the kill test below
def test_two_process_run_completes_with_global_losses(tmp_path, kind):
    data = make_face_folder(tmp_path / "faces", ids=4, per_id=4, singletons=0, size=16)
    out = tmp_path / "run"
    outs = _finish(_launch(kind, data, out, 6, _free_port(), "train.checkpoint_every=3"))
    m = json.loads((out / "metrics.json").read_text())
    assert m["global_step"] == 6 and [r[0] for r in m["loss_log"]] == list(range(6))
    assert "done" in outs[0] and "done" not in outs[1]  # rank 0 reports and writes
    assert (out / "checkpoint" / "config.json").is_file()


def test_kill9_of_either_rank_then_resume_gives_the_uninterrupted_run(tmp_path):
    data = make_face_folder(tmp_path / "faces", ids=4, per_id=4, singletons=0, size=16)
    steps, extra = 14, ("train.checkpoint_every=2",)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    _finish(_launch("diffusion", data, ref, steps, _free_port(), *extra))
    for rank, after in ((1, 4), (0, 8)):
        procs = _launch("diffusion", data, out, steps, _free_port(), *extra)
        lines: list[str] = []
        try:
            deadline = time.time() + 180
            for line in procs[0].stdout:
                lines.append(line)
                if f"step {after}/" in line and (out / "last.ckpt").is_file():
                    break
                assert time.time() < deadline, "".join(lines[-20:])
            assert procs[rank].poll() is None, "".join(lines[-20:])
            os.kill(procs[rank].pid, signal.SIGKILL)
            procs[rank].wait(30)
            try:
                procs[1 - rank].wait(20)
            except subprocess.TimeoutExpired:
                procs[1 - rank].kill()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait(10)
                p.stdout.close()
        assert int(torch.load(out / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]) < steps
    outs = _finish(_launch("diffusion", data, out, steps, _free_port(), *extra))
    assert "resuming" in outs[0]
    a = json.loads((ref / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert a["global_step"] == b["global_step"] == steps
    la, lb = dict((r[0], r[1]) for r in a["loss_log"]), dict((r[0], r[1]) for r in b["loss_log"])
    assert sorted(la) == sorted(lb) == list(range(steps))
    assert max(abs(la[s] - lb[s]) for s in la) < 1e-4, (la, lb)
    wa = torch.load(ref / "checkpoint" / "model.pt", weights_only=True)
    wb = torch.load(out / "checkpoint" / "model.pt", weights_only=True)
    flat = lambda w: w if isinstance(w, dict) else {"": w}  # noqa: E731
    assert max(float((flat(wa)[k].float() - flat(wb)[k].float()).abs().max()) for k in flat(wa)) < 1e-4
