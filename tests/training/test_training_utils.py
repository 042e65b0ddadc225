"""Helpers shared by the training tests: tiny synthetic ImageFolder / LFW-like data and configs.

(Named ``test_training_*`` to live with the training tests; it holds one self-check test.)
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
LFW_DEV = REPO_ROOT.parent / "shared" / "data" / "lfw-dev"
FAKE_SOURCE = "tests.fake_source:FakeSource"


def _identity_image(rng: np.random.Generator, ident: int, size: int, noise: float = 18.0) -> np.ndarray:
    """A learnable 'face': identity-specific colour and stripe pattern, random shift and noise."""
    g = np.random.default_rng(1000 + ident)
    colour = g.uniform(40, 215, size=3)
    fx, fy = g.uniform(0.5, 3.0, size=2)
    phase = g.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    dx, dy = rng.uniform(-0.05, 0.05, size=2)
    pat = 0.5 + 0.5 * np.sin(2 * math.pi * (fx * (xx + dx) + fy * (yy + dy)) + phase)
    img = colour[None, None, :] * (0.6 + 0.4 * pat[..., None]) + rng.normal(0, noise, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image_folder(root: str | os.PathLike, n_ids: int = 6, per_id: int = 4, size: int = 32, seed: int = 0,
                      prefix: str = "person") -> Path:
    """``root/<prefix>_XXX/<prefix>_XXX_000k.jpg`` (LFW-style names)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(n_ids):
        name = f"{prefix}_{i:03d}"
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_id):
            Image.fromarray(_identity_image(rng, i + 97 * seed, size)).save(d / f"{name}_{k + 1:04d}.jpg", quality=95)
    return root


def make_fake_lfw(root: str | os.PathLike, n_folds: int = 5, people_per_fold: int = 10, pairs_per_fold: int = 6,
                  size: int = 32, unpaired: int = 3, seed: int = 0) -> Path:
    """An LFW-layout folder: ``images/<Name>/<Name>_NNNN.jpg``, ``pairs.txt`` (``n_folds`` identity-disjoint
    folds, ``pairs_per_fold`` same + different lines each) and ``people.txt``. In every fold, the
    first half of the people have 3 images, the rest 1; ``unpaired`` extra people are in no pair."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    lines = [f"{n_folds}\t{pairs_per_fold}"]
    names_all = []
    ident = 0
    for f in range(n_folds):
        people = []
        for j in range(people_per_fold):
            name = f"F{f + 1}_Person_{j:02d}"
            n_img = 3 if j < people_per_fold // 2 else 1
            d = root / "images" / name
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n_img):
                Image.fromarray(_identity_image(rng, ident, size)).save(d / f"{name}_{k + 1:04d}.jpg", quality=95)
            people.append((name, n_img))
            ident += 1
        names_all += [p[0] for p in people]
        multi = [p for p in people if p[1] >= 2]
        for t in range(pairs_per_fold):
            name, n = multi[t % len(multi)]
            lines.append(f"{name}\t1\t{2 + t % (n - 1)}")
        for t in range(pairs_per_fold):
            a, b = people[t % len(people)], people[(t + 1 + t // len(people)) % len(people)]
            if a[0] == b[0]:
                b = people[(t + 2) % len(people)]
            lines.append(f"{a[0]}\t1\t{b[0]}\t1")
    for u in range(unpaired):
        name = f"Unpaired_Person_{u:02d}"
        d = root / "images" / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(2):
            Image.fromarray(_identity_image(rng, ident, size)).save(d / f"{name}_{k + 1:04d}.jpg", quality=95)
        names_all.append(name)
        ident += 1
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    (root / "people.txt").write_text("\n".join(sorted(names_all)) + "\n")
    return root


def tiny_train_dict(folder: str | os.PathLike, *, steps: int = 20, batch_size: int = 16, size: int = 32,
                    out: str | os.PathLike = "runs/tiny", extra_sources: dict[str, Any] | None = None,
                    phases: list[dict[str, Any]] | None = None, **trainer: Any) -> dict[str, Any]:
    """A raw training config: tiny backbone on CPU over an ImageFolder."""
    return {
        "name": "tiny",
        "model": {"backbone": "tiny", "embedding_size": 32, "input_size": size, "backbone_kwargs": {"width": 8},
                  "head": "arcface", "margins": {"s": 16.0, "m": 0.2}},
        "sources": {"real": {"type": "folder", "path": str(folder), "augment": {"flip": 0.5}}, **(extra_sources or {})},
        "phases": phases or [{"name": "main", "steps": steps, "weights": {"real": 1.0},
                              "lr": {"base": 0.05, "warmup_steps": 2}, "optimizer": {"name": "sgd"}}],
        "trainer": {"accelerator": "cpu", "batch_size": batch_size, "num_workers": 0, "log_every": 2,
                    "ckpt_every_steps": 5, "out": str(out), "seed": 0, **trainer},
    }


def test_fake_lfw_layout(tmp_path):
    from training.verification import read_lfw_pairs

    root = make_fake_lfw(tmp_path / "lfw", n_folds=3, people_per_fold=6, pairs_per_fold=4)
    pairs = read_lfw_pairs(root / "pairs.txt", image_root=root)  # checks every image exists
    assert len(pairs) == 3 * 2 * 4
    assert sum(p[2] for p in pairs) == 3 * 4
    folds = {}
    for a, b, _, f in pairs:
        folds.setdefault(f, set()).update({Path(a).parent.name, Path(b).parent.name})
    assert all(not (folds[i] & folds[j]) for i in folds for j in folds if i < j)
