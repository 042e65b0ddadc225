"""The journal and shard bookkeeping of a rendered dataset (see :mod:`engine.render` for the design).

* Layout of the bookkeeping: ``.journal/shard-K-of-N.jsonl`` (one fsynced JSON line per completed
  block: :func:`append_journal`, :func:`read_journal`), ``.blocks/meta-B.parquet`` (per-block
  metadata), ``.parts/rec-K-of-N.rec`` (a shard's rec part; ``train.rec`` itself when unsharded).
* Shards and blocks: :func:`parse_shard`, :func:`shard_blocks`, :func:`block_range`; which blocks
  are done over all shards (:func:`journal_entries`, :func:`missing_blocks`, :func:`journal_n`).
* The output dir's config check (:func:`check_or_write_desc`: ``dataset.json`` written first, a
  different config refused), locks (:func:`flock`), temp debris of crashed blocks
  (:func:`remove_block_tmp`).
* :func:`finalize`: the merge once every block is done: ``train.rec`` from the parts in block order
  plus the header/identity records, ``train.idx``, ``property``, ``metadata.parquet``,
  ``contact_sheet.png`` and ``.journal/complete.json``.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from common.io import atomic_path, fsync_dir

from . import formats as F
from . import metadata as M
from .contact_sheet import contact_sheet, save_png
from .errors import RenderError

if TYPE_CHECKING:
    from .pipeline import Ctx

JOURNAL_DIR, BLOCKS_DIR, PARTS_DIR = ".journal", ".blocks", ".parts"
COMPLETE_NAME = "complete.json"
SHEET_NAME = "contact_sheet.png"
SHEET_IDS, SHEET_VARIATIONS = 8, 8


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


def shard_blocks(num_blocks: int, k: int, n: int) -> list[int]:
    """Blocks of shard ``k/n`` (round-robin: ``b % n == k``), ascending."""
    return list(range(k, num_blocks, n))


def block_range(b: int, block_ids: int, num_ids: int) -> tuple[int, int]:
    return b * block_ids, min((b + 1) * block_ids, num_ids)


def journal_path(out: Path, k: int, n: int) -> Path:
    return out / JOURNAL_DIR / f"shard-{k}-of-{n}.jsonl"


def part_path(out: Path, k: int, n: int) -> Path:
    return out / F.REC_NAME if n == 1 else out / PARTS_DIR / f"rec-{k}-of-{n}.rec"


def meta_path(out: Path, b: int) -> Path:
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


def append_journal(path: Path, entry: dict) -> None:
    new = not path.exists()
    with open(path, "ab") as f:
        f.write((json.dumps(entry, sort_keys=True) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    if new:
        fsync_dir(path.parent)


@contextlib.contextmanager
def flock(path: Path, blocking: bool, what: str):
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


def journal_n(out: Path, n: int | None) -> int:
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


def journal_entries(out: Path, n: int) -> dict[int, dict]:
    """Completed blocks (block -> entry) over all shard journals of shard count ``n``."""
    done: dict[int, dict] = {}
    for k in range(n):
        for e in read_journal(journal_path(out, k, n))[0]:
            done[int(e["block"])] = {**e, "shard": k}
    return done


def missing_blocks(out: Path, num_blocks: int, n: int) -> list[int]:
    done = journal_entries(out, n)
    return [b for b in range(num_blocks) if b not in done]


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


def check_or_write_desc(out_dir: Path, desc: dict) -> None:
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
                return check_or_write_desc(out_dir, desc)
            raise RenderError(f"--out {out_dir} is not empty and holds no {M.DATASET_JSON}; refusing to mix datasets")
    out_dir.mkdir(parents=True, exist_ok=True)
    M.write_json(path, desc)
    fsync_dir(out_dir)


def remove_block_tmp(ctx: Ctx, blocks: list[int]) -> None:
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
        names = {f".{meta_path(ctx.out, b).name}" for b in blocks}
        for f in bdir.iterdir():
            if ".tmp-" in f.name and f.name.split(".tmp-")[0] in names:
                f.unlink(missing_ok=True)


def finalize(ctx: Ctx, n: int, say) -> None:
    out = ctx.out
    with flock(out / JOURNAL_DIR / "merge.lock", True, "merge"):
        if (out / JOURNAL_DIR / COMPLETE_NAME).exists():
            return
        for name in (F.REC_NAME, F.IDX_NAME, F.PROPERTY_NAME, M.METADATA_NAME, SHEET_NAME):
            for p in out.glob(f".{name}.tmp-*"):  # debris of a finalize that was killed
                p.unlink(missing_ok=True)
        entries = journal_entries(out, n)
        if ctx.want_rec:
            _finalize_rec(ctx, n, entries)
        table = M.concat_parquet([meta_path(out, b) for b in range(ctx.num_blocks)])
        if table.num_rows != ctx.ids * ctx.per_id:
            raise RenderError(f"metadata of {out} has {table.num_rows} rows, expected {ctx.ids * ctx.per_id}")
        M.write_parquet(table, out / M.METADATA_NAME)
        _write_sheet(ctx)
        fsync_dir(out)
        M.write_json(out / JOURNAL_DIR / COMPLETE_NAME, {"num_blocks": ctx.num_blocks, "shards": n})
        if n > 1 and ctx.want_rec:
            shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
        say(f"finalized {out}")


def _finalize_rec(ctx: Ctx, n: int, entries: dict[int, dict]) -> None:
    out = ctx.out
    rec = out / F.REC_NAME
    num_images = ctx.ids * ctx.per_id
    trailer = F.rec_trailer(num_images, [ctx.per_id] * ctx.ids)
    if n == 1:
        end = int(entries[ctx.num_blocks - 1]["rec_end"]) if ctx.num_blocks else 0
        with open(rec, "r+b") as f:
            f.truncate(end)
            offs = F.record_offsets(f, 0, end)
            f.seek(end)
            tail = F.append_records(f, trailer, end)
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
                        parts[k] = open(part_path(out, k, n), "rb")
                    src = parts[k]
                    s, t = int(e["rec_start"]), int(e["rec_end"])
                    src.seek(s)
                    data = src.read(t - s)
                    if len(data) != t - s:
                        raise RenderError(f"rec part of shard {k}/{n} is shorter than its journal; rerun that shard")
                    offs += [pos + o for o in F.record_offsets(io.BytesIO(data), 0, len(data))]
                    f.write(data)
                    pos += len(data)
                tail = F.append_records(f, trailer, pos)
        finally:
            for p in parts.values():
                p.close()
    if len(offs) != num_images:
        raise RenderError(f"{rec} holds {len(offs)} image records, expected {num_images}")
    lines = [f"{i + 1}\t{o}\n" for i, o in enumerate(offs)] + [f"{k}\t{o}\n" for k, o in tail]
    F.atomic_write_bytes(out / F.IDX_NAME, "".join(lines).encode())
    F.write_property(out, ctx.ids, ctx.desc["size"], ctx.desc["size"])


def _write_sheet(ctx: Ctx) -> None:
    ds = F.open_dataset(ctx.out, format="rec" if ctx.want_rec else "imagefolder")
    ni, nk = min(ctx.ids, SHEET_IDS), min(ctx.per_id, SHEET_VARIATIONS)
    imgs = torch.stack([ds[i * ctx.per_id + k][0] for i in range(ni) for k in range(nk)])
    save_png(contact_sheet(imgs, nrow=nk), ctx.out / SHEET_NAME)
