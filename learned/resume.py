"""What a learned-generator run needs to resume *exactly* where it stopped (``last.ckpt``).

Lightning restores the weights, the optimisers, the schedulers and the step counters, but not

- the **data order**: a plain shuffled ``DataLoader`` restarts its epoch at the first batches of the
  seeded order on resume. :class:`StepBatchSampler` makes batch ``s`` of the run a pure function of
  ``(seed, s)`` (epoch ``s // batches_per_epoch`` is a seeded permutation) and starts at the
  trainer's restored ``global_step``;
- the **global RNG** (timesteps, noise, condition dropout, flips, latents): :func:`rng_state` /
  :func:`set_rng_state` carry the CPU and CUDA generator states (and Python's and NumPy's) in the
  checkpoint;
- the **EMA order**: Lightning calls callbacks' ``on_train_batch_end`` before the module's, so an
  EMA updated there would be saved (and exported) one update late and lose that update on resume.
  :class:`EMAUpdate`, placed first in the callback list, updates it before any checkpoint write.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import lightning.pytorch as L
import numpy as np
import torch

from engine.interface import derive_seed


class StepBatchSampler(torch.utils.data.Sampler):
    """Endless batch sampler: global batch ``s`` holds positions ``s % nb`` of the permutation of
    epoch ``s // nb`` (``nb`` global batches of ``batch_size * world_size`` per epoch, the last partial
    one dropped when ``drop_last``), the permutation drawn from
    ``derive_seed(seed, "learned-data-epoch", epoch)``; data-parallel rank ``rank`` gets its
    ``batch_size`` slice of it, so the ranks of one step see disjoint samples and one epoch covers
    every sample once across ranks. Iteration starts at ``start_step()`` (the trainer's
    ``global_step``, read when the loader is iterated). ``world_size=1`` is the single-process order."""

    def __init__(self, n: int, batch_size: int, seed: int, drop_last: bool = True,
                 start_step: Callable[[], int] | None = None, rank: int = 0, world_size: int = 1):
        if n < 1 or batch_size < 1:
            raise ValueError(f"need n >= 1 and batch_size >= 1, got {n} and {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        G = self.global_batch
        if self.world_size > 1 and self.n < G:  # a partial global batch would leave ranks without samples
            raise ValueError(f"{n} samples cannot fill one global batch of {batch_size} x {world_size} ranks")
        self.drop_last = bool(drop_last) and n >= G
        self.per_epoch = self.n // G if self.drop_last else -(-self.n // G)
        self.start_step = start_step or (lambda: 0)
        self._perm: tuple[int, torch.Tensor] | None = None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "learned-data-epoch", int(epoch)))
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def batch(self, step: int) -> list[int]:
        epoch, j = divmod(int(step), self.per_epoch)
        a = j * self.global_batch + self.rank * self.batch_size
        return self.permutation(epoch)[a: min(a + self.batch_size, (j + 1) * self.global_batch)].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        s = int(self.start_step())
        while True:
            yield self.batch(s)
            s += 1


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU and CUDA, Python, NumPy)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # plain types and tensors only: Lightning reads last.ckpt with torch.load(weights_only=True)
    st: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                          "numpy": [str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                                    float(gauss)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any] | None) -> None:
    """Restore what :func:`rng_state` returned (missing parts are left alone)."""
    if not st:
        return
    if "torch" in st:
        torch.set_rng_state(st["torch"].cpu() if isinstance(st["torch"], torch.Tensor) else st["torch"])
    if "python" in st:
        random.setstate(st["python"])
    if "numpy" in st:
        name, keys, pos, has_gauss, gauss = st["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in st["cuda"]])


class EMAUpdate(L.Callback):
    """Calls ``pl_module.update_ema()`` after every training batch; put it first in the callbacks
    (see the module docstring)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.update_ema()
