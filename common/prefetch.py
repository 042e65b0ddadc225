"""Background producers: run an iterator in a thread, a bounded number of items ahead of its consumer.

:class:`Prefetch` is the one producer thread of the project: the engine renders the next block while
the main thread encodes and commits the last (``engine.pipeline``), and the trainer renders or copies
the next batch to the GPU while the current one trains (:class:`DevicePrefetcher`). Torch releases
the GIL inside its kernels and while it waits for the device, so the two threads overlap.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import torch

_END = object()


class Prefetch:
    """Iterate ``fn(x)`` for ``x`` in ``items`` in a background thread, at most ``depth`` results
    ahead of the consumer, in order.

    Args:
        fn: applied to each item in the thread (default: identity).
        items: any iterable; it is iterated in the thread too (a DataLoader, a generator).
        depth: results kept ready (>= 1).
        context: a factory of a context manager entered by the thread around the whole iteration
            (e.g. ``lambda: torch.cuda.stream(side)``).

    An exception raised in the thread is raised by the consumer at that position; :meth:`close` (or
    leaving a ``with`` block) stops the thread after its current item.
    """

    def __init__(self, fn: Callable[[Any], Any] | None, items: Iterable, depth: int = 2,
                 context: Callable[[], Any] | None = None) -> None:
        if int(depth) < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._q: queue.Queue = queue.Queue(maxsize=int(depth))
        self._stop = threading.Event()
        self._fn = fn or (lambda x: x)
        self._context = context or contextlib.nullcontext
        self._thread = threading.Thread(target=self._run, args=(items,), name="prefetch", daemon=True)
        self._thread.start()

    def _put(self, x) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(x, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterable) -> None:
        try:
            with self._context():
                for it in items:
                    if self._stop.is_set() or not self._put((True, self._fn(it))):
                        return
        except BaseException as e:  # handed to the consumer
            self._put((False, e))
            return
        self._put((True, _END))

    def __iter__(self) -> Iterator[Any]:
        while True:
            ok, x = self._q.get()
            if not ok:
                self.close()
                raise x
            if x is _END:
                return
            yield x

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def to_device(x: Any, device: torch.device, non_blocking: bool = True) -> Any:
    """``x`` (tensors in dicts, lists and tuples) moved to ``device``; other values kept."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, dict):
        return {k: to_device(v, device, non_blocking) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device, non_blocking) for v in x)
    return x


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)


class DevicePrefetcher:
    """Batches of ``loader`` produced ``depth`` ahead in a background thread and moved to ``device``
    there: on CUDA the thread works on a side stream (its copies from pinned memory, and any rendering
    a source does while the loader builds the batch, overlap the training step), and each batch is
    handed over with an event the consumer's stream waits on. On the CPU it is a plain prefetching
    thread (the CPU stand-in the tests exercise). Iterable once per ``iter()``, like a DataLoader."""

    def __init__(self, loader: Iterable, device: str | torch.device, depth: int = 2) -> None:
        self.loader, self.device, self.depth = loader, torch.device(device), int(depth)

    def __iter__(self) -> Iterator[Any]:
        dev = self.device
        side = torch.cuda.Stream(dev) if dev.type == "cuda" else None

        def move(batch):
            out = to_device(batch, dev)
            if side is None:
                return out, None
            ev = torch.cuda.Event()
            ev.record(side)
            return out, ev

        ctx = (lambda: torch.cuda.stream(side)) if side is not None else None
        with Prefetch(move, self.loader, self.depth, context=ctx) as pf:
            for batch, ev in pf:
                if ev is not None:
                    cur = torch.cuda.current_stream(dev)
                    cur.wait_event(ev)
                    for t in _tensors(batch):
                        if t.is_cuda:
                            t.record_stream(cur)  # its memory is not reused before the step is done
                yield batch
