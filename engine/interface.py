"""The one identity-sampler interface every synthface source implements.

A *source* (the morphable 3D model, a diffusion or GAN generator) does two things:

1. ``sample_identities(n, seed)`` -> :class:`Identities`: ``n`` separable identities, deterministic
   by seed and prefix-stable (the first ``m`` of ``n`` identities are the ``m`` identities asked
   for with the same seed), so that ``--ids 5000`` and ``--ids 5001`` share 5000 people and shards
   can each rebuild the whole table cheaply.
2. ``render(identities, rows, variations, seed)`` -> :class:`RenderBatch`: one image per
   ``(rows[b], variations[b])`` pair. Image ``b`` depends only on ``(seed, identity, variation)`` and
   the source's config; never on what else is in the batch (up to floating-point batching effects,
   which the engine removes by always rendering the same fixed blocks).

Everything downstream (engine, streaming dataset, trainer, benchmarks) speaks only this interface.
"""
from __future__ import annotations

import abc
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .separation import Acceptance, exact_min_distance, reject_close  # noqa: F401  (the samplers' rejection rule)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from ``parts`` by hashing: stable across runs, platforms and processes.

    Used to give every (seed, identity, variation) its own random stream.
    """
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def generator(*parts: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`derive_seed` of ``parts``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*parts))
    return g


@dataclass
class Identities:
    """A table of ``N`` sampled identities.

    Attributes:
        params: per-identity parameters, each tensor with leading dim ``N`` (e.g. ``shape`` (N, Ks),
            ``albedo`` (N, Ka)); the source decides the keys and knows how to render them.
        embedding: (N, D) the vectors in which separability is enforced and reported.
        seed: the seed they were sampled with.
        report: separability report (see :func:`separability_report`).
        meta: per-identity scalar metadata for tables (name -> (N,) tensor), e.g. gender, age.
    """

    params: dict[str, torch.Tensor]
    embedding: torch.Tensor
    seed: int
    report: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.embedding.shape[0])

    def select(self, rows: torch.Tensor | slice) -> "Identities":
        """The sub-table of ``rows`` (keeps the report of the whole table)."""
        return Identities(
            params={k: v[rows] for k, v in self.params.items()},
            embedding=self.embedding[rows],
            seed=self.seed,
            report=self.report,
            meta={k: v[rows] for k, v in self.meta.items()},
        )

    def to(self, device: str | torch.device) -> "Identities":
        return Identities(
            params={k: v.to(device) for k, v in self.params.items()},
            embedding=self.embedding.to(device),
            seed=self.seed,
            report=self.report,
            meta={k: v.to(device) for k, v in self.meta.items()},
        )


@dataclass
class RenderBatch:
    """``B`` rendered images with everything needed to label them.

    Attributes:
        images: (B, 3, H, W) float32 RGB in [0, 1].
        identity: (B,) int64 identity index (row in the :class:`Identities` table).
        variation: (B,) int64 variation index ``k`` of that identity.
        landmarks: (B, 5, 2) float32 pixel coordinates in ``images`` of the 5 ArcFace points
            (left eye, right eye, nose tip, left mouth corner, right mouth corner; image left/right).
        factors: per-image sampled factors, name -> (B,) or (B, k) tensor (pose angles in degrees,
            expression, light, camera, background, degradations ...). Logged as metadata columns.
    """

    images: torch.Tensor
    identity: torch.Tensor
    variation: torch.Tensor
    landmarks: torch.Tensor
    factors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: str | torch.device) -> "RenderBatch":
        return RenderBatch(
            images=self.images.to(device),
            identity=self.identity.to(device),
            variation=self.variation.to(device),
            landmarks=self.landmarks.to(device),
            factors={k: v.to(device) for k, v in self.factors.items()},
        )


class IdentitySampler(abc.ABC):
    """Base class of every identity source.

    Subclasses set ``name`` and implement :meth:`sample_identities`, :meth:`render` and
    :meth:`config`. ``size`` is the output side in pixels; ``aligned`` selects the ArcFace-aligned
    crop (112 px template scaled to ``size``) rather than an unaligned, head-centred view.
    """

    name: str = "abstract"

    @abc.abstractmethod
    def sample_identities(self, n: int, seed: int) -> Identities:
        """``n`` separable identities, deterministic by ``seed`` and prefix-stable."""

    @abc.abstractmethod
    def render(
        self,
        identities: Identities,
        rows: torch.Tensor,
        variations: torch.Tensor,
        seed: int,
    ) -> RenderBatch:
        """Render image ``b`` of identity ``rows[b]`` (a row of ``identities``), variation
        ``variations[b]``. ``RenderBatch.identity`` holds ``rows``."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable configuration that, with the seed, regenerates the data exactly."""

    @property
    def image_size(self) -> int:
        return int(self.config().get("size", 112))



