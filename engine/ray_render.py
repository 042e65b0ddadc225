"""Rendering a dataset's blocks on a Ray cluster (``python -m engine.render ... --ray [ADDRESS|auto|local]``).

The local render pool (:mod:`engine.pipeline`) runs blocks in processes of this machine; here the same
block function runs in Ray actors (one per ``--render-workers``, each holding one CPU, and one GPU when
the source renders on CUDA), anywhere in the cluster:

- the source is built once per actor from its :class:`~engine.sources.SourceSpec` (or unpickled from
  the caller's instance), and its ``config()`` is checked against the driver's;
- the identity table is sampled once, by the driver, and put in Ray's object store once
  (``ray.put``): every actor receives it by reference;
- an actor renders block ``b``, JPEG-encodes it, frames its RecordIO records and serialises its
  metadata, and returns the bytes; the **driver** writes everything (ImageFolder files, the rec
  part, the block's metadata) and then commits the block's journal line, strictly in block order
  (:func:`engine.pipeline.run_blocks`, unchanged). So the workers need no shared file system, the
  bytes are those of a local run, and a driver killed mid-run resumes from its journal: finished
  blocks are kept and never rendered twice;
- an actor that dies is restarted by Ray and its pending blocks retried (``max_restarts``,
  ``max_task_retries``); blocks are pure functions of (config, seed, block), so a retry gives the same
  bytes.

``--ray local`` starts a Ray runtime on this machine for the run (and stops it after); ``auto``
joins the cluster this machine is part of (``ray start``); anything else is an address
(``HOST:6379``, ``ray://HOST:10001``). The output directory is the driver's: a local folder, or any
path the driver can write with ordinary file operations and ``fcntl`` locks (a local disk, NFS,
Lustre; an object store through a FUSE mount such as ``s3fs``/``gcsfuse`` when it supports atomic
renames - else render to a local folder and copy the finished dataset, whose files are final).
"""
from __future__ import annotations

import threading
import time
from typing import Any

from . import formats as F
from . import metadata as M
from .errors import RenderError, WorkerError

__all__ = ["RayRenderPool", "RayRuntime", "connect"]


def connect(address: str, num_cpus: int | None = None) -> tuple[Any, bool]:
    """``(ray module, whether this call started the runtime)`` for ``--ray ADDRESS``: ``local`` starts
    one here (``num_cpus`` CPUs), ``auto`` or an address joins a running cluster."""
    try:
        import ray
    except ImportError:
        raise RenderError("--ray needs the ray package: pip install 'synthface[ray]' (or pip install ray)") from None
    if ray.is_initialized():
        return ray, False
    kw: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False, "logging_level": "ERROR"}
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, **kw)
        else:
            ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RenderError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
    return ray, True


class RayRuntime:
    """The Ray runtime of one render run, connected (``--ray local``: started) in a background thread
    from the start of the run, so that Ray's start-up (~2.5-4 s for a local runtime) overlaps the
    driver's set-up (building the source, sampling identities, checking the output), and stopped by
    the same thread after the last block, while the dataset is finalized; :meth:`join` waits for that
    (the run's wall time includes it).

    One thread does both because Ray starts its daemons with ``PR_SET_PDEATHSIG``, which fires when
    the *thread* that started them ends: it lives until the runtime is stopped (a daemon thread, so a
    driver that dies takes the runtime with it)."""

    def __init__(self, address: str, num_cpus: int | None = None):
        self.address = address
        self._result: tuple[Any, bool] | None = None
        self._error: BaseException | None = None
        self._ready, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(address, num_cpus), name="synthface-ray", daemon=True)
        self._thread.start()

    def _run(self, address: str, num_cpus: int | None) -> None:
        try:
            self._result = connect(address, num_cpus)
        except BaseException as e:  # re-raised in the caller's thread by get()
            self._error = e
        self._ready.set()
        if self._result is not None:  # the thread outlives whatever Ray started from it, until stop()
            self._stop.wait()
            if self._result[1]:  # started here (not a cluster joined): shut it down
                self._result[0].shutdown()

    def get(self) -> Any:
        """The connected ``ray`` module (waits for the connection; raises its :class:`RenderError`)."""
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self._result[0]

    def stop(self) -> None:
        """Stop the runtime if this run started it (not a cluster it joined); returns at once."""
        self._stop.set()

    def join(self) -> None:
        """Wait until the runtime is stopped (after :meth:`stop`)."""
        self._thread.join()


