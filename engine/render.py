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
  - ``R == 0`` (default on CUDA): the main process renders block after block; JPEG encoding (fixed
    Pillow settings, quality 95, 4:4:4), ImageFolder writes and rec framing run in a ``--workers``
    process pool (same context, preloading ``engine.formats``; ``--workers 0``: in the main process
    too), overlapped with rendering, at most ``workers + 1`` blocks in flight; results are committed
    in block order.

  On CPU, rendering always runs with ``torch.set_num_threads(1)`` (the main process restores its
  thread count afterwards): floating-point results of torch kernels may depend on the number of
  intra-op threads, and this keeps the bytes independent of ``--workers``, ``--render-workers``,
  ``--shard`` and of the machine's core count. (Several single-threaded processes are also faster
  than one multi-threaded one for the small kernels of the CPU renderers.)
* **Config check.** ``dataset.json`` (written first) holds the full resolved config (source name and
  ``source.config()``, seed, counts, size, format, device, block size, JPEG settings, layout,
  separability report, synthface and library versions). A rerun whose config differs (apart from the
  recorded versions) is refused: datasets are never mixed. Same config -> resume.

Output layout (``OUT``)::

    dataset.json  metadata.parquet  contact_sheet.png  summary.json
    images/<identity:06d>/<k:03d>.jpg              (--format imagefolder|both)
    train.rec  train.idx  property                 (--format rec|both)
    .journal/  .blocks/  .parts/                   (bookkeeping)
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import math
import os
import re
import shutil
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from common.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, SynthfaceError, report
from common.io import atomic_path

from . import formats as F
from . import metadata as M
from .contact_sheet import contact_sheet, save_png
from .interface import IdentitySampler, separability_report
from .sources import SourceError, SourceSpec

LAYOUT_VERSION = 1
FORMATS = ("imagefolder", "rec", "both")
JOURNAL_DIR, BLOCKS_DIR, PARTS_DIR = ".journal", ".blocks", ".parts"
COMPLETE_NAME = "complete.json"
SUMMARY_NAME, SHEET_NAME = "summary.json", "contact_sheet.png"
SHEET_IDS, SHEET_VARIATIONS = 8, 8
DEFAULT_WORKERS = max(1, min(8, (os.cpu_count() or 2) - 1))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


#: Default ``--render-workers`` on CPU devices (on CUDA the default is 0: render in the main process).
DEFAULT_RENDER_WORKERS = max(1, min(8, _usable_cpus()))
DEFAULT_MP_CONTEXT = "forkserver"


class RenderError(SynthfaceError):
    """A user-facing error (bad arguments/config, refused output dir, ...): one-line message."""

    exit_code = EXIT_BAD_INPUT


class DiskFullError(RenderError):
    """No space left on device; the journal is consistent and a rerun resumes."""

    exit_code = EXIT_FAILED


class WorkerError(RenderError):
    """A worker process died or could not set up its source; the journal is consistent."""

    exit_code = EXIT_FAILED


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------


