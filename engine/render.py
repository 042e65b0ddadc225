"""Render a synthetic face dataset to disk: ``python -m engine.render --ids N [...]``.

Design
------
* **Blocks.** Identities are cut into fixed blocks of ``--block-ids`` identities; block ``b`` holds
  identities ``[b*B, min((b+1)*B, N))`` x all ``K`` variations and is *always* rendered as one
  ``source.render`` call with rows identity-major (``k`` fastest). So floating-point batching can
  never differ between runs, worker counts or shards. ``block_ids`` is part of the dataset config.
* **Shards.** ``--shard K/N`` renders blocks ``b`` with ``b % N == K`` (round-robin). Every shard
  samples the whole identity table (cheap, prefix-stable) and writes its ImageFolder files directly
  into the shared ``images/`` tree (disjoint per shard). For RecordIO each shard appends its blocks,
  in order, to its own part ``.parts/rec-K-of-N.rec`` (unsharded runs, ``N == 1``, append to
  ``train.rec`` directly).
* **Merge / finalize.** When a shard finishes and the journals of all ``N`` shards show every block
  done, it finalizes the dataset (automatic; ``--merge`` does it by hand, e.g. after copying the
  shard outputs of several machines into one dir): it concatenates the part ranges in block order
  into ``train.rec``, appends the header record 0 and the identity records, writes ``train.idx`` and
  ``property``, concatenates the per-block metadata into ``metadata.parquet``, draws
  ``contact_sheet.png`` and writes ``.journal/complete.json``. Finalizing is serialized by a lock and
  idempotent, and rec framing does not depend on file offsets, so the merged files are
  byte-identical to an unsharded run. The part files are deleted after a successful merge.
* **Journal / resume.** ``.journal/shard-K-of-N.jsonl`` gets one fsynced JSON line per completed
  block, written only after its images, rec bytes (fsynced) and metadata (``.blocks/meta-B.parquet``)
  are durable. A rerun of the same command drops a torn last line, truncates the rec part back to
  the last journaled offset, removes leftover temp files of its blocks and renders only the missing
  blocks. All other files are written atomically (temp + fsync + rename). Re-rendered blocks produce
  identical bytes, so an interrupted + resumed dataset equals an uninterrupted one byte for byte.
* **Pipeline.** Two modes, chosen by ``--render-workers R``:

  - ``R >= 1`` (default on CPU: ``min(8, cpu count)``): a pool of ``R`` render processes
    (``--mp-context``, ``forkserver`` by default). Each builds the source once (from the resolved
    source name/preset/size/aligned/device/overrides, or unpickles the caller's ``IdentitySampler``
    instance), receives the identity table once and runs torch single-threaded. The task for block
    ``b`` renders it, JPEG-encodes and writes its images, frames its rec records and serializes its
    metadata table; the main process keeps at most ``R + 1`` blocks in flight and only commits
    (below), strictly in block order. ``--workers`` is not used in this mode.
  - ``R == 0`` (default on CUDA): a render-ahead thread of the main process renders block after
    block on the device (a CUDA source renders and post-processes on the GPU and only uint8 images
    cross to the host), at most 2 blocks ahead; JPEG encoding (fixed Pillow settings, quality 95,
    4:4:4), ImageFolder writes and rec framing run in a ``--workers`` process pool (default on CUDA:
    every core but one; same context, preloading ``engine.formats``; ``--workers 0``: in the main
    process too), overlapped with rendering, at most ``workers + 1`` blocks in flight; the main
    thread commits results in block order.

  On CPU, rendering always runs with ``torch.set_num_threads(1)`` (the main process restores its
  thread count afterwards): floating-point results of torch kernels may depend on the number of
  intra-op threads, and this keeps the bytes independent of ``--workers``, ``--render-workers``,
  ``--shard`` and of the machine's core count. (Several single-threaded processes are also faster
  than one multi-threaded one for the small kernels of the CPU renderers.)
* **Config check.** ``dataset.json`` (written first) holds the full resolved config (source name and
  ``source.config()``, seed, counts, size, format, device, block size, JPEG settings, layout,
  separability report, synthface and library versions). A rerun whose config differs (apart from the
  recorded versions) is refused: datasets are never mixed. Same config -> resume.

Files: this module holds :func:`render_dataset` (checks, source, identity table, ``dataset.json``,
then journal -> pipeline -> finalize, and ``summary.json``) and the CLI; :mod:`engine.journal` the
journal, shard and merge bookkeeping; :mod:`engine.pipeline` the process pipeline;
:mod:`engine.formats` the RecordIO framing; :mod:`engine.errors` the errors.

Output layout (``OUT``)::

    dataset.json  metadata.parquet  contact_sheet.png  summary.json
    images/<identity:06d>/<k:03d>.jpg              (--format imagefolder|both)
    train.rec  train.idx  property                 (--format rec|both)
    .journal/  .blocks/  .parts/                   (bookkeeping)
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch

from common import cli
from common.config import ConfigError, apply_overrides, from_dict, nest_dotted
from common.errors import EXIT_FAILED

from . import formats as F
from . import metadata as M
from .errors import DiskFullError, RenderError, WorkerError  # noqa: F401  (engine.render's public names)
from .interface import IdentitySampler, separability_report
from .journal import (COMPLETE_NAME, JOURNAL_DIR, check_or_write_desc, finalize, flock, journal_n, journal_path,
                      missing_blocks, parse_shard, part_path, read_journal, remove_block_tmp, shard_blocks)
from .pipeline import (DEFAULT_CUDA_WORKERS, DEFAULT_MP_CONTEXT, DEFAULT_RENDER_WORKERS, DEFAULT_WORKERS, Ctx, Timers, block_images,
                       make_source, render_worker_args, run_blocks, source_spec)

LAYOUT_VERSION = 1
FORMATS = ("imagefolder", "rec", "both")
SUMMARY_NAME = "summary.json"


def default_out(source: str, preset: str, ids: int, per_id: int, seed: int) -> str:
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", source.split(":")[-1]).strip("_") or "source"
    return f"out/{name}-{preset}-{ids}x{per_id}-s{seed}"


def _software() -> dict[str, str]:
    """Library versions that can change output bytes (recorded, not enforced on resume)."""
    import platform

    import numpy
    import PIL
    import pyarrow

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "pyarrow": pyarrow.__version__}


# --------------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------------


def render_dataset(*args, **kwargs) -> dict[str, Any]:
    """Render (or resume, or merge) a dataset; returns the summary dict (also saved as summary.json).

    Signature: ``render_dataset(ids, per_id=50, source="morphable", preset="wild", out=None, size=112,
    aligned=True, format="imagefolder", seed=0, shard=None, workers=None, device="cpu",
    block_ids=8, overrides=None, merge=False, progress=True, fsync=True, mp_context="forkserver",
    log=print, render_workers=None, checkpoint=None)``.

    ``source`` is a registry name or a ``module:Class`` path (made into a
    :class:`~engine.sources.SourceSpec` with ``preset/size/aligned/device/overrides/checkpoint``: the one
    value the render workers build their source from), a ``SourceSpec``, or an :class:`IdentitySampler`
    instance (then ``preset/size/aligned/device/overrides/checkpoint`` are not used). ``checkpoint`` (learned sources
    such as ``diffusion``) is passed to the source constructor only when given. ``render_workers`` is the number of
    processes that render blocks (``None``: :data:`DEFAULT_RENDER_WORKERS` on CPU, 0 on CUDA; 0: render
    in the main process, with ``workers`` encode/write processes); an instance ``source`` is pickled
    to them, or rendered in the main process (with a logged note) if it cannot be pickled. Neither
    ``workers`` nor ``render_workers`` changes a byte of the output, and neither is part of the
    dataset config (a resume may use other values). ``merge=True`` only finalizes a dataset
    whose shards are all complete. Raises :class:`RenderError` for user errors and
    :class:`DiskFullError` when the disk fills up (the journal stays consistent: rerun to resume).
    """
    runtimes: list = []  # the --ray runtime started for this run, stopped whatever happens
    try:
        return _render_dataset(*args, _runtimes=runtimes, **kwargs)
    except OSError as e:
        if F.is_enospc(e):
            raise DiskFullError(
                f"no space left on device while writing {e.filename or 'the dataset'}; "
                "free some space and rerun the same command to resume"
            ) from None
        raise
    finally:
        for rt in runtimes:
            rt.stop()
            rt.join()


def _render_dataset(
    ids: int,
    per_id: int = 50,
    source: str | IdentitySampler = "morphable",
    preset: str = "wild",
    out: str | os.PathLike | None = None,
    size: int = 112,
    aligned: bool = True,
    format: str = "imagefolder",
    seed: int = 0,
    shard: str | tuple[int, int] | None = None,
    workers: int | None = None,
    device: str = "cpu",
    block_ids: int = 8,
    overrides: dict | None = None,
    merge: bool = False,
    progress: bool = True,
    fsync: bool = True,
    mp_context: str = DEFAULT_MP_CONTEXT,
    log: Callable[[str], None] | None = print,
    render_workers: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    ray: str | None = None,
    _runtimes: list | None = None,
) -> dict[str, Any]:
    t_start = time.perf_counter()
    tm = Timers()
    say = log or (lambda s: None)
    if isinstance(ids, bool) or not isinstance(ids, int) or ids < 1:
        raise RenderError(f"--ids must be a positive integer, got {ids!r}")
    if isinstance(per_id, bool) or not isinstance(per_id, int) or per_id < 1:
        raise RenderError(f"--per-id must be a positive integer, got {per_id!r}")
    if not isinstance(block_ids, int) or block_ids < 1:
        raise RenderError(f"--block-ids must be a positive integer, got {block_ids!r}")
    if not isinstance(size, int) or size < 1:
        raise RenderError(f"--size must be a positive integer, got {size!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise RenderError(f"--workers must be >= 0, got {workers!r}")
    if render_workers is not None and (isinstance(render_workers, bool) or not isinstance(render_workers, int) or render_workers < 0):
        raise RenderError(f"--render-workers must be >= 0 (0 = render in the main process), got {render_workers!r}")
    if format not in FORMATS:
        raise RenderError(f"unknown --format {format!r} (use one of: {', '.join(FORMATS)})")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise RenderError(f"unknown --device {device!r} (use cpu or cuda)")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RenderError(f"--device {device} requested but CUDA is not available")
    shard_k, shard_n = parse_shard(shard)
    seed = int(seed)
    runtime = None
    if ray:  # Ray starts (or connects) in the background while the source and identities are set up
        from .ray_render import RayRuntime

        runtime = RayRuntime(ray, (render_workers or DEFAULT_RENDER_WORKERS) if ray == "local" else None)
        if _runtimes is not None:
            _runtimes.append(runtime)

    if not isinstance(source, IdentitySampler):
        source = source_spec(source, preset, size, aligned, device, overrides, checkpoint)
        preset = source.kwargs.get("preset", preset)
    src, source_name = make_source(source)
    on_cuda = str(getattr(src, "device", device)).startswith("cuda")
    ray_workers = render_workers  # --ray: None = by the cluster's resources
    if render_workers is None:
        render_workers = 0 if on_cuda else DEFAULT_RENDER_WORKERS
    if workers is None:  # auto: on CUDA the GPU renders and every other core encodes
        workers = DEFAULT_CUDA_WORKERS if on_cuda else DEFAULT_WORKERS
    if render_workers and on_cuda and mp_context == "fork":
        raise RenderError("--render-workers >= 1 with a CUDA device needs --mp-context forkserver or spawn (CUDA cannot be forked)")
    preset_name = preset if not isinstance(source, IdentitySampler) else str(src.config().get("preset", preset))
    out_dir = Path(out if out is not None else default_out(source_name, preset_name, ids, per_id, seed))

    identities = src.sample_identities(ids, seed)
    if len(identities) != ids:
        raise RenderError(f"source returned {len(identities)} identities, expected {ids}")
    report = identities.report or separability_report(identities.embedding, "embedding", 0.0)
    img_size = src.image_size
    num_blocks = math.ceil(ids / block_ids)
    want_if = format in ("imagefolder", "both")
    want_rec = format in ("rec", "both")
    desc = {
        "synthface_version": M.synthface_version(),
        "software": _software(),
        "layout_version": LAYOUT_VERSION,
        "source": {"name": source_name, "config": src.config()},
        "seed": seed,
        "num_ids": ids,
        "per_id": per_id,
        "num_images": ids * per_id,
        "size": img_size,
        "format": format,
        "device": str(device),
        "block_ids": block_ids,
        "num_blocks": num_blocks,
        "image": {"encoding": "jpeg", **F.JPEG_SETTINGS},
        "imagefolder": {"dir": F.IMAGES_DIR, "id_width": F.id_width(ids), "k_width": F.k_width(per_id)} if want_if else None,
        "rec": {"rec": F.REC_NAME, "idx": F.IDX_NAME, "property": F.PROPERTY_NAME, "first_image_key": 1} if want_rec else None,
        "metadata": M.METADATA_NAME,
        "sharding": "block b = identities [b*block_ids, (b+1)*block_ids) x all per_id; shard K/N renders b % N == K",
        "separability": report,
    }
    check_or_write_desc(out_dir, desc)

    jdir = out_dir / JOURNAL_DIR
    jdir.mkdir(parents=True, exist_ok=True)
    complete = jdir / COMPLETE_NAME
    ctx = Ctx(out_dir, src, identities, desc, seed, ids, per_id, block_ids, num_blocks, want_if, want_rec, fsync, tm)
    tm.setup = time.perf_counter() - t_start

    if complete.exists():
        say(f"{out_dir}: dataset already complete, nothing to do")
        return _summary(ctx, shard_k, shard_n, 0, 0, workers, render_workers, mp_context, t_start, True, say, save=False)

    if merge:
        n_found = journal_n(out_dir, shard_n if shard is not None else None)
        missing = missing_blocks(out_dir, num_blocks, n_found)
        if missing:
            raise RenderError(
                f"cannot merge {out_dir}: {len(missing)} of {num_blocks} blocks not done for --shard */{n_found}"
                f" (first missing block {missing[0]}, shard {missing[0] % n_found}/{n_found})"
            )
        t0 = time.perf_counter()
        finalize(ctx, n_found, say)
        tm.finalize = time.perf_counter() - t0
        return _summary(ctx, shard_k, n_found, 0, 0, workers, render_workers, mp_context, t_start, True, say)

    done_blocks_before = 0
    rendered = 0
    with flock(jdir / f"shard-{shard_k}-of-{shard_n}.lock", False, f"shard {shard_k}/{shard_n} of {out_dir}"):
        mine = shard_blocks(num_blocks, shard_k, shard_n)
        jpath = journal_path(out_dir, shard_k, shard_n)
        entries, good = read_journal(jpath)
        if jpath.exists() and good != jpath.stat().st_size:
            with open(jpath, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        if [e.get("block") for e in entries] != mine[: len(entries)]:
            raise RenderError(f"journal {jpath} does not match this configuration; remove {out_dir} and start again")
        rec_off = 0
        part = part_path(out_dir, shard_k, shard_n)
        if want_rec:
            rec_off = int(entries[-1]["rec_end"]) if entries else 0
            part.parent.mkdir(parents=True, exist_ok=True)
            if part.exists() and part.stat().st_size < rec_off:
                raise RenderError(f"{part} is shorter than its journal says; remove {out_dir} and start again")
            if not part.exists() and rec_off:
                raise RenderError(f"{part} is missing but the journal lists rec blocks; remove {out_dir} and start again")
            with open(part, "ab") as f:
                f.truncate(rec_off)
                os.fsync(f.fileno())
        todo = mine[len(entries):]
        done_blocks_before = len(entries)
        remove_block_tmp(ctx, todo)
        if entries:
            say(f"resuming shard {shard_k}/{shard_n}: {len(entries)} of {len(mine)} blocks already done")
        if todo:
            init, pool = None, None
            if ray:
                pool = _ray_pool(runtime, ctx, source, ray_workers, on_cuda, say)
                render_workers = len(pool.actors)
            elif render_workers:
                init = render_worker_args(ctx, source, say)
                if init is None:
                    render_workers = 0
            rendered = run_blocks(ctx, todo, jpath, part if want_rec else None, rec_off, workers, render_workers, init,
                                   mp_context, progress, sum(block_images(ctx, b) for b in mine), on_cuda, say,
                                   render_pool=pool)
    if runtime is not None:
        runtime.stop()  # in the background, while the dataset is finalized
    # finalize if every shard is done
    missing = missing_blocks(out_dir, num_blocks, shard_n)
    complete_now = False
    if not missing:
        t0 = time.perf_counter()
        finalize(ctx, shard_n, say)
        tm.finalize = time.perf_counter() - t0
        complete_now = True
    else:
        others = sorted({b % shard_n for b in missing})
        say(f"shard {shard_k}/{shard_n} done; waiting for shard(s) {', '.join(f'{o}/{shard_n}' for o in others)}"
            " (the last shard to finish merges automatically, or run again with --merge)")
    if runtime is not None:
        runtime.join()  # the run's wall time includes Ray's shutdown
    return _summary(ctx, shard_k, shard_n, rendered, done_blocks_before, workers, render_workers, mp_context, t_start,
                    complete_now, say)


def _ray_pool(runtime, ctx, source, render_workers: int | None, on_cuda: bool, say):
    """The Ray render pool of ``--ray ADDRESS`` on ``runtime`` (:class:`engine.ray_render.RayRuntime`,
    see :mod:`engine.ray_render`): ``render_workers`` actors (``--render-workers``; by default one per
    CPU of a local runtime, or per CPU / GPU of the cluster)."""
    from .ray_render import RayRenderPool

    address = runtime.address

    init = render_worker_args(ctx, source, say)
    if init is None:
        raise RenderError("--ray: the source instance cannot be pickled to Ray workers; pass a source name or spec")
    if not render_workers:
        if address == "local":
            render_workers = DEFAULT_RENDER_WORKERS
        else:
            res = runtime.get().cluster_resources()
            render_workers = max(1, int(res.get("GPU" if on_cuda else "CPU", 1)))
    say(f"rendering on Ray ({address}): {render_workers} workers" + (" with a GPU each" if on_cuda else ""))
    return RayRenderPool(address, render_workers, init, gpus=1.0 if on_cuda else 0.0, runtime=runtime)


def _summary(ctx, k, n, rendered, done_before, workers, render_workers, mp_context, t_start, complete, say, save=True) -> dict:
    """``time_s``: ``setup`` (source, identities, config check), ``render`` / ``encode`` / ``write``
    (summed over the processes that did them: render workers, or the main process + encode pool),
    ``wait`` (main process waiting for results), ``commit`` (main process: rec append, metadata file,
    fsyncs, journal) and ``finalize`` (merge). ``workers`` is the number of encode processes used (0
    when render workers encode their own blocks)."""
    tm = ctx.tm
    wall = time.perf_counter() - t_start
    pipe = max(wall - tm.setup - tm.finalize, 1e-9)
    s = {
        "out": str(ctx.out),
        "shard": f"{k}/{n}",
        "complete": bool(complete or (ctx.out / JOURNAL_DIR / COMPLETE_NAME).exists()),
        "num_ids": ctx.ids,
        "per_id": ctx.per_id,
        "num_images": ctx.ids * ctx.per_id,
        "num_blocks": ctx.num_blocks,
        "shard_blocks": len(shard_blocks(ctx.num_blocks, k, n)),
        "blocks_resumed": done_before,
        "images_rendered": rendered,
        "render_workers": render_workers,
        "workers": 0 if render_workers else workers,
        "mp_context": mp_context if (workers or render_workers) else None,
        "wall_s": round(wall, 3),
        "images_per_s": round(rendered / pipe, 2) if rendered else None,
        "time_s": {k2: round(getattr(tm, k2), 3) for k2 in ("setup", "render", "encode", "write", "wait", "commit", "finalize")},
        "format": ctx.desc["format"],
        "separability": ctx.desc["separability"],
    }
    if save:
        M.write_json(ctx.out / SUMMARY_NAME, s)
    rep = ctx.desc["separability"] or {}
    say(
        f"{ctx.out}: shard {k}/{n}, {rendered} images rendered this run"
        + (f" ({s['images_per_s']} img/s)" if rendered else "")
        + f"; render {tm.render:.1f}s, encode {tm.encode:.1f}s, write {tm.write:.1f}s (summed over "
        + (f"{render_workers} render workers" if render_workers else f"main + {workers} encode workers")
        + f"), wait {tm.wait:.1f}s, commit {tm.commit:.1f}s, finalize {tm.finalize:.1f}s; dataset {'complete' if s['complete'] else 'incomplete'}: "
        f"{ctx.ids} ids x {ctx.per_id} = {ctx.ids * ctx.per_id} images"
        + (f"; min identity distance {rep.get('achieved_min_distance')}" if rep.get("achieved_min_distance") is not None else "")
    )
    return s


import inspect as _inspect

render_dataset.__signature__ = _inspect.signature(_render_dataset)  # type: ignore[attr-defined]

# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

@dataclass
class RenderArgs:
    """The options of ``python -m engine.render`` (keys of a ``--config`` YAML file, ``-`` or ``_``):
    :func:`render_dataset`'s keyword arguments. Defaults < ``--config`` < flags; ``overrides`` go to the
    source (``--override KEY=VALUE`` adds dotted keys to them)."""

    ids: int | None = None
    per_id: int = 50
    source: str = "morphable"
    preset: str = "wild"
    out: str | None = None
    size: int = 112
    aligned: bool = True
    format: str = "imagefolder"
    seed: int = 0
    shard: str | None = None
    workers: int | None = None  # None: by device (CPU: one per core; CUDA: encoders on all cores but one)
    render_workers: int | None = None
    device: str = "cpu"
    block_ids: int = 8
    overrides: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None


_FLAG_KEYS = [f.name for f in fields(RenderArgs) if f.name != "overrides"]


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "engine.render",
        description="Render a synthetic face-recognition dataset (deterministic, resumable, shardable). "
        "Rerun the same command to resume after a crash; shards K/N together equal the unsharded dataset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "output: OUT/dataset.json (full config), metadata.parquet (one row per image), contact_sheet.png,\n"
            "summary.json, images/<id>/<k>.jpg and/or train.rec+train.idx+property (insightface RecordIO).\n"
            "errors: exit 2 for bad arguments/config/output dir, 1 for I/O problems such as a full disk\n"
            "(the journal stays consistent: rerun the same command to resume)."
        ),
    )
    a = p.add_argument
    a("--ids", type=int, default=None, help="number of identities (classes) to render; required (here or in --config)")
    a("--per-id", dest="per_id", type=int, default=None, help="images (variations) per identity [default 50]")
    a("--source", default=None, help="identity source: a registry name (morphable, ...) or an importable 'module:Class' [default morphable]")
    a("--checkpoint", default=None, metavar="PATH", help="generator checkpoint of a learned source (--source diffusion or gan): "
      "the checkpoint/ dir of a python -m learned.train run")
    a("--preset", default=None, help="source preset, e.g. frontal or wild [default wild]")
    cli.add_config(p, help="YAML file with any of these options (ids, per_id, source, preset, out, size, aligned, "
                   "format, seed, shard, workers, render_workers, device, block_ids, checkpoint) plus 'overrides:' "
                   "passed to the source; command-line flags win")
    cli.add_out(p, help="output dir [default out/<source>-<preset>-<ids>x<per_id>-s<seed>]")
    a("--size", type=int, default=None, help="image side in pixels [default 112]")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--aligned", dest="aligned", action="store_true", default=None, help="ArcFace-aligned crops [default]")
    g.add_argument("--unaligned", dest="aligned", action="store_false", help="unaligned, head-centred views")
    a("--format", choices=FORMATS, default=None, help="imagefolder (images/<id>/<k>.jpg), rec (insightface train.rec/idx) or both [default imagefolder]")
    a("--seed", type=int, default=None, help="dataset seed: identities and all variations derive from it [default 0]")
    a("--shard", default=None, help="render only shard K/N (blocks b with b %% N == K); run all K=0..N-1 into the same --out, "
      "the last one merges [default 0/1]")
    a("--render-workers", dest="render_workers", type=int, default=None, metavar="R",
      help="processes that render blocks, each single-threaded, rendering + encoding + writing whole blocks; "
      f"0 = render in the main process [default {DEFAULT_RENDER_WORKERS} on CPU, 0 on CUDA]")
    a("--workers", type=int, default=None, help="JPEG encode/write processes, used only with --render-workers 0 "
      f"(render workers encode their own blocks); 0 = in the main process [default {DEFAULT_WORKERS} on CPU, "
      f"{DEFAULT_CUDA_WORKERS} (all cores but one) on CUDA]")
    a("--device", default=None, help="render device: cpu or cuda (part of the config: outputs may differ by device) [default cpu]")
    a("--block-ids", dest="block_ids", type=int, default=None, help="identities per work block; each block (block_ids x per_id images) "
      "is one render batch and the unit of resume/sharding [default 8]")
    cli.add_override(p, help="source override (YAML value, dotted KEY: pose.yaw.lo=-10), added to 'overrides:'")
    a("--merge", action="store_true", help="only finalize (merge rec parts, metadata, contact sheet) a dataset whose shards are all done")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--no-fsync", action="store_true", help="skip fsync (faster; still crash-safe against kill, not against power loss)")
    a("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
      help="render the blocks as Ray tasks (pip install 'synthface[ray]'): 'local' (default when the flag has no value) "
      "starts a Ray runtime here, 'auto' joins this machine's cluster, else a cluster address (HOST:6379, ray://HOST:10001); "
      "--render-workers sets the Ray workers (default: one per CPU, or per GPU with --device cuda); the driver writes the "
      "output (same bytes as a local run) and resumes like one")
    a("--mp-context", default=DEFAULT_MP_CONTEXT, choices=("forkserver", "spawn", "fork"), help="multiprocessing start method of the worker pool [default forkserver]")
    return p


def resolve_args(argv: list[str] | None = None) -> tuple[dict[str, Any], argparse.Namespace]:
    """Parse argv: defaults < YAML --config < flags (:class:`RenderArgs`). Returns (render_dataset
    kwargs, namespace). Bad config keys or values raise :class:`RenderError` naming the key."""
    ns = build_parser().parse_args(argv)
    data: dict[str, Any] = {}
    try:
        if ns.config:
            try:
                data = {str(k).replace("-", "_"): v for k, v in cli.load_yaml(ns.config, "--config").items()}
            except ConfigError as e:
                raise RenderError(str(e)) from None
            data["overrides"] = nest_dotted(data.get("overrides") or {}, "overrides") \
                if isinstance(data.get("overrides") or {}, dict) else data["overrides"]
        data.update({k: getattr(ns, k) for k in _FLAG_KEYS if getattr(ns, k, None) is not None})
        data = apply_overrides(data, [f"overrides.{o}" for o in ns.override])
        args = from_dict(RenderArgs, data, "")
    except ConfigError as e:
        raise RenderError(f"{'--config ' + ns.config + ': ' if ns.config else ''}{e}") from None
    if args.ids is None:
        raise RenderError("--ids is required (on the command line or in --config)")
    cfg = asdict(args)
    cfg.update(merge=ns.merge, progress=not ns.no_progress, fsync=not ns.no_fsync, mp_context=ns.mp_context, ray=ns.ray)
    return cfg, ns


def main(argv: list[str] | None = None) -> int:
    def work() -> None:
        cfg, _ = resolve_args(argv)
        render_dataset(**cfg)

    try:  # RenderError, ConfigError of a source config: one line, no traceback (common.cli.run)
        return cli.run(work, interrupted="interrupted; rerun the same command to resume")
    except OSError as e:  # permissions, read-only file system, ...: one line, no traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}; fix it and rerun the same command to resume", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    # Run the importable module, not this ``__main__`` copy: render workers pickle functions and
    # exceptions of engine.render by name, and must find the same classes the CLI catches.
    from engine.render import main as _main

    sys.exit(_main())
