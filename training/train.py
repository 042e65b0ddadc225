"""Train a face-recognition model through a curriculum of phases.

Usage::

    python -m training.train --config configs/pretrain_finetune.yaml [--out DIR] \\
        [--override trainer.batch_size=64 phases.0.steps=1000 ...] [--fresh]

Each phase is one Lightning ``fit`` (its own optimizer / LR schedule / freezing / head), driven by
the global step: phase ``p`` covers global steps ``[start_p, end_p)`` and its data weights follow the
curriculum at those steps. Run state lives in ``OUT``:

* ``config.yaml`` (resolved config), ``run_state.json`` (phase bookkeeping),
* ``phases/NN-<name>/last.ckpt`` (atomic step checkpoints), ``final.pt`` (weights at phase end),
  ``logs/`` (CSV, and TensorBoard if installed), ``eval/`` (per-phase verification plots),
* at the end: ``metrics.json``, ``roc.png``, ``backbone.pt`` + ``model_config.json``.

Re-running the same command after a crash or ``kill -9`` resumes: finished phases are skipped,
the interrupted phase continues from its ``last.ckpt`` (same global step, same data stream).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import yaml

from common import cli
from common.config import ConfigError, config_to_dict

from .config import EvalConfig, TrainConfig, load_config
from .curriculum import Curriculum
from .data import MixedDataModule, build_sources
from .distributed import GlobalBatchNormSync
from .module import (AtomicCheckpoint, FaceRecognitionModule, PeriodicEval, ProgressPrinter, atomic_write_text,
                     load_backbone, save_backbone)

log = logging.getLogger("synthface.train")

__all__ = ["Evaluator", "run_training", "plan", "main", "load_backbone"]


def _rank() -> int:
    try:
        from lightning.pytorch.utilities import rank_zero_only

        return int(getattr(rank_zero_only, "rank", 0) or 0)
    except Exception:  # pragma: no cover
        return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return x


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------


class Evaluator:
    """Verification on the ``eval`` section: LFW-style pair sets (optionally a subset of folds) and
    insightface ``.bin`` files. ``__call__(backbone) -> {set_name: results}`` (full results of
    ``verification.evaluate_pairs``: include ``scores``/``roc`` for plotting)."""

    def __init__(self, cfg: EvalConfig, image_size: int, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.image_size = int(image_size)
        self.device = torch.device(device)
        self._pairs: dict[str, list[tuple[str, str, bool, int]]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.pairs or self.cfg.bins)

    def pair_sets(self) -> dict[str, list[tuple[str, str, bool, int]]]:
        from .verification import read_lfw_pairs

        if not self._pairs and self.cfg.pairs:
            for i, pc in enumerate(self.cfg.pairs):
                name = pc.name or Path(pc.root).name or f"pairs{i}"
                txt = pc.pairs or os.path.join(pc.root, "pairs.txt")
                pairs = read_lfw_pairs(txt, image_root=pc.root)
                if pc.folds is not None:
                    nf = 1 + max(p[3] for p in pairs)
                    bad = [f for f in pc.folds if f > nf]
                    if bad:
                        raise ConfigError(f"eval.pairs[{i}].folds: {txt} has {nf} folds, got {pc.folds}")
                    keep = {f - 1 for f in pc.folds}
                    pairs = [p for p in pairs if p[3] in keep]
                if pc.pairs_per_fold is not None:
                    seen: dict[tuple[int, bool], int] = {}
                    kept = []
                    for p in pairs:
                        k = (p[3], p[2])
                        if seen.get(k, 0) < pc.pairs_per_fold:
                            kept.append(p)
                            seen[k] = seen.get(k, 0) + 1
                    pairs = kept
                self._pairs[name] = pairs
        return self._pairs

    def __call__(self, backbone: torch.nn.Module) -> dict[str, dict[str, Any]]:
        from . import verification as V

        out: dict[str, dict[str, Any]] = {}
        for name, pairs in self.pair_sets().items():
            keys = list(dict.fromkeys([p[0] for p in pairs] + [p[1] for p in pairs]))
            pos = {k: i for i, k in enumerate(keys)}
            emb = V.embed(backbone, keys, batch_size=self.cfg.batch_size, device=self.device, flip=self.cfg.flip,
                          image_size=self.image_size)
            ia = np.array([pos[p[0]] for p in pairs])
            ib = np.array([pos[p[1]] for p in pairs])
            res = V.evaluate_pairs(emb[ia], emb[ib], [p[2] for p in pairs], folds=[p[3] for p in pairs])
            res["num_images"] = len(keys)
            out[name] = res
        for b in self.cfg.bins:
            res = V.verify_bin(backbone, b, device=self.device, batch_size=self.cfg.batch_size, flip=self.cfg.flip,
                               image_size=self.image_size, max_pairs=self.cfg.max_bin_pairs)
            out[Path(b).stem] = res
        return out

    @staticmethod
    def summary(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        from .verification import summarize

        return {k: _jsonable(summarize(v)) for k, v in results.items()}

    @staticmethod
    def flat(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
        out = {}
        for k, v in results.items():
            out[f"{k}/accuracy"] = float(v["accuracy"])
            out[f"{k}/eer"] = float(v["eer"])
            out[f"{k}/auc"] = float(v["auc"])
        return out


# ----------------------------------------------------------------------------------------------
# trainer
# ----------------------------------------------------------------------------------------------


def _loggers(cfg: TrainConfig, pdir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(save_dir=str(pdir), name="logs")]
    if cfg.trainer.tensorboard:
        try:
            import tensorboard  # noqa: F401
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(pdir), name="tb"))
        except ImportError:
            pass
    return loggers


def _strategy(cfg: TrainConfig):
    s = cfg.trainer.strategy
    if s == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=cfg.trainer.find_unused_parameters)
    return s


def _eval_device(cfg: TrainConfig) -> str:
    acc = cfg.trainer.accelerator
    if acc == "cpu":
        return "cpu"
    if torch.cuda.is_available() and acc in ("auto", "gpu", "cuda"):
        return "cuda"
    return "cpu"


def build_trainer(cfg: TrainConfig, max_steps: int, pdir: Path, callbacks: list):
    import lightning.pytorch as L

    t = cfg.trainer
    # batch norm over the global batch under DDP: torch's fused SyncBatchNorm on CUDA, GlobalBatchNorm
    # (one all_reduce per layer, any backend) on CPU
    sync = None
    if t.sync_batchnorm and str(t.strategy).startswith("ddp"):
        sync = "cuda" if _eval_device(cfg) == "cuda" else "global"
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=_strategy(cfg),
        sync_batchnorm=sync == "cuda",
        plugins=[GlobalBatchNormSync()] if sync == "global" else None,
        precision=t.precision,
        max_steps=max_steps,
        max_epochs=-1,
        logger=_loggers(cfg, pdir),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=t.log_every,
        gradient_clip_val=t.grad_clip or None,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
        default_root_dir=str(pdir),
        benchmark=True if torch.cuda.is_available() else None,
    )


def _phase_dir(out: Path, ph) -> Path:
    return out / "phases" / f"{ph.index:02d}-{ph.name}"


def _read_state(path: Path) -> dict[str, Any]:
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:  # torn write cannot happen (atomic), but be tolerant
            log.warning("unreadable %s; starting bookkeeping afresh", path)
    return {}


def _plan(curr: Curriculum) -> list[dict[str, Any]]:
    return [{k: d[k] for k in ("name", "start", "end", "segment", "num_classes")} for d in curr.describe()]


def _loss_summary(loss_log: Sequence[tuple[int, float]], start: int, end: int) -> dict[str, Any]:
    xs = [(s, v) for s, v in loss_log if start <= s < end]
    if not xs:
        return {}
    k = max(1, len(xs) // 5)
    first = float(np.mean([v for _, v in xs[:k]]))
    last = float(np.mean([v for _, v in xs[-k:]]))
    return {"loss_first": first, "loss_last": last, "num_logged": len(xs)}


def run_training(cfg: TrainConfig, out_dir: str | os.PathLike | None = None, *, fresh: bool = False,
                 printer=print) -> dict[str, Any]:
    """Train ``cfg`` through all phases (resuming whatever ``out_dir`` already holds); returns the
    ``metrics.json`` dict."""
    import lightning.pytorch as L

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*IterableDataset.*__len__.*")
    warnings.filterwarnings("ignore", ".*resuming from a checkpoint that ended before the epoch ended.*")
    warnings.filterwarnings("ignore", ".*Your `IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", ".*Total length of `DataLoader` across ranks is zero.*")
    warnings.filterwarnings("ignore", ".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)

    out = Path(out_dir or cfg.trainer.out)
    rank0 = _rank() == 0
    t_start = time.time()
    if cfg.trainer.matmul_precision:
        torch.set_float32_matmul_precision(cfg.trainer.matmul_precision)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)

    sources = build_sources(cfg)
    world = cfg.trainer.world_size_hint
    curr = Curriculum(cfg, {n: s.num_classes for n, s in sources.items()},
                      {n: s.epoch_size for n, s in sources.items()}, world_size=world)

    state_path = out / "run_state.json"
    state = {} if fresh else _read_state(state_path)
    if state and state.get("plan") != _jsonable(_plan(curr)):
        raise RuntimeError(f"{out} holds a run with a different curriculum (phases/steps/classes); use another "
                           "--out, or --fresh to start over there")
    if not state:
        state = {"plan": _jsonable(_plan(curr)), "phases": {}}
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        atomic_write_text(state_path, json.dumps(state, indent=2))
        if fresh:
            for ph in curr.phases:
                for f in ("last.ckpt", "final.pt"):
                    p = _phase_dir(out, ph) / f
                    if p.exists():
                        p.unlink()

    module = FaceRecognitionModule(cfg, curr)
    evaluator = Evaluator(cfg.eval, cfg.model.input_size, _eval_device(cfg))
    printer(f"synthface.train: {cfg.name}: {len(curr.phases)} phase(s), {curr.total_steps} steps, batch "
            f"{cfg.trainer.batch_size} x {world}, sources "
            + ", ".join(f"{n} ({s.num_classes} ids, {s.epoch_size} imgs/epoch)" for n, s in sources.items())
            + f" -> {out}")

    last_results: dict[str, Any] = {}
    prev_final: Path | None = None
    loaded_prev = False
    for ph in curr.phases:
        pdir = _phase_dir(out, ph)
        rec = state["phases"].get(ph.name, {})
        if rec.get("done") and (pdir / "final.pt").is_file():
            prev_final = pdir / "final.pt"
            continue
        if prev_final is not None and not loaded_prev:
            module.load_phase_state(prev_final)
        loaded_prev = True
        module.enter_phase(ph.index)
        ckpt = pdir / "last.ckpt"
        ckpt_path = str(ckpt) if ckpt.is_file() else None
        L.seed_everything(cfg.trainer.seed + 1000 * ph.index, workers=True, verbose=False)
        new_segment = ph.index == 0 or curr.phases[ph.index - 1].segment != ph.segment
        if ckpt_path is None and new_segment and ph.config.head_init == "mean":
            t0 = time.time()
            n = module.imprint_head(sources, ph.config.head_init_images, device=_eval_device(cfg))
            printer(f"[{ph.name}] head initialised from mean embeddings of {n}/{module.num_classes} classes "
                    f"({time.time() - t0:.1f}s)")

        callbacks: list = [AtomicCheckpoint(pdir, cfg.trainer.ckpt_every_steps), ProgressPrinter(cfg.trainer.log_every,
                                                                                                 printer)]
        if cfg.trainer.val_every and evaluator.enabled:
            def _periodic(backbone, gstep, _ev=evaluator):
                return Evaluator.flat(_ev(backbone))

            callbacks.append(PeriodicEval(_periodic, cfg.trainer.val_every))
        trainer = build_trainer(cfg, ph.steps, pdir, callbacks)
        dm = MixedDataModule(sources, curr, ph.index, num_workers=cfg.trainer.num_workers,
                             prefetch_factor=cfg.trainer.prefetch_factor, seed=cfg.trainer.seed,
                             image_size=cfg.model.input_size)
        t0 = time.time()
        if ckpt_path:
            printer(f"[{ph.name}] resuming from {ckpt_path}")
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        wall = time.time() - t0
        done_steps = int(trainer.global_step)
        if done_steps < ph.steps:
            raise RuntimeError(f"phase {ph.name} stopped at local step {done_steps} of {ph.steps}")
        rank0 = trainer.is_global_zero
        if rank0:
            module.save_phase_state(pdir / "final.pt")
            rec = dict(state["phases"].get(ph.name, {}))
            rec.update({
                "index": ph.index, "name": ph.name, "start": ph.start, "end": ph.end, "steps": ph.steps,
                "completed_steps": done_steps, "global_step": ph.start + done_steps, "segment": ph.segment,
                "num_classes": module.num_classes, "reinit_head": bool(ph.config.reinit_head and ph.index > 0),
                "frozen_params": len(module.frozen_params),
                "weights_start": dict(zip(curr.source_names, map(float, ph.w_start))),
                "weights_end": dict(zip(curr.source_names, map(float, ph.w_end))),
                "train": _loss_summary(module.loss_log, ph.start, ph.end),
            })
            rec.setdefault("attempts", []).append({"start_step": ph.start + int(module.fit_start_step or 0),
                                                   "resumed": ckpt_path is not None, "wall_s": round(wall, 2)})
            is_last = ph.index == len(curr.phases) - 1
            if evaluator.enabled and (cfg.eval.at_phase_end or is_last):
                res = evaluator(module.backbone)
                last_results = res
                rec["eval"] = Evaluator.summary(res)
                try:
                    from .verification import plot_roc

                    plot_roc(res, pdir / "roc.png", title=f"{cfg.name} after {ph.name}")
                except Exception as e:  # plotting must never kill a run
                    log.warning("ROC plot failed: %s", e)
                for k, v in res.items():
                    printer(f"[{ph.name}] eval {k}: acc {v['accuracy']:.4f} ± {v['accuracy_std']:.4f} "
                            f"EER {v['eer']:.4f} AUC {v['auc']:.4f}")
            rec["done"] = True
            state["phases"][ph.name] = rec
            atomic_write_text(state_path, json.dumps(_jsonable(state), indent=2))
        prev_final = pdir / "final.pt"

    if not rank0:
        return {}
    if not loaded_prev and prev_final is not None:  # everything was already done: reload the end state
        module.load_phase_state(prev_final)
    if evaluator.enabled and not last_results:
        last_results = evaluator(module.backbone)
    save_backbone(module.backbone, cfg.model, out, extra={"run": cfg.name, "global_step": curr.total_steps})
    roc_png = None
    if last_results:
        try:
            from .verification import plot_roc

            roc_png = str(plot_roc(last_results, out / "roc.png", title=f"{cfg.name}"))
        except Exception as e:
            log.warning("ROC plot failed: %s", e)
    phases = [state["phases"].get(ph.name, {}) for ph in curr.phases]
    metrics = {
        "name": cfg.name,
        "out_dir": str(out),
        "total_steps": curr.total_steps,
        "global_step": max((p.get("global_step", 0) for p in phases), default=0),
        "complete": all(p.get("done") for p in phases),
        "phases": phases,
        "final_eval": Evaluator.summary(last_results) if last_results else {},
        "sources": {n: s.describe() for n, s in sources.items()},
        "model": config_to_dict(cfg.model),
        "backbone": str(out / "backbone.pt"),
        "model_config": str(out / "model_config.json"),
        "roc_png": roc_png,
        "wall_s": round(time.time() - t_start, 2),
    }
    atomic_write_text(out / "metrics.json", json.dumps(_jsonable(metrics), indent=2))
    printer(f"synthface.train: done, {metrics['global_step']}/{curr.total_steps} steps -> {out / 'metrics.json'}")
    return metrics


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = cli.parser("training.train", description=__doc__.split("\n\n")[0])
    cli.add_config(ap, required=True, help="YAML training config")
    cli.add_out(ap, help="run directory (default: trainer.out of the config)")
    cli.add_override(ap, help="config override, e.g. trainer.batch_size=64 phases.0.steps=100")
    cli.add_fresh(ap, help="ignore (and replace) any previous run state in --out")
    cli.add_threads(ap)
    ap.add_argument("--dry-run", action="store_true",
                    help="validate the config, open the sources and print the phase plan, then exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cli.set_threads(args.threads)

    def work() -> None:
        cfg = load_config(args.config, args.override)
        if args.dry_run:
            print(json.dumps(_jsonable(plan(cfg)), indent=2))
            return
        run_training(cfg, args.out, fresh=args.fresh)

    return cli.run(work)  # a ConfigError (or any SynthfaceError): one line, exit 2


def plan(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved phase plan (global step ranges, weights, class spaces) and the sources."""
    sources = build_sources(cfg)
    curr = Curriculum(cfg, {n: s.num_classes for n, s in sources.items()},
                      {n: s.epoch_size for n, s in sources.items()}, world_size=cfg.trainer.world_size_hint)
    return {"name": cfg.name, "total_steps": curr.total_steps, "phases": curr.describe(),
            "sources": {n: s.describe() for n, s in sources.items()}}


if __name__ == "__main__":
    sys.exit(main())
