"""Extended identity-disjoint verification pairs from the evaluation people of an LFW-layout folder.

LFW's own protocol gives 300 genuine + 300 impostor pairs per fold: with two eval folds, TAR@FAR=1e-3
rests on 600 impostor scores (not measurable) and the accuracy's +- on two numbers. :func:`extended_pairs`
builds a larger list from the same people (those named in the eval folds' lines, so still disjoint from
every training person):

* the people are split into ``folds`` groups (seeded shuffle, people sorted by name first), so the
  folds are identity-disjoint and each fold's threshold is chosen on other people;
* every genuine pair the images allow (all ``i < j`` of each person with 2+ images), in its person's fold;
* ``impostors`` impostor pairs drawn without replacement, uniformly among all cross-person pairs within
  a fold (a fold gets a share proportional to its cross-person pair count).

The list is written once as a ``#synthface-pairs v1`` file (:func:`common.people.write_pair_list`)
whose comment records the parameters; :func:`ensure_extended_pairs` reuses an existing file with the
same parameters, and the same parameters give the same bytes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from common.config import ConfigError
from common.people import read_pair_list, write_pair_list
from engine.interface import derive_seed

__all__ = ["ExtendedPairsConfig", "extended_pairs", "ensure_extended_pairs"]


@dataclass
class ExtendedPairsConfig:
    """``impostors``: impostor pairs to draw (at least 100,000 for TAR@FAR=1e-4 to rest on 10 false
    accepts); ``folds``: identity-disjoint groups of people; ``seed``: the draw."""

    impostors: int = 100_000
    folds: int = 10
    seed: int = 0

    def validate(self, path: str) -> None:
        if self.impostors <= 0:
            raise ConfigError(f"{path}.impostors: must be > 0")
        if self.folds < 2:
            raise ConfigError(f"{path}.folds: need at least 2 folds")


def _signature(cfg: ExtendedPairsConfig, people: Sequence[str]) -> str:
    import hashlib

    h = hashlib.sha1("\n".join(sorted(people)).encode()).hexdigest()[:16]
    return f"extended pairs: impostors={cfg.impostors} folds={cfg.folds} seed={cfg.seed} people={len(people)} sha1={h}"


def extended_pairs(people_counts: dict[str, int], cfg: ExtendedPairsConfig) -> list[tuple[str, int, str, int, bool, int]]:
    """The pairs ``(name_a, i, name_b, j, same, fold)`` (LFW 1-based image numbers, 1-based folds) of
    ``people_counts`` (name -> image count; images ``1..count``). Genuine pairs first, then impostors,
    each sorted. Raises ``ValueError`` when the people allow fewer than ``cfg.impostors`` impostor pairs."""
    names = sorted(n for n, c in people_counts.items() if c > 0)
    if len(names) < 2 * cfg.folds:
        raise ValueError(f"{len(names)} people cannot fill {cfg.folds} folds (need 2 per fold)")
    rng = np.random.default_rng(derive_seed(cfg.seed, "extended-pairs"))
    order = rng.permutation(len(names))
    fold_of = {names[k]: int(pos % cfg.folds) + 1 for pos, k in enumerate(order)}
    genuine: list[tuple[str, int, str, int, bool, int]] = []
    for n in names:
        c = people_counts[n]
        genuine += [(n, i, n, j, True, fold_of[n]) for i in range(1, c + 1) for j in range(i + 1, c + 1)]
    # images of each fold, and its count of cross-person pairs
    per_fold: list[tuple[np.ndarray, np.ndarray]] = []  # (person index per image, image number)
    cross = []
    for f in range(1, cfg.folds + 1):
        members = [k for k, n in enumerate(names) if fold_of[n] == f]
        pid = np.concatenate([np.full(people_counts[names[k]], k) for k in members])
        num = np.concatenate([np.arange(1, people_counts[names[k]] + 1) for k in members])
        per_fold.append((pid, num))
        counts = np.array([people_counts[names[k]] for k in members], dtype=np.int64)
        cross.append(int((counts.sum() ** 2 - (counts ** 2).sum()) // 2))
    total = sum(cross)
    if total < cfg.impostors:
        raise ValueError(f"the {len(names)} people allow {total} impostor pairs within {cfg.folds} folds, "
                         f"fewer than the {cfg.impostors} asked")
    # a share per fold proportional to its cross pairs (largest remainders), then a draw without replacement
    raw = np.array(cross, dtype=np.float64) * cfg.impostors / total
    share = np.floor(raw).astype(np.int64)
    share[np.argsort(-(raw - share), kind="stable")[: cfg.impostors - int(share.sum())]] += 1
    impostors: list[tuple[str, int, str, int, bool, int]] = []
    for f, ((pid, num), k) in enumerate(zip(per_fold, share), start=1):
        m = len(pid)
        chosen: set[tuple[int, int]] = set()
        while len(chosen) < k:
            a = rng.integers(0, m, size=2 * (k - len(chosen)) + 16)
            b = rng.integers(0, m, size=len(a))
            for x, y in zip(a.tolist(), b.tolist()):
                if pid[x] == pid[y]:
                    continue
                key = (min(x, y), max(x, y))
                if key not in chosen:
                    chosen.add(key)
                    if len(chosen) == k:
                        break
        for x, y in sorted(chosen):
            impostors.append((names[pid[x]], int(num[x]), names[pid[y]], int(num[y]), False, f))
    return sorted(genuine, key=lambda p: (p[5], p[0], p[1], p[3])) + sorted(impostors, key=lambda p: (p[5], p[0], p[1], p[2], p[3]))


def ensure_extended_pairs(path: str | os.PathLike, people_counts: dict[str, int], cfg: ExtendedPairsConfig,
                          printer=print) -> tuple[Path, dict[str, int]]:
    """Write the extended list to ``path`` unless a file with the same parameters and people is there;
    returns the path and ``{genuine, impostors, people, folds}``."""
    path = Path(path)
    sig = _signature(cfg, list(people_counts))
    if path.is_file():
        with open(path) as f:
            f.readline()
            if f.readline().strip() == f"# {sig}":
                pairs = read_pair_list(path, check_files=False)
                gen = sum(1 for p in pairs if p[2])
                printer(f"benchmark: reusing the extended pair list {path}")
                return path, {"genuine": gen, "impostors": len(pairs) - gen, "people": len(people_counts),
                              "folds": cfg.folds}
        printer(f"benchmark: {path} was made with other parameters; rewriting it")
    pairs = extended_pairs(people_counts, cfg)
    write_pair_list(path, pairs, comment=sig)
    gen = sum(1 for p in pairs if p[4])
    printer(f"benchmark: wrote {gen} genuine + {len(pairs) - gen} impostor pairs to {path}")
    return path, {"genuine": gen, "impostors": len(pairs) - gen, "people": len(people_counts), "folds": cfg.folds}
