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

from .config import EvalConfig, ModelConfig, PhaseConfig, PhaseTemplate, SourceConfig, TrainerConfig, parse_config
from .pairsets import ExtendedPairsConfig, ensure_extended_pairs

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
    ``weights`` (name -> weight; default equal) during pretraining. ``pretrain``: phase keys that
    replace the benchmark's ``pretrain`` template's for this arm only (merged key by key, e.g.
    ``{loss: contrastive, contrastive: {queue_size: 4096}}`` for a self-supervised pretrain)."""

    sources: dict[str, SourceConfig]
    weights: dict[str, float] | None = None
    # issue 17 (SynFace): ``pretrained``: skip this variant's pretraining and fine-tune the backbone of
    # arm ``main`` (the synthetic arm) or of another variant (no ``synthetic:<name>`` row then);
    # ``finetune``: phase keys merged into the fine-tune template for this variant (e.g. ``weights``
    # mixing ``synthetic`` in, ``domain_mixup``); ``synthetic`` there names this variant's source(s)
    pretrained: str | None = None
    finetune: dict[str, Any] | None = None
    # issue 17 (USynthFace): ``pretrain``: phase keys merged into the pretrain template for this arm
    pretrain: dict[str, Any] | None = None

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
    counts, phase templates ``pretrain`` / ``finetune`` / ``authentic`` (:class:`~training.config.PhaseTemplate`: a phase without
    ``name``; ``weights`` optional, default the arm's one source; source names are ``synthetic`` and
    ``authentic``), shared ``model`` / ``trainer`` / ``eval`` settings and ``authentic_augment``."""

    lfw: LFWSplitConfig
    synthetic: SourceConfig
    sweep: list[int]
    pretrain: PhaseTemplate
    finetune: PhaseTemplate
    authentic: PhaseTemplate
    name: str = "benchmark"
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: dict[str, Any] = field(default_factory=dict)
    authentic_augment: dict[str, Any] | None = None
    arms: list[str] = field(default_factory=lambda: ["synthetic", "authentic", "finetune"])
    variants: dict[str, SyntheticVariant] = field(default_factory=dict)
    seed: int = 0
    out: str = "runs/benchmark"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    extended_pairs: ExtendedPairsConfig | None = field(default_factory=ExtendedPairsConfig)
    eval_all_pairs: bool = True
    matched_steps: bool = True
    compare: list[list[str]] | None = None

    def validate(self, path: str) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{_join(path, 'seeds')}: need distinct training seeds, got {self.seeds}")
        for i, c in enumerate(self.compare or []):
            if len(c) != 2:
                raise ConfigError(f"{_join(path, 'compare')}[{i}]: a comparison is [arm_a, arm_b] (row names, e.g. "
                                  f"finetune_100, authentic-matched_100), got {c}")
        if not self.sweep or any(n <= 0 for n in self.sweep):
            raise ConfigError(f"{_join(path, 'sweep')}: need positive identity counts, got {self.sweep}")
        bad = [a for a in self.arms if a not in ("synthetic", "authentic", "finetune")]
        if bad:
            raise ConfigError(f"{_join(path, 'arms')}: unknown arm {bad[0]!r} (synthetic, authentic, finetune)")
        if "finetune" in self.arms and "synthetic" not in self.arms:
            raise ConfigError(f"{_join(path, 'arms')}: 'finetune' needs the 'synthetic' arm (its pretrained backbone)")
        for name, var in self.variants.items():
            if not name or not all(c.isalnum() or c in "-_+." for c in name):
                raise ConfigError(f"{_join(path, 'variants')}.{name}: use letters, digits and - _ + . in variant names")
            if var.pretrained is not None:
                ref = self.variants.get(var.pretrained)
                if var.pretrained != "main" and (ref is None or ref.pretrained is not None):
                    raise ConfigError(f"{_join(path, 'variants')}.{name}.pretrained: 'main' or a variant pretrained by "
                                      f"itself ({', '.join(n for n, v in self.variants.items() if v.pretrained is None)}), "
                                      f"got {var.pretrained!r}")
            if var.finetune is not None:
                _variant_finetune(self.finetune, var, {"authentic": 1.0}, _join(_join(path, "variants"), name) + ".finetune")
        for key in ("pretrain", "finetune", "authentic"):  # each template makes a valid phase
            getattr(self, key).phase(key, {"synthetic": 1.0, "authentic": 1.0}, _join(path, key))
        for name in self.variants:
            pretrain_template(self, name, _join(path, f"variants.{name}.pretrain")).phase(
                "pretrain", {"synthetic": 1.0}, _join(path, f"variants.{name}.pretrain"))
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


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys on top, nested mappings merged key by key (inputs unchanged)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def pretrain_template(bc: "BenchmarkConfig", variant: str, path: str = "") -> PhaseTemplate:
    """The pretrain phase template of the synthetic arm ``variant`` ("" = the main one): ``bc.pretrain``
    with the variant's ``pretrain`` keys merged in (errors name ``path``)."""
    over = bc.variants[variant].pretrain if variant else None
    if not over:
        return bc.pretrain
    return from_dict(PhaseTemplate, _merged(config_to_dict(bc.pretrain), over), path or f"variants.{variant}.pretrain")


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
               init_backbone: str | None = None, seed: int | None = None):
    eval_cfg = {**bc.eval, "pairs": [{"root": bc.lfw.root, "pairs": _pairs_path(bc.lfw), "name": "lfw-eval",
                                      "folds": list(bc.lfw.eval_folds), "pairs_per_fold": bc.lfw.pairs_per_fold}]}
    model = config_to_dict(bc.model)
    if init_backbone is not None:
        model["init_backbone"] = init_backbone
    trainer = config_to_dict(bc.trainer)
    trainer["out"] = str(out)
    if seed is not None:
        trainer["seed"] = int(seed)
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


