"""The step-driven curriculum of a training run (its config schema: :mod:`training.config`).

:class:`Curriculum` turns the phases into global-step ranges: ``phase_at(step)``, the normalised
per-source sampling weights ``weights(step)`` (linear or cosine ramps from a phase's start weights
to its end weights), per-step batch composition ``allocate(...)``, and the class spaces: a *head
segment* starts at phase 0 and at every phase with ``reinit_head: true``; each segment's label
space concatenates the classes of the sources active anywhere in it (source order of the config).
:func:`allocate_counts` and :func:`weyl_u` are the batch-composition arithmetic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from common.config import ConfigError

from .config import PhaseConfig, TrainConfig

__all__ = ["ResolvedPhase", "Curriculum", "allocate_counts", "weyl_u"]

# ----------------------------------------------------------------------------------------------
# curriculum
# ----------------------------------------------------------------------------------------------


def allocate_counts(weights: np.ndarray, batch_size: int, u: np.ndarray | float) -> np.ndarray:
    """Split ``batch_size`` samples among sources by systematic sampling.

    ``weights``: ``(K,)`` or ``(n, K)`` normalised weights; ``u`` in ``[0, 1)`` (one per row). Point
    ``j`` of a batch sits at ``(j + u) / B`` and goes to the source whose cumulative-weight interval
    holds it, so source ``k`` gets ``floor(B w_k)`` or ``ceil(B w_k)`` samples with mean exactly
    ``B w_k`` over uniform ``u``. Returns int64 counts of the same shape summing to ``batch_size``.
    """
    w = np.asarray(weights, dtype=np.float64)
    squeeze = w.ndim == 1
    w = np.atleast_2d(w)
    u = np.asarray(u, dtype=np.float64).reshape(-1, 1)
    c = np.cumsum(w, axis=1)
    c = c / c[:, -1:]
    c[:, -1] = 1.0
    edges = np.ceil(batch_size * c - u - 1e-9).astype(np.int64)
    edges = np.clip(edges, 0, batch_size)
    edges[:, -1] = batch_size
    counts = np.diff(np.concatenate([np.zeros((len(w), 1), dtype=np.int64), edges], axis=1), axis=1)
    return counts[0] if squeeze else counts


_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def weyl_u(v: np.ndarray | int, seed: int) -> np.ndarray:
    """Low-discrepancy offsets in [0, 1) for virtual steps ``v`` (golden-ratio Weyl sequence)."""
    u0 = ((seed * 0x9E3779B97F4A7C15) % (1 << 32)) / float(1 << 32)
    v = np.asarray(v, dtype=np.float64)
    return np.mod(u0 + v * _PHI, 1.0)


@dataclass
class ResolvedPhase:
    """A phase placed on the global step axis: steps ``[start, end)``."""

    index: int
    name: str
    start: int
    end: int
    w_start: np.ndarray
    w_end: np.ndarray
    ramp: str
    segment: int
    config: PhaseConfig

    @property
    def steps(self) -> int:
        return self.end - self.start

    def active(self) -> np.ndarray:
        return (self.w_start > 0) | (self.w_end > 0)


class Curriculum:
    """Phases on the global step axis, per-step source weights and per-segment label spaces.

    Args:
        cfg: the validated :class:`TrainConfig`.
        num_classes: classes of each used source (``{name: C}``); needed for label spaces.
        num_images: images per epoch of each used source (``None`` for unbounded streams); needed
            only for phases given in ``epochs``.
        world_size: number of data-parallel ranks (an epoch is split across them).
    """

    def __init__(self, cfg: TrainConfig, num_classes: Mapping[str, int] | None = None,
                 num_images: Mapping[str, int | None] | None = None, world_size: int = 1):
        self.cfg = cfg
        self.batch_size = cfg.trainer.batch_size
        self.world_size = max(int(world_size), 1)
        self.source_names: list[str] = cfg.used_sources()
        K = len(self.source_names)
        idx = {n: i for i, n in enumerate(self.source_names)}
        self.phases: list[ResolvedPhase] = []
        start, seg = 0, 0
        for i, ph in enumerate(cfg.phases):
            ws, we = np.zeros(K), np.zeros(K)
            for n, w in ph.start_weights.items():
                if n in idx:
                    ws[idx[n]] = w
            for n, w in ph.end_weights.items():
                if n in idx:
                    we[idx[n]] = w
            ws, we = ws / ws.sum(), we / we.sum()
            if i > 0 and ph.reinit_head:
                seg += 1
            steps = ph.steps if ph.steps is not None else self._epoch_steps(i, ph, num_images)
            self.phases.append(ResolvedPhase(i, ph.name, start, start + steps, ws, we, ph.ramp, seg, ph))
            start += steps
        self.total_steps = start
        self.num_segments = seg + 1
        self.num_classes_by_source = dict(num_classes or {})

    def _epoch_steps(self, i: int, ph: PhaseConfig, num_images: Mapping[str, int | None] | None) -> int:
        total = 0
        for n in ph.active_sources():
            size = (num_images or {}).get(n)
            if size is None:
                raise ConfigError(f"phases[{i}].epochs: the size of source {n!r} is unknown (an unbounded stream); "
                                  f"set sources.{n}.epoch_size or per_id, or give the phase in steps")
            total += int(size)
        return max(1, int(math.ceil(ph.epochs * total / (self.batch_size * self.world_size))))

    # -- phases and weights
    def phase_at(self, step: int) -> ResolvedPhase:
        """The phase that global ``step`` belongs to (the last phase for ``step >= total_steps``)."""
        for ph in self.phases:
            if step < ph.end:
                return ph
        return self.phases[-1]

    def phase_by_name(self, name: str) -> ResolvedPhase:
        for ph in self.phases:
            if ph.name == name:
                return ph
        raise KeyError(f"no phase named {name!r}")

    @staticmethod
    def _ramp(t: np.ndarray, kind: str) -> np.ndarray:
        if kind == "cosine":
            return 0.5 - 0.5 * np.cos(np.pi * t)
        if kind == "step":
            return (t >= 0.5).astype(np.float64)
        return t

    def weights_batch(self, steps: np.ndarray) -> np.ndarray:
        """``(n, K)`` normalised source weights at global ``steps`` (vectorised)."""
        steps = np.asarray(steps, dtype=np.int64)
        out = np.zeros((len(steps), len(self.source_names)))
        for i, ph in enumerate(self.phases):
            lo = ph.start if i > 0 else -np.inf
            hi = ph.end if i < len(self.phases) - 1 else np.inf
            m = (steps >= lo) & (steps < hi)
            if not m.any():
                continue
            t = np.clip((steps[m] - ph.start) / max(ph.steps - 1, 1), 0.0, 1.0)
            r = self._ramp(t, ph.ramp)[:, None]
            w = ph.w_start[None] * (1 - r) + ph.w_end[None] * r
            out[m] = w / w.sum(axis=1, keepdims=True)
        return out

    def weights(self, step: int) -> np.ndarray:
        """``(K,)`` normalised source weights at global ``step``."""
        return self.weights_batch(np.array([step]))[0]

    def weights_dict(self, step: int) -> dict[str, float]:
        return dict(zip(self.source_names, map(float, self.weights(step))))

    def counts(self, step: int, rank: int = 0, seed: int | None = None) -> np.ndarray:
        """Per-source sample counts of the batch of ``rank`` at global ``step``."""
        seed = self.cfg.trainer.seed if seed is None else seed
        v = step * self.world_size + rank
        return allocate_counts(self.weights(step), self.batch_size, weyl_u(v, seed))

    def cumulative_counts(self, step: int, seed: int | None = None, chunk: int = 1 << 16) -> np.ndarray:
        """``(K,)`` samples drawn from each source by all ranks over global steps ``[0, step)``."""
        seed = self.cfg.trainer.seed if seed is None else seed
        total = np.zeros(len(self.source_names), dtype=np.int64)
        for a in range(0, step, chunk):
            s = np.arange(a, min(step, a + chunk))
            w = self.weights_batch(s)
            for r in range(self.world_size):
                total += allocate_counts(w, self.batch_size, weyl_u(s * self.world_size + r, seed)).sum(0)
        return total

    # -- label spaces
    def segment_sources(self, segment: int) -> list[str]:
        """Sources active in any phase of head segment ``segment`` (config order)."""
        act = np.zeros(len(self.source_names), dtype=bool)
        for ph in self.phases:
            if ph.segment == segment:
                act |= ph.active()
        return [n for n, a in zip(self.source_names, act) if a]

    def label_offsets(self, segment: int) -> np.ndarray:
        """``(K,)`` offset of each source's labels in ``segment``'s class space (-1: not in it)."""
        off = np.full(len(self.source_names), -1, dtype=np.int64)
        acc = 0
        active = set(self.segment_sources(segment))
        for i, n in enumerate(self.source_names):
            if n in active:
                if n not in self.num_classes_by_source:
                    raise ValueError(f"number of classes of source {n!r} unknown")
                off[i] = acc
                acc += int(self.num_classes_by_source[n])
        return off

    def num_classes(self, segment: int) -> int:
        return int(sum(self.num_classes_by_source[n] for n in self.segment_sources(segment)))

    def describe(self) -> list[dict[str, Any]]:
        """JSON-friendly phase table."""
        out = []
        for ph in self.phases:
            out.append({
                "index": ph.index, "name": ph.name, "start": ph.start, "end": ph.end, "steps": ph.steps,
                "segment": ph.segment,
                "weights_start": dict(zip(self.source_names, map(float, ph.w_start))),
                "weights_end": dict(zip(self.source_names, map(float, ph.w_end))),
                "num_classes": self.num_classes(ph.segment) if self.num_classes_by_source else None,
                "reinit_head": bool(ph.config.reinit_head and ph.index > 0),
                "freeze": list(ph.config.freeze),
            })
        return out
