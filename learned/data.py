"""Training data for learned generators: face images with identity labels and encoder embeddings.

:class:`FaceTrainSet` opens an ImageFolder or RecordIO dataset through
:func:`engine.formats.open_dataset` and yields ``uint8`` images resized to the model size (the
trainer converts them to ``[-1, 1]`` and flips them at random on the device), their identity label
and the *condition embedding* of each image.

Embeddings are computed once per run by the frozen FR encoder on the full-resolution images,
flip-averaged (``normalize(e(x) + e(mirror x))``, so the condition of a flipped training image is
still right), and cached in ``<run>/cache/embeddings-<key>.pt``; the key hashes the dataset (path,
image count, labels, file names) and the encoder spec, so a changed dataset or encoder recomputes.

Conditioning (``DataConfig.condition``):

- ``image`` (default, as IDiff-Face): each image conditions on its *own* embedding. People with a
  single image are ordinary training examples.
- ``mean``: each image conditions on the normalised mean embedding of its identity; for a person
  with a single image that is its own embedding, so singletons still count.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from engine.formats import open_dataset

CACHE_VERSION = 1


def resize_uint8(img: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) uint8 -> same at ``size`` x ``size`` (bilinear, antialiased)."""
    squeeze = img.dim() == 3
    x = img[None] if squeeze else img
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size).round().clamp(0, 255).to(torch.uint8)
    return x[0] if squeeze else x


