"""Atomic file writes: the one implementation every package uses.

A file is written under a hidden temp name in its own directory (``.<name>.tmp-<pid>``, see
:func:`tmp_name`), fsynced, then ``os.replace``-d onto its name: a reader (or a rerun after a
``kill -9``) sees the old content or the complete new content, never a prefix. On an error the
temp file is removed and the error propagates.

* :func:`atomic_path`: the mechanism, a context manager yielding the temp path to write (by any
  writer: ``torch.save``, ``np.savez``, a compiler, a streamed ``open``);
* :func:`atomic_write`: bytes or text (:func:`atomic_write_text`: text, durably: parents created,
  directory fsynced); :func:`atomic_torch_save`: ``torch.save``;
* :func:`commit_tmp`: the last step alone, for a writer that names its own temp file.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

__all__ = ["fsync_dir", "tmp_name", "atomic_path", "commit_tmp", "atomic_write", "atomic_write_text", "atomic_torch_save"]


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so that renames / creations in it are durable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tmp_name(path: str | os.PathLike, suffix: str = "") -> Path:
    """Hidden temp name in the same directory as ``path`` (unique per process): ``.<name>.tmp-<pid><suffix>``."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True, sync_dir: bool = False, mkdir: bool = False,
                suffix: str = "") -> Iterator[Path]:
    """Yield the temp path to write ``path``'s new content to; on a normal exit fsync it (``fsync``)
    and ``os.replace`` it onto ``path``, then fsync the directory (``sync_dir``); on an error remove
    it. ``mkdir``: create the parent directories first; ``suffix``: an ending the writer needs
    (``np.savez`` appends ``.npz`` to a name without it)."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path, suffix)
    try:
        yield tmp
        commit_tmp(tmp, path, fsync=fsync, sync_dir=sync_dir)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def commit_tmp(tmp: str | os.PathLike, path: str | os.PathLike, *, fsync: bool = True, sync_dir: bool = True) -> None:
    """Move a completely written temp file onto ``path``: fsync it (``fsync``), ``os.replace``, fsync
    the directory (``sync_dir``). For writers that must name the temp file themselves."""
    if fsync:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(Path(path).parent)


def atomic_write(path: str | os.PathLike, data: bytes | str, fsync: bool = True, *, sync_dir: bool = False,
                 mkdir: bool = False) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically (see :func:`atomic_path`).
    Raises ``OSError`` (e.g. ``ENOSPC``) after removing the temp file. Returns ``path``."""
    if isinstance(data, str):
        data = data.encode()
    with atomic_path(path, fsync=False, sync_dir=sync_dir, mkdir=mkdir) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Text (UTF-8) written atomically, parents created, file and directory fsynced. Returns ``path``."""
    return atomic_write(path, text, sync_dir=True, mkdir=True)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (parents created, file and directory fsynced). Returns ``path``."""
    import torch

    with atomic_path(path, sync_dir=True, mkdir=True) as tmp:
        torch.save(obj, tmp)
    return Path(path)