class _RenderActor:
    """One Ray render worker: the source and the identity table, kept for every block it renders."""

    def __init__(self, job, spec: tuple, config_json: bytes):
        import pickle

        import torch

        from . import pipeline as P

        torch.set_num_threads(1)  # as the local render workers: determinism and no oversubscription
        P._render_worker_init(job, spec, pickle.dumps(None), config_json)  # the table comes with the first block
        self._P = P

    def block(self, b: int, ids_box: list) -> tuple[list[bytes] | None, bytes | None, bytes, int, float, float]:
        """Render block ``b``: ``(jpeg bytes per image or None, framed rec records or None, metadata
        parquet bytes, images, render s, encode s)``. ``ids_box`` = [ObjectRef of the pickled identity
        table]: nested, so Ray passes the reference; the actor fetches the table once (again after a
        restart, since every call carries the reference)."""
        import pickle

        import ray

        P = self._P
        if "error" in P._WORKER:
            raise WorkerError(f"a Ray render worker could not set up the source ({P._WORKER['error']})")
        if P._WORKER.get("identities") is None:
            P._WORKER["identities"] = pickle.loads(ray.get(ids_box[0]))
        job = P._WORKER["job"]
        t0 = time.perf_counter()
        imgs, labels, paths, keys, table = P._render_block(job, P._WORKER["source"], P._WORKER["identities"], b)
        t1 = time.perf_counter()
        blobs, framed = F.encode_chunk(imgs, keys, labels if keys is not None else None)
        meta = M.parquet_bytes(table)
        return (blobs if job.want_if else None), framed, meta, len(imgs), t1 - t0, time.perf_counter() - t1


class _BlockFuture:
    """What :func:`engine.pipeline.run_blocks` waits on for a render-worker block: ``result()`` fetches
    the actor's bytes and writes the block's images on the driver, returning
    ``(framed rec or None, metadata bytes, images, render s, encode s, write s)``."""

    def __init__(self, pool: "RayRenderPool", ref, actor: int, b: int):
        self.pool, self.ref, self.actor, self.b = pool, ref, actor, b

    def result(self):
        ray = self.pool.ray
        try:
            blobs, framed, meta, n, t_render, t_enc = ray.get(self.ref)
        except ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, (RenderError, WorkerError, RuntimeError, ValueError)):
                raise cause from None
            raise WorkerError(f"Ray could not render block {self.b} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                              "the journal is consistent: rerun the same command to resume") from None
        finally:
            self.pool._done(self.actor, self.ref)
        t0 = time.perf_counter()
        if blobs is not None:
            from .pipeline import _block_work

            job = self.pool.job
            rows, var = _block_work(job, self.b)
            paths = [F.image_relpath(i, k, job.ids, job.per_id) for i, k in zip(rows.tolist(), var.tolist())]
            F.write_images(job.out, paths, blobs, job.fsync)
        return framed, meta, n, t_render, t_enc, time.perf_counter() - t0


class RayRenderPool:
    """A pool of ``workers`` Ray render actors with the ``submit`` / ``shutdown`` of the local render
    pool, for :func:`engine.pipeline.run_blocks`.

    Args:
        address: ``local``, ``auto`` or a cluster address (see :func:`connect`).
        workers: number of actors (blocks rendered at once).
        initargs: :func:`engine.pipeline.render_worker_args` of the run (job, source spec, pickled
            identity table, config JSON); the table goes to the object store once.
        gpus: GPUs per actor (1 when the source renders on CUDA, else 0).
    """

    def __init__(self, address: str, workers: int, initargs: tuple, gpus: float = 0.0, runtime: RayRuntime | None = None):
        if workers < 1:
            raise RenderError(f"--ray needs --render-workers >= 1, got {workers}")
        self.runtime = runtime or RayRuntime(address, num_cpus=workers if address == "local" else None)
        self._own_runtime = runtime is None
        self.ray = self.runtime.get()
        job, spec, ids_blob, config_json = initargs
        self.job = job
        ray = self.ray
        self.ids_ref = ray.put(ids_blob)  # once; every block call carries the reference (kept alive here)
        cls = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=3, max_task_retries=3)(_RenderActor)
        self.actors = [cls.remote(job, spec, config_json) for _ in range(workers)]
        self.running: list[set] = [set() for _ in range(workers)]  # per actor: its blocks not yet rendered
        # blocks in flight: a block is bound to its actor at submit time and the driver collects results
        # in block order, so an actor must have blocks queued while the driver waits for another's;
        # four per actor (results wait in the object store: ~1 MB per 80-image block at 112 px)
        self.max_inflight = 4 * workers + 1

    def submit(self, fn, b: int) -> _BlockFuture:
        """Queue block ``b`` on the actor with the fewest blocks still to render (``fn`` is the local
        pool's task function, named for symmetry; the actor runs the same block function). Counting
        rendered-but-uncollected blocks instead would starve a faster actor while the driver waits,
        in block order, for a slower one."""
        refs = [r for run in self.running for r in run]
        if refs:
            done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
            for run in self.running:
                run.difference_update(done)
        i = min(range(len(self.actors)), key=lambda k: (len(self.running[k]), k))
        ref = self.actors[i].block.remote(int(b), [self.ids_ref])
        self.running[i].add(ref)
        return _BlockFuture(self, ref, i, int(b))

    def _done(self, i: int, ref) -> None:
        self.running[i].discard(ref)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # already gone
                pass
        self.actors = []
        if self._own_runtime:  # else the run that passed the runtime stops it (after its finalize)
            self.runtime.stop()
            self.runtime.join()
