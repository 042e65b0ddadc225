"""The image sets a generator evaluation embeds: a dataset folder or a rendered source, each embedded once
in batches (:class:`EmbeddedSet`: embeddings, labels, a few images for the pictures)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import EvaluateError

from .eval_metrics import SHEET_IDS, SHEET_VARIATIONS

# ------------------------------------------------------------------------------------------------
# image sets
# ------------------------------------------------------------------------------------------------


@dataclass
class EmbeddedSet:
    """A set of images embedded once: unit ``embeddings`` (N, D) float32 on CPU, ``labels`` (N,) in
    ``0..C-1``, ``variation`` (N,) index of each image within its identity, ``names`` (C identity names),
    ``conditions`` ((C, D') identity conditions or ``None``), ``fetch(indices)`` -> images (n, 3, H, W)
    in [0, 1] (re-read or re-rendered on demand), ``item_name(i)``, ``describe`` and ``seconds``."""

    embeddings: torch.Tensor
    labels: torch.Tensor
    variation: torch.Tensor
    names: list[str]
    fetch: Callable[[Sequence[int]], torch.Tensor]
    item_name: Callable[[int], str]
    describe: dict[str, Any]
    conditions: torch.Tensor | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_identities(self) -> int:
        return len(self.names)


class _Collate:
    """DataLoader collate: uint8 images of any size -> float (B, 3, H, W) in [-1, 1] at ``size``."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, batch):
        out = []
        for img, _label in batch:
            x = img.float().div(127.5).sub(1.0).unsqueeze(0)
            if tuple(x.shape[-2:]) != self.size:
                x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                                  antialias=x.shape[-1] > self.size[1])
            out.append(x)
        return torch.cat(out)


def _resize01(images: list[torch.Tensor], size: tuple[int, int] | None) -> torch.Tensor:
    out = []
    for img in images:
        x = img.float().div(255.0).unsqueeze(0) if img.dtype == torch.uint8 else img.float().unsqueeze(0)
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > size[1]).clamp(0, 1)
        out.append(x)
    return torch.cat(out) if out else torch.zeros(0, 3, 1, 1)


def _check_positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum):
        raise EvaluateError(f"{name} must be an integer >= {minimum}, got {value!r}")


def embed_dataset(path: str | os.PathLike, encoder, max_images: int | None = None, batch_size: int = 128,
                  workers: int = 0, min_identities: int = 2, what: str = "dataset") -> EmbeddedSet:
    """Embed a dataset read by :func:`engine.formats.open_dataset` (synthface output dir, ImageFolder
    ``DIR/<identity>/<img>``, or RecordIO). With ``max_images``, the first ``max_images`` images (in
    identity order) are used. Images are resized to the encoder's input size before embedding."""
    from engine.formats import CorruptRecordError, open_dataset

    _check_positive("max_images", max_images)
    _check_positive("batch_size", batch_size)
    _check_positive("workers", workers, 0)
    p = Path(path).expanduser()
    if not p.exists() and not Path(str(p) + ".rec").is_file():
        raise EvaluateError(f"{what} not found: {p}")
    try:
        ds = open_dataset(p)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise EvaluateError(f"{what} {p}: {e}") from None
    except (ValueError, CorruptRecordError) as e:
        raise EvaluateError(f"{what} {p} is not a usable face dataset: {e}") from None
    n = len(ds) if max_images is None else min(len(ds), int(max_images))
    if n == 0:
        raise EvaluateError(f"{what} {p} holds no images")
    raw = ds.labels[:n].long()
    uniq, labels = torch.unique(raw, sorted=True, return_inverse=True)
    classes = list(getattr(ds, "classes", None) or [str(i) for i in range(ds.num_classes)])
    names = [classes[int(u)] if int(u) < len(classes) else str(int(u)) for u in uniq]
    if len(names) < min_identities:
        raise EvaluateError(f"{what} {p} has {len(names)} identit{'y' if len(names) == 1 else 'ies'}"
                            f"{' in its first ' + str(n) + ' images' if n < len(ds) else ''}; "
                            f"need at least {min_identities} (layout DIR/<identity>/<image>)")
    variation = torch.zeros(n, dtype=torch.long)
    seen: dict[int, int] = {}
    for i, lab in enumerate(labels.tolist()):
        variation[i] = seen.get(lab, 0)
        seen[lab] = int(variation[i]) + 1
    subset = torch.utils.data.Subset(ds, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_Collate(encoder.input_size))
    t0 = time.perf_counter()
    embs = []
    try:
        for x in loader:
            embs.append(encoder.embed(x, batch_size=batch_size))
    except CorruptRecordError as e:
        raise EvaluateError(f"{what} {p}: {e}") from None
    seconds = time.perf_counter() - t0
    first = ds[0][0]
    display = (int(first.shape[-2]), int(first.shape[-1]))

    def fetch(indices: Sequence[int]) -> torch.Tensor:
        return _resize01([ds[int(i)][0] for i in indices], display)

    def item_name(i: int) -> str:
        return os.path.relpath(ds.describe_item(int(i)), str(ds.root)) if ds.kind == "imagefolder" else f"record {i}"

    return EmbeddedSet(
        embeddings=torch.cat(embs), labels=labels.long(), variation=variation, names=names, fetch=fetch,
        item_name=item_name, seconds=seconds,
        describe={"kind": "dataset", "path": str(p.resolve()) if p.exists() else str(p), "format": ds.kind,
                  "images_total": len(ds), "images_used": n, "identities": len(names)},
    )


