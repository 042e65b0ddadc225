"""The process pipeline that renders a dataset's blocks (see :mod:`engine.render` for the design).

Two modes, chosen by ``render_workers``: a pool of render processes that each build the source once
from its :class:`~engine.sources.SourceSpec` (or unpickle the caller's instance) and render, encode
and write whole blocks (:func:`render_worker_args` and the ``_render_worker_*`` functions); or the
main process rendering block after block with a pool of ``workers`` encode/write processes. Either
way :func:`run_blocks` commits the results strictly in block order: rec bytes, metadata, and only
then the block's journal line (:func:`engine.journal.append_journal`).
"""
from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.io import fsync_dir
from common.memory import keep_freed_memory
from common.prefetch import Prefetch

from . import formats as F
from . import journal as J
from . import metadata as M
from .errors import DiskFullError, RenderError, WorkerError
from .interface import IdentitySampler
from .journal import BLOCKS_DIR, block_range, meta_path
from .sources import SourceError, SourceSpec

DEFAULT_WORKERS = max(1, min(8, (os.cpu_count() or 2) - 1))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


#: Default ``--workers`` (encode processes) on CUDA: the GPU renders, every core but one encodes.
DEFAULT_CUDA_WORKERS = max(1, _usable_cpus() - 1)
#: Blocks the render-ahead thread may have rendered before the main thread takes them (main-process mode).
RENDER_AHEAD = 2


#: Default ``--render-workers`` on CPU devices (on CUDA the default is 0: render in the main process).
DEFAULT_RENDER_WORKERS = max(1, min(8, _usable_cpus()))
DEFAULT_MP_CONTEXT = "forkserver"


@dataclass
class Timers:
    """Seconds per stage of a render run (reported in ``summary.json``'s ``time_s``)."""

    setup: float = 0.0
    render: float = 0.0
    encode: float = 0.0
    write: float = 0.0
    wait: float = 0.0
    commit: float = 0.0
    finalize: float = 0.0


def source_spec(source: str | SourceSpec, preset: str = "wild", size: int = 112, aligned: bool = True,
                device: str = "cpu", overrides: dict | None = None, checkpoint: str | os.PathLike | None = None
                ) -> SourceSpec:
    """The :class:`SourceSpec` of a ``render_dataset`` call (a spec given as ``source`` is used as is);
    ``checkpoint`` (learned sources only) is one of its keywords only when given."""
    if isinstance(source, SourceSpec):
        return source
    kwargs: dict[str, Any] = dict(preset=preset, size=size, aligned=aligned, device=device, overrides=dict(overrides or {}))
    if checkpoint is not None:
        kwargs["checkpoint"] = str(checkpoint)
    return SourceSpec(str(source), kwargs)


def make_source(source: SourceSpec | IdentitySampler) -> tuple[IdentitySampler, str]:
    if isinstance(source, IdentitySampler):
        cls = type(source)
        return source, f"{cls.__module__}:{cls.__qualname__}"
    try:
        src = source.create()
    except SourceError as e:
        raise RenderError(str(e)) from None
    except (ValueError, TypeError, KeyError) as e:
        raise RenderError(f"cannot create source {source.name!r} with preset {source.kwargs.get('preset')!r}: {e}") from None
    return src, source.name


@dataclass
class Ctx:
    out: Path
    source: IdentitySampler
    identities: Any
    desc: dict
    seed: int
    ids: int
    per_id: int
    block_ids: int
    num_blocks: int
    want_if: bool
    want_rec: bool
    fsync: bool
    tm: Timers


def block_images(ctx: Ctx, b: int) -> int:
    a, e = block_range(b, ctx.block_ids, ctx.ids)
    return (e - a) * ctx.per_id


@dataclass(frozen=True)
class _Job:
    """What a process needs, besides the source and the identity table, to render + write a block
    (small and picklable: sent once to every render worker)."""

    out: str
    seed: int
    ids: int
    per_id: int
    block_ids: int
    size: int
    want_if: bool
    want_rec: bool
    fsync: bool

    @classmethod
    def of(cls, ctx: Ctx) -> "_Job":
        return cls(str(ctx.out), ctx.seed, ctx.ids, ctx.per_id, ctx.block_ids, int(ctx.desc["size"]), ctx.want_if,
                   ctx.want_rec, ctx.fsync)


def _block_work(job: _Job | Ctx, b: int):
    a, e = block_range(b, job.block_ids, job.ids)
    rows = torch.arange(a, e, dtype=torch.long).repeat_interleave(job.per_id)
    var = torch.arange(job.per_id, dtype=torch.long).repeat(e - a)
    return rows, var


