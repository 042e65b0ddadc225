"""engine.stream.RenderStream: on-the-fly rendering as an IterableDataset."""
from __future__ import annotations

import hashlib

import pytest
import torch
from torch.utils.data import DataLoader

from engine.interface import RenderBatch
from engine.stream import RenderStream
from tests.fake_source import FakeSource


def _src():
    return FakeSource(size=16)


def _items(ds):
    return [(int(y), hashlib.sha1(x.numpy().tobytes()).hexdigest()) for x, y in ds]


def test_yields_images_and_labels():
    ds = RenderStream(_src(), num_ids=4, per_id=2, batch_size=3, shuffle=False)
    items = list(ds)
    assert len(items) == len(ds) == 8
    x, y = items[0]
    assert x.dtype == torch.float32 and x.shape == (3, 16, 16) and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert [y for _, y in items] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_epochs_give_fresh_variations_and_fixed_mode_repeats():
    ds = RenderStream(_src(), num_ids=3, per_id=2, batch_size=4, shuffle=False)
    e0 = _items(ds)
    ds.set_epoch(1)
    e1 = _items(ds)
    assert [y for y, _ in e0] == [y for y, _ in e1]
    assert not set(h for _, h in e0) & set(h for _, h in e1)
    fixed = RenderStream(_src(), num_ids=3, per_id=2, batch_size=4, fixed_variations=True)
    f0 = _items(fixed)
    fixed.set_epoch(5)
    f5 = _items(fixed)
    assert f0 != f5  # shuffled differently per epoch ...
    assert sorted(f0) == sorted(f5)  # ... but the same images
    assert sorted(f0) == sorted(e0)  # fixed variations are variations 0..per_id-1 (= epoch 0)


def test_deterministic_by_seed_and_epoch():
    a = _items(RenderStream(_src(), num_ids=5, per_id=2, batch_size=4, seed=1, epoch=2))
    b = _items(RenderStream(_src(), num_ids=5, per_id=2, batch_size=4, seed=1, epoch=2))
    c = _items(RenderStream(_src(), num_ids=5, per_id=2, batch_size=4, seed=2, epoch=2))
    assert a == b and a != c
    assert sorted(y for y, _ in a) == sorted([i for i in range(5) for _ in range(2)])


def test_dataloader_workers_split_without_overlap():
    ds = RenderStream(_src(), num_ids=6, per_id=3, batch_size=4, seed=7, epoch=1)
    single = _items(ds)
    dl = DataLoader(ds, batch_size=None, num_workers=2)
    multi = [(int(y), hashlib.sha1(x.numpy().tobytes()).hexdigest()) for x, y in dl]
    assert len(multi) == len(single) == 18
    assert len({h for _, h in multi}) == 18  # no sample twice
    assert sorted(multi) == sorted(single)


def test_ranks_partition_the_epoch():
    parts = [_items(RenderStream(_src(), num_ids=5, per_id=2, batch_size=3, rank=r, world_size=2)) for r in (0, 1)]
    assert len(parts[0]) == len(RenderStream(_src(), num_ids=5, per_id=2, batch_size=3, rank=0, world_size=2))
    allp = _items(RenderStream(_src(), num_ids=5, per_id=2, batch_size=3))
    assert sorted(parts[0] + parts[1]) == sorted(allp)
    assert not set(parts[0]) & set(parts[1])
    with pytest.raises(ValueError):
        RenderStream(_src(), num_ids=5, rank=2, world_size=2)


def test_iter_batches_yields_render_batches():
    ds = RenderStream(_src(), num_ids=4, per_id=3, batch_size=5, fixed_variations=True)
    batches = list(ds.iter_batches())
    assert all(isinstance(b, RenderBatch) for b in batches)
    assert [len(b) for b in batches] == [5, 5, 2]
    assert int(torch.cat([b.variation for b in batches]).max()) < 3
    assert set(torch.cat([b.identity for b in batches]).tolist()) == {0, 1, 2, 3}


def test_split_workers_off_gives_every_worker_the_whole_epoch():
    ds = RenderStream(_src(), num_ids=3, per_id=2, batch_size=2, split_workers=False)
    dl = DataLoader(ds, batch_size=None, num_workers=2)
    got = [(int(y), hashlib.sha1(x.numpy().tobytes()).hexdigest()) for x, y in dl]
    assert sorted(got) == sorted(_items(ds) * 2)