def to_signed(img: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return img.float() / 127.5 - 1.0


class FaceTrainSet(Dataset):
    """Face images + labels + condition embeddings (see the module docstring).

    ``ds[i]`` -> ``{"image": uint8 (3, S, S), "label": int64, "embedding": float (D,)}``; the
    batched ``__getitems__`` returns the same keys stacked (used by the DataLoader, one call per batch).
    :attr:`embeddings` must be set (:meth:`attach_embeddings`) before items are read.
    """

    def __init__(self, path: str | os.PathLike, image_size: int, format: str = "auto", max_images: int | None = None,
                 exclude_people: set[str] | None = None):
        """``exclude_people``: identity (class) names whose images are left out, e.g. the people of
        the LFW folds a generated dataset will be evaluated on (no generator sees them)."""
        self.source = open_dataset(path, format=format)
        self.path = str(Path(path).resolve())
        self.image_size = int(image_size)
        index = torch.arange(len(self.source))
        self.excluded_people = 0
        if exclude_people:
            classes = list(getattr(self.source, "classes", None) or [])
            if not classes:
                raise ValueError(f"{path}: this dataset has no identity names, so people cannot be excluded by name")
            drop = torch.tensor([c in exclude_people for c in classes], dtype=torch.bool)
            self.excluded_people = int(drop.sum())
            index = index[~drop[self.source.labels.long()]]
            if index.numel() == 0:
                raise ValueError(f"{path}: no image is left after excluding {len(exclude_people)} people")
        n = int(index.numel())
        self.n = min(n, int(max_images)) if max_images else n
        self.index = index[: self.n]
        self.labels = self.source.labels[self.index].clone()
        # compact labels 0..C-1 over the images kept
        uniq, self.labels = torch.unique(self.labels, return_inverse=True)
        self.num_identities = int(uniq.numel())
        self._cache: torch.Tensor | None = None
        self.embeddings: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n

    def original(self, i: int) -> torch.Tensor:
        """Image ``i`` at its stored resolution, uint8 (3, H, W)."""
        return self.source[int(self.index[i])][0]

    def load(self, i: int) -> torch.Tensor:
        """Image ``i`` resized to the model size, uint8 (3, S, S)."""
        if self._cache is not None:
            return self._cache[i]
        return resize_uint8(self.original(i), self.image_size)

    def preload(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Decode + resize every image once into one uint8 tensor (N, 3, S, S)."""
        S = self.image_size
        cache = torch.empty(self.n, 3, S, S, dtype=torch.uint8)
        for i in range(self.n):
            cache[i] = resize_uint8(self.original(i), S)
            if progress is not None and (i + 1) % 1000 == 0:
                progress(i + 1, self.n)
        self._cache = cache

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the images (for cache keys): path, kind, count, labels, file names."""
        h = hashlib.sha256()
        h.update(self.labels.numpy().tobytes())
        names = getattr(self.source, "paths", None) or [str(k) for k in getattr(self.source, "keys", [])]
        for i in self.index.tolist():
            h.update(str(names[i]).encode() + b"\0")
        return {"path": self.path, "kind": self.source.kind, "n": self.n, "content": h.hexdigest()[:16]}

    def attach_embeddings(self, per_image: torch.Tensor, condition: str = "image") -> None:
        """Set the condition of each image from the per-image embeddings (N, D) and ``condition``."""
        if per_image.shape[0] != self.n:
            raise ValueError(f"{per_image.shape[0]} embeddings for {self.n} images")
        e = per_image.float()
        if condition == "mean":
            D = e.shape[1]
            s = torch.zeros(self.num_identities, D).index_add_(0, self.labels, e)
            e = F.normalize(s, dim=-1)[self.labels]
        elif condition != "image":
            raise ValueError(f"condition must be 'image' or 'mean', got {condition!r}")
        self.embeddings = e.contiguous()

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.embeddings is None:
            raise RuntimeError("FaceTrainSet: attach_embeddings() first")
        return {"image": self.load(i), "label": self.labels[i], "embedding": self.embeddings[i]}

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        if self.embeddings is None:
            raise RuntimeError("FaceTrainSet: attach_embeddings() first")
        t = torch.as_tensor(idx, dtype=torch.long)
        imgs = self._cache[t] if self._cache is not None else torch.stack([self.load(i) for i in idx])
        return {"image": imgs, "label": self.labels[t], "embedding": self.embeddings[t]}

    def first_of_each_identity(self, k: int) -> list[int]:
        """Index of the first image of the first ``k`` identities (label order)."""
        first = torch.full((self.num_identities,), self.n, dtype=torch.long)
        first = first.scatter_reduce(0, self.labels, torch.arange(self.n), "amin")
        return first[: max(0, k)].tolist()


def batch_identity(batch):
    """DataLoader ``collate_fn`` for :meth:`FaceTrainSet.__getitems__` (already a batch)."""
    return batch


@torch.no_grad()
def compute_embeddings(data: FaceTrainSet, encoder, batch_size: int = 256,
                       progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """(N, D) flip-averaged unit embeddings of every training image at full resolution (CPU float)."""
    device = next(encoder.parameters()).device
    out = []
    for s in range(0, data.n, batch_size):
        imgs = [data.original(i) for i in range(s, min(s + batch_size, data.n))]
        shapes = {tuple(im.shape) for im in imgs}
        if len(shapes) > 1:  # mixed sizes: bring them to the encoder's input size first
            imgs = [resize_uint8(im, encoder.input_size[0]) for im in imgs]
        x = to_signed(torch.stack(imgs)).to(device)
        e = encoder(x) + encoder(x.flip(-1))
        out.append(F.normalize(e.float(), dim=-1).cpu())
        if progress is not None:
            progress(min(s + batch_size, data.n), data.n)
    return torch.cat(out)


def cached_embeddings(data: FaceTrainSet, encoder, cache_dir: str | os.PathLike, batch_size: int = 256,
                      log: Callable[[str], None] = print) -> torch.Tensor:
    """:func:`compute_embeddings`, cached in ``cache_dir/embeddings-<key>.pt`` keyed by the dataset
    fingerprint and the encoder spec (atomic write; read with ``weights_only=True``)."""
    from common.io import atomic_torch_save

    key_src = {"version": CACHE_VERSION, "data": data.fingerprint(), "encoder": encoder.spec, "flip_avg": True}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"embeddings-{key}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == key and blob["embeddings"].shape[0] == data.n:
                log(f"embeddings: cached {path}")
                return blob["embeddings"]
        except Exception as e:  # unreadable cache: recompute
            log(f"embeddings: ignoring unreadable cache {path} ({e})")
    log(f"embeddings: encoding {data.n} images with the frozen encoder ...")
    emb = compute_embeddings(data, encoder, batch_size)
    atomic_torch_save({"key": key, "source": json.dumps(key_src, default=str), "embeddings": emb}, path)
    return emb
