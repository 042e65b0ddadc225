"""Rendering on Ray (issue 16): ``--ray local`` gives the bytes of the local engine, and a driver
killed mid-run resumes without re-rendering finished blocks. Each test starts a local Ray runtime
(2 CPUs); Ray's start-up costs a few seconds per run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")

from engine.render import render_dataset  # noqa: E402

from tests.engine.test_engine_resume import tree  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.fake_source:FakeSource"
SUMMARY_STABLE = ("num_ids", "per_id", "num_images", "num_blocks", "complete", "format", "separability", "shard")


def _summary(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    return {k: s[k] for k in SUMMARY_STABLE}


def test_ray_local_gives_the_bytes_of_the_local_engine(tmp_path):
    kw = dict(ids=9, per_id=3, source=FAKE, size=32, format="both", block_ids=2, seed=5, progress=False, log=None)
    render_dataset(out=str(tmp_path / "local"), render_workers=2, **kw)
    s = render_dataset(out=str(tmp_path / "ray"), render_workers=2, ray="local", **kw)
    assert s["complete"] and s["render_workers"] == 2 and s["images_rendered"] == 27
    assert not ray.is_initialized()  # the runtime this run started is stopped again
    a, b = tree(tmp_path / "local"), tree(tmp_path / "ray")
    assert set(a) == set(b) and a == b
    assert {"train.rec", "train.idx", "metadata.parquet", "dataset.json"} <= set(a)
    assert _summary(tmp_path / "local") == _summary(tmp_path / "ray")


def test_ray_rejects_an_unpicklable_source_instance(tmp_path):
    from engine.errors import RenderError
    from tests.fake_source import FakeSource

    src = FakeSource(size=16)
    src.handle = lambda: None  # a lambda cannot be pickled to a Ray worker
    with pytest.raises(RenderError, match="cannot be pickled"):
        render_dataset(3, per_id=1, source=src, out=str(tmp_path / "o"), ray="local", progress=False, log=None)


def _journal(out: Path) -> list[dict]:
    j = out / ".journal" / "shard-0-of-1.jsonl"
    return [json.loads(x) for x in j.read_text().splitlines()] if j.exists() else []


def test_killed_driver_resumes_without_rerendering_finished_blocks(tmp_path):
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "engine.render", "--ids", "12", "--per-id", "2", "--source", FAKE, "--size", "24",
           "--format", "both", "--block-ids", "1", "--seed", "2", "--out", str(out), "--no-progress",
           "--render-workers", "2", "--ray", "local", "--override", "delay=0.4"]
    # its own session: the driver and the Ray runtime it starts are one process group we end together
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(_journal(out)) < 3 and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert p.poll() is None, "the render finished before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)
    done = _journal(out)
    assert 3 <= len(done) < 12
    s = render_dataset(12, per_id=2, source=FAKE, size=24, format="both", block_ids=1, seed=2, out=str(out),
                       render_workers=2, ray="local", overrides={"delay": 0.4}, progress=False, log=None)
    blocks = [e["block"] for e in _journal(out)]
    assert blocks == list(range(12))  # each block committed once, in order
    assert s["blocks_resumed"] == len(done) and s["images_rendered"] == 2 * (12 - len(done))
    render_dataset(12, per_id=2, source=FAKE, size=24, format="both", block_ids=1, seed=2, out=str(tmp_path / "local"),
                   render_workers=2, overrides={"delay": 0.4}, progress=False, log=None)
    assert tree(tmp_path / "local") == tree(out)



def test_blocks_go_to_the_actor_with_the_fewest_still_to_render():
    """Results are collected in block order, so rendered-but-uncollected blocks must not count as
    load: an actor whose blocks are finished gets the next ones while the driver waits for another's."""
    from engine.ray_render import RayRenderPool

    class Ref:
        def __init__(self, actor, b):
            self.actor, self.b, self.finished = actor, b, False

    class Actor:
        def __init__(self, k):
            self.k, self.calls = k, []
            self.block = self

        def remote(self, b, box):
            self.calls.append(b)
            return Ref(self.k, b)

    class FakeRay:
        def wait(self, refs, num_returns, timeout, fetch_local):
            assert timeout == 0 and not fetch_local and num_returns == len(refs)
            return [r for r in refs if r.finished], [r for r in refs if not r.finished]

    pool = object.__new__(RayRenderPool)
    pool.ray, pool.ids_ref = FakeRay(), object()
    pool.actors = [Actor(0), Actor(1)]
    pool.running = [set(), set()]
    futs = [pool.submit(None, b) for b in range(4)]  # 0 -> a0, 1 -> a1, 2 -> a0, 3 -> a1
    assert pool.actors[0].calls == [0, 2] and pool.actors[1].calls == [1, 3]
    futs[1].ref.finished = futs[3].ref.finished = True  # actor 1 is done, nothing collected yet
    pool.submit(None, 4), pool.submit(None, 5)
    assert pool.actors[1].calls == [1, 3, 4, 5] and pool.actors[0].calls == [0, 2]
    pool._done(0, futs[0].ref)  # collected: no longer counted
    assert len(pool.running[0]) == 1 and len(pool.running[1]) == 2
