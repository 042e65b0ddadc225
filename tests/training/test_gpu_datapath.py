"""CUDA tests of the GPU-first data path (issue 18; marked ``gpu``, skipped without CUDA): batched
sampling and image passes on the device, the engine's CUDA mode, and training batches that never
leave the GPU. Their CPU stand-ins are in ``test_batched_sampling.py`` and ``test_prefetch_paths.py``."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

FAKE = "tests.fake_source:FakeSource"


def test_factors_identical_and_passes_close_on_cuda(default_model):
    from morphable import MorphableSource
    from morphable import rng

    over = {"degradation": {"noise_prob": 1.0, "lowres_prob": 0.5, "jpeg_prob": 0.5}}
    cpu = MorphableSource(preset="wild", size=64, model=default_model, overrides=over)
    gpu = MorphableSource(preset="wild", size=64, model=default_model, device="cuda", overrides=over)
    ids = cpu.sample_identities(4, seed=0)
    rows, ks = torch.arange(4).repeat_interleave(4), torch.arange(4).repeat(4)
    a, b = cpu.render(ids, rows, ks, seed=3), gpu.render(ids, rows, ks, seed=3)
    for k in a.factors:  # sampled on the host for every device: the same numbers
        assert torch.equal(a.factors[k], b.factors[k].cpu()), k
    d = (a.images - b.images.cpu()).abs()
    assert b.images.is_cuda and d.mean() < 0.01 and (d > 0.1).float().mean() < 0.02
    # the counter-based streams give the same integers on the GPU
    keys = rng.image_keys(1, "noise", torch.arange(8), torch.zeros(8, dtype=torch.long))
    assert torch.equal(rng.bits(keys, torch.arange(5)), rng.bits(keys.cuda(), torch.arange(5).cuda()).cpu())
    torch.testing.assert_close(rng.normal_field(keys, (3, 5, 5)), rng.normal_field(keys.cuda(), (3, 5, 5)).cpu(),
                               atol=1e-5, rtol=0)


def test_engine_cuda_mode_defaults_and_matches_render_workers(tmp_path):
    from engine import pipeline as P
    from engine.render import render_dataset

    cfg = dict(ids=4, per_id=3, size=48, device="cuda", format="both", seed=2, progress=False, log=None, fsync=False)
    a = render_dataset(out=tmp_path / "main", **cfg)
    assert a["complete"] and a["render_workers"] == 0 and a["workers"] == P.DEFAULT_CUDA_WORKERS
    b = render_dataset(out=tmp_path / "main2", workers=2, **cfg)

    def tree(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != "summary.json" and ".journal" not in p.parts}

    assert tree(tmp_path / "main") == tree(tmp_path / "main2")  # encode workers never change a byte


def test_stream_batches_built_on_the_gpu(tmp_path):
    from training.config import parse_config
    from training.curriculum import Curriculum
    from training.data import MixedBatchStream, build_sources, make_loader, renders_on_device
    from tests.training.test_training_utils import tiny_train_dict

    raw = tiny_train_dict(tmp_path, extra_sources={
        "synth": {"type": "stream", "source": "morphable", "num_ids": 4, "per_id": 2, "render_batch_size": 8,
                  "source_kwargs": {"device": "cuda"}}})
    raw["phases"][0]["weights"] = {"synth": 1.0}
    cfg = parse_config(raw, resolve=False)
    srcs = build_sources(cfg)
    assert renders_on_device(srcs)
    cur = Curriculum(cfg, {n: s.num_classes for n, s in srcs.items()}, {n: s.epoch_size for n, s in srcs.items()})
    ds = MixedBatchStream(srcs, cur, 0, 3, image_size=32)
    got = list(make_loader(ds, device="cuda"))
    assert len(got) == 3
    for b in got:
        assert b["image"].is_cuda and b["image"].dtype == torch.uint8 and b["label"].is_cuda
    ref = list(make_loader(MixedBatchStream(srcs, cur, 0, 3, image_size=32)))
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(got, ref))  # prefetching changes nothing