def _render_block(job: _Job, source: IdentitySampler, identities, b: int):
    """Render block ``b`` -> (uint8 (n,H,W,3) images, labels, ImageFolder paths, rec keys, metadata table)."""
    rows, var = _block_work(job, b)
    rb = source.render(identities, rows, var, job.seed)
    n, s = len(rows), job.size
    if tuple(rb.images.shape) != (n, 3, s, s):
        raise RuntimeError(f"source rendered images of shape {tuple(rb.images.shape)}, expected {(n, 3, s, s)}")
    if not (torch.equal(rb.identity.cpu().long(), rows) and torch.equal(rb.variation.cpu().long(), var)):
        raise RuntimeError("source returned identity/variation indices that differ from the requested rows")
    imgs = F.to_uint8_hwc(rb.images)
    index = (rows * job.per_id + var).tolist()
    paths = [F.image_relpath(i, k, job.ids, job.per_id) for i, k in zip(rows.tolist(), var.tolist())] if job.want_if else None
    keys = [i + 1 for i in index] if job.want_rec else None
    table = M.image_table(rb, identities, job.per_id, paths, keys)
    return imgs, rows.tolist(), paths, keys, table


# -- render workers (--render-workers >= 1) ---------------------------------------------------------

_WORKER: dict[str, Any] = {}  # per-process state of a render worker, set by _render_worker_init


def render_worker_args(ctx: Ctx, source: SourceSpec | IdentitySampler, say) -> tuple | None:
    """Initializer args of the render pool, or ``None`` (render in the main process) if the caller's
    source instance cannot be pickled."""
    import pickle

    if isinstance(source, IdentitySampler):
        try:
            spec: tuple = ("pickle", pickle.dumps(source, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as e:  # PicklingError, TypeError, AttributeError (local classes, lambdas, handles)
            say(f"note: the {type(source).__name__} source instance cannot be pickled to render workers "
                f"({type(e).__name__}: {e}); rendering in the main process (render_workers=0)")
            return None
    else:
        spec = ("create", source)
    ids_blob = pickle.dumps(ctx.identities, protocol=pickle.HIGHEST_PROTOCOL)
    return _Job.of(ctx), spec, ids_blob, M.json_bytes(ctx.source.config())


def _render_worker_init(job: _Job, spec: tuple, ids_blob: bytes, config_json: bytes) -> None:
    """Pool initializer: build the source and load the identity table once per process; torch runs
    single-threaded (determinism, and no oversubscription). Errors are kept and raised by each task
    (an initializer exception would only break the pool without a message)."""
    import pickle

    torch.set_num_threads(1)
    keep_freed_memory()  # the worker's tensors reuse freed memory (no fresh page faults per pass)
    _WORKER.clear()
    try:
        kind, payload = spec
        src = pickle.loads(payload) if kind == "pickle" else make_source(payload)[0]
        if M.json_bytes(src.config()) != config_json:
            raise RuntimeError("the source built in the worker has a different config() than in the main process")
        _WORKER.update(job=job, source=src, identities=pickle.loads(ids_blob))
    except Exception as e:
        _WORKER["error"] = f"{type(e).__name__}: {e}"


def _render_worker_block(b: int) -> tuple[bytes | None, bytes, int, float, float, float]:
    """Render-pool task: render block ``b``, encode + write its images (exactly what the encode pool does
    for a main-process block), frame its rec records and serialize its metadata. Returns
    ``(framed rec records or None, metadata parquet bytes, images, render s, encode s, write s)``."""
    if "error" in _WORKER:
        raise WorkerError(f"a render worker could not set up the source ({_WORKER['error']}); "
                          "use --render-workers 0 to render in the main process")
    job: _Job = _WORKER["job"]
    t0 = time.perf_counter()
    imgs, labels, paths, keys, table = _render_block(job, _WORKER["source"], _WORKER["identities"], b)
    t1 = time.perf_counter()
    framed, enc, wr = F.encode_and_write_chunk(imgs, job.out, paths, keys, labels if keys is not None else None, job.fsync)
    t2 = time.perf_counter()
    meta = M.parquet_bytes(table)
    return framed, meta, len(imgs), t1 - t0, enc + time.perf_counter() - t2, wr


# -- pools -----------------------------------------------------------------------------------------


def _mp_context(mp_context: str, preload: list[str]):
    import multiprocessing as mp

    mctx = mp.get_context(mp_context)
    if mp_context == "forkserver":
        mctx.set_forkserver_preload(preload)  # only takes effect if the fork server is not running yet
    return mctx


def _make_pool(workers: int, mp_context: str):
    if workers == 0:
        return None
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(mp_context, ["engine.formats"]))


def _make_render_pool(workers: int, mp_context: str, initargs: tuple):
    from concurrent.futures import ProcessPoolExecutor

    # not engine.render itself: under ``python -m engine.render`` each child re-runs it as __mp_main__
    return ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(mp_context, ["engine.metadata"]),
                               initializer=_render_worker_init, initargs=initargs)


class _Done:
    """A synchronous stand-in for a Future (``--workers 0``)."""

    def __init__(self, fn, *args):
        try:
            self._r, self._e = fn(*args), None
        except BaseException as e:  # re-raised on result()
            self._r, self._e = None, e

    def result(self):
        if self._e is not None:
            raise self._e
        return self._r


