"""A tiny, fast identity source for engine tests, and a conformance example of the interface.

``FakeSource`` draws coloured stripe patterns: each identity has its own colour / stripe frequency /
phase; each variation shifts, rotates and relights the pattern and adds noise. Everything is
deterministic by ``(seed, identity, variation)`` through :func:`engine.interface.generator`, images
do not depend on the rest of the batch, and identities are prefix-stable.

The interface checks every source must pass live in :mod:`tests.conformance` (re-exported here as
``check_conformance`` for the engine tests).
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from common.align import ARCFACE_TEMPLATE
from engine.interface import IdentitySampler, Identities, RenderBatch, generator, separability_report
from tests.conformance import check_conformance  # noqa: F401  (re-exported)

#: ArcFace 5-point template for a 112x112 aligned crop.
ARCFACE_112 = ARCFACE_TEMPLATE

PRESETS: dict[str, dict[str, float]] = {
    "frontal": {"max_yaw": 10.0, "max_pitch": 5.0, "noise": 0.02, "min_light": 0.8},
    "wild": {"max_yaw": 60.0, "max_pitch": 25.0, "noise": 0.08, "min_light": 0.4},
}
EMBED_DIM = 8


class FakeSource(IdentitySampler):
    """Coloured-pattern source with the same constructor as ``morphable.MorphableSource``.

    ``overrides`` may change any preset key, plus ``delay`` (seconds to sleep per ``render`` call,
    for resume tests; not part of :meth:`config` because it does not change a single pixel).
    """

    name = "fake"

    def __init__(
        self,
        preset: str = "wild",
        size: int = 112,
        aligned: bool = True,
        device: str = "cpu",
        overrides: dict | None = None,
    ):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} for source 'fake' (known: {', '.join(sorted(PRESETS))})")
        over = dict(overrides or {})
        self.delay = float(over.pop("delay", 0.0))
        params = dict(PRESETS[preset])
        bad = sorted(set(over) - set(params))
        if bad:
            raise ValueError(f"unknown override(s) {bad} for source 'fake' (known: {sorted(params) + ['delay']})")
        params.update({k: float(v) for k, v in over.items()})
        if int(size) < 8:
            raise ValueError(f"size must be >= 8, got {size}")
        self.preset, self.size, self.aligned, self.device = preset, int(size), bool(aligned), str(device)
        self.params = params

    def config(self) -> dict[str, Any]:
        return {"source": self.name, "preset": self.preset, "size": self.size, "aligned": self.aligned, **self.params}

    # -- identities -------------------------------------------------------------------------------
    def sample_identities(self, n: int, seed: int) -> Identities:
        rows = [torch.rand(EMBED_DIM, generator=generator(seed, "fake-identity", i)) for i in range(n)]
        emb = torch.stack(rows) if rows else torch.zeros(0, EMBED_DIM)
        params = {
            "colour": 0.2 + 0.8 * emb[:, 0:3],
            "freq": 1.0 + 3.0 * emb[:, 3:5],
            "phase": emb[:, 5] * 2 * math.pi,
        }
        meta = {"gender": (emb[:, 6] > 0.5).long(), "age": 18.0 + 60.0 * emb[:, 7]}
        report = separability_report(emb, "fake-embedding", 0.0)
        return Identities(params=params, embedding=emb, seed=seed, report=report, meta=meta)

    # -- rendering --------------------------------------------------------------------------------
    def render(self, identities: Identities, rows: torch.Tensor, variations: torch.Tensor, seed: int) -> RenderBatch:
        if self.delay:
            time.sleep(self.delay)
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        variations = torch.as_tensor(variations, dtype=torch.long).reshape(-1)
        s, p = self.size, self.params
        ys, xs = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")
        images, lms = [], []
        fac: dict[str, list[torch.Tensor]] = {k: [] for k in ("pose", "light", "expression", "blur", "occluded")}
        for r, v in zip(rows.tolist(), variations.tolist()):
            g = generator(seed, "fake-variation", r, v)
            u = torch.rand(7, generator=g)
            yaw = (2 * u[0] - 1) * p["max_yaw"]
            pitch = (2 * u[1] - 1) * p["max_pitch"]
            roll = (2 * u[2] - 1) * 10.0
            light = p["min_light"] + (1 - p["min_light"]) * u[3]
            expr = u[4:6]
            blur = u[6] * 2.0
            occluded = int(u[6] > 0.9)
            ang = math.radians(float(roll))
            ca, sa = math.cos(ang), math.sin(ang)
            dx, dy = float(yaw) / 180.0, float(pitch) / 180.0
            if not self.aligned:
                dx, dy = dx + 0.1, dy - 0.05
            xr = ca * (xs - 0.5) - sa * (ys - 0.5) + dx
            yr = sa * (xs - 0.5) + ca * (ys - 0.5) + dy
            fx, fy = identities.params["freq"][r]
            pat = 0.5 + 0.5 * torch.sin(2 * math.pi * (fx * xr + fy * yr) + identities.params["phase"][r] + 3 * expr[0])
            img = identities.params["colour"][r].view(3, 1, 1) * pat * light
            img = img + p["noise"] * (torch.rand(3, s, s, generator=g) - 0.5)
            images.append(img.clamp(0, 1))
            lm = ARCFACE_112 * (s / 112.0) + torch.tensor([dx, dy]) * s * 0.3
            lms.append(lm)
            fac["pose"].append(torch.stack([yaw, pitch, roll]))
            fac["light"].append(light)
            fac["expression"].append(expr)
            fac["blur"].append(blur)
            fac["occluded"].append(torch.tensor(occluded))
        b = len(images)
        return RenderBatch(
            images=torch.stack(images).float() if b else torch.zeros(0, 3, s, s),
            identity=rows.clone(),
            variation=variations.clone(),
            landmarks=torch.stack(lms).float() if b else torch.zeros(0, 5, 2),
            factors={
                "pose": torch.stack(fac["pose"]).float() if b else torch.zeros(0, 3),
                "light": torch.stack(fac["light"]).float() if b else torch.zeros(0),
                "expression": torch.stack(fac["expression"]).float() if b else torch.zeros(0, 2),
                "blur": torch.stack(fac["blur"]).float() if b else torch.zeros(0),
                "occluded": torch.stack(fac["occluded"]).long() if b else torch.zeros(0, dtype=torch.long),
            },
        )
