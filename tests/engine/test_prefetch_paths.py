"""The GPU-first data path on its CPU stand-in (issue 18): the engine's render-ahead thread, the
trainer's device prefetcher, batches built on the source's device, and auto-sized encode pools."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from common.prefetch import DevicePrefetcher, Prefetch, to_device

FAKE = "tests.fake_source:FakeSource"


def test_prefetch_keeps_order_runs_ahead_and_is_bounded():
    made: list[int] = []

    def slow(x):
        made.append(x)
        return x * x

    pf = Prefetch(slow, iter(range(20)), depth=2)
    time.sleep(0.3)
    assert 1 <= len(made) <= 4  # ahead of the consumer, but bounded (depth + the one in hand)
    assert list(pf) == [x * x for x in range(20)]
    pf._thread.join(5)
    assert not pf._thread.is_alive()


def test_prefetch_raises_in_the_consumer_and_stops():
    def boom(x):
        if x == 3:
            raise ValueError("block 3 failed")
        return x

    got = []
    with pytest.raises(ValueError, match="block 3 failed"):
        for x in Prefetch(boom, range(10), depth=1):
            got.append(x)
    assert got == [0, 1, 2]
    with pytest.raises(ValueError, match="depth"):
        Prefetch(None, [], depth=0)


def test_prefetch_close_stops_an_endless_producer():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    pf = Prefetch(None, endless(), depth=2)
    it = iter(pf)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    pf.close()
    assert not pf._thread.is_alive()


def test_prefetch_runs_the_context_in_the_thread():
    seen = []

    class Ctx:
        def __enter__(self):
            seen.append(threading.current_thread().name)

        def __exit__(self, *a):
            seen.append("exit")

    assert list(Prefetch(None, [1, 2], context=Ctx)) == [1, 2]
    assert seen == ["prefetch", "exit"]


def test_device_prefetcher_cpu_stand_in_moves_whole_batches():
    batches = [{"image": torch.full((2, 3, 4, 4), i, dtype=torch.uint8), "label": torch.tensor([i, i]),
                "counts": [2], "step": i} for i in range(5)]
    out = list(DevicePrefetcher(batches, "cpu", depth=2))
    assert [b["step"] for b in out] == list(range(5)) and all(torch.equal(a["image"], b["image"]) for a, b in zip(out, batches))
    assert list(DevicePrefetcher(batches, "cpu")) and len(list(DevicePrefetcher(batches, "cpu"))) == 5  # re-iterable
    moved = to_device({"a": [torch.zeros(1)], "b": (torch.ones(1), 3), "c": "x"}, torch.device("cpu"))
    assert moved["c"] == "x" and isinstance(moved["b"], tuple) and moved["b"][1] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_device_prefetcher_on_cuda_side_stream():
    batches = [{"image": torch.full((4, 3, 8, 8), i, dtype=torch.uint8).pin_memory(), "step": i} for i in range(6)]
    out = [(b["step"], int(b["image"].float().mean()), b["image"].device.type) for b in DevicePrefetcher(batches, "cuda")]
    assert out == [(i, i, "cuda") for i in range(6)]


def test_main_process_render_ahead_equals_render_workers(tmp_path):
    from engine.render import render_dataset

    cfg = dict(ids=5, per_id=3, source=FAKE, size=24, block_ids=1, format="both", seed=3, progress=False, log=None,
               fsync=False)
    a = render_dataset(out=tmp_path / "main", render_workers=0, workers=0, **cfg)
    b = render_dataset(out=tmp_path / "rw", render_workers=2, **cfg)
    assert a["complete"] and b["complete"]

    def tree(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != "summary.json" and ".journal" not in p.parts}

    assert tree(tmp_path / "main") == tree(tmp_path / "rw")


def test_encode_workers_default_by_device(tmp_path):
    from engine import pipeline as P
    from engine.render import render_dataset

    s = render_dataset(ids=2, per_id=2, source=FAKE, size=24, out=tmp_path / "d", render_workers=0, progress=False,
                       log=None, fsync=False)
    assert s["workers"] == P.DEFAULT_WORKERS
    assert P.DEFAULT_CUDA_WORKERS == max(1, P._usable_cpus() - 1)


def test_stream_batches_stay_on_the_source_device_and_are_uint8(tmp_path):
    """A stream source's batch is quantized where it was rendered and assembled on that device;
    mixing it with a disk source moves only the disk part (CPU stand-in: every part on the CPU)."""
    from training.config import parse_config
    from training.curriculum import Curriculum
    from training.data import MixedBatchStream, build_sources, make_loader, renders_on_device
    from tests.training.test_training_utils import tiny_train_dict

    raw = tiny_train_dict(tmp_path, extra_sources={
        "synth": {"type": "stream", "source": FAKE, "num_ids": 5, "per_id": 2, "render_batch_size": 3}})
    raw["phases"][0]["weights"] = {"synth": 1.0}
    cfg = parse_config(raw, resolve=False)
    srcs = build_sources(cfg)
    assert not renders_on_device(srcs)
    cur = Curriculum(cfg, {n: s.num_classes for n, s in srcs.items()}, {n: s.epoch_size for n, s in srcs.items()})
    ds = MixedBatchStream(srcs, cur, 0, 4, image_size=32)
    plain = list(make_loader(ds))
    ahead = list(make_loader(ds, device="cpu", prefetch_factor=2))
    assert len(plain) == len(ahead) == 4
    for p, q in zip(plain, ahead):
        assert p["image"].dtype == torch.uint8 and torch.equal(p["image"], q["image"]) and p["step"] == q["step"]
    srcs["synth"].source_kwargs["device"] = "cuda"  # claims the GPU: no worker processes allowed
    assert renders_on_device(srcs)
    with pytest.raises(ValueError, match="num_workers 0"):
        make_loader(MixedBatchStream(srcs, cur, 0, 4, image_size=32), num_workers=2)
