"""The training progress line (one Lightning callback for every trainer).

:class:`ProgressPrinter` prints, on rank 0, an opening line at the start of training and then one
line every ``every`` optimizer steps and at the last step::

    <label>step S/T <what describe(outputs) says: "loss X"> lr L N img/s

``training`` subclasses it to show the curriculum phase and global step; the learned trainers use
it as is (``label="learned.train: "``).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import lightning.pytorch as L

__all__ = ["ProgressPrinter", "describe_loss"]


def describe_loss(outputs: Any) -> str:
    """``loss X`` of a training step's outputs (nan when there is none)."""
    loss = float(outputs["loss"]) if isinstance(outputs, Mapping) and "loss" in outputs else float("nan")
    return f"loss {loss:.4f}"


class ProgressPrinter(L.Callback):
    """One printed line every ``every`` steps (and at the last): ``label``, step, what
    ``describe(outputs)`` says of the step's training outputs (the losses), lr, images/s.

    ``total``: the last step; ``batch_size``: images per step and process; ``ips_digits``: decimals of
    the images/s figure. Subclasses override :meth:`opening` and :meth:`position`."""

    def __init__(self, every: int, printer: Callable[[str], None] = print, *, total: int = 0, batch_size: int = 0,
                 label: str = "", describe: Callable[[Any], str] | None = None, ips_digits: int = 1):
        super().__init__()
        self.every, self.printer = max(1, int(every)), printer
        self.total, self.batch_size, self.label = total, batch_size, label
        self.describe = describe or describe_loss
        self.ips_digits = ips_digits
        self._t0, self._s0 = 0.0, 0

    def opening(self, trainer, pl_module) -> str:
        """The line printed when training starts."""
        return f"{self.label}step {self._s0}/{self.total}"

    def position(self, trainer, pl_module) -> tuple[str, int, int, int, int]:
        """``(label, step shown, total shown, trainer step of the last line, images per step)``."""
        step = int(trainer.global_step)
        return self.label, step, self.total, self.total, self.batch_size

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0, self._s0 = time.perf_counter(), int(trainer.global_step)
        if trainer.is_global_zero:
            self.printer(self.opening(trainer, pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        label, shown, total, last, batch_size = self.position(trainer, pl_module)
        if not trainer.is_global_zero or (step % self.every and step != last):
            return
        dt = max(time.perf_counter() - self._t0, 1e-9)
        ips = max(step - self._s0, 1) * batch_size * trainer.world_size / dt
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        self.printer(f"{label}step {shown}/{total} {self.describe(outputs)} lr {lr:.3g} "
                     f"{ips:.{self.ips_digits}f} img/s")
