"""Separable identities at scale: exact sequential rejection done as blockwise tensor work.

The rule (unchanged since the first identity sampler): candidates come from a deterministic stream,
and candidate ``i`` is accepted if its embedding is at least ``min_distance`` from every candidate
accepted before it. The result is prefix-stable (the first ``m`` accepted of a run asking for ``n``
are those of a run asking for ``m``).

The one-at-a-time loop costs O(N^2) small Python steps; here a block of ``B`` candidates is screened
against all accepted embeddings with one low-precision matrix product per chunk (bf16 inputs, float32
accumulation, the bound folded into the product so that a row minimum is the only pass over it), with
a rigorous error margin, so that every pair that *may* lie below the threshold is kept; the kept pairs
get their exact float64 distance (direct differences), and the few in-block conflicts are settled in
candidate order. The decisions are those of the sequential rule evaluated in
float64 (the loop used ``torch.cdist``, whose matrix-product form can differ from direct differences
by ~1e-16: a decision could only differ for a distance within that of ``min_distance``).

The same pass yields the exact minimum distance between accepted embeddings (screening at the
current minimum, never below ``min_distance``), so the separability report of a million identities
states the true minimum, not that of a sample.

Costs: the screen is N^2 / 2 * (D + 2) multiply-adds in bf16 (1,000,000 morphable identities of 161
dims: ~1.6e14 flops at ~300 GFLOP/s, about 9 of the 11 minutes they take on two CPU cores, see
BENCHMARKS.md; on CUDA seconds); memory is O(N * D) (the accepted embeddings in the candidates' dtype
plus a bf16 copy) plus one (B, tile) product of 8 MB.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

#: relative bound on the error of the bf16 screen ``|y|^2 - 2 x.y`` (bf16 operands, float32
#: accumulation), as a multiple of ``2 |x| |y| + |y|^2``: operands rounded to 8 significant bits
#: (2 * 2^-8) and the float32 sum (D * 2^-24) add up to ~0.008 for D <= 1024 (the rounding of the
#: result to bf16 keeps its sign, the only thing the screen reads); the screen keeps 4 times that.
SCREEN_EPS = 2.0 ** -5
#: multiply-adds from which a screen tile runs in bf16 (small bf16 products are slow on CPU)
_BF16_MIN_WORK = 1 << 27
#: elements of one screen product (8 MB of bf16): products that stay in the CPU's cache for the row
#: minimum run ~1.4x faster than 4096 x 8192 ones (2-core EPYC: 300-340 against 200-220 GFLOPS)
_TILE_ELEMENTS = 1 << 22


@dataclass
class Acceptance:
    """The outcome of :func:`reject_close`.

    Attributes:
        index: (n,) int64 candidate indices of the accepted identities, increasing.
        embedding: (n, D) their embeddings, in the dtype the candidate stream returned.
        rejected: candidates rejected before the n-th acceptance.
        min_distance: exact minimum float64 distance between two accepted embeddings (None if n < 2).
    """

    index: torch.Tensor
    embedding: torch.Tensor
    rejected: int
    min_distance: float | None


def _pair_distances(a: torch.Tensor, ia: torch.Tensor, b: torch.Tensor, ib: torch.Tensor,
                    chunk: int = 1 << 16) -> torch.Tensor:
    """(P,) float64 distances ``|a[ia] - b[ib]|`` by direct differences, in chunks of pairs."""
    out = torch.empty(ia.numel(), dtype=torch.float64, device=a.device)
    for s in range(0, ia.numel(), chunk):
        d = a[ia[s: s + chunk]].double() - b[ib[s: s + chunk]].double()
        out[s: s + chunk] = (d * d).sum(1).sqrt()
    return out


def augment_lp(x: torch.Tensor, x_sq: torch.Tensor, side: str) -> torch.Tensor:
    """The bf16 screen operands (N, D + 2): ``[-2 x, 1, 0]`` (``side="row"``; the last column takes
    ``-bound`` per tile in :func:`close_pairs`) or ``[y, |y|^2, 1]`` (``"col"``), so that one product
    gives ``|y|^2 - 2 x.y - bound`` (the squared distance less ``|x|^2`` and the screen's bound) and the
    screen is a row minimum of the product, with no comparison pass over it."""
    one, zero = torch.ones_like(x_sq)[:, None], torch.zeros_like(x_sq)[:, None]
    if side == "row":
        return torch.cat([-2.0 * x.float(), one, zero], 1).bfloat16()
    return torch.cat([x.float(), x_sq[:, None], one], 1).bfloat16()


def close_pairs(x: torch.Tensor, x_lp: torch.Tensor, x_sq: torch.Tensor, y: torch.Tensor, y_lp: torch.Tensor,
                y_sq: torch.Tensor, threshold: float, upper: bool = False,
                tile: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every pair ``(i, j)`` of rows of ``x`` (B, D) and ``y`` (M, D) at exact distance below
    ``threshold``, and some just above it: ``(i (P,), j (P,), exact float64 distance (P,))``.

    ``x_lp``/``y_lp`` are the bf16 screen operands (:func:`augment_lp`, rows and columns; the last
    column of ``x_lp`` is overwritten with each tile's bound) and ``x_sq``/``y_sq`` (float32) the
    squared norms. The screen ``|x|^2 + (|y|^2 - 2 x.y)`` in low precision keeps a pair unless it is
    provably farther than ``threshold`` (margin ``SCREEN_EPS * (2 |x| |y|max + |y|max^2)``, over the
    bound of the bf16 rounding of every operand, float32 accumulation); one row minimum of each
    (B, tile) product finds the rows that hold a kept pair, and the kept pairs are measured exactly.
    ``upper``: ``x is y`` and only pairs ``i < j`` are wanted. ``tile``: columns per product (default:
    ``_TILE_ELEMENTS / B``, so that the product stays in cache for its row minimum).
    """
    tile = tile or max(256, _TILE_ELEMENTS // max(x.shape[0], 1))
    t2 = threshold * threshold
    xn = x_sq.sqrt()
    ii, jj = [], []
    for s in range(0, y.shape[0], tile):
        if upper and s >= x.shape[0]:
            break
        m = min(tile, y.shape[0] - s)
        ymax2 = float(y_sq[s: s + m].max()) if m else 0.0
        rhs = (t2 + SCREEN_EPS * (2.0 * xn * math.sqrt(ymax2) + ymax2) + 1e-5 * (1.0 + t2)) - x_sq  # (B,)
        if x.shape[0] * m * x.shape[1] >= _BF16_MIN_WORK:
            # the bound rides in the product's last column: raised by 2^-6 |rhs| first, so that its
            # rounding to bf16 (2^-9 relative) and its share of the float32 accumulation error never
            # lower it; a pair is kept if the product is <= 0 (its sign survives the rounding to bf16)
            x_lp[:, -1] = -(rhs + rhs.abs() * 2.0 ** -6)
            g = torch.mm(x_lp, y_lp[s: s + m].T)  # (B, m) bf16: |y|^2 - 2 x.y - bound
            rows = (g.amin(1) <= 0).nonzero(as_tuple=True)[0]  # rows with a pair to keep (few)
            keep, i0 = g[rows] <= 0, rows
        else:  # small products run faster (and tighter) in float32
            g = y_sq[None, s: s + m] - 2.0 * torch.mm(x.float(), y[s: s + m].float().T)
            keep, i0 = g < rhs[:, None], None
        if upper:
            r = torch.arange(x.shape[0], device=x.device) if i0 is None else i0
            keep &= r[:, None] < torch.arange(s, s + m, device=x.device)[None]
        i, j = keep.nonzero(as_tuple=True)
        ii.append(i if i0 is None else i0[i]), jj.append(j + s)
    i = torch.cat(ii) if ii else torch.zeros(0, dtype=torch.long, device=x.device)
    j = torch.cat(jj) if jj else torch.zeros(0, dtype=torch.long, device=x.device)
    return i, j, _pair_distances(x, i, y, j)


def reject_close(candidates: Callable[[int, int], torch.Tensor], n: int, min_distance: float, max_tries: int,
                 block: int = 4096, first_block: int = 512) -> Acceptance:
    """Exact sequential rejection over a deterministic candidate stream, batched.

    ``candidates(start, count)`` -> (count, D) embeddings of candidates ``start .. start+count``
    (float32 or float64; the rule is applied in float64). Candidate ``i`` is accepted iff it lies at
    least ``min_distance`` from every earlier accepted one; blocks of ``block`` candidates (the first
    one ``first_block``) are asked for, so which candidates are drawn past the last accepted one does
    not change the result. Raises ``ValueError`` after ``max_tries * n`` rejections, naming the
    distances at which the rejected candidates lay (what ``min_distance`` this stream can reach).
    """
    n, md = int(n), float(min_distance)
    limit = max_tries * max(n, 1)
    acc = acc_lp = acc_sq = None
    index = torch.empty(n, dtype=torch.long)
    k, c, rejected, best = 0, 0, 0, math.inf
    near: list[torch.Tensor] = []  # distances of rejected candidates to their nearest accepted one
    while k < n:
        e = candidates(c, first_block if c == 0 else block)
        B, dev = e.shape[0], e.device
        if acc is None:
            acc = torch.empty(n, e.shape[1], dtype=e.dtype, device=dev)
            acc_lp = torch.empty(n, e.shape[1] + 2, dtype=torch.bfloat16, device=dev)
            acc_sq = torch.empty(n, dtype=torch.float32, device=dev)
        e_sq = e.double().pow(2).sum(1).float()
        e_row, e_col = augment_lp(e, e_sq, "row"), augment_lp(e, e_sq, "col")
        screen = max(md, best) if math.isfinite(best) else math.inf
        # 1. against everything accepted before this block: nearest exact distance per candidate
        prev = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
        if k:
            if math.isfinite(screen):
                i, j, d = close_pairs(e, e_row, e_sq, acc[:k], acc_lp[:k], acc_sq[:k], screen)
            else:  # no accepted pair yet: measure all (k <= first_block here)
                i, j = (t.reshape(-1) for t in torch.meshgrid(torch.arange(B, device=dev), torch.arange(k, device=dev), indexing="ij"))
                d = _pair_distances(e, i, acc[:k], j)
            prev.scatter_reduce_(0, i, d, "amin")
        # 2. within the block: pairs (i < j), settled in candidate order
        if math.isfinite(screen):
            bi, bj, bd = close_pairs(e, e_row, e_sq, e, e_col, e_sq, screen, upper=True)
        else:
            bi, bj = torch.triu_indices(B, B, offset=1, device=dev)
            bd = _pair_distances(e, bi, e, bj)
        ok = prev >= md
        nearest = prev.clone()  # nearest accepted (earlier blocks and, below, this block) per candidate
        # candidate j is rejected by an accepted i < j of this block at distance < md: in order of j
        close = bd < md
        if bool(close.any()):
            ci, cj, cd = bi[close].tolist(), bj[close].tolist(), bd[close].tolist()
            okl, nl = ok.tolist(), nearest.tolist()
            by_j: dict[int, list[tuple[int, float]]] = {}
            for i_, j_, d_ in zip(ci, cj, cd):
                by_j.setdefault(j_, []).append((i_, d_))
            for j_ in sorted(by_j):
                hits = [d_ for i_, d_ in by_j[j_] if okl[i_]]
                if hits:
                    okl[j_] = False
                    nl[j_] = min(nl[j_], min(hits))
            ok = torch.tensor(okl, dtype=torch.bool, device=dev)
            nearest = torch.tensor(nl, dtype=torch.float64, device=dev)
        # truncate at the n-th acceptance and at the rejection limit, in candidate order
        okl = ok.tolist()
        take, stop_error = B, False
        kk, rr = k, rejected
        for pos, good in enumerate(okl):
            if good:
                kk += 1
                if kk == n:
                    take = pos + 1
                    break
            else:
                rr += 1
                if rr > limit:
                    take, stop_error = pos + 1, True
                    break
        okt = ok[:take]
        acc_rows = okt.nonzero(as_tuple=True)[0]
        rej_rows = (~okt).nonzero(as_tuple=True)[0]
        if rej_rows.numel():
            near.append(nearest[rej_rows].cpu())
        rejected += int(rej_rows.numel())
        # exact minimum among accepted pairs (all pairs below `screen` were measured)
        if acc_rows.numel():
            pm = prev[acc_rows]
            best = min(best, float(pm.min()))
            inblk = torch.zeros(B, dtype=torch.bool, device=dev)
            inblk[acc_rows] = True
            both = inblk[bi] & inblk[bj]
            if bool(both.any()):
                best = min(best, float(bd[both].min()))
        if stop_error:
            q = torch.cat(near).quantile(torch.tensor([0.5, 0.9], dtype=torch.float64))
            raise ValueError(f"could not find {n} identities at min_distance {md}: {k + int(acc_rows.numel())} found after "
                             f"{rejected} rejections (rejected candidates lay at a median distance "
                             f"{float(q[0]):.3f}, 90th percentile {float(q[1]):.3f}, from their nearest "
                             f"accepted identity); lower identity.min_distance")
        m = int(acc_rows.numel())
        acc[k: k + m], acc_lp[k: k + m], acc_sq[k: k + m] = e[acc_rows], e_col[acc_rows], e_sq[acc_rows]
        index[k: k + m] = acc_rows.cpu() + c
        k += m
        c += B
    return Acceptance(index=index, embedding=acc, rejected=rejected, min_distance=best if n >= 2 else None)


def exact_min_distance(x: torch.Tensor, block: int = 4096) -> float | None:
    """Exact minimum float64 distance between two rows of ``x`` (N, D), by the same blockwise screen
    (None if N < 2): for tables not sampled by :func:`reject_close`."""
    if x.shape[0] < 2:
        return None
    return reject_close(lambda s, cnt: x[s: s + cnt], x.shape[0], 0.0, 0, block=block).min_distance
