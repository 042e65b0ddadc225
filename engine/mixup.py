"""Identity mixup (SynFace, Qiu et al., ICCV 2021): new identities as convex combinations of two.

A source whose identities are vectors offers two hooks (:class:`MixableSource`):

* ``identity_candidates(seed, start, count)`` -> :class:`~engine.interface.Identities`: candidates
  ``start .. start+count`` of its deterministic candidate stream, *unfiltered* (the stream its own
  ``sample_identities`` rejection-samples);
* ``mix_identities(a, b, lam)`` -> :class:`Identities`: ``m`` new identities from the rows of the
  ``m``-row tables ``a`` and ``b`` with weights ``lam`` (m,) on ``a`` (the source decides what mixes:
  continuous coefficients convexly, discrete attributes from the parent with the larger weight,
  unit embeddings renormalised) and their embedding in the separability space.

:func:`sample_with_mixup` builds an ``n``-row table in which a ``fraction`` of the rows are mixed
identities (config :class:`MixupConfig`, the source's ``identity.mixup``):

* **Slots.** Row ``i`` is a mixed identity iff at least two base identities precede it and
  ``u_i < fraction`` with ``u_i`` a hash of ``(seed, "mixup-slot", i)``.
* **Base rows** take the source's candidate stream in order (candidate ``c`` as in ``sample_identities``).
* **Mixed row** ``i``, try ``t``: ``generator(seed, "mixup", i, t)`` draws parent ``a`` and a distinct
  parent ``b`` uniformly among the base rows before ``i`` and ``lam ~ U[lam[0], lam[1]]`` (a's weight).
* **Separability rule** (one sequential rule over the table, hence prefix-stable): a base candidate is
  accepted iff it lies ``>= min_distance`` from *every* earlier row (base or mixed); a mixed candidate
  iff it lies ``>= min_distance`` from every earlier row *except its two parents* (they are
  deliberately close: ``|m - a| = (1 - lam) |a - b|``, and the soft label says so). So in the final
  table every pair of rows is ``>= min_distance`` apart unless one is a parent of the other. Base
  rows are therefore not exactly those of a table without mixup (a base candidate that falls near an
  earlier mixed identity is rejected). ``mixup.max_tries`` tries per mixed row, then an error naming
  ``identity.mixup``; base rejections are bounded by ``identity.max_tries * n`` as without mixup.

Metadata (``Identities.meta``, hence ``id_mix_*`` columns of ``metadata.parquet``): ``mix_parent_a``,
``mix_parent_b`` (table rows; a base row is its own parent) and ``mix_lambda`` (a's weight; 1 for a
base row). Training turns them into soft labels over the base rows (``soft_labels: true`` on a source).

Cost: one exact float64 distance row per candidate (O(N^2 D) in all, in Python steps of one candidate):
fine to tens of thousands of identities; with mixup off the sources keep their blockwise sampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch

from common.errors import ConfigError

from .interface import Identities, derive_seed, generator, separability_report

__all__ = ["MixupConfig", "MixableSource", "sample_with_mixup", "concat_identities", "mixup_slots", "mixed_rule_violations",
           "MIX_COLUMNS"]

#: the per-identity metadata columns of a mixup table
MIX_COLUMNS = ("mix_parent_a", "mix_parent_b", "mix_lambda")
_BLOCK = 256  # base candidates are fetched in aligned blocks of this size (deterministic whatever n)


@dataclass
class MixupConfig:
    """``identity.mixup``: ``fraction`` of the identities (rows) that are mixed (0 = off, the
    default: sampling as before, byte-identical renders), ``lam`` = [lo, hi] the range of the first
    parent's weight (uniform), ``max_tries`` candidates per mixed row before giving up."""

    fraction: float = 0.0
    lam: list[float] = field(default_factory=lambda: [0.2, 0.8])
    max_tries: int = 100

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def validate(self, path: str = "identity.mixup") -> None:
        if not 0.0 <= float(self.fraction) < 1.0:
            raise ConfigError(f"{path}.fraction: must be in [0, 1), got {self.fraction}")
        if len(self.lam) != 2:
            raise ConfigError(f"{path}.lam: expected [lo, hi], got {self.lam}")
        lo, hi = (float(v) for v in self.lam)
        if not (0.0 < lo <= hi < 1.0):
            raise ConfigError(f"{path}.lam: need 0 < lo <= hi < 1, got [{lo}, {hi}]")
        if int(self.max_tries) < 1:
            raise ConfigError(f"{path}.max_tries: must be >= 1, got {self.max_tries}")


class MixableSource(Protocol):
    def identity_candidates(self, seed: int, start: int, count: int) -> Identities: ...

    def mix_identities(self, a: Identities, b: Identities, lam: torch.Tensor) -> Identities: ...


def concat_identities(parts: list[Identities], seed: int) -> Identities:
    """The rows of ``parts`` one after the other (same params and meta keys in each part)."""
    p0 = parts[0]
    return Identities(
        params={k: torch.cat([p.params[k] for p in parts]) for k in p0.params},
        embedding=torch.cat([p.embedding for p in parts]),
        seed=int(seed),
        meta={k: torch.cat([p.meta[k] for p in parts]) for k in p0.meta},
    )


def mixup_slots(n: int, seed: int, fraction: float) -> torch.Tensor:
    """(n,) bool: row ``i`` is a mixed identity (see the module docstring; prefix-stable)."""
    out = torch.zeros(int(n), dtype=torch.bool)
    bases = 0
    for i in range(int(n)):
        u = derive_seed(seed, "mixup-slot", i) / float(1 << 63)
        if bases >= 2 and u < fraction:
            out[i] = True
        else:
            bases += 1
    return out