def run_blocks(ctx, todo, jpath, part, rec_off, workers, render_workers, init, mp_context, progress, shard_total,
                on_cuda, say, render_pool=None) -> int:
    """Render, write and commit the blocks ``todo`` in order; returns the images rendered.
    ``render_pool``: a ready pool with ``submit``/``shutdown`` used instead of the local render
    processes (:class:`engine.ray_render.RayRenderPool`)."""
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    tm = ctx.tm
    (ctx.out / BLOCKS_DIR).mkdir(exist_ok=True)
    if ctx.want_if:
        (ctx.out / F.IMAGES_DIR).mkdir(exist_ok=True)
    todo_images = sum(block_images(ctx, b) for b in todo)
    bar = tqdm(total=shard_total, initial=shard_total - todo_images, unit="img", desc="render",
               disable=not progress, dynamic_ncols=True, smoothing=0.1)
    inflight: deque = deque()
    rec_f = open(part, "ab") if part is not None else None
    rendered = 0
    state = {"rec_off": rec_off}
    root = str(ctx.out)
    job = _Job.of(ctx)
    pool = None
    ahead = None
    prev_threads = torch.get_num_threads()
    if render_workers:
        # a local pool hands each task to whichever process is free; a pool that binds a block to a
        # worker when it is submitted (Ray actors) says how many blocks it needs queued to stay busy
        max_inflight = getattr(render_pool, "max_inflight", render_workers + 1)
    else:
        max_inflight = max(1, workers + 1)
        if not on_cuda:
            torch.set_num_threads(1)  # see the module docstring: thread count must not change the bytes

    def commit(item) -> None:
        """Wait for block ``b``'s results, then make it durable: rec bytes (fsynced), metadata, dirs,
        and only then its journal line."""
        nonlocal rendered
        b, futs, meta, n = item
        t0 = time.perf_counter()
        results = [f.result() for f in futs]
        tm.wait += time.perf_counter() - t0
        if meta is None:  # render worker: one result for the whole block
            framed, meta, got, t_render, t_enc, t_wr = results[0]
            if got != n:
                raise RuntimeError(f"render worker returned {got} images for block {b}, expected {n}")
            blobs = [framed]
            tm.render += t_render
            tm.encode += t_enc
            tm.write += t_wr
        else:
            blobs = [r[0] for r in results]
            for _, enc, wr in results:
                tm.encode += enc
                tm.write += wr
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"block": b, "images": n}
        if rec_f is not None:
            start = state["rec_off"]
            for blob in blobs:
                rec_f.write(blob)
            rec_f.flush()
            if ctx.fsync:
                os.fsync(rec_f.fileno())
            state["rec_off"] = start + sum(len(x) for x in blobs)
            entry.update(rec_start=start, rec_end=state["rec_off"])
        F.atomic_write_bytes(meta_path(ctx.out, b), meta if isinstance(meta, bytes) else M.parquet_bytes(meta))
        if ctx.fsync:
            if ctx.want_if:
                fsync_dir(ctx.out / F.IMAGES_DIR)
            fsync_dir(ctx.out / BLOCKS_DIR)
        J.append_journal(jpath, entry)  # via the module: tests patch it
        tm.commit += time.perf_counter() - t0
        rendered += n
        bar.update(n)

    try:
        if render_workers:
            pool = render_pool or _make_render_pool(min(render_workers, len(todo)), mp_context, init)
            for b in todo:
                inflight.append((b, [pool.submit(_render_worker_block, b)], None, block_images(ctx, b)))
                while len(inflight) >= max_inflight:
                    commit(inflight.popleft())
        else:
            pool = _make_pool(workers, mp_context)

            def render_one(b: int):
                t0 = time.perf_counter()
                out = _render_block(job, ctx.source, ctx.identities, b)
                return b, out, time.perf_counter() - t0

            ahead = Prefetch(render_one, todo, RENDER_AHEAD)
            for b, (imgs, labels, paths, keys, table), t_render in ahead:
                tm.render += t_render
                n = len(imgs)
                nchunks = max(1, min(workers, math.ceil(n / 16))) if workers else 1
                step = math.ceil(n / nchunks)
                futs = []
                for a in range(0, n, step):
                    args = (
                        imgs[a:a + step], root,
                        paths[a:a + step] if paths is not None else None,
                        keys[a:a + step] if keys is not None else None,
                        labels[a:a + step] if keys is not None else None,
                        ctx.fsync,
                    )
                    futs.append(pool.submit(F.encode_and_write_chunk, *args) if pool is not None else _Done(F.encode_and_write_chunk, *args))
                inflight.append((b, futs, table, n))
                while len(inflight) >= max_inflight:
                    commit(inflight.popleft())
        while inflight:
            commit(inflight.popleft())
    except OSError as e:
        if F.is_enospc(e):
            raise DiskFullError(
                f"no space left on device while writing {ctx.out} ({e.filename or 'output'}); "
                "free some space and rerun the same command to resume"
            ) from None
        raise
    except BrokenProcessPool:
        raise WorkerError(
            f"a {'render' if render_workers else 'encode'} worker process died unexpectedly (killed, or out of memory?); "
            "the journal is consistent: rerun the same command to resume"
        ) from None
    finally:
        bar.close()
        if rec_f is not None:
            try:
                rec_f.close()
            except OSError:
                pass
        if ahead is not None:
            ahead.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if torch.get_num_threads() != prev_threads:
            torch.set_num_threads(prev_threads)
    return rendered