def check_render_args(identities: Identities, rows, variations) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the arguments of :meth:`IdentitySampler.render`; returns ``rows`` and ``variations``
    as 1-D int64 CPU tensors. Raises ``ValueError`` naming the problem."""
    rows = torch.as_tensor(rows, dtype=torch.int64).cpu()
    variations = torch.as_tensor(variations, dtype=torch.int64).cpu()
    if rows.ndim != 1 or rows.shape != variations.shape:
        raise ValueError(f"rows and variations must be 1-D of equal length, got {tuple(rows.shape)} and "
                         f"{tuple(variations.shape)}")
    if rows.numel() == 0:
        raise ValueError("render needs at least one (row, variation) pair, got none")
    if int(rows.min()) < 0 or int(rows.max()) >= len(identities):
        raise ValueError(f"rows must index the {len(identities)} identities, got range [{int(rows.min())}, "
                         f"{int(rows.max())}]")
    if int(variations.min()) < 0:
        raise ValueError("variation indices must be >= 0")
    return rows, variations


def pairwise_min_distance(x: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """(N,) distance from each row of ``x`` (N, D) to its nearest other row (in row chunks, so
    memory stays O(chunk * N))."""
    x = x.double()
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for s in range(0, x.shape[0], chunk):
        d = torch.cdist(x[s : s + chunk], x)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        out[s : s + chunk] = d.min(dim=1).values
    return out


#: identities whose pairwise distances the separability report's quantiles are computed on (a prefix)
REPORT_SAMPLE = 4096


def separability_report(embedding: torch.Tensor, space: str, min_distance: float,
                        achieved_min_distance: float | None = None) -> dict[str, Any]:
    """Summary of pairwise distances between identities in ``embedding`` (N, D).

    Reports the configured threshold, the achieved minimum distance over all N identities, and
    quantiles, mean and std of the pairwise distances. Up to ``REPORT_SAMPLE`` identities everything is
    computed on all pairs (dense ``torch.cdist``, as always). Beyond, the quantiles, mean and std are
    those of the first ``REPORT_SAMPLE`` identities (a deterministic, prefix-stable sample, reported as
    ``sample_size``) and the minimum is exact over all N: ``achieved_min_distance`` when the sampler
    measured it (:func:`engine.separation.reject_close` does), else
    :func:`engine.separation.exact_min_distance`.
    """
    n = embedding.shape[0]
    report: dict[str, Any] = {"space": space, "min_distance_required": float(min_distance), "n": int(n)}
    if n < 2:
        report.update(achieved_min_distance=None)
        return report
    sub = embedding[: min(n, REPORT_SAMPLE)].double().cpu()
    d = torch.cdist(sub, sub)
    iu = torch.triu_indices(len(sub), len(sub), offset=1)
    pd = d[iu[0], iu[1]]
    qs = torch.tensor([0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0], dtype=pd.dtype)
    qv = torch.quantile(pd[: 5_000_000], qs)
    if n <= REPORT_SAMPLE:
        achieved = float(pairwise_min_distance(sub).min())
    else:
        achieved = float(achieved_min_distance if achieved_min_distance is not None else exact_min_distance(embedding))
    report.update(achieved_min_distance=achieved)
    if n > REPORT_SAMPLE:
        report.update(sample_size=int(sub.shape[0]))
    report.update(
        pairwise_quantiles={f"q{int(q * 100):02d}": float(v) for q, v in zip(qs, qv)},
        pairwise_mean=float(pd.mean()),
        pairwise_std=float(pd.std()) if pd.numel() > 1 else 0.0,
    )
    return report
