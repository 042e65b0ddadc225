"""Counter-based random numbers for a whole batch at once (sampling version 3).

Every image has a 64-bit key, a hash of ``(seed, stream, identity, variation)``; its ``j``-th random
number is a hash of ``(key, j)`` (SplitMix64's finaliser). A batch draws column ``j`` for all its images
in one tensor op, so a factor is a pure function of its image's ``(seed, identity, variation)`` (never of
the batch it is rendered in), the same integers on every device, and no Python loop over images is
needed. :class:`Draws` hands out columns in a fixed order, like a generator stream with one layout
for every image (a draw that an image does not use is still drawn, so the layout never depends on a
sampled value).

Integer arithmetic on ``int64`` tensors wraps modulo 2**64 on CPU and CUDA; right shifts are made
logical by masking. Uniforms carry 24 bits (exact in float32). Draws and their transforms are computed
in float64 and rounded to float32 by the caller: a vectorised CPU kernel and its scalar tail can differ
by an ulp in ``log``/``cos``/``pow``, which float64 followed by rounding hides, so a value does not
depend on its position in the batch.
"""
from __future__ import annotations

import math

import torch

from engine.interface import derive_seed

_M64 = (1 << 64) - 1


def _s64(c: int) -> int:
    """An unsigned 64-bit constant as the signed int64 with the same bits."""
    c &= _M64
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN = _s64(0x9E3779B97F4A7C15)
_C1 = _s64(0xBF58476D1CE4E5B9)
_C2 = _s64(0x94D049BB133111EB)
_INV24 = 1.0 / (1 << 24)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 ``x`` by ``k`` bits."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on an int64 tensor (a bijection of 64-bit words with full avalanche)."""
    x = (x ^ _shr(x, 30)) * _C1
    x = (x ^ _shr(x, 27)) * _C2
    return x ^ _shr(x, 31)


def image_keys(seed: int, stream: str, identity: torch.Tensor, variation: torch.Tensor) -> torch.Tensor:
    """(B,) int64 keys of images ``(identity[b], variation[b])`` in random stream ``stream`` of ``seed``."""
    base = torch.tensor(_s64(derive_seed(int(seed), stream)), dtype=torch.int64, device=identity.device)
    k = mix64(base ^ mix64(identity.to(torch.int64) * _GOLDEN + 1))
    return mix64(k ^ mix64(variation.to(torch.int64) * _GOLDEN + 2))


def bits(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """(B, N) int64 random words of images ``keys`` (B,) at ``counters`` (N,) (same device)."""
    return mix64(keys[:, None] + (counters[None, :] + 1) * _GOLDEN)


def uniform_from_bits(b: torch.Tensor, high: bool = True, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Uniforms in [0, 1) (24-bit, exact in float32) from the top (``high``) or the next 24 bits of
    words ``b``."""
    return (_shr(b, 40) if high else (_shr(b, 16) & 0xFFFFFF)).to(dtype) * _INV24


def normal_pairs(b: torch.Tensor, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent standard normals per word of ``b`` (Box-Muller on its two 24-bit halves)."""
    u1, u2 = uniform_from_bits(b, True, dtype), uniform_from_bits(b, False, dtype)
    r = torch.sqrt(-2.0 * torch.log1p(-u1))  # 1 - u1 in (0, 1]
    t = (2.0 * math.pi) * u2
    return r * torch.cos(t), r * torch.sin(t)


def normal_field(keys: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, *shape) float32 standard normals per image (e.g. sensor noise), on ``keys``' device; each
    image's field depends on its key alone (computed in float32 for speed: up to an ulp of the
    vectorised ``log``/``cos`` where a row does not start on a vector boundary)."""
    n = math.prod(shape)
    half = (n + 1) // 2
    w = bits(keys, torch.arange(half, device=keys.device, dtype=torch.int64))
    a, b = normal_pairs(w, torch.float32)
    return torch.cat([a, b], 1)[:, :n].reshape(keys.shape[0], *shape)


class Draws:
    """A batch of per-image random streams: each call takes the next columns, the same for every image
    (float64 values; round to float32 once the transforms are done).

    Args:
        keys: (B,) int64 image keys (:func:`image_keys`).
    """

    #: columns hashed at once (a draw's columns are the same whatever the block size: block size is speed only)
    BLOCK = 128

    def __init__(self, keys: torch.Tensor) -> None:
        self.keys = keys
        self.used = 0
        self._start = 0  # first column of the cached block
        self._hi = self._lo = keys.new_empty((len(keys), 0), dtype=torch.float64)

    def _cols(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``n`` columns as two (B, n) float64 uniform matrices (the words' top and next 24
        bits), from a cache of hashed blocks: one hash per :attr:`BLOCK` columns, not per draw."""
        a, b = self.used, self.used + n
        if b > self._start + self._hi.shape[1]:
            start = a
            c = torch.arange(start, start + max(n, self.BLOCK), device=self.keys.device, dtype=torch.int64)
            w = bits(self.keys, c)
            self._start, self._hi, self._lo = start, uniform_from_bits(w, True), uniform_from_bits(w, False)
        self.used = b
        return self._hi[:, a - self._start : b - self._start], self._lo[:, a - self._start : b - self._start]

    def uniform(self, *shape: int) -> torch.Tensor:
        """(B, *shape) uniforms in [0, 1) (``shape`` empty: (B,))."""
        n = math.prod(shape) if shape else 1
        return self._cols(n)[0].reshape(len(self.keys), *shape)

    def normal(self, *shape: int) -> torch.Tensor:
        """(B, *shape) standard normals (Box-Muller, two per column)."""
        n = math.prod(shape) if shape else 1
        u1, u2 = self._cols((n + 1) // 2)
        r = torch.sqrt(-2.0 * torch.log1p(-u1))
        t = (2.0 * math.pi) * u2
        z = torch.cat([r * torch.cos(t), r * torch.sin(t)], 1) if n > 1 else r * torch.cos(t)
        return z[:, :n].reshape(len(self.keys), *shape)

    def integers(self, lo: int, hi: int) -> torch.Tensor:
        """(B,) int64 uniform on ``lo .. hi`` inclusive."""
        return (lo + (self.uniform() * (hi - lo + 1)).floor().long()).clamp(lo, hi)

    def categorical(self, weights: torch.Tensor) -> torch.Tensor:
        """(B,) int64 index drawn with probability proportional to ``weights`` (K,) (inverse CDF)."""
        cdf = torch.cumsum(weights.double(), 0)
        u = self.uniform().double() * cdf[-1]
        return torch.searchsorted(cdf, u, right=True).clamp_max(len(weights) - 1)


def subkeys(keys: torch.Tensor, name: str) -> torch.Tensor:
    """(B,) keys of an independent named sub-stream of each image (e.g. ``"background"``, ``"noise"``):
    a stage draws from its own stream, so its layout never shifts another stage's numbers."""
    return mix64(keys ^ _s64(derive_seed("substream", name)))