def _variant_finetune(tmpl: PhaseTemplate, var: SyntheticVariant | None, weights: dict[str, Any], path: str) -> dict[str, Any]:
    """The fine-tune phase (a mapping) of a variant: the template's, with the variant's ``finetune``
    keys merged in key by key (nested mappings too, as :func:`pretrain_template`; ``weights`` replaced
    whole; checked as a phase; errors name ``path``)."""
    phase = tmpl.phase("finetune", weights, path)
    if var is not None and var.finetune:
        phase = _merged(phase, copy.deepcopy(var.finetune))  # key by key, like a variant's ``pretrain``
        if "weights" in var.finetune:  # the mix is replaced whole (a merge could not drop a source)
            phase["weights"] = copy.deepcopy(var.finetune["weights"])
        chk = dict(phase)
        dm = chk.get("domain_mixup")
        if isinstance(dm, dict) and isinstance(chk.get("weights"), dict):  # 'synthetic' stands for the variant's sources
            chk["weights"] = {**chk["weights"], **{k: 1.0 for k in var.sources}}
        from_dict(PhaseConfig, chk, path)
    return phase


def _scale_weight(w: Any, frac: float) -> Any:
    """A phase weight (number, ``[start, end]`` or ``{start, end}``) times ``frac`` (unchanged for 1)."""
    if frac == 1.0:
        return w
    if isinstance(w, dict):
        return {k: v * frac for k, v in w.items()}
    if isinstance(w, (list, tuple)):
        return [v * frac for v in w]
    return w * frac


_METRICS = ("accuracy", "accuracy_std", "eer", "auc", "tar@1e-4", "tar@1e-3", "tar@1e-2", "tar@1e-1")
_FAR_KEYS = {"tar@1e-4": "0.0001", "tar@1e-3": "0.001", "tar@1e-2": "0.01", "tar@1e-1": "0.1"}


