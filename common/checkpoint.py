"""The atomic ``last.ckpt`` callback every Lightning trainer uses (resume state)."""
from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as L

from .io import commit_tmp

__all__ = ["AtomicCheckpoint"]


class AtomicCheckpoint(L.Callback):
    """Write ``<dirpath>/last.ckpt`` every ``every_n_steps`` optimizer steps and at the end of
    training, atomically (temp file + fsync + ``os.replace``). ``every_n_steps=0``: end only."""

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int = 1000, filename: str = "last.ckpt"):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.every = int(every_n_steps)
        self.filename = filename
        self._last_saved: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def save(self, trainer: L.Trainer) -> None:
        step = int(trainer.global_step)
        if self._last_saved == step:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        tmp = self.dirpath / f".{self.filename}.tmp"
        trainer.save_checkpoint(tmp, weights_only=False)  # rank 0 writes; collective barrier inside
        if trainer.is_global_zero:
            commit_tmp(tmp, self.path)
        trainer.strategy.barrier("AtomicCheckpoint")
        self._last_saved = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every > 0 and trainer.global_step > 0 and trainer.global_step % self.every == 0:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)
