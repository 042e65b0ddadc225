"""Mixed-source batches: proportions follow the curriculum, smooth ramps, label spaces, determinism,
resume, ranks; dataset subsets; on-the-fly engine sources."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import parse_config
from training.curriculum import Curriculum, allocate_counts, weyl_u
from training.data import MapSource, MixedBatchStream, StreamSource, build_sources, make_loader

from tests.training.test_training_utils import FAKE_SOURCE, make_fake_lfw, make_image_folder, tiny_train_dict


class ConstSource:
    """Stand-in source: cheap constant images, label = index % num_classes."""

    addressable = True

    def __init__(self, num_classes: int, epoch_size: int, value: int = 0):
        self.num_classes, self.epoch_size, self.value = num_classes, epoch_size, value

    def fetch(self, items):
        idx = np.array([i for _, i in items])
        x = torch.full((len(items), 3, 8, 8), self.value, dtype=torch.uint8)
        x[:, 0, 0, 0] = torch.from_numpy(idx % 256).to(torch.uint8)  # tag the item
        x[:, 1, 0, 0] = torch.from_numpy(idx // 256).to(torch.uint8)
        return x, idx % self.num_classes


def _cfg(phases, batch_size=32, sources=("a", "b", "c")):
    raw = {
        "model": {"backbone": "tiny", "embedding_size": 8, "input_size": 16},
        "sources": {s: {"type": "folder", "path": f"/nonexistent/{s}"} for s in sources},
        "phases": phases,
        "trainer": {"batch_size": batch_size, "seed": 3},
    }
    return parse_config(raw, resolve=False)


def _stream(cfg, sources, start, end, **kw):
    cur = Curriculum(cfg, {n: s.num_classes for n, s in sources.items()},
                     {n: s.epoch_size for n, s in sources.items()}, world_size=kw.get("world_size", 1))
    return cur, MixedBatchStream(sources, cur, start, end, seed=cfg.trainer.seed, image_size=8, **kw)


def test_allocate_counts_exact_mean():
    w = np.array([0.13, 0.5, 0.37])
    u = weyl_u(np.arange(1000), 0)
    counts = allocate_counts(np.tile(w, (1000, 1)), 32, u)
    assert (counts.sum(1) == 32).all() and (counts >= 0).all()
    assert np.all(np.abs(counts - 32 * w).max(0) < 1.0 + 1e-9)  # floor or ceil of B*w
    np.testing.assert_allclose(counts.mean(0) / 32, w, atol=2e-3)


def test_mixed_proportions_follow_curriculum_weights():
    cfg = _cfg([{"name": "p", "steps": 300, "weights": {"a": 0.6, "b": 0.3, "c": 0.1}}])
    srcs = {"a": ConstSource(5, 50, 1), "b": ConstSource(7, 40, 2), "c": ConstSource(3, 30, 3)}
    cur, ds = _stream(cfg, srcs, 0, 300)
    n = np.zeros(3)
    for b in ds:
        assert b["image"].shape == (32, 3, 8, 8) and b["image"].dtype == torch.uint8
        # contiguous per-source blocks matching counts, image value identifies the source
        assert b["source"].tolist() == sum(([k] * c for k, c in enumerate(b["counts"])), [])
        assert torch.equal(b["image"][:, 2, 1, 1].long(), b["source"] + 1)
        n += np.bincount(b["source"].numpy(), minlength=3)
    np.testing.assert_allclose(n / n.sum(), [0.6, 0.3, 0.1], atol=0.005)


def test_smooth_weight_ramp_and_phase_switch():
    phases = [
        {"name": "ramp", "steps": 201, "weights": {"a": {"start": 1.0, "end": 0.0}, "b": {"start": 0.0, "end": 1.0}}},
        {"name": "b-only", "steps": 50, "weights": {"b": 1.0, "c": [0.0, 1.0]}, "ramp": "cosine"},
    ]
    cfg = _cfg(phases)
    srcs = {"a": ConstSource(5, 50), "b": ConstSource(7, 40), "c": ConstSource(3, 30)}
    cur, ds = _stream(cfg, srcs, 0, 251)
    np.testing.assert_allclose(cur.weights(0), [1, 0, 0])
    np.testing.assert_allclose(cur.weights(100), [0.5, 0.5, 0])
    np.testing.assert_allclose(cur.weights(200), [0, 1, 0])
    np.testing.assert_allclose(cur.weights(201), [0, 1, 0])  # cosine ramp of c starts at 0
    np.testing.assert_allclose(cur.weights(250), [0, 0.5, 0.5])
    assert cur.phase_at(200).name == "ramp" and cur.phase_at(201).name == "b-only"
    frac_a = np.array([b["counts"][0] / 32 for b in ds])
    # measured fraction of source a over windows of 20 steps tracks the linear ramp
    for lo in range(0, 200, 20):
        expect = np.mean(cur.weights_batch(np.arange(lo, lo + 20))[:, 0])
        assert abs(frac_a[lo:lo + 20].mean() - expect) < 0.01
    assert np.all(np.diff([frac_a[i:i + 20].mean() for i in range(0, 200, 20)]) < 0)
    assert frac_a[201:].sum() == 0


def test_label_spaces_per_head_segment():
    phases = [
        {"name": "pre", "steps": 20, "weights": {"a": 1.0, "b": [0.0, 0.5]}},
        {"name": "ft", "steps": 20, "weights": {"c": 1.0}, "reinit_head": True},
    ]
    cfg = _cfg(phases)
    srcs = {"a": ConstSource(5, 50), "b": ConstSource(7, 40), "c": ConstSource(3, 30)}
    cur, ds = _stream(cfg, srcs, 0, 40)
    assert cur.num_classes(0) == 12 and cur.num_classes(1) == 3
    assert cur.label_offsets(0).tolist() == [0, 5, -1] and cur.label_offsets(1).tolist() == [-1, -1, 0]
    for b in ds:
        lab, src = b["label"], b["source"]
        if b["step"] < 20:
            assert lab[src == 0].max() < 5 if (src == 0).any() else True
            assert ((lab[src == 1] >= 5) & (lab[src == 1] < 12)).all()
        else:
            assert (src == 2).all() and lab.max() < 3


def test_resume_is_exact_and_workers_keep_step_order():
    cfg = _cfg([{"name": "p", "steps": 40, "weights": {"a": [0.2, 0.8], "b": 0.5}}], batch_size=8)
    srcs = {"a": ConstSource(5, 13), "b": ConstSource(7, 11)}
    _, full = _stream(cfg, srcs, 0, 40)
    ref = list(full)
    _, tail = _stream(cfg, srcs, 17, 40)
    got = list(make_loader(tail, num_workers=2))
    assert [b["step"] for b in got] == list(range(17, 40))
    for a, b in zip(ref[17:], got):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    # every epoch of a source is a permutation: the first 13 samples of 'a' cover its 13 items
    tags = torch.cat([b["image"][b["source"] == 0][:, 0, 0, 0] for b in ref]).tolist()
    assert sorted(tags[:13]) == list(range(13))


def test_ranks_draw_disjoint_samples():
    cfg = _cfg([{"name": "p", "steps": 5, "weights": {"a": 1.0}}], batch_size=4, sources=("a",))
    srcs = {"a": ConstSource(100, 1000)}
    tags = []
    for r in range(2):
        _, ds = _stream(cfg, srcs, 0, 5, rank=r, world_size=2)
        tags.append(torch.cat([b["image"][:, 0, 0, 0].long() + 256 * b["image"][:, 1, 0, 0].long() for b in ds]))
    assert not set(tags[0].tolist()) & set(tags[1].tolist())
    assert len(set(tags[0].tolist()) | set(tags[1].tolist())) == 40


def test_map_source_subsets(tmp_path):
    root = make_image_folder(tmp_path / "imgs", n_ids=6, per_id=4, size=16)
    (tmp_path / "imgs" / "person_005" / "person_005_0004.jpg").unlink()  # person_005 has 3 images
    from training.config import SourceConfig

    def src(**kw):
        return MapSource("s", SourceConfig(type="folder", path=str(root), **kw))

    s = src()
    assert s.num_classes == 6 and s.epoch_size == 23
    s = src(min_images_per_id=4)
    assert s.num_classes == 5 and "person_005" not in s.class_names
    s = src(max_ids=2, images_per_id=2)
    assert s.class_names == ["person_000", "person_001"] and s.epoch_size == 4
    assert sorted(np.bincount(s.labels).tolist()) == [2, 2]
    pf = tmp_path / "people.txt"
    pf.write_text("# names\nperson_003\t4\n10\nperson_001\nnobody\n")
    s = src(people_file=str(pf), identities=["person_002"], exclude_identities=["person_001"])
    assert s.class_names == ["person_002", "person_003"] and s.missing == ["nobody"]
    s = src(id_order="random", max_ids=3, seed=1)
    assert len(s.class_names) == 3
    img, lab = s.fetch([(0, 0), (0, 1)])
    assert img[0].dtype == torch.uint8 and img[0].shape == (3, 16, 16) and lab.max() < 3
    with pytest.raises(ValueError, match="no identity"):
        src(identities=["nobody"])


def test_map_source_people_from_pairs_folds(tmp_path):
    root = make_fake_lfw(tmp_path / "lfw", n_folds=3, people_per_fold=6, pairs_per_fold=4, size=16)
    from common.people import PairsPeopleConfig, pairs_people
    from training.config import SourceConfig

    pp = PairsPeopleConfig(pairs=str(root / "pairs.txt"), folds=[1, 2])
    f12 = pairs_people(root / "pairs.txt", [1, 2])
    assert f12 and all(n.startswith(("F1_", "F2_")) for n in f12)
    s = MapSource("s", SourceConfig(type="folder", path=str(root / "images"), identities_from_pairs=pp))
    assert set(s.class_names) == f12
    s = MapSource("s", SourceConfig(type="folder", path=str(root / "images"), exclude_from_pairs=pp))
    assert not set(s.class_names) & f12 and any(n.startswith("F3_") for n in s.class_names)


def test_stream_source_fake_engine(tmp_path):
    raw = tiny_train_dict(tmp_path, extra_sources={
        "synth": {"type": "stream", "source": FAKE_SOURCE, "preset": "frontal", "num_ids": 5, "per_id": 2,
                  "fixed_variations": True, "render_batch_size": 3}})
    raw["phases"][0]["weights"] = {"synth": 1.0}
    cfg = parse_config(raw, resolve=False)
    srcs = build_sources(cfg)
    s = srcs["synth"]
    assert isinstance(s, StreamSource) and s.num_classes == 5 and s.epoch_size == 10
    x, y = s.fetch([(0, 0), (0, 5), (3, 5), (0, 1)])
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == [0, 0, 0, 1]
    assert torch.equal(x[1], x[2])  # fixed variations: same image in every epoch
    assert not torch.equal(x[0], x[1])
    cfg.sources["synth"].fixed_variations = False
    s2 = StreamSource("synth", cfg.sources["synth"], 32)
    x2, _ = s2.fetch([(0, 5), (3, 5)])
    assert not torch.equal(x2[0], x2[1])  # new variation every epoch
    cfg.sources["synth"].fixed_variations, cfg.sources["synth"].cache = True, True
    s3 = StreamSource("synth", cfg.sources["synth"], 32)
    s3.prepare()
    x3, y3 = s3.fetch([(0, 0), (0, 5), (3, 5), (0, 1)])
    assert x3.dtype == torch.uint8 and y3.tolist() == [0, 0, 0, 1]
    assert (x3.float() - (x * 255).round()).abs().max() <= 1.0


def test_renderstream_backend_and_same_images_as_direct(tmp_path):
    from engine.stream import RenderStream

    synth = {"type": "stream", "source": FAKE_SOURCE, "num_ids": 5, "per_id": 2, "fixed_variations": True,
             "render_batch_size": 4}
    raw = tiny_train_dict(tmp_path, extra_sources={"rs": {**synth, "source_kwargs": {"backend": "renderstream"}},
                                                   "direct": synth})
    raw["phases"][0]["weights"] = {"rs": 1.0, "direct": 1.0}
    raw["trainer"]["batch_size"] = 6
    cfg = parse_config(raw, resolve=False)
    srcs = build_sources(cfg)
    assert not srcs["rs"].addressable and srcs["direct"].addressable
    cur = Curriculum(cfg, {n: s.num_classes for n, s in srcs.items()}, {n: s.epoch_size for n, s in srcs.items()})
    batches = list(MixedBatchStream(srcs, cur, 0, 6, image_size=32))
    n_rs = sum(b["counts"][0] for b in batches)
    assert n_rs == 18 and all(b["label"].max() < 10 for b in batches)  # 18 samples > one 10-sample epoch
    resumed = list(MixedBatchStream(srcs, cur, 4, 6, image_size=32))
    assert [b["step"] for b in resumed] == [4, 5]
    # the direct backend renders exactly RenderStream's (identity, variation) images
    rs = RenderStream(srcs["direct"].source, 5, seed=0, per_id=2, fixed_variations=True, batch_size=4, shuffle=False)
    imgs = torch.stack([x for x, _ in rs])  # identity-major: sample s = identity s // 2, variation s % 2
    x, y = srcs["direct"].fetch([(7, 1 * 5 + 3), (0, 0 * 5 + 3)])  # (identity 3, variation 1) and (3, 0)
    assert y.tolist() == [3, 3]
    assert torch.allclose(x[0], imgs[3 * 2 + 1]) and torch.allclose(x[1], imgs[3 * 2 + 0])