def parse_shard(spec: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; ``None`` -> ``(0, 1)``."""
    if spec is None:
        return 0, 1
    if isinstance(spec, (tuple, list)):
        spec = f"{spec[0]}/{spec[1]}"
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m:
        raise RenderError(f"bad --shard {spec!r}: expected K/N with integers 0 <= K < N (e.g. 0/4)")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= k < n:
        raise RenderError(f"bad --shard {spec!r}: need 0 <= K < N and N >= 1")
    return k, n


def default_out(source: str, preset: str, ids: int, per_id: int, seed: int) -> str:
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", source.split(":")[-1]).strip("_") or "source"
    return f"out/{name}-{preset}-{ids}x{per_id}-s{seed}"


def shard_blocks(num_blocks: int, k: int, n: int) -> list[int]:
    """Blocks of shard ``k/n`` (round-robin: ``b % n == k``), ascending."""
    return list(range(k, num_blocks, n))


def block_range(b: int, block_ids: int, num_ids: int) -> tuple[int, int]:
    return b * block_ids, min((b + 1) * block_ids, num_ids)


def _journal_path(out: Path, k: int, n: int) -> Path:
    return out / JOURNAL_DIR / f"shard-{k}-of-{n}.jsonl"


def _part_path(out: Path, k: int, n: int) -> Path:
    return out / F.REC_NAME if n == 1 else out / PARTS_DIR / f"rec-{k}-of-{n}.rec"


def _meta_path(out: Path, b: int) -> Path:
    return out / BLOCKS_DIR / f"meta-{b:06d}.parquet"


def read_journal(path: Path) -> tuple[list[dict], int]:
    """Parse a journal -> (entries, byte length of the valid prefix). A torn last line is dropped."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    entries, good = [], 0
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        try:
            entries.append(json.loads(data[pos:nl]))
        except ValueError:
            break
        pos = good = nl + 1
    return entries, good


def _append_journal(path: Path, entry: dict) -> None:
    new = not path.exists()
    with open(path, "ab") as f:
        f.write((json.dumps(entry, sort_keys=True) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    if new:
        F.fsync_dir(path.parent)


@contextlib.contextmanager
def _flock(path: Path, blocking: bool, what: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RenderError(f"{what} is already running (lock {path} is held by another process)") from None
        yield
    finally:
        os.close(fd)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "<root>"]


def _comparable(desc: dict) -> dict:
    d = json.loads(M.json_bytes(desc))
    d.pop("synthface_version", None)
    d.pop("software", None)
    return d


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


@dataclass
class _Timers:
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


def _make_source(source: SourceSpec | IdentitySampler) -> tuple[IdentitySampler, str]:
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


def render_dataset(*args, **kwargs) -> dict[str, Any]:
    """Render (or resume, or merge) a dataset; returns the summary dict (also saved as summary.json).

    Signature: ``render_dataset(ids, per_id=50, source="morphable", preset="wild", out=None, size=112,
    aligned=True, format="imagefolder", seed=0, shard=None, workers=DEFAULT_WORKERS, device="cpu",
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
    try:
        return _render_dataset(*args, **kwargs)
    except OSError as e:
        if F.is_enospc(e):
            raise DiskFullError(
                f"no space left on device while writing {e.filename or 'the dataset'}; "
                "free some space and rerun the same command to resume"
            ) from None
        raise


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
    workers: int = DEFAULT_WORKERS,
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
) -> dict[str, Any]:
    t_start = time.perf_counter()
    tm = _Timers()
    say = log or (lambda s: None)
    if isinstance(ids, bool) or not isinstance(ids, int) or ids < 1:
        raise RenderError(f"--ids must be a positive integer, got {ids!r}")
    if isinstance(per_id, bool) or not isinstance(per_id, int) or per_id < 1:
        raise RenderError(f"--per-id must be a positive integer, got {per_id!r}")
    if not isinstance(block_ids, int) or block_ids < 1:
        raise RenderError(f"--block-ids must be a positive integer, got {block_ids!r}")
    if not isinstance(size, int) or size < 1:
        raise RenderError(f"--size must be a positive integer, got {size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
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

    if not isinstance(source, IdentitySampler):
        source = source_spec(source, preset, size, aligned, device, overrides, checkpoint)
        preset = source.kwargs.get("preset", preset)
    src, source_name = _make_source(source)
    on_cuda = str(getattr(src, "device", device)).startswith("cuda")
    if render_workers is None:
        render_workers = 0 if on_cuda else DEFAULT_RENDER_WORKERS
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
    _check_or_write_desc(out_dir, desc)

    jdir = out_dir / JOURNAL_DIR
    jdir.mkdir(parents=True, exist_ok=True)
    complete = jdir / COMPLETE_NAME
    ctx = _Ctx(out_dir, src, identities, desc, seed, ids, per_id, block_ids, num_blocks, want_if, want_rec, fsync, tm)
    tm.setup = time.perf_counter() - t_start

    if complete.exists():
        say(f"{out_dir}: dataset already complete, nothing to do")
        return _summary(ctx, shard_k, shard_n, 0, 0, workers, render_workers, mp_context, t_start, True, say, save=False)

    if merge:
        n_found = _journal_n(out_dir, shard_n if shard is not None else None)
        missing = _missing_blocks(out_dir, num_blocks, n_found)
        if missing:
            raise RenderError(
                f"cannot merge {out_dir}: {len(missing)} of {num_blocks} blocks not done for --shard */{n_found}"
                f" (first missing block {missing[0]}, shard {missing[0] % n_found}/{n_found})"
            )
        t0 = time.perf_counter()
        _finalize(ctx, n_found, say)
        tm.finalize = time.perf_counter() - t0
        return _summary(ctx, shard_k, n_found, 0, 0, workers, render_workers, mp_context, t_start, True, say)

    done_blocks_before = 0
    rendered = 0
    with _flock(jdir / f"shard-{shard_k}-of-{shard_n}.lock", False, f"shard {shard_k}/{shard_n} of {out_dir}"):
        mine = shard_blocks(num_blocks, shard_k, shard_n)
        jpath = _journal_path(out_dir, shard_k, shard_n)
        entries, good = read_journal(jpath)
        if jpath.exists() and good != jpath.stat().st_size:
            with open(jpath, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        if [e.get("block") for e in entries] != mine[: len(entries)]:
            raise RenderError(f"journal {jpath} does not match this configuration; remove {out_dir} and start again")
        rec_off = 0
        part = _part_path(out_dir, shard_k, shard_n)
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
        _remove_block_tmp(ctx, todo)
        if entries:
            say(f"resuming shard {shard_k}/{shard_n}: {len(entries)} of {len(mine)} blocks already done")
        if todo:
            init = None
            if render_workers:
                init = _render_worker_args(ctx, source, say)
                if init is None:
                    render_workers = 0
            rendered = _run_blocks(ctx, todo, jpath, part if want_rec else None, rec_off, workers, render_workers, init,
                                   mp_context, progress, sum(_block_images(ctx, b) for b in mine), on_cuda, say)
    # finalize if every shard is done
    missing = _missing_blocks(out_dir, num_blocks, shard_n)
    complete_now = False
    if not missing:
        t0 = time.perf_counter()
        _finalize(ctx, shard_n, say)
        tm.finalize = time.perf_counter() - t0
        complete_now = True
    else:
        others = sorted({b % shard_n for b in missing})
        say(f"shard {shard_k}/{shard_n} done; waiting for shard(s) {', '.join(f'{o}/{shard_n}' for o in others)}"
            " (the last shard to finish merges automatically, or run again with --merge)")
    return _summary(ctx, shard_k, shard_n, rendered, done_blocks_before, workers, render_workers, mp_context, t_start,
                    complete_now, say)


@dataclass
class _Ctx:
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
    tm: _Timers


def _block_images(ctx: _Ctx, b: int) -> int:
    a, e = block_range(b, ctx.block_ids, ctx.ids)
    return (e - a) * ctx.per_id


def _check_or_write_desc(out_dir: Path, desc: dict) -> None:
    path = out_dir / M.DATASET_JSON
    if path.exists():
        try:
            old = M.read_json(path)
        except ValueError:
            raise RenderError(f"{path} is not valid JSON; refusing to write into {out_dir}") from None
        diff = _diff_keys(_comparable(old), _comparable(desc))
        if diff:
            shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
            raise RenderError(
                f"{out_dir} holds a dataset with a different config (differs in: {shown}); "
                "use another --out or the same config to resume"
            )
        return
    if out_dir.exists():
        if not out_dir.is_dir():
            raise RenderError(f"--out {out_dir} exists and is not a directory")
        if any(not p.name.startswith(".") for p in out_dir.iterdir()):
            if path.exists():  # another shard started at the same moment and wrote it
                return _check_or_write_desc(out_dir, desc)
            raise RenderError(f"--out {out_dir} is not empty and holds no {M.DATASET_JSON}; refusing to mix datasets")
    out_dir.mkdir(parents=True, exist_ok=True)
    M.write_json(path, desc)
    F.fsync_dir(out_dir)


def _remove_block_tmp(ctx: _Ctx, blocks: list[int]) -> None:
    """Remove temp files a crashed run of these blocks may have left (hidden, never valid data)."""
    images = ctx.out / F.IMAGES_DIR
    if ctx.want_if and images.is_dir():
        w = F.id_width(ctx.ids)
        with os.scandir(images) as it:
            existing = {e.name for e in it if e.is_dir()}
        for b in blocks:
            a, e = block_range(b, ctx.block_ids, ctx.ids)
            for i in range(a, e):
                if f"{i:0{w}d}" in existing:
                    F.remove_stale_tmp(images / f"{i:0{w}d}")
    bdir = ctx.out / BLOCKS_DIR
    if bdir.exists():
        names = {f".{_meta_path(ctx.out, b).name}" for b in blocks}
        for f in bdir.iterdir():
            if ".tmp-" in f.name and f.name.split(".tmp-")[0] in names:
                f.unlink(missing_ok=True)


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
    def of(cls, ctx: _Ctx) -> "_Job":
        return cls(str(ctx.out), ctx.seed, ctx.ids, ctx.per_id, ctx.block_ids, int(ctx.desc["size"]), ctx.want_if,
                   ctx.want_rec, ctx.fsync)


def _block_work(job: _Job | _Ctx, b: int):
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


def _render_worker_args(ctx: _Ctx, source: SourceSpec | IdentitySampler, say) -> tuple | None:
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
    _WORKER.clear()
    try:
        kind, payload = spec
        src = pickle.loads(payload) if kind == "pickle" else _make_source(payload)[0]
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


def _run_blocks(ctx, todo, jpath, part, rec_off, workers, render_workers, init, mp_context, progress, shard_total,
                on_cuda, say) -> int:
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    tm = ctx.tm
    (ctx.out / BLOCKS_DIR).mkdir(exist_ok=True)
    if ctx.want_if:
        (ctx.out / F.IMAGES_DIR).mkdir(exist_ok=True)
    todo_images = sum(_block_images(ctx, b) for b in todo)
    bar = tqdm(total=shard_total, initial=shard_total - todo_images, unit="img", desc="render",
               disable=not progress, dynamic_ncols=True, smoothing=0.1)
    inflight: deque = deque()
    rec_f = open(part, "ab") if part is not None else None
    rendered = 0
    state = {"rec_off": rec_off}
    root = str(ctx.out)
    job = _Job.of(ctx)
    pool = None
    prev_threads = torch.get_num_threads()
    if render_workers:
        max_inflight = render_workers + 1
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
        F.atomic_write_bytes(_meta_path(ctx.out, b), meta if isinstance(meta, bytes) else M.parquet_bytes(meta))
        if ctx.fsync:
            if ctx.want_if:
                F.fsync_dir(ctx.out / F.IMAGES_DIR)
            F.fsync_dir(ctx.out / BLOCKS_DIR)
        _append_journal(jpath, entry)
        tm.commit += time.perf_counter() - t0
        rendered += n
        bar.update(n)

    try:
        if render_workers:
            pool = _make_render_pool(min(render_workers, len(todo)), mp_context, init)
            for b in todo:
                inflight.append((b, [pool.submit(_render_worker_block, b)], None, _block_images(ctx, b)))
                while len(inflight) >= max_inflight:
                    commit(inflight.popleft())
        else:
            pool = _make_pool(workers, mp_context)
            for b in todo:
                t0 = time.perf_counter()
                imgs, labels, paths, keys, table = _render_block(job, ctx.source, ctx.identities, b)
                tm.render += time.perf_counter() - t0
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
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if torch.get_num_threads() != prev_threads:
            torch.set_num_threads(prev_threads)
    return rendered


def _journal_n(out: Path, n: int | None) -> int:
    if n is not None:
        return n
    ns = set()
    for p in (out / JOURNAL_DIR).glob("shard-*-of-*.jsonl"):
        m = re.fullmatch(r"shard-(\d+)-of-(\d+)\.jsonl", p.name)
        if m:
            ns.add(int(m.group(2)))
    if len(ns) != 1:
        raise RenderError(
            f"cannot merge {out}: " + ("no shard journals found" if not ns else f"journals of several shard counts {sorted(ns)}; pass --shard 0/N")
        )
    return ns.pop()


def _journal_entries(out: Path, n: int) -> dict[int, dict]:
    """Completed blocks (block -> entry) over all shard journals of shard count ``n``."""
    done: dict[int, dict] = {}
    for k in range(n):
        for e in read_journal(_journal_path(out, k, n))[0]:
            done[int(e["block"])] = {**e, "shard": k}
    return done


def _missing_blocks(out: Path, num_blocks: int, n: int) -> list[int]:
    done = _journal_entries(out, n)
    return [b for b in range(num_blocks) if b not in done]


def _record_offsets(f, start: int, end: int) -> list[int]:
    """Offsets of the records in ``[start, end)`` of an open rec file (walks the headers)."""
    offs = []
    pos = start
    f.seek(pos)
    while pos < end:
        offs.append(pos)
        while True:
            f.seek(pos)
            head = f.read(8)
            if len(head) != 8:
                raise F.CorruptRecordError(f"truncated record header at offset {pos}")
            magic, lrec = struct.unpack("<II", head)
            if magic != F.RECORDIO_MAGIC:
                raise F.CorruptRecordError(f"bad RecordIO magic at offset {pos}")
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            pos += 8 + ((length + 3) >> 2 << 2)
            if cflag in (0, 3):
                break
    if pos != end:
        raise F.CorruptRecordError(f"records overrun the journaled range ending at {end}")
    return offs


def _finalize(ctx: _Ctx, n: int, say) -> None:
    out = ctx.out
    with _flock(out / JOURNAL_DIR / "merge.lock", True, "merge"):
        if (out / JOURNAL_DIR / COMPLETE_NAME).exists():
            return
        for name in (F.REC_NAME, F.IDX_NAME, F.PROPERTY_NAME, M.METADATA_NAME, SHEET_NAME):
            for p in out.glob(f".{name}.tmp-*"):  # debris of a finalize that was killed
                p.unlink(missing_ok=True)
        entries = _journal_entries(out, n)
        if ctx.want_rec:
            _finalize_rec(ctx, n, entries)
        table = M.concat_parquet([_meta_path(out, b) for b in range(ctx.num_blocks)])
        if table.num_rows != ctx.ids * ctx.per_id:
            raise RenderError(f"metadata of {out} has {table.num_rows} rows, expected {ctx.ids * ctx.per_id}")
        M.write_parquet(table, out / M.METADATA_NAME)
        _write_sheet(ctx)
        F.fsync_dir(out)
        M.write_json(out / JOURNAL_DIR / COMPLETE_NAME, {"num_blocks": ctx.num_blocks, "shards": n})
        if n > 1 and ctx.want_rec:
            shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
        say(f"finalized {out}")


def _write_trailer(f, trailer, pos: int) -> list[tuple[int, int]]:
    """Append the header/identity records at offset ``pos`` of ``f``, fsync, and return their
    (key, offset) pairs for the index."""
    tail = []
    for key, framed in trailer:
        tail.append((key, pos))
        f.write(framed)
        pos += len(framed)
    f.flush()
    os.fsync(f.fileno())
    return tail


def _finalize_rec(ctx: _Ctx, n: int, entries: dict[int, dict]) -> None:
    out = ctx.out
    rec = out / F.REC_NAME
    num_images = ctx.ids * ctx.per_id
    trailer = F.rec_trailer(num_images, [ctx.per_id] * ctx.ids)
    if n == 1:
        end = int(entries[ctx.num_blocks - 1]["rec_end"]) if ctx.num_blocks else 0
        with open(rec, "r+b") as f:
            f.truncate(end)
            offs = _record_offsets(f, 0, end)
            f.seek(end)
            tail = _write_trailer(f, trailer, end)
    else:
        offs = []
        parts: dict[int, Any] = {}
        try:
            with atomic_path(rec, fsync=ctx.fsync) as tmp, open(tmp, "wb") as f:
                pos = 0
                for b in range(ctx.num_blocks):
                    e = entries[b]
                    k = e["shard"]
                    if k not in parts:
                        parts[k] = open(_part_path(out, k, n), "rb")
                    src = parts[k]
                    s, t = int(e["rec_start"]), int(e["rec_end"])
                    src.seek(s)
                    data = src.read(t - s)
                    if len(data) != t - s:
                        raise RenderError(f"rec part of shard {k}/{n} is shorter than its journal; rerun that shard")
                    offs += [pos + o for o in _record_offsets(io.BytesIO(data), 0, len(data))]
                    f.write(data)
                    pos += len(data)
                tail = _write_trailer(f, trailer, pos)
        finally:
            for p in parts.values():
                p.close()
    if len(offs) != num_images:
        raise RenderError(f"{rec} holds {len(offs)} image records, expected {num_images}")
    lines = [f"{i + 1}\t{o}\n" for i, o in enumerate(offs)] + [f"{k}\t{o}\n" for k, o in tail]
    F.atomic_write_bytes(out / F.IDX_NAME, "".join(lines).encode())
    F.write_property(out, ctx.ids, ctx.desc["size"], ctx.desc["size"])


def _write_sheet(ctx: _Ctx) -> None:
    ds = F.open_dataset(ctx.out, format="rec" if ctx.want_rec else "imagefolder")
    ni, nk = min(ctx.ids, SHEET_IDS), min(ctx.per_id, SHEET_VARIATIONS)
    imgs = torch.stack([ds[i * ctx.per_id + k][0] for i in range(ni) for k in range(nk)])
    save_png(contact_sheet(imgs, nrow=nk), ctx.out / SHEET_NAME)


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

_CONFIG_KEYS = {
    "ids", "per_id", "source", "preset", "out", "size", "aligned", "format", "seed", "shard", "workers",
    "render_workers", "device", "block_ids", "overrides", "checkpoint",
}
_DEFAULTS = dict(per_id=50, source="morphable", preset="wild", out=None, size=112, aligned=True, format="imagefolder",
                 seed=0, shard=None, workers=DEFAULT_WORKERS, render_workers=None, device="cpu", block_ids=8, overrides={},
                 checkpoint=None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine.render",
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
    a("--config", default=None, help="YAML file with any of these options (ids, per_id, source, preset, out, size, aligned, "
      "format, seed, shard, workers, render_workers, device, block_ids) plus 'overrides:' passed to the source; "
      "command-line flags win")
    a("--out", default=None, help="output dir [default out/<source>-<preset>-<ids>x<per_id>-s<seed>]")
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
      f"(render workers encode their own blocks); 0 = in the main process [default {DEFAULT_WORKERS}]")
    a("--device", default=None, help="render device: cpu or cuda (part of the config: outputs may differ by device) [default cpu]")
    a("--block-ids", dest="block_ids", type=int, default=None, help="identities per work block; each block (block_ids x per_id images) "
      "is one render batch and the unit of resume/sharding [default 8]")
    a("--override", action="append", default=[], metavar="KEY=VALUE", help="source override (YAML value), repeatable; added to 'overrides:'")
    a("--merge", action="store_true", help="only finalize (merge rec parts, metadata, contact sheet) a dataset whose shards are all done")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--no-fsync", action="store_true", help="skip fsync (faster; still crash-safe against kill, not against power loss)")
    a("--mp-context", default=DEFAULT_MP_CONTEXT, choices=("forkserver", "spawn", "fork"), help="multiprocessing start method of the worker pool [default forkserver]")
    return p


def resolve_args(argv: list[str] | None = None) -> tuple[dict[str, Any], argparse.Namespace]:
    """Parse argv: defaults < YAML --config < flags. Returns (render_dataset kwargs, namespace)."""
    ns = build_parser().parse_args(argv)
    import yaml

    cfg: dict[str, Any] = dict(_DEFAULTS)
    if ns.config:
        try:
            with open(ns.config) as f:
                y = yaml.safe_load(f) or {}
        except OSError as e:
            raise RenderError(f"cannot read --config {ns.config}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise RenderError(f"--config {ns.config} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(y, dict):
            raise RenderError(f"--config {ns.config} must hold a mapping of options")
        y = {str(k).replace("-", "_"): v for k, v in y.items()}
        bad = sorted(set(y) - _CONFIG_KEYS)
        if bad:
            raise RenderError(f"unknown key(s) in --config {ns.config}: {', '.join(bad)} (allowed: {', '.join(sorted(_CONFIG_KEYS))})")
        if "overrides" in y and not isinstance(y["overrides"] or {}, dict):
            raise RenderError(f"'overrides' in --config {ns.config} must be a mapping")
        y["overrides"] = dict(y.get("overrides") or {})
        cfg.update(y)
    for key in _CONFIG_KEYS - {"overrides"}:
        v = getattr(ns, key, None)
        if v is not None:
            cfg[key] = v
    over = dict(cfg.get("overrides") or {})
    for item in ns.override:
        if "=" not in item:
            raise RenderError(f"bad --override {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        over[k.strip()] = yaml.safe_load(v)
    cfg["overrides"] = over
    if cfg.get("ids") is None:
        raise RenderError("--ids is required (on the command line or in --config)")
    for key in ("ids", "per_id", "size", "seed", "workers", "block_ids", "render_workers"):
        if key == "render_workers" and cfg[key] is None:  # auto: by device
            continue
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool):
            raise RenderError(f"{key} must be an integer, got {cfg[key]!r}")
    cfg.update(merge=ns.merge, progress=not ns.no_progress, fsync=not ns.no_fsync, mp_context=ns.mp_context)
    return cfg, ns


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, _ = resolve_args(argv)
        render_dataset(**cfg)
    except SynthfaceError as e:  # RenderError, ConfigError of a source config: one line, no traceback
        return report(e)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # permissions, read-only file system, ...: one line, no traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}; fix it and rerun the same command to resume", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    # Run the importable module, not this ``__main__`` copy: render workers pickle functions and
    # exceptions of engine.render by name, and must find the same classes the CLI catches.
    from engine.render import main as _main

    sys.exit(_main())
