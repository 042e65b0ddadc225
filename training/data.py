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

With a ``soft_labels`` source (identity mixup) the batch also holds ``"label_b"`` int64 (B,) and
``"lam"`` float32 (B,): the second class and the first class's weight (hard rows: ``label``, 1); the
module's phase ``domain_mixup`` sets them too (:mod:`training.mixup`).

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

GPU input path: a stream source whose ``source_kwargs.device`` is CUDA renders straight into the
batch on the GPU (quantized to uint8 there; the batch is assembled on that device, a disk part copied
over), in the training process (CUDA cannot run in forked workers), a ``prefetch_factor`` of batches
ahead in a background thread on a side CUDA stream (:class:`common.prefetch.DevicePrefetcher`, which
:func:`make_loader` adds when given a ``device`` and :class:`MixedDataModule` adds on CUDA). Disk
sources decode in ``num_workers`` processes into pinned memory and are copied to the device by the
same prefetcher; augmentation runs on the device either way.
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
    "renders_on_device",
    "read_people_file",
    "pairs_people",
    "to_uint8_batch",
]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def to_uint8_batch(images: Sequence[torch.Tensor] | torch.Tensor, size: int) -> torch.Tensor:
    """Stack images (uint8 ``(3, h, w)`` or float in ``[0, 1]``) into uint8 ``(n, 3, size, size)``,
    resizing (antialiased bilinear) those of another size. A ``(n, 3, h, w)`` tensor is converted
    whole, on its own device (a batch rendered on the GPU stays there)."""
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3:
        if images.dtype == torch.uint8 and tuple(images.shape[2:]) == (size, size):
            return images
        xf = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if tuple(xf.shape[2:]) != (size, size):
            xf = F.interpolate(xf, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (xf.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
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
        mix = None
        if cfg.soft_labels:  # identity mixup: mixed identities are no classes; their images train their parents'
            from .mixup import read_mix_columns

            if cfg.images_per_id is not None:
                raise ValueError(f"sources.{name}: soft_labels and images_per_id together are not supported")
            table = read_mix_columns(cfg.path)
            try:
                ident = np.array([int(c) for c in classes], dtype=np.int64)
            except ValueError:
                raise ValueError(f"sources.{name}.soft_labels: class names of {cfg.path} are not identity numbers") from None
            mix = np.array([table.get(int(i), (int(i), int(i), 1.0)) for i in ident], dtype=np.float64)  # (C, 3)
            keep &= mix[:, 2] >= 1.0
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
        lut_b, lam_c = lut.copy(), np.ones(len(classes))
        if mix is not None:  # a mixed class: (class of parent a, of parent b, lam) when both parents are kept
            cls_of = {int(i): c for c, i in enumerate(ident)}
            mixed = np.nonzero(mix[:, 2] < 1.0)[0]
            for c in mixed:
                ca, cb = cls_of.get(int(mix[c, 0]), -1), cls_of.get(int(mix[c, 1]), -1)
                if ca >= 0 and cb >= 0 and lut[ca] >= 0 and lut[cb] >= 0:
                    lut[c], lut_b[c], lam_c[c] = lut[ca], lut[cb], mix[c, 2]
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
        self.soft = mix is not None
        if self.soft:  # soft targets: labels (class a), labels_b, lam (a's weight)
            self.labels_b = lut_b[labels][sel].astype(np.int64)
            self.lam = lam_c[labels][sel].astype(np.float32)
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

    def soft_targets(self, items: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Second class and first class's weight (``labels_b``, ``lam``) of items ``(epoch, index)``."""
        i = np.asarray([j for _, j in items], dtype=np.int64)
        return self.labels_b[i], self.lam[i]

    def describe(self) -> dict[str, Any]:
        d = {"type": self.cfg.type, "path": self.path, "num_classes": self.num_classes,
             "num_images": self.epoch_size, "missing_identities": len(self.missing)}
        if self.soft:
            d["soft_label_images"] = int((self.lam < 1).sum())
        return d


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
        self.soft = bool(cfg.soft_labels)
        self._soft_table = None
        self.epoch_size = int(cfg.epoch_size or self.num_ids * self.per_id)
        self.addressable = self.backend == "direct"
        self.image_size = int(image_size)
        self._cache: torch.Tensor | None = None
        self._source = None
        self._identities = None
        self._stream_iter: Iterator | None = None
        self._stream_key = None
        self._rs = None
        if self.soft:  # classes = the base identities of the mixup table: needs the table now
            if self.backend != "direct":
                raise ValueError(f"sources.{name}.soft_labels: needs the direct backend, not {self.backend!r}")
            self._soft_table = self._soft_labels()
            self.num_classes = self._soft_table[3]

    def _soft_labels(self):
        from .mixup import soft_label_table

        meta = self.identities.meta
        if "mix_lambda" not in meta:
            raise ValueError(f"sources.{self.name}.soft_labels: the source's identities have no mixup columns "
                             f"(set source_kwargs.overrides.identity.mixup.fraction, or soft_labels: false)")
        return soft_label_table(meta["mix_parent_a"].numpy(), meta["mix_parent_b"].numpy(), meta["mix_lambda"].numpy())

    def soft_targets(self, items: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Second class and first class's weight of items ``(epoch, index)``."""
        it = np.asarray(items, dtype=np.int64).reshape(len(items), 2)
        rows = (it[:, 1] % (self.num_ids * self.per_id)) % self.num_ids
        _, yb, lam, _ = self._soft_table
        return yb[rows], lam[rows].astype(np.float32)

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
                    cache[a:a + len(items)] = x.cpu()
                self._cache = cache
                log.info("source %s: rendered and cached %d images in %.1fs", self.name, n, time.time() - t0)
        else:
            _ = self.source

    def fetch(self, items: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, np.ndarray]:
        """uint8 ``(n, 3, s, s)`` images of items ``(epoch, index)`` (on the source's device, or from
        the CPU cache) and labels."""
        if self.cfg.cache:
            self.prepare()
            idx = torch.tensor([i % len(self._cache) for _, i in items], dtype=torch.long)
            rows = (idx % self.num_ids).numpy()
            return self._cache[idx], (self._soft_table[0][rows] if self.soft else rows)
        return self._render(items)

    @property
    def on_device(self) -> bool:
        """True if the source renders on a GPU: its batches then stay there (uint8, no host round trip)."""
        dev = self.source_kwargs.get("device", "cpu")
        return str(dev).startswith("cuda")

    def _render(self, items: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, np.ndarray]:
        """uint8 ``(n, 3, s, s)`` images of items ``(epoch, index)`` on the source's device (quantized
        there, as the disk engine quantizes before encoding) and their labels."""
        ids = self.identities
        n = len(items)
        P = self.per_id
        it = np.asarray(items, dtype=np.int64).reshape(n, 2)
        i = it[:, 1] % (self.num_ids * P)
        rows = i % self.num_ids
        q = i // self.num_ids
        var = q if self.cfg.fixed_variations else it[:, 0] * P + q
        out = []
        bs = self.cfg.render_batch_size
        for a in range(0, n, bs):
            rb = self.source.render(ids, torch.from_numpy(rows[a:a + bs]), torch.from_numpy(var[a:a + bs]),
                                    self.seed)
            out.append(to_uint8_batch(rb.images.detach(), self.image_size))
        imgs = torch.cat(out) if out else torch.zeros(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
        return imgs, (self._soft_table[0][rows] if self.soft else rows)

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
        #: batches carry soft targets (label_b, lam) when a source has soft labels
        self.soft = any(getattr(s, "soft", False) for s in self.sources)

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
        imgs, labels, srcs, labels_b, lams = [], [], [], [], []
        for k, (src, n) in enumerate(zip(self.sources, counts.tolist())):
            if n == 0:
                continue
            if off[k] < 0:
                raise RuntimeError(f"source {self.names[k]!r} sampled at step {step} but not in the class space of "
                                   f"head segment {seg}")
            if src.addressable:
                items = self.perms[k].items(int(cursor[k]), n)
                x, y = src.fetch(items)
                if self.soft:
                    yb, lam = src.soft_targets(items) if getattr(src, "soft", False) else (y, np.ones(n, np.float32))
                    labels_b.append(torch.from_numpy(np.asarray(yb, dtype=np.int64) + off[k]))
                    lams.append(torch.from_numpy(np.asarray(lam, dtype=np.float32)))
            else:
                e0 = int(start_epochs[k]) if start_epochs is not None else 0
                x, y = src.pull(n, self.rank, self.world_size, e0)
                if self.soft:
                    labels_b.append(torch.from_numpy(np.asarray(y, dtype=np.int64) + off[k]))
                    lams.append(torch.ones(n))
            imgs.append(to_uint8_batch(x, self.image_size))
            labels.append(torch.from_numpy(np.asarray(y, dtype=np.int64) + off[k]))
            srcs.append(torch.full((n,), k, dtype=torch.long))
        # a source rendered on the GPU keeps its part there: the batch is assembled on that device
        dev = next((x.device for x in imgs if x.device.type != "cpu"), None)
        if dev is not None:
            imgs = [x.to(dev, non_blocking=True) for x in imgs]
            labels = [y.to(dev, non_blocking=True) for y in labels]
            srcs = [z.to(dev, non_blocking=True) for z in srcs]
            labels_b = [y.to(dev, non_blocking=True) for y in labels_b]
            lams = [z.to(dev, non_blocking=True) for z in lams]
        batch = {
            "image": torch.cat(imgs),
            "label": torch.cat(labels),
            "source": torch.cat(srcs),
            "counts": [int(c) for c in counts.tolist()],
            "step": int(step),
        }
        if self.soft:  # soft targets (identity mixup): class a = label, class b, a's weight
            batch["label_b"], batch["lam"] = torch.cat(labels_b), torch.cat(lams)
        return batch

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


def renders_on_device(sources: Mapping[str, Any] | Sequence[Any]) -> bool:
    """True if some source renders on a GPU (its batches must be built in the training process)."""
    vals = sources.values() if isinstance(sources, Mapping) else sources
    return any(bool(getattr(s, "on_device", False)) and not getattr(s.cfg, "cache", False) for s in vals)


def make_loader(dataset: MixedBatchStream, num_workers: int = 0, pin_memory: bool = False,
                prefetch_factor: int = 2, device: str | torch.device | None = None):
    """Whole batches (``batch_size=None``) in step order: a ``DataLoader`` (``num_workers`` processes
    decode and assemble whole batches, pinned if ``pin_memory``), wrapped when ``device`` is given in
    a :class:`~common.prefetch.DevicePrefetcher` that builds (renders) and moves the next
    ``prefetch_factor`` batches to the device in a background thread (on CUDA: a side stream).
    Sources that render on the GPU need ``num_workers=0`` (CUDA cannot run in forked workers)."""
    if renders_on_device(dataset.sources) and num_workers > 0:
        raise ValueError("a source renders on the GPU: it cannot run in DataLoader worker processes; use "
                         "num_workers 0 (the batches are then rendered ahead in a background thread)")
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw.update(prefetch_factor=prefetch_factor, persistent_workers=False)
    dl = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin_memory, **kw)
    if device is None:
        return dl
    from common.prefetch import DevicePrefetcher

    return DevicePrefetcher(dl, device, depth=prefetch_factor)


try:  # Lightning DataModule wrapper (optional import so that data.py works without lightning)
    import lightning.pytorch as _L

    class MixedDataModule(_L.LightningDataModule):
        """Serves the mixed batches of one curriculum phase to a Lightning ``Trainer``.

        The phase's trainer counts steps from 0; ``train_dataloader`` is called after a checkpoint is
        restored, so it starts at global step ``phase.start + trainer.global_step``.
        """

        def __init__(self, sources: Mapping[str, Any], curriculum: Curriculum, phase_index: int,
                     num_workers: int = 0, prefetch_factor: int = 2, seed: int = 0, image_size: int = 112,
                     prefetch_to_device: bool | None = None):
            super().__init__()
            self.sources = dict(sources)
            self.curriculum = curriculum
            self.phase = curriculum.phases[phase_index]
            self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
            self.seed, self.image_size = seed, image_size
            self.prefetch_to_device = prefetch_to_device  # None: on CUDA
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
            root = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
            on_device = renders_on_device(self.sources)
            pin = root.type == "cuda" and not on_device
            nw = min(self.num_workers, max(self.phase.end - start, 0)) if self.num_workers else 0
            if on_device and nw:
                log.info("a source renders on the GPU: batches are built in a background thread (num_workers 0)")
                nw = 0
            ahead = root.type == "cuda" if self.prefetch_to_device is None else bool(self.prefetch_to_device)
            return make_loader(ds, nw, pin_memory=pin, prefetch_factor=self.prefetch_factor,
                               device=root if ahead else None)

except ImportError:  # pragma: no cover
    MixedDataModule = None  # type: ignore
