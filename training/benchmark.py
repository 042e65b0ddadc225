"""Pretrain-on-synthetic, fine-tune-on-limited-authentic benchmark.

Usage::

    python -m training.benchmark --config configs/bench_small.yaml [--out DIR] [--override k=v ...] [--fresh]

Arms, all evaluated on the same LFW-protocol pairs (``lfw.eval_folds``, default folds 4-5 of
``lfw-dev``):

* ``authentic``: train from scratch on ``N`` authentic identities, for each ``N`` of ``sweep``;
* ``synthetic``: train on the synthetic source only (once);
* ``finetune``: start from the ``synthetic`` backbone and fine-tune on the same ``N`` authentic
  identities (new head, optionally imprinted / frozen early layers).

``variants`` adds more synthetic arms, each pretrained on its own sources (one source, or several
mixed in one curriculum phase with ``weights``) and fine-tuned like ``synthetic``: rows
``synthetic:<name>`` and ``finetune:<name>``. E.g. a diffusion-rendered dataset alone, and morphable
+ diffusion mixed half and half.

Authentic identities come only from the people of ``lfw.train_folds`` (default 1-3), where a fold's
people are the names its ``pairs.txt`` lines mention (LFW's View-2 folds are identity-disjoint). People
with at least 2 images come first (shuffled by ``seed``), then the singletons, so each ``N`` extends the
previous list. People in no pair at all belong to no fold: they are never evaluated on, and are used
for training only with ``lfw.include_unpaired: true`` (they appear in no eval pair by definition;
off by default). The code asserts that no training name occurs in any eval pair and reports it.

Outputs in ``OUT``: ``results.csv``, ``results.md``, ``accuracy_vs_ids.png``, ``benchmark.json``,
``split.json``, ``people/authentic_N.txt`` and one training run dir per model under ``runs/``
(each resumable; finished runs are reused on re-runs).
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from common import cli
from common.config import REPO_ROOT, ConfigError, config_to_dict, from_dict, resolve_path
from common.config import join_key as _join
from engine.interface import derive_seed

from .config import EvalConfig, ModelConfig, SourceConfig, TrainerConfig, parse_config

log = logging.getLogger("synthface.benchmark")

__all__ = ["BenchmarkConfig", "LFWSplitConfig", "SyntheticVariant", "lfw_fold_people", "authentic_people", "run_benchmark", "main",
           "load_benchmark_config"]


@dataclass
class LFWSplitConfig:
    """Where the authentic data and the eval pairs come from (an LFW-layout folder)."""

    root: str
    pairs: str | None = None
    train_folds: list[int] = field(default_factory=lambda: [1, 2, 3])
    eval_folds: list[int] = field(default_factory=lambda: [4, 5])
    include_unpaired: bool = False
    two_plus_first: bool = True
    images_per_id: int | None = None
    pairs_per_fold: int | None = None

    def validate(self, path: str) -> None:
        if not self.train_folds:
            raise ConfigError(f"{_join(path, 'train_folds')}: at least one fold is required")
        if len(self.eval_folds) < 2:
            raise ConfigError(f"{_join(path, 'eval_folds')}: need at least 2 folds for k-fold accuracy")
        both = set(self.train_folds) & set(self.eval_folds)
        if both:
            raise ConfigError(f"{_join(path, 'eval_folds')}: folds {sorted(both)} are also train folds")
        if any(f < 1 for f in [*self.train_folds, *self.eval_folds]):
            raise ConfigError(f"{_join(path, 'train_folds')}: fold numbers are 1-based")


@dataclass
class SyntheticVariant:
    """An extra synthetic arm: ``sources`` (name -> source config, as in a training config) mixed with
    ``weights`` (name -> weight; default equal) during pretraining."""

    sources: dict[str, SourceConfig]
    weights: dict[str, float] | None = None

    def validate(self, path: str) -> None:
        if not self.sources:
            raise ConfigError(f"{_join(path, 'sources')}: at least one source is required")
        if "authentic" in self.sources:
            raise ConfigError(f"{_join(path, 'sources')}: 'authentic' is the benchmark's own source name; rename it")
        if self.weights is not None:
            bad = sorted(set(self.weights) - set(self.sources))
            if bad:
                raise ConfigError(f"{_join(path, 'weights')}: {bad[0]!r} is not one of its sources "
                                  f"({', '.join(self.sources)})")
            if any(w < 0 for w in self.weights.values()) or not any(w > 0 for w in self.weights.values()):
                raise ConfigError(f"{_join(path, 'weights')}: need non-negative weights, at least one positive")

    def mix(self) -> dict[str, float]:
        w = self.weights or {k: 1.0 for k in self.sources}
        total = sum(w.values())
        return {k: float(v) / total for k, v in w.items() if v > 0}


@dataclass
class BenchmarkConfig:
    """The benchmark config: ``lfw`` split, ``synthetic`` source, ``sweep`` of authentic identity
    counts, phase templates ``pretrain`` / ``finetune`` / ``authentic`` (a phase config without
    ``name``; ``weights`` optional, default the arm's one source; source names are ``synthetic`` and
    ``authentic``), shared ``model`` / ``trainer`` / ``eval`` settings and ``authentic_augment``."""

    lfw: LFWSplitConfig
    synthetic: SourceConfig
    sweep: list[int]
    pretrain: dict[str, Any]
    finetune: dict[str, Any]
    authentic: dict[str, Any]
    name: str = "benchmark"
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: dict[str, Any] = field(default_factory=dict)
    authentic_augment: dict[str, Any] | None = None
    arms: list[str] = field(default_factory=lambda: ["synthetic", "authentic", "finetune"])
    variants: dict[str, SyntheticVariant] = field(default_factory=dict)
    seed: int = 0
    out: str = "runs/benchmark"

    def validate(self, path: str) -> None:
        if not self.sweep or any(n <= 0 for n in self.sweep):
            raise ConfigError(f"{_join(path, 'sweep')}: need positive identity counts, got {self.sweep}")
        bad = [a for a in self.arms if a not in ("synthetic", "authentic", "finetune")]
        if bad:
            raise ConfigError(f"{_join(path, 'arms')}: unknown arm {bad[0]!r} (synthetic, authentic, finetune)")
        if "finetune" in self.arms and "synthetic" not in self.arms:
            raise ConfigError(f"{_join(path, 'arms')}: 'finetune' needs the 'synthetic' arm (its pretrained backbone)")
        for name in self.variants:
            if not name or not all(c.isalnum() or c in "-_+." for c in name):
                raise ConfigError(f"{_join(path, 'variants')}.{name}: use letters, digits and - _ + . in variant names")
        for key in ("pretrain", "finetune", "authentic"):
            tmpl = getattr(self, key)
            if "name" in tmpl:
                raise ConfigError(f"{_join(path, key)}.name: set by the benchmark, remove it")
            _phase(tmpl, key, {"synthetic": 1.0, "authentic": 1.0})  # validates the template
        for key in ("pairs", "bins"):
            if key in self.eval:
                raise ConfigError(f"{_join(path, 'eval')}.{key}: the benchmark sets its own eval pairs")
        from_dict(EvalConfig, self.eval, _join(path, "eval"))
        if self.authentic_augment is not None:
            from .augment import validate_augment_config

            try:
                validate_augment_config(self.authentic_augment)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{_join(path, 'authentic_augment')}.{e}") from None


def _phase(tmpl: dict[str, Any], name: str, weights: dict[str, float]) -> dict[str, Any]:
    from .config import PhaseConfig

    d = {"weights": weights, **copy.deepcopy(tmpl), "name": name}
    from_dict(PhaseConfig, d, name)
    return d


def load_benchmark_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> BenchmarkConfig:
    path = Path(path)
    cfg = cli.load_config(BenchmarkConfig, path, overrides)
    bases = [path.parent, REPO_ROOT]
    cfg.lfw.root = resolve_path(cfg.lfw.root, bases)
    cfg.lfw.pairs = resolve_path(cfg.lfw.pairs, bases)
    cfg.synthetic.path = resolve_path(cfg.synthetic.path, bases)
    for var in cfg.variants.values():
        for src in var.sources.values():
            src.path = resolve_path(src.path, bases)
    cfg.model.init_backbone = resolve_path(cfg.model.init_backbone, bases)
    return cfg


# ----------------------------------------------------------------------------------------------
# the split
# ----------------------------------------------------------------------------------------------


def _pairs_path(cfg: LFWSplitConfig) -> str:
    return cfg.pairs or os.path.join(cfg.root, "pairs.txt")


def lfw_fold_people(pairs_txt: str | os.PathLike) -> tuple[dict[int, set[str]], list[tuple[str, str, bool, int]]]:
    """``{fold (1-based): names mentioned in that fold's lines}`` and the parsed pairs
    ``(name_a, name_b, same, fold 1-based)``."""
    from .verification import read_lfw_pairs

    raw = read_lfw_pairs(pairs_txt, image_root=Path(pairs_txt).parent, check_files=False)
    pairs = [(Path(a).parent.name, Path(b).parent.name, s, f + 1) for a, b, s, f in raw]
    folds: dict[int, set[str]] = {}
    for a, b, _, f in pairs:
        folds.setdefault(f, set()).update((a, b))
    return folds, pairs


def _image_counts(images_dir: Path) -> dict[str, int]:
    out = {}
    with os.scandir(images_dir) as it:
        for e in it:
            if e.is_dir() and not e.name.startswith("."):
                with os.scandir(e.path) as it2:
                    out[e.name] = sum(1 for f in it2 if f.is_file() and not f.name.startswith("."))
    return out


def authentic_people(cfg: LFWSplitConfig, seed: int = 0) -> dict[str, Any]:
    """The ordered training pool and the eval people (see the module docstring)."""
    pairs_txt = _pairs_path(cfg)
    folds, pairs = lfw_fold_people(pairs_txt)
    n_folds = max(folds) if folds else 0
    for f in [*cfg.train_folds, *cfg.eval_folds]:
        if f not in folds:
            raise ConfigError(f"lfw: fold {f} not in {pairs_txt} ({n_folds} folds)")
    counts = _image_counts(Path(cfg.root) / "images")
    eval_pairs = [p for p in pairs if p[3] in set(cfg.eval_folds)]
    eval_people = set().union(*(folds[f] for f in cfg.eval_folds))
    train_fold_people = set().union(*(folds[f] for f in cfg.train_folds))
    in_any_pair = set().union(*folds.values())
    unpaired = {n for n in counts if n not in in_any_pair}
    pool = {n for n in train_fold_people if n in counts}
    if cfg.include_unpaired:
        pool |= unpaired
    overlap = pool & eval_people
    if overlap:  # impossible with LFW's identity-disjoint folds; never train on an eval person
        raise AssertionError(f"{len(overlap)} training candidates appear in eval pairs, e.g. {sorted(overlap)[:5]}")
    rng = np.random.default_rng(derive_seed(seed, "authentic-people"))
    if cfg.two_plus_first:
        groups = [sorted(n for n in pool if counts[n] >= 2), sorted(n for n in pool if counts[n] < 2)]
    else:
        groups = [sorted(pool)]
    ordered: list[str] = []
    for g in groups:
        ordered += [g[i] for i in rng.permutation(len(g))]
    return {
        "pairs_txt": pairs_txt,
        "ordered": ordered,
        "image_counts": {n: counts[n] for n in ordered},
        "eval_pairs": eval_pairs,
        "eval_people": sorted(eval_people),
        "num_folds": n_folds,
        "fold_people": {f: len(v) for f, v in sorted(folds.items())},
        "train_fold_people": len(train_fold_people),
        "unpaired_people": len(unpaired),
        "pool_two_plus": sum(1 for n in pool if counts[n] >= 2),
    }


def check_disjoint(train_people: Sequence[str], eval_pairs: Sequence[tuple[str, str, bool, int]]) -> dict[str, int]:
    """Assert that no training name occurs in an eval pair; returns the counts checked."""
    eval_names = {a for a, _, _, _ in eval_pairs} | {b for _, b, _, _ in eval_pairs}
    bad = set(train_people) & eval_names
    if bad:
        raise AssertionError(f"{len(bad)} fine-tune identities appear in eval pairs: {sorted(bad)[:5]}")
    return {"train_people": len(set(train_people)), "eval_people": len(eval_names), "overlap": 0}


# ----------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------


def _train_cfg(bc: BenchmarkConfig, name: str, sources: dict[str, Any], phase: dict[str, Any], out: Path,
               init_backbone: str | None = None):
    eval_cfg = {**bc.eval, "pairs": [{"root": bc.lfw.root, "pairs": _pairs_path(bc.lfw), "name": "lfw-eval",
                                      "folds": list(bc.lfw.eval_folds), "pairs_per_fold": bc.lfw.pairs_per_fold}]}
    model = config_to_dict(bc.model)
    if init_backbone is not None:
        model["init_backbone"] = init_backbone
    trainer = config_to_dict(bc.trainer)
    trainer["out"] = str(out)
    raw = {"name": f"{bc.name}/{name}", "model": model, "sources": sources, "phases": [phase], "eval": eval_cfg,
           "trainer": trainer}
    return parse_config(raw, resolve=False)


def _arm_dir(arm: str, variant: str) -> str:
    """Run-dir stem of an arm: ``synthetic`` / ``finetune`` for the main synthetic source,
    ``synthetic_<variant>`` / ``finetune_<variant>`` for a variant."""
    return f"{arm}_{variant}" if variant else arm


def _arm_label(arm: str, variant: str) -> str:
    """Row name of an arm: ``synthetic``, ``finetune`` or ``synthetic:<variant>``, ``finetune:<variant>``."""
    return f"{arm}:{variant}" if variant else arm


def _scale_weight(w: Any, frac: float) -> Any:
    """A phase weight (number, ``[start, end]`` or ``{start, end}``) times ``frac`` (unchanged for 1)."""
    if frac == 1.0:
        return w
    if isinstance(w, dict):
        return {k: v * frac for k, v in w.items()}
    if isinstance(w, (list, tuple)):
        return [v * frac for v in w]
    return w * frac


def _result_row(arm: str, n_req: int | None, n_ids: int | None, n_imgs: int | None, metrics: dict[str, Any],
                wall: float) -> dict[str, Any]:
    ev = metrics.get("final_eval", {}).get("lfw-eval", {})
    tar = ev.get("tar_at_far", {})
    return {
        "arm": arm,
        "authentic_ids_requested": n_req,
        "authentic_ids": n_ids,
        "authentic_images": n_imgs,
        "accuracy": ev.get("accuracy"),
        "accuracy_std": ev.get("accuracy_std"),
        "eer": ev.get("eer"),
        "auc": ev.get("auc"),
        "tar_far_1e-2": tar.get("0.01"),
        "tar_far_1e-1": tar.get("0.1"),
        "num_pairs": ev.get("num_pairs"),
        "steps": metrics.get("total_steps"),
        "wall_s": round(wall, 1),
        "run_dir": metrics.get("out_dir"),
    }


def _run(cfg, out: Path, fresh: bool, printer) -> tuple[dict[str, Any], float]:
    from .train import run_training

    mpath = out / "metrics.json"
    cpath = out / "config.yaml"
    if not fresh and cpath.is_file():
        old = yaml.safe_load(cpath.read_text())
        if old != yaml.safe_load(yaml.safe_dump(config_to_dict(cfg), sort_keys=False)):
            printer(f"benchmark: the config of {out} changed; retraining it from scratch")
            fresh = True
    if not fresh and mpath.is_file():
        m = json.loads(mpath.read_text())
        if m.get("complete"):
            printer(f"benchmark: reusing finished run {out}")
            return m, float(m.get("wall_s", 0.0))
    t0 = time.time()
    m = run_training(cfg, out, fresh=fresh, printer=printer)
    return m, time.time() - t0


def _fmt(v: Any, nd: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def write_table(rows: list[dict[str, Any]], out: Path, header_lines: Sequence[str]) -> tuple[Path, Path]:
    csv_path = out / "results.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    md = ["# Synthetic pretrain -> authentic fine-tune benchmark", "", *header_lines, "",
          "| arm | authentic ids | authentic images | accuracy | ± std | EER | AUC | TAR@FAR=1e-2 | steps | time (s) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['arm']} | {_fmt(r['authentic_ids'])} | {_fmt(r['authentic_images'])} | {_fmt(r['accuracy'])} "
                  f"| {_fmt(r['accuracy_std'])} | {_fmt(r['eer'])} | {_fmt(r['auc'])} | {_fmt(r['tar_far_1e-2'])} "
                  f"| {_fmt(r['steps'])} | {_fmt(r['wall_s'], 1)} |")
    md_path = out / "results.md"
    md_path.write_text("\n".join(md) + "\n")
    return csv_path, md_path


def plot_results(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    styles = {"authentic": ("authentic only", "o-", "tab:blue"), "finetune": ("synthetic + fine-tune", "s-", "tab:orange")}
    xs_all = []
    for arm, (label, fmt, color) in styles.items():
        rs = sorted([r for r in rows if r["arm"] == arm and r["accuracy"] is not None], key=lambda r: r["authentic_ids"])
        if not rs:
            continue
        x = [r["authentic_ids"] for r in rs]
        xs_all += x
        ax.errorbar(x, [r["accuracy"] for r in rs], yerr=[r["accuracy_std"] or 0 for r in rs], fmt=fmt, color=color,
                    capsize=3, label=label)
    palette = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    variants = sorted({r["arm"].split(":", 1)[1] for r in rows if ":" in r["arm"]})
    for i, v in enumerate(variants):
        rs = sorted([r for r in rows if r["arm"] == f"finetune:{v}" and r["accuracy"] is not None],
                    key=lambda r: r["authentic_ids"])
        color = palette[i % len(palette)]
        if rs:
            x = [r["authentic_ids"] for r in rs]
            xs_all += x
            ax.errorbar(x, [r["accuracy"] for r in rs], yerr=[r["accuracy_std"] or 0 for r in rs], fmt="^-",
                        color=color, capsize=3, label=f"{v} + fine-tune")
        syn_v = [r for r in rows if r["arm"] == f"synthetic:{v}" and r["accuracy"] is not None]
        if syn_v:
            ax.axhline(syn_v[0]["accuracy"], color=color, ls="-.", lw=1.0, label=f"{v} only ({syn_v[0]['accuracy']:.3f})")
    syn = [r for r in rows if r["arm"] == "synthetic" and r["accuracy"] is not None]
    if syn:
        ax.axhline(syn[0]["accuracy"], color="tab:green", ls="--", label=f"synthetic only ({syn[0]['accuracy']:.3f})")
    if xs_all and min(xs_all) > 0 and max(xs_all) / max(min(xs_all), 1) >= 5:
        ax.set_xscale("log")
    if xs_all:
        from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

        ax.xaxis.set_major_locator(FixedLocator(sorted(set(xs_all))))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("authentic identities used for training")
    ax.set_ylabel("verification accuracy (eval folds)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def run_benchmark(bc: BenchmarkConfig, out_dir: str | os.PathLike | None = None, fresh: bool = False,
                  printer=print) -> dict[str, Any]:
    """Run every arm of the benchmark; returns the ``benchmark.json`` dict."""
    t_start = time.time()
    out = Path(out_dir or bc.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "people").mkdir(exist_ok=True)
    split = authentic_people(bc.lfw, bc.seed)
    pool = split["ordered"]
    counts = split["image_counts"]
    sizes: list[tuple[int, int]] = []  # (requested, used)
    for n in bc.sweep:
        used = min(n, len(pool))
        if used < n:
            printer(f"benchmark: sweep N={n} exceeds the {len(pool)} eligible people; using {used}")
        if used not in [u for _, u in sizes]:
            sizes.append((n, used))
    people_files = {}
    checks = {}
    for n_req, n in sizes:
        people = pool[:n]
        checks[n] = check_disjoint(people, split["eval_pairs"])
        pf = out / "people" / f"authentic_{n}.txt"
        pf.write_text("\n".join(people) + "\n")
        people_files[n] = pf
    eval_names = set(split["eval_people"])
    disjoint_msg = (f"Identity-disjointness checked in code: none of the {max(n for _, n in sizes)} training people "
                    f"(LFW folds {', '.join(map(str, bc.lfw.train_folds))}"
                    f"{' + people in no pair' if bc.lfw.include_unpaired else ''}) occurs in any of the "
                    f"{len(split['eval_pairs'])} eval pairs (folds {', '.join(map(str, bc.lfw.eval_folds))}, "
                    f"{len(eval_names)} people).")
    split_info = {k: v for k, v in split.items() if k not in ("ordered", "image_counts", "eval_pairs", "eval_people")}
    split_info.update({"pool_size": len(pool), "eval_pairs": len(split["eval_pairs"]), "eval_people": len(eval_names),
                       "include_unpaired": bc.lfw.include_unpaired, "sizes": sizes, "disjointness": checks,
                       "statement": disjoint_msg})
    (out / "split.json").write_text(json.dumps(split_info, indent=2, default=str))
    printer("benchmark: " + disjoint_msg)

    rows: list[dict[str, Any]] = []
    auth_aug = bc.authentic_augment
    syn_ids = bc.synthetic.num_ids
    # the synthetic arms: the main one ("synthetic", its one source) and the variants (name, sources, mix)
    syn_arms = [("", {"synthetic": config_to_dict(bc.synthetic)}, {"synthetic": 1.0})]
    syn_arms += [(name, {k: config_to_dict(v) for k, v in var.sources.items()}, var.mix())
                 for name, var in bc.variants.items()]
    backbones: dict[str, str] = {}
    if "synthetic" in bc.arms:
        for name, sources, mix in syn_arms:
            run_dir = out / "runs" / _arm_dir("synthetic", name)
            cfg = _train_cfg(bc, _arm_dir("synthetic", name), sources, _phase(bc.pretrain, "pretrain", mix), run_dir)
            m, wall = _run(cfg, run_dir, fresh, printer)
            backbones[name] = str(run_dir / "backbone.pt")
            if not name:
                syn_ids = m.get("sources", {}).get("synthetic", {}).get("num_classes")
            rows.append(_result_row(_arm_label("synthetic", name), 0, 0, 0, m, wall))
    for n_req, n in sizes:
        n_imgs = sum(min(counts[p], bc.lfw.images_per_id or counts[p]) for p in pool[:n])
        auth_src = {"type": "folder", "path": str(Path(bc.lfw.root) / "images"), "people_file": str(people_files[n]),
                    "images_per_id": bc.lfw.images_per_id, "augment": auth_aug}
        jobs = [("authentic", "", syn_arms[0][1], syn_arms[0][2])] if "authentic" in bc.arms else []
        jobs += [("finetune", name, sources, mix) for name, sources, mix in syn_arms] if "finetune" in bc.arms else []
        for arm, name, syn_sources, mix in jobs:
            tmpl = bc.authentic if arm == "authentic" else bc.finetune
            phase = _phase(tmpl, arm, {"authentic": 1.0})
            sources = {"authentic": auth_src}
            if phase["weights"].get("synthetic"):  # the template mixes synthetic data in: this arm's sources
                weights = {}
                for k, w in phase["weights"].items():
                    if k != "synthetic":
                        weights[k] = w
                        continue
                    for src, frac in mix.items():
                        weights[src] = _scale_weight(w, frac)
                        sources[src] = syn_sources[src]
                phase["weights"] = weights
            label = f"{_arm_dir(arm, name)}_{n}"
            run_dir = out / "runs" / label
            cfg = _train_cfg(bc, label, sources, phase, run_dir,
                             init_backbone=backbones[name] if arm == "finetune" else None)
            m, wall = _run(cfg, run_dir, fresh, printer)
            got = m.get("sources", {}).get("authentic", {}).get("num_classes")
            if got is not None and got != n:
                raise AssertionError(f"{label}: trained on {got} authentic identities, expected {n}")
            rows.append(_result_row(_arm_label(arm, name), n_req, n, n_imgs, m, wall))

    header = [
        f"Config: `{bc.name}`; backbone `{bc.model.backbone}` at {bc.model.input_size}px; synthetic source "
        f"`{bc.synthetic.source or bc.synthetic.path}` ({syn_ids or '?'} ids).",
        f"Eval: LFW-protocol pairs of folds {bc.lfw.eval_folds} from `{split['pairs_txt']}` "
        f"({len(split['eval_pairs'])} pairs, k-fold accuracy over those folds).",
        f"Authentic pool: {len(pool)} people of folds {bc.lfw.train_folds} ({split['pool_two_plus']} with >= 2 images, "
        f"used first); {split['unpaired_people']} people appear in no pair and are "
        f"{'included in' if bc.lfw.include_unpaired else 'excluded from'} training and never evaluated on.",
        disjoint_msg,
    ]
    for i, (name, var) in enumerate(bc.variants.items()):  # after the first line, in config order
        mix = ", ".join(f"{k} `{v.source or v.path}` x{w:.2f}" for k, v in var.sources.items()
                        for kk, w in var.mix().items() if kk == k)
        header.insert(1 + i, f"Variant `{name}`: {mix}.")
    csv_path, md_path = write_table(rows, out, header)
    png = plot_results(rows, out / "accuracy_vs_ids.png", f"{bc.name}: accuracy vs authentic identities")
    result = {"name": bc.name, "rows": rows, "split": split_info, "table_csv": str(csv_path),
              "table_md": str(md_path), "plot": str(png), "wall_s": round(time.time() - t_start, 1),
              "config": config_to_dict(bc)}
    (out / "benchmark.json").write_text(json.dumps(result, indent=2, default=str))
    printer(md_path.read_text())
    printer(f"benchmark: done in {result['wall_s']}s -> {out}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = cli.parser("training.benchmark", description=__doc__.split("\n\n")[0])
    cli.add_config(ap, required=True, help="YAML benchmark config (see configs/bench_*.yaml)")
    cli.add_out(ap, help="output directory (default: out of the config)")
    cli.add_override(ap, help="config override, e.g. sweep=[10,50] pretrain.steps=100")
    cli.add_fresh(ap, help="retrain every arm even if a finished run exists")
    cli.add_threads(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cli.set_threads(args.threads)

    def work() -> int | None:
        bc = load_benchmark_config(args.config, args.override)
        if not os.path.isdir(os.path.join(bc.lfw.root, "images")):
            print(f"benchmark: no LFW-layout data at {bc.lfw.root} (expected images/ and pairs.txt)", file=sys.stderr)
            return 3
        run_benchmark(bc, args.out, fresh=args.fresh)
        return None

    return cli.run(work)  # a ConfigError (or any SynthfaceError): one line, exit 2


if __name__ == "__main__":
    sys.exit(main())