def _post_eval(run_dir: Path, sets: Sequence[Any], bc: BenchmarkConfig, printer) -> dict[str, dict[str, Any]]:
    """``{set: summarized results}`` of the run's final backbone on ``sets`` (:func:`training.evaluate.
    evaluate_sets`), cached in ``bench_eval.json`` keyed by the backbone's and the pair files' hashes."""
    import hashlib

    from .evaluate import evaluate_sets
    from .module import load_backbone
    from .verification import summarize

    h = hashlib.sha1((run_dir / "backbone.pt").read_bytes())
    for st in sets:
        h.update(f"|{st.name}|{st.path}|{st.folds}|".encode())
        h.update(hashlib.sha1(Path(st.path).read_bytes()).digest())
    key = h.hexdigest()
    cache = run_dir / "bench_eval.json"
    if cache.is_file():
        old = json.loads(cache.read_text())
        if old.get("key") == key:
            return old["results"]
    model = load_backbone(run_dir)
    res = evaluate_sets(model, sets, batch_size=int(bc.eval.get("batch_size", 128)), flip=bool(bc.eval.get("flip", True)))
    out = {name: summarize(r) for name, r in res.items()}
    from common.io import atomic_write_text

    atomic_write_text(cache, json.dumps({"key": key, "results": out}, indent=2, default=float))
    return out


