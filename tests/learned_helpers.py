"""Helpers for the learned-source tests: tiny synthetic face folders and a tiny trained checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

TINY_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "learned" / "diffusion_tiny_cpu.yaml"
GAN_TINY_CONFIG = TINY_CONFIG.parent / "gan_tiny_cpu.yaml"


def make_face_folder(root: Path, ids: int = 6, per_id: int = 4, size: int = 32, seed: int = 0,
                     singletons: int = 2) -> Path:
    """An ImageFolder ``root/<person>/<k>.png`` of blob "faces": each person has a skin colour and
    eye/mouth geometry, each image a small shift, brightness change and noise. ``singletons`` extra
    people have one image each."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    root.mkdir(parents=True, exist_ok=True)
    for p in range(ids + singletons):
        u = torch.rand(6, generator=g)
        skin = torch.tensor([0.55, 0.4, 0.3]) + 0.35 * (u[:3] - 0.5)
        eye_dx, eye_y, mouth_w = 0.25 + 0.2 * u[3], -0.2 - 0.15 * u[4], 0.2 + 0.25 * u[5]
        d = root / f"person{p:02d}"
        d.mkdir(exist_ok=True)
        for k in range(per_id if p < ids else 1):
            v = torch.rand(4, generator=g)
            sx, sy = 0.1 * (v[0] - 0.5), 0.1 * (v[1] - 0.5)
            x, y = xs - sx, ys - sy
            face = ((x / 0.7) ** 2 + (y / 0.85) ** 2 < 1).float()
            eyes = (((x - eye_dx) ** 2 + (y - eye_y) ** 2) < 0.01).float() + (((x + eye_dx) ** 2 + (y - eye_y) ** 2) < 0.01).float()
            mouth = ((x.abs() < mouth_w) & ((y - 0.4).abs() < 0.04)).float()
            img = 0.15 + face[None] * skin[:, None, None] * (0.8 + 0.4 * v[2])
            img = img * (1 - 0.8 * eyes[None]) * (1 - 0.6 * mouth[None])
            img = img + 0.03 * torch.randn(3, size, size, generator=g)
            arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(np.ascontiguousarray(arr)).save(d / f"{k}.png")
    return root


#: Bad constructor input every learned source refuses in the shared base (``LearnedSource``) with
#: these messages, for a tiny 16 px checkpoint; each source's test adds its own rows.
LEARNED_SOURCE_BAD_INPUT = [
    ({}, "needs a checkpoint"),
    ({"checkpoint": "/does/not/exist"}, "checkpoint not found"),
    ({"size": 32}, "generates 16 px images, not 32"),
    ({"aligned": False}, "aligned crops only"),
    ({"preset": "nope"}, "unknown preset"),
    ({"overrides": {"identity": {"mode": "gan"}}}, "overrides.identity.mode: must be"),
]

_RUNS: dict[str, dict] = {}
CONFIGS = {"diffusion": TINY_CONFIG, "gan": GAN_TINY_CONFIG}
RUN_DIRS = {"diffusion": "learned-tiny", "gan": "learned-gan-tiny"}  # under the session's base temp dir


def kind_config(kind: str, data: Path, *overrides: str):
    """The tiny CPU config of ``kind`` (diffusion or gan) on ``data`` with extra ``key=value`` overrides."""
    from learned.train import load_config

    return load_config(CONFIGS[kind], [f"data.path={data}", *overrides])


def tiny_config(data: Path, *overrides: str):
    """The tiny CPU diffusion config on ``data`` with extra ``key=value`` overrides."""
    return kind_config("diffusion", data, *overrides)


def tiny_gan_config(data: Path, *overrides: str):
    """The tiny CPU GAN config on ``data`` with extra ``key=value`` overrides."""
    return kind_config("gan", data, *overrides)


def kind_run(kind: str, base: Path, steps: int) -> dict:
    """Train the tiny ``kind`` config once per test session under ``base`` (a session tmp dir) and
    return ``{"data": folder, "out": run dir, "checkpoint": checkpoint dir, "metrics": ...}``."""
    key = f"{base}:{steps}" if kind == "diffusion" else f"{kind}:{base}:{steps}"
    if key not in _RUNS:
        from learned.train import run_training

        data = make_face_folder(base / "faces")
        out = base / "run"
        metrics = run_training(kind_config(kind, data, f"train.steps={steps}"), out, printer=lambda s: None)
        _RUNS[key] = {"data": data, "out": out, "checkpoint": out / "checkpoint", "metrics": metrics}
    return _RUNS[key]


def tiny_run(base: Path, steps: int = 40) -> dict:
    """:func:`kind_run` for the tiny diffusion config (40 steps)."""
    return kind_run("diffusion", base, steps)


def tiny_gan_run(base: Path, steps: int = 30) -> dict:
    """:func:`kind_run` for the tiny GAN config (30 steps)."""
    return kind_run("gan", base, steps)


def session_run(kind: str, tmp_path_factory) -> dict:
    """The session's tiny run of ``kind`` (what the test modules' ``run`` fixtures return)."""
    return (tiny_run if kind == "diffusion" else tiny_gan_run)(tmp_path_factory.getbasetemp() / RUN_DIRS[kind])


def tree(root: Path) -> dict[str, bytes]:
    """A rendered dataset's files and bytes (not ``summary.json`` nor the journal)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "summary.json" and not p.relative_to(root).as_posix().startswith(".journal/")}


def render_args(kind: str, run: dict, out: Path, *extra: str) -> list[str]:
    """``engine.render`` arguments for a small both-format dataset of ``run``'s checkpoint."""
    return ["--source", kind, "--checkpoint", str(run["checkpoint"]), "--size", "16", "--ids", "5",
            "--per-id", "2", "--block-ids", "2", "--format", "both", "--render-workers", "0", "--workers", "0",
            "--no-progress", "--no-fsync", "--out", str(out), *extra]


def interrupted_render(monkeypatch, source_cls, argv: list[str]) -> None:
    """Run ``engine.render`` with ``argv`` while ``source_cls.render`` raises KeyboardInterrupt on its
    second call (after the first block): the command exits 130, then the source is restored."""
    from engine import render as R

    real = source_cls.render
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(source_cls, "render", flaky)
    assert R.main(argv) == 130
    monkeypatch.setattr(source_cls, "render", real)