def _draw_mix(seed: int, i: int, t: int, num_bases: int, lam: list[float]) -> tuple[int, int, float]:
    """Try ``t`` of mixed row ``i``: (index of parent a, of parent b among the bases so far, a's weight)."""
    g = generator(seed, "mixup", i, t)
    pa = int(torch.randint(num_bases, (1,), generator=g))
    pb = int(torch.randint(num_bases - 1, (1,), generator=g))
    pb += pb >= pa
    lo, hi = float(lam[0]), float(lam[1])
    w = lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64))
    return pa, pb, w


def sample_with_mixup(source: MixableSource, n: int, seed: int, mixup: MixupConfig, min_distance: float,
                      max_tries: int, space: str) -> Identities:
    """``n`` identities of which about ``mixup.fraction`` are mixed (see the module docstring for
    the slots, the draws and the separability rule). Returns the table with ``mix_*`` meta columns and
    a separability report whose ``achieved_min_distance`` is over all pairs but parent-child ones
    (``report["mixup"]`` holds the counts and the parent distances)."""
    n, md = int(n), float(min_distance)
    slots = mixup_slots(n, seed, float(mixup.fraction))
    limit = int(max_tries) * max(n, 1)
    E = None  # (n, D) float64 accepted embeddings
    rows: list[Identities] = []
    base_rows: list[int] = []  # table rows of the base identities so far
    par_a, par_b, lams = torch.arange(n), torch.arange(n), torch.ones(n, dtype=torch.float64)
    cache: dict[int, Identities] = {}
    cand, rejected, rejected_mixed, best = 0, 0, 0, math.inf
    parent_d: list[float] = []

    def base_candidate(c: int) -> Identities:
        blk = c // _BLOCK
        if blk not in cache:
            cache.clear()
            cache[blk] = source.identity_candidates(seed, blk * _BLOCK, _BLOCK)
        return cache[blk].select(slice(c - blk * _BLOCK, c - blk * _BLOCK + 1))

    for i in range(n):
        if not bool(slots[i]):
            while True:
                c_ids = base_candidate(cand)
                cand += 1
                e = c_ids.embedding.double()
                if E is None:
                    E = torch.empty(n, e.shape[1], dtype=torch.float64)
                d = (E[:i] - e).norm(dim=1)
                near = float(d.min()) if i else math.inf
                if near >= md:
                    break
                rejected += 1
                if rejected > limit:
                    raise ValueError(f"could not find {n} identities at min_distance {md} with identity.mixup "
                                     f"(fraction {mixup.fraction}): {i} rows found after {rejected} base rejections; "
                                     f"lower identity.min_distance or identity.mixup.fraction")
            base_rows.append(i)
        else:
            for t in range(int(mixup.max_tries)):
                ia, ib, w = _draw_mix(seed, i, t, len(base_rows), mixup.lam)
                ra, rb = base_rows[ia], base_rows[ib]
                c_ids = source.mix_identities(rows[ra], rows[rb], torch.tensor([w], dtype=torch.float64))
                e = c_ids.embedding.double()
                d = (E[:i] - e).norm(dim=1)
                da, db = float(d[ra]), float(d[rb])
                d[ra] = d[rb] = math.inf
                near = float(d.min())
                if near >= md:
                    break
                rejected_mixed += 1
            else:
                raise ValueError(f"identity.mixup: no mixed identity for row {i} at min_distance {md} from every "
                                 f"non-parent identity after {mixup.max_tries} tries (identity.mixup.max_tries); "
                                 f"lower identity.mixup.fraction or identity.min_distance")
            par_a[i], par_b[i], lams[i] = ra, rb, w
            parent_d += [da, db]
        best = min(best, near)
        E[i] = e[0]
        rows.append(c_ids)
    table = concat_identities(rows, seed)
    table.meta.update(mix_parent_a=par_a, mix_parent_b=par_b, mix_lambda=lams)
    rep = separability_report(table.embedding, space=space, min_distance=md,
                              achieved_min_distance=best if n > 1 else None)
    # the report's own minimum (dense up to its sample size) includes parent-child pairs: the rule's is ``best``
    rep["achieved_min_distance"] = best if n > 1 and math.isfinite(best) else None
    n_mixed = int(slots.sum())
    rep.update(candidates=cand + n_mixed + rejected_mixed, rejected=rejected + rejected_mixed)
    rep["mixup"] = {
        "fraction": float(mixup.fraction), "lam": [float(v) for v in mixup.lam], "mixed": n_mixed, "base": n - n_mixed,
        "rejected_base": rejected, "rejected_mixed": rejected_mixed,
        "parent_distance_min": min(parent_d) if parent_d else None,
        "parent_distance_mean": sum(parent_d) / len(parent_d) if parent_d else None,
        "rule": "every pair >= min_distance except a mixed identity and its two parents; achieved_min_distance "
                "excludes those pairs (the pairwise quantiles include them)",
    }
    table.report = rep
    return table


def mixed_rule_violations(table: Identities, min_distance: float) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, distance)`` of ``table`` (dense, for tests and checks) closer than
    ``min_distance`` that the mixup rule does not allow (i.e. neither is a parent of the other)."""
    e = table.embedding.double()
    d = torch.cdist(e, e)
    n = e.shape[0]
    ok = torch.eye(n, dtype=torch.bool)
    if "mix_parent_a" in table.meta:
        r = torch.arange(n)
        for col in ("mix_parent_a", "mix_parent_b"):
            p = table.meta[col].long()
            ok[r, p] = True
            ok[p, r] = True
    bad = (d < float(min_distance)) & ~ok
    i, j = torch.nonzero(torch.triu(bad, 1), as_tuple=True)
    return [(int(a), int(b), float(d[a, b])) for a, b in zip(i, j)]

