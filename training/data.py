"""Training data: image-folder / rec / rendered-dataset sources, on-the-fly engine sources, and the
step-driven mixed-source batch stream.

Sources
-------
* :class:`MapSource` (``type: folder | rec | rendered``, or ``engine`` with a ``path``): a dataset read
  with ``engine.formats.open_dataset``, optionally restricted to a subset of identities
  (``identities`` / ``people_file``, ``exclude_*``, ``min_images_per_id``, ``max_ids``,
  ``images_per_id``). Its kept identities get local labels ``0..C-1``.
* :class:`StreamSource` (``type: stream``, or ``engine`` with a ``source``): an identity source of
  ``engine.sources.create_source`` rendered on the fly. Backend ``direct`` (default) renders
  image ``(identity, variation)`` through the :class:`engine.interface.IdentitySampler` API, so every
  sample is addressable by position (exact, cheap resume; independent of ranks/workers); backend
  ``renderstream`` reads ``engine.stream.RenderStream`` sequentially (see :class:`StreamSource`).

Both kinds expose ``epoch_size`` and ``fetch(items)`` where an item is ``(epoch, index)``: every
source is an endless sequence of epochs, each a seed-determined permutation of its
``epoch_size`` items.

Mixed batches
-------------
:class:`MixedBatchStream` is an ``IterableDataset`` that yields one whole batch per global step
``s`` in ``[start_step, end_step)``::

    {"image": uint8 (B, 3, S, S), "label": int64 (B,), "source": int64 (B,),
     "counts": [n_0, ..., n_{K-1}], "step": s}

The batch holds ``counts[k]`` samples of source ``k`` (contiguous, in source order), with counts
from :meth:`training.curriculum.Curriculum` weights at ``s`` (systematic sampling, so proportions
follow the curriculum exactly on average). Labels are mapped into the class space of the head
segment of ``s`` (per-source offsets). Source ``k``'s samples are taken in order from its sequence;
the position at step ``s`` is the sum of all earlier counts over all ranks, recomputed in closed form
at start-up, so a resumed run draws exactly the samples the uninterrupted run would have drawn.
Augmentation is *not* applied here: the LightningModule applies each source's augmentation on the
device in ``on_after_batch_transfer`` using ``counts``.

With ``num_workers > 0`` worker ``w`` builds the batches of steps ``start + w, start + w + W, ...``;
``DataLoader`` returns them in step order.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from common.people import pairs_people, read_people_file
from engine.interface import derive_seed

from .config import SourceConfig, TrainConfig
from .curriculum import Curriculum, allocate_counts, weyl_u

log = logging.getLogger(__name__)

__all__ = [
    "MapSource",
    "StreamSource",
    "build_source",
    "build_sources",
    "MixedBatchStream",
    "MixedDataModule",
    "make_loader",
    "read_people_file",
    "pairs_people",
    "to_uint8_batch",
]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def to_uint8_batch(images: Sequence[torch.Tensor] | torch.Tensor, size: int) -> torch.Tensor:
    """Stack images (uint8 ``(3, h, w)`` or float in ``[0, 1]``) into uint8 ``(n, 3, size, size)``,
    resizing (antialiased bilinear) those of another size."""
    if isinstance(images, torch.Tensor):
        images = list(images) if images.ndim == 4 else [images]
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        if im.ndim != 3 or im.shape[0] not in (1, 3):
            raise ValueError(f"expected (3, H, W) images, got {tuple(im.shape)}")
        groups.setdefault((tuple(im.shape), im.dtype), []).append(i)
    for (shape, dtype), idx in groups.items():
        x = torch.stack([images[i] for i in idx])
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if dtype == torch.uint8 and tuple(shape[1:]) == (size, size):
            out[idx] = x
            continue
        xf = x.float() / 255.0 if dtype == torch.uint8 else x.float()
        if tuple(shape[1:]) != (size, size):
            xf = F.interpolate(xf, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[idx] = (xf.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
    return out


class _EpochPerms:
    """Seed-determined permutation of ``range(n)`` per epoch (small LRU cache)."""

    def __init__(self, n: int, seed: int, name: str, shuffle: bool = True):
        self.n, self.seed, self.name, self.shuffle = int(n), int(seed), name, shuffle
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, epoch: int) -> np.ndarray:
        p = self._cache.get(epoch)
        if p is None:
            if self.shuffle:
                rng = np.random.default_rng(derive_seed(self.seed, "epoch-perm", self.name, epoch))
                p = rng.permutation(self.n)
            else:
                p = np.arange(self.n)
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[epoch] = p
        return p

    def items(self, start: int, n: int) -> list[tuple[int, int]]:
        """``(epoch, index)`` of sequence positions ``start .. start + n - 1``."""
        out = []
        for c in range(start, start + n):
            e, pos = divmod(c, self.n)
            out.append((e, int(self(e)[pos])))
        return out


# ----------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------


class MapSource:
    """A (subset of a) dataset on disk: ImageFolder, insightface rec or an engine-rendered dataset.

    Attributes: ``name``, ``num_classes``, ``epoch_size`` (= images kept), ``class_names`` (kept
    identities, label order), ``indices`` (dataset index of each kept image), ``labels`` (local label
    of each kept image), ``missing`` (requested identities not found).
    """

    addressable = True

    def __init__(self, name: str, cfg: SourceConfig, seed: int = 0):
        from engine.formats import open_dataset

        self.name, self.cfg, self.seed = name, cfg, seed
        self.path = cfg.path
        ds = open_dataset(cfg.path)
        self._ds = ds
        classes = list(ds.classes)
        labels = ds.labels.numpy().astype(np.int64)
        counts = np.bincount(labels, minlength=len(classes))
        name_to_label = {c: i for i, c in enumerate(classes)}

        keep = np.ones(len(classes), dtype=bool)
        wanted: list[str] | None = None
        if cfg.identities is not None or cfg.people_file is not None or cfg.identities_from_pairs is not None:
            wanted = list(cfg.identities or [])
            if cfg.people_file is not None:
                wanted += read_people_file(cfg.people_file)
            if cfg.identities_from_pairs is not None:
                wanted += sorted(pairs_people(cfg.identities_from_pairs.pairs, cfg.identities_from_pairs.folds))
            self.missing = sorted({w for w in wanted if w not in name_to_label})
            keep[:] = False
            keep[[name_to_label[w] for w in wanted if w in name_to_label]] = True
            if self.missing:
                log.warning("source %s: %d requested identities not in %s (e.g. %s)", name, len(self.missing),
                            cfg.path, ", ".join(self.missing[:3]))
        else:
            self.missing = []
        excl = list(cfg.exclude_identities or [])
        if cfg.exclude_people_file is not None:
            excl += read_people_file(cfg.exclude_people_file)
        if cfg.exclude_from_pairs is not None:
            excl += sorted(pairs_people(cfg.exclude_from_pairs.pairs, cfg.exclude_from_pairs.folds))
        for e in excl:
            if e in name_to_label:
                keep[name_to_label[e]] = False
        keep &= counts >= cfg.min_images_per_id
        kept = np.nonzero(keep)[0]
        if cfg.id_order == "random":
            rng = np.random.default_rng(derive_seed(cfg.seed, "id-order", name))
            kept = kept[rng.permutation(len(kept))]
        if cfg.max_ids is not None:
            if len(kept) < cfg.max_ids:
                log.warning("source %s: max_ids=%d but only %d identities qualify", name, cfg.max_ids, len(kept))
            kept = kept[: cfg.max_ids]
        if len(kept) == 0:
            raise ValueError(f"source {name!r}: no identity of {cfg.path} is left after the subset options "
                             f"(min_images_per_id={cfg.min_images_per_id}, max_ids={cfg.max_ids}, "
                             f"identities/people_file={'set' if wanted is not None else 'unset'})")
        lut = np.full(len(classes), -1, dtype=np.int64)
        lut[kept] = np.arange(len(kept))
        local = lut[labels]
        sel = np.nonzero(local >= 0)[0]
        if cfg.images_per_id is not None:
            # first images_per_id of each identity in dataset (file) order
            order = np.argsort(local[sel], kind="stable")
            sel_sorted = sel[order]
            lab_sorted = local[sel_sorted]
            first = np.searchsorted(lab_sorted, lab_sorted, side="left")
            rank = np.arange(len(sel_sorted)) - first
            sel = np.sort(sel_sorted[rank < cfg.images_per_id])
        self.indices = sel.astype(np.int64)
        self.labels = local[sel].astype(np.int64)
        self.class_names = [classes[i] for i in kept]
        self.num_classes = len(kept)
        self.epoch_size = len(self.indices)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_ds"] = None  # reopened lazily in each worker process
        return d

    @property
    def dataset(self):
        if self._ds is None:
            from engine.formats import open_dataset

            self._ds = open_dataset(self.path)
        return self._ds

    def fetch(self, items: Sequence[tuple[int, int]]) -> tuple[list[torch.Tensor], np.ndarray]:
        """Images (uint8 ``(3, H, W)``) and local labels of items ``(epoch, index)``."""
        ds = self.dataset
        imgs, labs = [], np.empty(len(items), dtype=np.int64)
        for j, (_, i) in enumerate(items):
            img, _ = ds[int(self.indices[i])]
            imgs.append(img)
            labs[j] = self.labels[i]
        return imgs, labs

    def describe(self) -> dict[str, Any]:
        return {"type": self.cfg.type, "path": self.path, "num_classes": self.num_classes,
                "num_images": self.epoch_size, "missing_identities": len(self.missing)}


class StreamSource:
    """An engine identity source rendered on the fly.

    ``num_ids`` identities (``source.sample_identities(num_ids, seed)``); an epoch is ``num_ids * P``
    items with ``P = per_id or 1`` (or ``epoch_size`` if set, for epoch-based phase lengths): item
    ``j`` is identity ``j % num_ids``, slot ``q = j // num_ids``, rendered as variation ``q`` if
    ``fixed_variations`` (the same ``num_ids * P`` images every epoch) else ``epoch * P + q`` (new
    images every epoch). Labels are identity rows ``0..num_ids-1``.

    Backend ``direct`` (default): ``source.render(identities, rows, variations, seed)`` in blocks of
    ``render_batch_size``; exact and position-addressable, and the same (identity, variation) ->
    image mapping as ``engine.stream.RenderStream`` and the disk engine. Backend ``renderstream``
    (``source_kwargs: {backend: renderstream}``) reads ``RenderStream`` sequentially (its batches
    split over ranks and DataLoader workers); a resumed run restarts it at the first epoch the
    interrupted run had not started (same identities and proportions; not the exact images).
    """

    def __init__(self, name: str, cfg: SourceConfig, image_size: int, seed: int = 0):
        self.name, self.cfg = name, cfg
        kw = dict(cfg.source_kwargs)
        self.backend = kw.pop("backend", "direct")
        if self.backend not in ("direct", "renderstream"):
            raise ValueError(f"sources.{name}.source_kwargs.backend: must be 'direct' or 'renderstream', "
                             f"got {self.backend!r}")
        if cfg.preset is not None:
            kw.setdefault("preset", cfg.preset)
        kw.setdefault("size", int(image_size))
        self.source_kwargs = kw
        self.seed = int(cfg.seed)
        self.num_ids = int(cfg.num_ids)
        self.per_id = int(cfg.per_id or 1)
        self.num_classes = self.num_ids
        self.epoch_size = int(cfg.epoch_size or self.num_ids * self.per_id)
        self.addressable = self.backend == "direct"
        self.image_size = int(image_size)
        self._cache: torch.Tensor | None = None
        self._source = None
        self._identities = None
        self._stream_iter: Iterator | None = None
        self._stream_key = None
        self._rs = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_source"] = None
        d["_stream_iter"] = None
        d["_rs"] = None
        return d

    @property
    def source(self):
        if self._source is None:
            from engine.sources import create_source

            self._source = create_source(self.cfg.source, **self.source_kwargs)
        return self._source

    @property
    def identities(self):
        if self._identities is None:
            self._identities = self.source.sample_identities(self.num_ids, self.seed)
        return self._identities

    def prepare(self) -> None:
        """Build the source and sample the identities now (in the main process, before workers fork);
        with ``cache`` also render every image once."""
        if self.addressable:
            _ = self.identities
            if self.cfg.cache and self._cache is None:
                t0 = time.time()
                n = self.num_ids * self.per_id
                cache = torch.empty((n, 3, self.image_size, self.image_size), dtype=torch.uint8)
                bs = max(self.cfg.render_batch_size, 1)
                for a in range(0, n, bs):
                    items = [(0, i) for i in range(a, min(n, a + bs))]
                    x, _ = self._render(items)
                    cache[a:a + len(items)] = to_uint8_batch(x, self.image_size)
                self._cache = cache
                log.info("source %s: rendered and cached %d images in %.1fs", self.name, n, time.time() - t0)
        else:
            _ = self.source

    def fetch(self, items: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, np.ndarray]:
        """Images of items ``(epoch, index)``: float ``(n, 3, s, s)`` in ``[0, 1]`` (or uint8 from the
        cache) and labels."""
        if self.cfg.cache:
            self.prepare()
            idx = torch.tensor([i % len(self._cache) for _, i in items], dtype=torch.long)
            return self._cache[idx], (idx % self.num_ids).numpy()
        return self._render(items)

    def _render(self, items: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, np.ndarray]:
        ids = self.identities
        n = len(items)
        rows = np.empty(n, dtype=np.int64)
        var = np.empty(n, dtype=np.int64)
        P = self.per_id
        for j, (e, i) in enumerate(items):
            i = i % (self.num_ids * P)
            rows[j] = i % self.num_ids
            q = i // self.num_ids
            var[j] = q if self.cfg.fixed_variations else e * P + q
        out = []
        bs = self.cfg.render_batch_size
        for a in range(0, n, bs):
            rb = self.source.render(ids, torch.from_numpy(rows[a:a + bs]), torch.from_numpy(var[a:a + bs]),
                                    self.seed)
            out.append(rb.images.detach().float().cpu())
        imgs = torch.cat(out) if out else torch.zeros(0, 3, 1, 1)
        return imgs, rows

    # -- renderstream backend
    def pull(self, n: int, rank: int = 0, world_size: int = 1, start_epoch: int = 0) -> tuple[torch.Tensor, np.ndarray]:
        """Next ``n`` samples of this process's ``engine.stream.RenderStream`` (backend ``renderstream``).

        The stream starts at epoch ``start_epoch`` and moves to the next epoch when exhausted; its
        batches are split over ranks and DataLoader workers by ``RenderStream`` itself."""
        from engine.stream import RenderStream

        key = (int(rank), int(world_size), int(start_epoch))
        if self._stream_iter is None or self._stream_key != key:
            self._rs = RenderStream(self.source, self.num_ids, seed=self.seed, per_id=self.cfg.per_id,
                                    fixed_variations=self.cfg.fixed_variations,
                                    batch_size=self.cfg.render_batch_size, epoch=start_epoch, rank=rank,
                                    world_size=world_size)
            self._stream_key = key
            self._stream_iter = iter(self._rs)
        imgs, labs = [], []
        empty_epochs = 0
        while len(imgs) < n:
            try:
                img, lab = next(self._stream_iter)
            except StopIteration:
                empty_epochs += 1
                if empty_epochs > 2:
                    raise RuntimeError(
                        f"source {self.name}: RenderStream gives this rank/worker no samples (epoch of "
                        f"{self.num_ids * self.per_id} samples in batches of {self.cfg.render_batch_size} over "
                        f"{world_size} rank(s) and the DataLoader workers); lower render_batch_size") from None
                self._rs.set_epoch(self._rs.epoch + 1)
                self._stream_iter = iter(self._rs)
                continue
            empty_epochs = 0
            imgs.append(torch.as_tensor(img).float())
            labs.append(int(lab))
        return (torch.stack(imgs) if imgs else torch.zeros(0, 3, 1, 1)), np.asarray(labs, dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {"type": self.cfg.type, "source": self.cfg.source, "preset": self.cfg.preset,
                "num_classes": self.num_classes, "num_images": self.epoch_size, "per_id": self.cfg.per_id,
                "backend": self.backend, "seed": self.seed}


def build_source(name: str, cfg: SourceConfig, image_size: int, seed: int = 0):
    """The :class:`MapSource` or :class:`StreamSource` for one source config."""
    if cfg.is_stream:
        return StreamSource(name, cfg, image_size, seed)
    return MapSource(name, cfg, seed)


def build_sources(cfg: TrainConfig) -> dict[str, Any]:
    """Sources used by some phase of ``cfg`` (config order)."""
    return {n: build_source(n, cfg.sources[n], cfg.model.input_size, cfg.trainer.seed) for n in cfg.used_sources()}


# ----------------------------------------------------------------------------------------------
# mixed batch stream
# ----------------------------------------------------------------------------------------------


class MixedBatchStream(IterableDataset):
    """Whole mixed-source batches for global steps ``[start_step, end_step)`` (see module docstring).

    Args:
        sources: ``{name: source}`` for every name of ``curriculum.source_names``.
        curriculum: a :class:`Curriculum` with the sources' class counts.
        start_step, end_step: global step range to produce.
        rank, world_size: data-parallel rank (each rank gets distinct samples).
        seed: sampling seed (batch composition and per-epoch permutations).
        image_size: output side ``S``.
    """

    def __init__(self, sources: Mapping[str, Any], curriculum: Curriculum, start_step: int, end_step: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0, image_size: int = 112,
                 batch_size: int | None = None):
        super().__init__()
        missing = [n for n in curriculum.source_names if n not in sources]
        if missing:
            raise ValueError(f"sources missing for the curriculum: {missing}")
        self.names = list(curriculum.source_names)
        self.sources = [sources[n] for n in self.names]
        self.curriculum = curriculum
        self.start_step, self.end_step = int(start_step), int(end_step)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size or curriculum.batch_size)
        self.offsets = {seg: curriculum.label_offsets(seg) for seg in range(curriculum.num_segments)}
        self.perms = [_EpochPerms(s.epoch_size, self.seed, n) for n, s in zip(self.names, self.sources)]

    def _counts(self, steps: np.ndarray, rank: int) -> np.ndarray:
        w = self.curriculum.weights_batch(steps)
        return allocate_counts(w, self.batch_size, weyl_u(steps * self.world_size + rank, self.seed))

    def consumed_before(self, step: int) -> np.ndarray:
        """``(K,)`` samples of each source drawn by all ranks over global steps ``[0, step)``."""
        total = np.zeros(len(self.names), dtype=np.int64)
        chunk = 1 << 16
        for a in range(0, step, chunk):
            s = np.arange(a, min(step, a + chunk))
            for r in range(self.world_size):
                total += self._counts(s, r).sum(0)
        return total

    def cursor_at(self, step: int) -> np.ndarray:
        """``(K,)`` sequence position of each source for this rank's batch at global ``step``."""
        base = self.consumed_before(step)
        st = np.array([step])
        for r in range(self.rank):
            base += self._counts(st, r)[0]
        return base

    def make_batch(self, step: int, counts: np.ndarray, cursor: np.ndarray,
                   start_epochs: np.ndarray | None = None) -> dict[str, Any]:
        seg = self.curriculum.phase_at(step).segment
        off = self.offsets[seg]
        imgs, labels, srcs = [], [], []
        for k, (src, n) in enumerate(zip(self.sources, counts.tolist())):
            if n == 0:
                continue
            if off[k] < 0:
                raise RuntimeError(f"source {self.names[k]!r} sampled at step {step} but not in the class space of "
                                   f"head segment {seg}")
            if src.addressable:
                x, y = src.fetch(self.perms[k].items(int(cursor[k]), n))
            else:
                e0 = int(start_epochs[k]) if start_epochs is not None else 0
                x, y = src.pull(n, self.rank, self.world_size, e0)
            imgs.append(to_uint8_batch(x, self.image_size))
            labels.append(torch.from_numpy(np.asarray(y, dtype=np.int64) + off[k]))
            srcs.append(torch.full((n,), k, dtype=torch.long))
        return {
            "image": torch.cat(imgs),
            "label": torch.cat(labels),
            "source": torch.cat(srcs),
            "counts": [int(c) for c in counts.tolist()],
            "step": int(step),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        wi = get_worker_info()
        W, w = (wi.num_workers, wi.id) if wi is not None else (1, 0)
        for s in self.sources:
            if hasattr(s, "prepare"):
                s.prepare()
        consumed = self.consumed_before(self.start_step)  # all ranks, steps < current
        # sequential (RenderStream) sources restart at the first epoch not yet touched
        sizes = np.array([max(int(s.epoch_size), 1) for s in self.sources])
        start_epochs = -(-consumed // sizes)
        chunk = 1024
        for a in range(self.start_step, self.end_step, chunk):
            steps = np.arange(a, min(self.end_step, a + chunk))
            per_rank = [self._counts(steps, r) for r in range(self.world_size)]
            before = sum(per_rank[: self.rank]) if self.rank else np.zeros_like(per_rank[0])
            total = sum(per_rank)
            for j, s in enumerate(steps.tolist()):
                if (s - self.start_step) % W == w:
                    yield self.make_batch(s, per_rank[self.rank][j], consumed + before[j], start_epochs)
                consumed = consumed + total[j]


def make_loader(dataset: MixedBatchStream, num_workers: int = 0, pin_memory: bool = False,
                prefetch_factor: int = 2) -> DataLoader:
    """``DataLoader`` over whole batches (``batch_size=None``), step order preserved."""
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw.update(prefetch_factor=prefetch_factor, persistent_workers=False)
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
                      **kw)


try:  # Lightning DataModule wrapper (optional import so that data.py works without lightning)
    import lightning.pytorch as _L

    class MixedDataModule(_L.LightningDataModule):
        """Serves the mixed batches of one curriculum phase to a Lightning ``Trainer``.

        The phase's trainer counts steps from 0; ``train_dataloader`` is called after a checkpoint is
        restored, so it starts at global step ``phase.start + trainer.global_step``.
        """

        def __init__(self, sources: Mapping[str, Any], curriculum: Curriculum, phase_index: int,
                     num_workers: int = 0, prefetch_factor: int = 2, seed: int = 0, image_size: int = 112):
            super().__init__()
            self.sources = dict(sources)
            self.curriculum = curriculum
            self.phase = curriculum.phases[phase_index]
            self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
            self.seed, self.image_size = seed, image_size
            self.first_step: int | None = None

        def train_dataloader(self) -> DataLoader:
            trainer = self.trainer
            local = int(trainer.global_step) if trainer is not None else 0
            rank = int(trainer.global_rank) if trainer is not None else 0
            world = int(trainer.world_size) if trainer is not None else 1
            if world != self.curriculum.world_size:
                log.warning("world size %d differs from the curriculum's %d", world, self.curriculum.world_size)
            start = self.phase.start + local
            self.first_step = start
            for src in self.sources.values():  # identities / render caches once, before workers fork
                if hasattr(src, "prepare") and src.addressable:
                    src.prepare()
            ds = MixedBatchStream(self.sources, self.curriculum, start, self.phase.end, rank=rank,
                                  world_size=world, seed=self.seed, image_size=self.image_size)
            pin = bool(trainer is not None and trainer.strategy.root_device.type == "cuda")
            nw = min(self.num_workers, max(self.phase.end - start, 0)) if self.num_workers else 0
            return make_loader(ds, nw, pin_memory=pin, prefetch_factor=self.prefetch_factor)

except ImportError:  # pragma: no cover
    MixedDataModule = None  # type: ignore