def _seed_row(arm: str, n_req: int | None, n_ids: int | None, n_imgs: int | None, seed: int,
              metrics: dict[str, Any], wall: float, ev: dict[str, dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "arm": arm, "authentic_ids_requested": n_req, "authentic_ids": n_ids, "authentic_images": n_imgs,
        "seed": seed, "steps": metrics.get("total_steps"), "wall_s": round(wall, 1), "run_dir": metrics.get("out_dir"),
    }
    for name, r in ev.items():
        row[f"{name}/num_pairs"] = r["num_pairs"]
        for k in _METRICS:
            row[f"{name}/{k}"] = r["tar_at_far"].get(_FAR_KEYS[k]) if k in _FAR_KEYS else r.get(k)
    return row


def row_name(row: dict[str, Any]) -> str:
    """The name of a row in comparisons: ``<arm>_<authentic ids>`` (``<arm>`` when it used none)."""
    return f"{row['arm']}_{row['authentic_ids']}" if row.get("authentic_ids") else row["arm"]


def _aggregate(seed_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (arm, authentic ids): each metric's mean over seeds and ``<metric>:seed_std``
    (``ddof=0``, the spread of the seeds); ``accuracy`` / ``accuracy_std`` / ``eer`` / ``auc`` /
    ``tar_far_*`` repeat the ``lfw-eval`` figures (mean, and std over seeds)."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in seed_rows:
        groups.setdefault((r["arm"], r["authentic_ids"]), []).append(r)
    rows = []
    for (arm, n), rs in groups.items():
        first = rs[0]
        row: dict[str, Any] = {"arm": arm, "authentic_ids_requested": first["authentic_ids_requested"],
                               "authentic_ids": n, "authentic_images": first["authentic_images"],
                               "seeds": len(rs), "steps": first["steps"],
                               "wall_s": round(float(np.mean([r["wall_s"] for r in rs])), 1)}
        keys = [k for k in first if "/" in k]
        for k in keys:
            vals = [r.get(k) for r in rs]
            if k.endswith("/num_pairs"):
                row[k] = vals[0]
                continue
            ok = [float(v) for v in vals if v is not None]
            row[k] = float(np.mean(ok)) if len(ok) == len(vals) else None
            row[f"{k}:seed_std"] = float(np.std(ok)) if len(ok) == len(vals) else None
        row.update({"accuracy": row.get("lfw-eval/accuracy"), "accuracy_std": row.get("lfw-eval/accuracy:seed_std"),
                    "eer": row.get("lfw-eval/eer"), "auc": row.get("lfw-eval/auc"),
                    "tar_far_1e-2": row.get("lfw-eval/tar@1e-2"), "tar_far_1e-1": row.get("lfw-eval/tar@1e-1"),
                    "num_pairs": row.get("lfw-eval/num_pairs")})
        rows.append(row)
    return rows


def _comparisons(bc: BenchmarkConfig, seed_rows: list[dict[str, Any]], rows: list[dict[str, Any]],
                 set_names: Sequence[str]) -> list[dict[str, Any]]:
    """Paired comparisons (:func:`training.compare.paired_comparison`) of ``bc.compare`` (default: for
    each N, fine-tune vs authentic-matched and vs authentic, each variant's fine-tune vs the main one)
    on lfw-eval accuracy and, with the extended list, lfw-ext TAR@FAR=1e-3 and EER."""
    from .compare import paired_comparison

    by_name: dict[str, dict[int, dict[str, Any]]] = {}
    for r in seed_rows:
        by_name.setdefault(row_name(r), {})[r["seed"]] = r
    pairs = [tuple(c) for c in bc.compare] if bc.compare is not None else []
    if bc.compare is None:
        for r in rows:
            n = r["authentic_ids"]
            if r["arm"].startswith("finetune") and n:
                main = f"finetune_{n}"
                if r["arm"] == "finetune":
                    pairs += [(main, f"{b}_{n}") for b in ("authentic-matched", "authentic") if f"{b}_{n}" in by_name]
                elif main in by_name:
                    pairs.append((f"{r['arm']}_{n}", main))
    metrics = [("lfw-eval/accuracy", True)]
    if "lfw-ext" in set_names:
        metrics += [("lfw-ext/tar@1e-3", True), ("lfw-ext/eer", False)]
    out = []
    for a, b in pairs:
        for nm in (a, b):
            if nm not in by_name:
                raise ConfigError(f"compare: no row {nm!r}; rows: {', '.join(sorted(by_name))}")
        seeds = sorted(set(by_name[a]) & set(by_name[b]))
        for metric, hib in metrics:
            va = [by_name[a][s].get(metric) for s in seeds]
            vb = [by_name[b][s].get(metric) for s in seeds]
            if any(v is None for v in va + vb):
                continue
            out.append(paired_comparison(va, vb, a, b, metric, higher_is_better=hib).as_dict())
    return out


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


def _pm(row: dict[str, Any], key: str) -> str:
    v, sd = row.get(key), row.get(f"{key}:seed_std")
    if v is None:
        return "n/a" if key in row else "-"
    return f"{100 * v:.2f} ± {100 * (sd or 0.0):.2f}"


def write_table(rows: list[dict[str, Any]], out: Path, header_lines: Sequence[str],
                seed_rows: Sequence[dict[str, Any]] = (), comparisons: Sequence[dict[str, Any]] = ()) -> tuple[Path, Path]:
    """``results.csv`` (one row per arm, mean and seed std of every metric), ``results_per_seed.csv`` and
    ``results.md`` (the table, the paired comparisons and the rule behind them)."""
    csv_path = out / "results.csv"
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    if seed_rows:
        sfields = list(dict.fromkeys(k for r in seed_rows for k in r))
        with open(out / "results_per_seed.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=sfields)
            w.writeheader()
            w.writerows(seed_rows)
    cols = [("lfw-eval/accuracy", "acc folds 4-5"), ("lfw-eval/eer", "EER 4-5"), ("lfw-ext/tar@1e-3", "ext TAR@1e-3"),
            ("lfw-ext/tar@1e-4", "ext TAR@1e-4"), ("lfw-ext/eer", "ext EER"), ("lfw-ext/auc", "ext AUC"),
            ("lfw-all/accuracy", "acc all pairs")]
    cols = [(k, t) for k, t in cols if any(k in r for r in rows)]
    md = ["# Synthetic pretrain -> authentic fine-tune benchmark", "", *header_lines, "",
          "| arm | authentic ids | authentic images | steps | seeds | " + " | ".join(t for _, t in cols) + " | time (s) |",
          "|---|---:|---:|---:|---:|" + "---:|" * len(cols) + "---:|"]
    for r in rows:
        md.append(f"| {r['arm']} | {_fmt(r['authentic_ids'])} | {_fmt(r['authentic_images'])} | {_fmt(r['steps'])} "
                  f"| {r.get('seeds', 1)} | " + " | ".join(_pm(r, k) for k, _ in cols) + f" | {_fmt(r['wall_s'], 1)} |")
    if comparisons:
        md += ["", "Paired comparisons (same seeds, same pairs): d = A - B per seed; decided when the paired "
               "t-test gives p < 0.05 (the 95% CI of the mean d excludes 0), else within seed spread.", "",
               "| A | B | metric | d per seed | mean d ± std | 95% CI | verdict |", "|---|---|---|---|---:|---|---|"]
        for c in comparisons:
            ci = "n/a" if c["ci95"] is None else f"[{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}]"
            md.append(f"| {c['a']} | {c['b']} | {c['metric']} | " + ", ".join(f"{100 * d:+.2f}" for d in c["diffs"])
                      + f" | {100 * c['mean']:+.2f} ± {100 * c['std']:.2f} | {ci} | {c['verdict']} |")
    md_path = out / "results.md"
    md_path.write_text("\n".join(md) + "\n")
    return csv_path, md_path


def plot_results(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    styles = {"authentic": ("authentic only", "o-", "tab:blue"),
              "authentic-matched": ("authentic only, matched steps", "o--", "tab:cyan"),
              "finetune": ("synthetic + fine-tune", "s-", "tab:orange")}
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

    # the eval sets, scored after training from each final backbone (one embedding pass per model)
    from .evaluate import EvalSet

    pairs_txt = split["pairs_txt"]
    sets = [EvalSet("lfw-eval", "pairs", pairs_txt, bc.lfw.root, list(bc.lfw.eval_folds))]
    ext_info = None
    if bc.extended_pairs is not None:
        all_counts = _image_counts(Path(bc.lfw.root) / "images")
        ext_people = {n: all_counts[n] for n in split["eval_people"] if n in all_counts}
        ext_path, ext_info = ensure_extended_pairs(out / "pairs_extended.txt", ext_people, bc.extended_pairs, printer)
        check_disjoint(pool[:max(n for _, n in sizes)], [(a, a, True, 0) for a in ext_people])
        sets.append(EvalSet("lfw-ext", "pairs", str(ext_path), bc.lfw.root))
    syn_sets = sets + ([EvalSet("lfw-all", "pairs", pairs_txt, bc.lfw.root)] if bc.eval_all_pairs else [])

    auth_aug = bc.authentic_augment
    syn_ids = bc.synthetic.num_ids
    # the synthetic arms: the main one ("synthetic", its one source) and the variants (name, sources, mix)
    syn_arms = [("", {"synthetic": config_to_dict(bc.synthetic)}, {"synthetic": 1.0})]
    syn_arms += [(name, {k: config_to_dict(v) for k, v in var.sources.items()}, var.mix())
                 for name, var in bc.variants.items()]
    seed_rows: list[dict[str, Any]] = []
    for seed in bc.seeds:
        sdir = out / "runs" / f"s{seed}"
        backbones: dict[str, str] = {}
        syn_steps: dict[str, int] = {}
        if "synthetic" in bc.arms:
            for name, sources, mix in syn_arms:
                if name and bc.variants[name].pretrained is not None:
                    continue  # fine-tunes another arm's backbone (set below)
                run_dir = sdir / _arm_dir("synthetic", name)
                cfg = _train_cfg(bc, _arm_dir("synthetic", name), sources,
                                 pretrain_template(bc, name).phase("pretrain", mix), run_dir, seed=seed)
                m, wall = _run(cfg, run_dir, fresh, printer)
                backbones[name] = str(run_dir / "backbone.pt")
                syn_steps[name] = int(m.get("total_steps") or 0)
                if not name:
                    syn_ids = m.get("sources", {}).get("synthetic", {}).get("num_classes")
                ev = _post_eval(run_dir, syn_sets, bc, printer)
                seed_rows.append(_seed_row(_arm_label("synthetic", name), 0, 0, 0, seed, m, wall, ev))
            for name, var in bc.variants.items():
                if var.pretrained is not None:
                    ref = "" if var.pretrained == "main" else var.pretrained
                    backbones[name], syn_steps[name] = backbones[ref], syn_steps[ref]
        for n_req, n in sizes:
            n_imgs = sum(min(counts[p], bc.lfw.images_per_id or counts[p]) for p in pool[:n])
            auth_src = {"type": "folder", "path": str(Path(bc.lfw.root) / "images"),
                        "people_file": str(people_files[n]), "images_per_id": bc.lfw.images_per_id,
                        "augment": auth_aug}
            jobs = [("authentic", "", syn_arms[0][1], syn_arms[0][2])] if "authentic" in bc.arms else []
            jobs += [("finetune", name, sources, mix) for name, sources, mix in syn_arms] if "finetune" in bc.arms else []
            if bc.matched_steps and "authentic" in bc.arms and "finetune" in bc.arms:
                jobs.append(("authentic-matched", "", syn_arms[0][1], syn_arms[0][2]))
            ft_steps = 0
            for arm, name, syn_sources, mix in jobs:
                tmpl = bc.finetune if arm == "finetune" else bc.authentic
                phase = tmpl.phase(arm, {"authentic": 1.0})
                if arm == "finetune" and name and bc.variants[name].finetune:
                    phase = _variant_finetune(tmpl, bc.variants[name], {"authentic": 1.0}, f"variants.{name}.finetune")
                    phase["name"] = arm
                    dm = phase.get("domain_mixup")
                    if dm and len(mix) == 1:  # 'synthetic' in domain_mixup.sources: the variant's one source
                        dm["sources"] = [next(iter(mix)) if s_ == "synthetic" else s_ for s_ in dm["sources"]]
                if arm == "authentic-matched":  # as many steps as pretrain + fine-tune of the main arm
                    phase.pop("epochs", None)
                    phase["steps"] = syn_steps[""] + ft_steps
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
                run_dir = sdir / label
                cfg = _train_cfg(bc, label, sources, phase, run_dir,
                                 init_backbone=backbones[name] if arm == "finetune" else None, seed=seed)
                m, wall = _run(cfg, run_dir, fresh, printer)
                if arm == "finetune" and not name:
                    ft_steps = int(m.get("total_steps") or 0)
                got = m.get("sources", {}).get("authentic", {}).get("num_classes")
                if got is not None and got != n:
                    raise AssertionError(f"{label}: trained on {got} authentic identities, expected {n}")
                ev = _post_eval(run_dir, sets, bc, printer)
                seed_rows.append(_seed_row(_arm_label(arm, name), n_req, n, n_imgs, seed, m, wall, ev))
    rows = _aggregate(seed_rows)
    comparisons = _comparisons(bc, seed_rows, rows, [s.name for s in sets])

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
        pre = f"; pretrain phase keys {json.dumps(var.pretrain, sort_keys=True)}" if var.pretrain else ""
        header.insert(1 + i, f"Variant `{name}`: {mix}{pre}.")
    header.append(f"Seeds: {len(bc.seeds)} training seeds {bc.seeds} per arm (same people, same pairs); every "
                  f"figure is mean ± std over the seeds, in percent.")
    if ext_info:
        header.append(f"lfw-ext: an identity-disjoint extended pair list of the {ext_info['people']} eval people "
                      f"(`pairs_extended.txt`: all {ext_info['genuine']} genuine pairs their images allow, "
                      f"{ext_info['impostors']} impostor pairs drawn within {ext_info['folds']} people-disjoint folds, "
                      f"seed {bc.extended_pairs.seed}).")
    if bc.eval_all_pairs:
        header.append("lfw-all: all pairs of the pairs file (every fold), for synthetic-only arms only (they saw no real face).")
    if bc.matched_steps:
        header.append("authentic-matched: authentic only, trained for as many steps as pretrain + fine-tune.")
    csv_path, md_path = write_table(rows, out, header, seed_rows=seed_rows, comparisons=comparisons)
    png = plot_results(rows, out / "accuracy_vs_ids.png", f"{bc.name}: accuracy vs authentic identities")
    result = {"name": bc.name, "rows": rows, "seed_rows": seed_rows, "comparisons": comparisons,
              "extended_pairs": ext_info, "split": split_info, "table_csv": str(csv_path),
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
