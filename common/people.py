"""Who is in a face data set's protocol files: LFW ``pairs.txt`` (:func:`read_lfw_pairs`), people
files (:func:`read_people_file`), the people of some folds of a pairs file (:func:`pairs_people`,
configured by :class:`PairsPeopleConfig`). Training subsets its sources with them and the learned
trainers exclude evaluation people from their data; :mod:`training.verification` reads the pairs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import key_error

__all__ = ["MissingImageError", "PairsPeopleConfig", "read_lfw_pairs", "read_people_file", "pairs_people",
           "PAIR_LIST_HEADER", "write_pair_list", "read_pair_list", "read_pairs", "is_pair_list"]

PathLike = str | os.PathLike


class MissingImageError(FileNotFoundError, ValueError):
    """Images referenced by a pairs file are missing (both a ``FileNotFoundError`` and a ``ValueError``)."""


# ----------------------------------------------------------------------------------------------
# LFW pairs.txt
# ----------------------------------------------------------------------------------------------



def _check_pair_files(pairs: Sequence[tuple[str, str, bool, int]], listed_in: Any, root: Path) -> None:
    """Raise :class:`MissingImageError` naming the images of ``pairs`` (paths under ``root``) that are
    not files, and the list ``listed_in`` that references them."""
    missing = sorted({p for a, b, _, _ in pairs for p in (a, b) if not os.path.isfile(p)})
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        raise MissingImageError(f"{len(missing)} image(s) referenced by {listed_in} not found under "
                                f"{root / 'images'}: {shown}")

def _lfw_path(root: Path, name: str, idx: int) -> Path:
    return root / "images" / name / f"{name}_{idx:04d}.jpg"


def read_lfw_pairs(pairs_txt: PathLike, image_root: PathLike | None = None,
                   check_files: bool = True) -> list[tuple[str, str, bool, int]]:
    """Parse LFW's ``pairs.txt`` into ``[(path_a, path_b, same, fold), ...]`` (fold is 0-based).

    Format: a header ``n_folds<TAB>n_per_fold`` (e.g. ``10\\t300``; a single number ``n`` as in
    ``pairsDevTrain.txt`` means one fold), then for each fold ``n_per_fold`` same-person lines
    ``Name<TAB>i<TAB>j`` followed by ``n_per_fold`` different-person lines
    ``Name1<TAB>i<TAB>Name2<TAB>j`` (1-based image numbers). Fields may be separated by any
    whitespace; blank lines are ignored.

    Images resolve to ``<image_root>/images/<Name>/<Name>_%04d.jpg``; ``image_root`` defaults to
    the folder holding ``pairs_txt``.

    Raises:
        ValueError: malformed header or line (the message gives the line number and content), or
            a wrong number of lines.
        MissingImageError: (``check_files=True``) referenced images that do not exist.
    """
    pairs_txt = Path(pairs_txt)
    root = Path(image_root) if image_root is not None else pairs_txt.parent
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(pairs_txt.read_text().splitlines())]
    lines = [(i, ln) for i, ln in lines if ln]
    if not lines:
        raise ValueError(f"{pairs_txt}: empty file")
    hno, header = lines[0]
    try:
        head = [int(x) for x in header.split()]
    except ValueError:
        head = []
    if len(head) == 1:
        n_folds, n_per = 1, head[0]
    elif len(head) == 2:
        n_folds, n_per = head
    else:
        raise ValueError(f"{pairs_txt}:{hno}: expected a header 'n_folds<TAB>n_per_fold', got {header!r}")
    if n_folds <= 0 or n_per <= 0:
        raise ValueError(f"{pairs_txt}:{hno}: header values must be positive, got {header!r}")
    body = lines[1:]
    expected = 2 * n_folds * n_per
    if len(body) != expected:
        raise ValueError(f"{pairs_txt}: header {header!r} announces {n_folds} fold(s) x 2 x {n_per} = {expected} "
                         f"pair lines but the file has {len(body)}")

    out: list[tuple[str, str, bool, int]] = []
    for k, (lno, ln) in enumerate(body):
        fold, r = divmod(k, 2 * n_per)
        same = r < n_per
        f = ln.split()
        try:
            if same:
                if len(f) != 3:
                    raise ValueError(f"expected a same-person line 'Name<TAB>i<TAB>j' ({len(f)} fields)")
                a, b = (f[0], int(f[1])), (f[0], int(f[2]))
            else:
                if len(f) != 4:
                    raise ValueError(f"expected a different-person line 'Name1<TAB>i<TAB>Name2<TAB>j' "
                                     f"({len(f)} fields)")
                a, b = (f[0], int(f[1])), (f[2], int(f[3]))
            if a[1] < 1 or b[1] < 1:
                raise ValueError("image numbers are 1-based")
        except ValueError as e:
            msg = str(e)
            if msg.startswith("invalid literal"):
                msg = "image numbers must be integers"
            raise ValueError(f"{pairs_txt}:{lno}: malformed line {ln!r} (fold {fold + 1}, "
                             f"{'same' if same else 'different'}-person block): {msg}") from None
        out.append((str(_lfw_path(root, *a)), str(_lfw_path(root, *b)), same, fold))

    if check_files:
        _check_pair_files(out, pairs_txt, root)
    return out


# ----------------------------------------------------------------------------------------------
# people files and subsets
# ----------------------------------------------------------------------------------------------


def read_people_file(path: str | os.PathLike) -> list[str]:
    """Identity names from a text file: the first whitespace-separated token of each line; blank
    lines, ``#`` comments and purely numeric lines (LFW ``people.txt`` fold headers) are skipped."""
    names: list[str] = []
    with open(path) as f:
        for line in f:
            tok = line.split("#", 1)[0].split()
            if not tok:
                continue
            if tok[0].lstrip("-").isdigit():
                continue
            names.append(tok[0])
    return names


