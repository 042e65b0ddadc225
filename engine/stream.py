"""On-the-fly rendering as a torch ``IterableDataset`` (no dataset on disk).

An *epoch* is ``num_ids * per_id`` samples: every identity ``per_id`` times (``per_id=None`` -> 1).
Sample ``(identity i, slot k)`` renders variation ``epoch * per_id + k`` (fresh images each epoch) or,
with ``fixed_variations=True``, variation ``k`` (the same ``per_id`` images every epoch, equal to the
images the disk engine writes for the same source and seed). The sample order is a permutation
seeded by ``(seed, epoch)`` (``shuffle=False``: identity-major), cut into fixed batches of
``batch_size``; each batch is one ``source.render`` call. Batches are dealt to distributed ranks
(``j % world_size == rank``) and then to DataLoader workers (round-robin over the rank's batches),
so no two workers render the same sample and the set of rendered samples does not depend on the
number of workers. Everything is deterministic by ``(seed, epoch)``.

Call :meth:`RenderStream.set_epoch` before each epoch (with ``persistent_workers=True`` the workers
keep their copy: recreate the iterator/DataLoader or use non-persistent workers).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .interface import IdentitySampler, RenderBatch, generator


class RenderStream(IterableDataset):
    """Render ``(image float32 (3,H,W) in [0,1], label int)`` on the fly from ``source``.

    Args:
        source: any :class:`IdentitySampler`.
        num_ids: number of identities (classes); sampled once with ``seed``.
        seed: identity and rendering seed.
        per_id: samples per identity per epoch (default 1).
        fixed_variations: reuse variations ``0..per_id-1`` every epoch instead of fresh ones.
        batch_size: images per ``source.render`` call (the unit dealt to workers).
        epoch: initial epoch (see :meth:`set_epoch`).
        shuffle: shuffle the sample order per epoch (identity-major order otherwise).
        rank, world_size: distributed split; default from ``torch.distributed`` if initialised
            (pass ``rank=0, world_size=1`` to render the whole epoch on every rank).
        split_workers: deal batches to DataLoader workers (``get_worker_info``); ``False`` makes
            every worker iterate the whole (rank's) epoch, e.g. when the caller seeds workers itself.
    """

    def __init__(
        self,
        source: IdentitySampler,
        num_ids: int,
        seed: int = 0,
        per_id: int | None = None,
        fixed_variations: bool = False,
        batch_size: int = 64,
        epoch: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        split_workers: bool = True,
    ):
        super().__init__()
        if num_ids < 1:
            raise ValueError(f"num_ids must be >= 1, got {num_ids}")
        if per_id is not None and per_id < 1:
            raise ValueError(f"per_id must be >= 1, got {per_id}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if rank is None or world_size is None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank = torch.distributed.get_rank() if rank is None else rank
                world_size = torch.distributed.get_world_size() if world_size is None else world_size
            else:
                rank, world_size = rank or 0, world_size or 1
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank}/{world_size}")
        self.source = source
        self.num_ids = int(num_ids)
        self.seed = int(seed)
        self.per_id = int(per_id) if per_id is not None else 1
        self.fixed_variations = bool(fixed_variations)
        self.batch_size = int(batch_size)
        self.epoch = int(epoch)
        self.shuffle = bool(shuffle)
        self.rank, self.world_size = int(rank), int(world_size)
        self.split_workers = bool(split_workers)
        self.identities = source.sample_identities(self.num_ids, self.seed)
        self.num_classes = self.num_ids

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # -- work split ---------------------------------------------------------------------------------
    @property
    def samples_per_epoch(self) -> int:
        return self.num_ids * self.per_id

    def _order(self) -> torch.Tensor:
        n = self.samples_per_epoch
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=generator(self.seed, "stream-order", self.epoch))

    def _rank_batches(self) -> list[int]:
        nb = math.ceil(self.samples_per_epoch / self.batch_size)
        return list(range(self.rank, nb, self.world_size))

    def _my_batches(self) -> list[int]:
        mine = self._rank_batches()
        info = get_worker_info()
        if info is None or not self.split_workers:
            return mine
        return mine[info.id :: info.num_workers]

    def batch_samples(self, j: int, order: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, variations) of batch ``j`` of the current epoch."""
        order = self._order() if order is None else order
        s = order[j * self.batch_size : (j + 1) * self.batch_size]
        rows = s // self.per_id
        k = s % self.per_id
        var = k if self.fixed_variations else k + self.epoch * self.per_id
        return rows, var

    def __len__(self) -> int:
        """Samples this rank yields per epoch (over all its DataLoader workers)."""
        n = self.samples_per_epoch
        return sum(min(self.batch_size, n - j * self.batch_size) for j in self._rank_batches())

    # -- iteration ----------------------------------------------------------------------------------
    def iter_batches(self) -> Iterator[RenderBatch]:
        """Yield whole :class:`RenderBatch` objects (on the source's device) for this rank/worker."""
        order = self._order()
        for j in self._my_batches():
            rows, var = self.batch_samples(j, order)
            yield self.source.render(self.identities, rows, var, self.seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        for rb in self.iter_batches():
            imgs = rb.images.detach().float().cpu()
            labels = rb.identity.detach().cpu().tolist()
            for b in range(imgs.shape[0]):
                yield imgs[b], int(labels[b])