def embed_source(source, encoder, ids: int, per_id: int, seed: int = 0, batch_size: int = 128,
                 keep: tuple[int, int] = (SHEET_IDS, SHEET_VARIATIONS)) -> EmbeddedSet:
    """Sample ``ids`` identities from ``source`` (an :class:`engine.interface.IdentitySampler`) with
    ``seed``, render ``per_id`` variations of each (identity-major, in batches) and embed them. Images of
    the first ``keep`` identities x variations are kept for the contact sheet; others are re-rendered
    on demand by ``fetch`` (the interface makes image ``(seed, identity, variation)`` deterministic)."""
    _check_positive("ids", ids, 2)
    _check_positive("per_id", per_id, 2)
    _check_positive("batch_size", batch_size)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise EvaluateError(f"seed must be an integer >= 0, got {seed!r}")
    t0 = time.perf_counter()
    identities = source.sample_identities(int(ids), seed=int(seed))
    if len(identities) != ids:
        raise EvaluateError(f"source returned {len(identities)} identities for ids={ids}")
    total = ids * per_id
    flat = torch.arange(total)
    rows_all, vars_all = flat // per_id, flat % per_id
    embs, kept = [], {}
    for s in range(0, total, batch_size):
        rows, variations = rows_all[s:s + batch_size], vars_all[s:s + batch_size]
        batch = source.render(identities, rows, variations, seed=int(seed))
        imgs = batch.images.float()
        embs.append(encoder.embed(imgs.mul(2.0).sub(1.0), batch_size=batch_size))
        for j in range(len(rows)):
            if int(rows[j]) < keep[0] and int(variations[j]) < keep[1]:
                kept[s + j] = imgs[j].detach().cpu().clamp(0, 1)
    seconds = time.perf_counter() - t0

    def fetch(indices: Sequence[int]) -> torch.Tensor:
        indices = [int(i) for i in indices]
        missing = [i for i in indices if i not in kept]
        got = {}
        for s in range(0, len(missing), batch_size):
            part = missing[s:s + batch_size]
            b = source.render(identities, rows_all[part], vars_all[part], seed=int(seed))
            got.update({i: b.images[j].float().cpu().clamp(0, 1) for j, i in enumerate(part)})
        return torch.stack([kept[i] if i in kept else got[i] for i in indices]) if indices else torch.zeros(0, 3, 1, 1)

    def item_name(i: int) -> str:
        return f"identity {int(rows_all[i])} variation {int(vars_all[i])}"

    cond = identities.embedding.detach().cpu().float() if identities.embedding is not None else None
    cfg = {}
    try:
        cfg = source.config()
    except Exception:  # config is informative only
        pass
    return EmbeddedSet(
        embeddings=torch.cat(embs), labels=rows_all.clone(), variation=vars_all.clone(),
        names=[str(i) for i in range(ids)], fetch=fetch, item_name=item_name, conditions=cond, seconds=seconds,
        describe={"kind": "source", "source": getattr(source, "name", type(source).__name__), "ids": int(ids),
                  "per_id": int(per_id), "seed": int(seed), "images_used": total, "identities": int(ids)},
        extra={"config": cfg, "identity_report": identities.report},
    )