def pairs_people(pairs_txt: str | os.PathLike, folds: Sequence[int] | None = None) -> set[str]:
    """Names mentioned in folds ``folds`` (1-based; all if ``None``) of an LFW ``pairs.txt``."""
    keep = None if folds is None else {int(f) - 1 for f in folds}
    out: set[str] = set()
    for a, b, _, f in read_lfw_pairs(pairs_txt, image_root=Path(pairs_txt).parent, check_files=False):
        if keep is None or f in keep:
            out.add(Path(a).parent.name)
            out.add(Path(b).parent.name)
    return out


@dataclass
class PairsPeopleConfig:
    """The people mentioned in folds ``folds`` (1-based) of an LFW-format ``pairs`` file."""

    pairs: str
    folds: list[int] | None = None

    def validate(self, path: str) -> None:
        if self.folds is not None and (not self.folds or any(f < 1 for f in self.folds)):
            raise key_error(path, "folds", f"must be a non-empty list of 1-based fold numbers, got {self.folds}")


# ----------------------------------------------------------------------------------------------
# pair lists: any number of genuine / impostor pairs, with folds (e.g. an extended eval protocol)
# ----------------------------------------------------------------------------------------------

PAIR_LIST_HEADER = "#synthface-pairs v1"


def write_pair_list(path: PathLike, pairs: Sequence[tuple[str, int, str, int, bool, int]],
                    comment: str | None = None) -> Path:
    """Write a pair list (atomically): the header line ``#synthface-pairs v1``, optional ``# comment``
    lines, then one pair a line ``NameA<TAB>i<TAB>NameB<TAB>j<TAB>same(0/1)<TAB>fold`` (LFW image
    numbers, 1-based; fold 1-based). Images resolve like LFW's: ``<root>/images/<Name>/<Name>_%04d.jpg``."""
    from .io import atomic_write_text

    lines = [PAIR_LIST_HEADER]
    if comment:
        lines += [f"# {c}" for c in comment.splitlines()]
    lines += [f"{a}\t{i}\t{b}\t{j}\t{int(bool(s))}\t{f}" for a, i, b, j, s, f in pairs]
    return Path(atomic_write_text(Path(path), "\n".join(lines) + "\n"))


def is_pair_list(path: PathLike) -> bool:
    """Whether ``path`` starts with the pair-list header (else it is read as LFW ``pairs.txt``)."""
    with open(path) as f:
        return f.readline().strip() == PAIR_LIST_HEADER


def read_pair_list(path: PathLike, image_root: PathLike | None = None,
                   check_files: bool = True) -> list[tuple[str, str, bool, int]]:
    """Parse a pair list written by :func:`write_pair_list` into ``[(path_a, path_b, same, fold), ...]``
    with 0-based folds, like :func:`read_lfw_pairs` (``image_root`` defaults to the file's folder).

    Raises:
        ValueError: no header, or a malformed line (line number and content in the message).
        MissingImageError: (``check_files=True``) referenced images that do not exist.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    text = path.read_text().splitlines()
    if not text or text[0].strip() != PAIR_LIST_HEADER:
        raise ValueError(f"{path}:1: expected the header {PAIR_LIST_HEADER!r}")
    out: list[tuple[str, str, bool, int]] = []
    for lno, ln in enumerate(text[1:], start=2):
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        f = ln.split()
        try:
            if len(f) != 6:
                raise ValueError(f"expected 'NameA<TAB>i<TAB>NameB<TAB>j<TAB>same<TAB>fold' ({len(f)} fields)")
            i, j, same, fold = int(f[1]), int(f[3]), int(f[4]), int(f[5])
            if i < 1 or j < 1 or fold < 1:
                raise ValueError("image and fold numbers are 1-based")
            if same not in (0, 1):
                raise ValueError("same must be 0 or 1")
            if bool(same) != (f[0] == f[2]):
                raise ValueError("same=1 needs one name, same=0 two different names")
        except ValueError as e:
            msg = "numbers must be integers" if str(e).startswith("invalid literal") else str(e)
            raise ValueError(f"{path}:{lno}: malformed line {ln!r}: {msg}") from None
        out.append((str(_lfw_path(root, f[0], i)), str(_lfw_path(root, f[2], j)), bool(same), fold - 1))
    if not out:
        raise ValueError(f"{path}: no pairs")
    if check_files:
        _check_pair_files(out, path, root)
    return out


def read_pairs(path: PathLike, image_root: PathLike | None = None,
               check_files: bool = True) -> list[tuple[str, str, bool, int]]:
    """A pair list (:func:`read_pair_list`) or an LFW ``pairs.txt`` (:func:`read_lfw_pairs`), by header."""
    reader = read_pair_list if is_pair_list(path) else read_lfw_pairs
    return reader(path, image_root=image_root, check_files=check_files)
