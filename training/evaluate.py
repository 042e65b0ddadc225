"""Evaluate a face-recognition model the way the field reports it.

Usage::

    python -m training.evaluate MODEL [--pairs ROOT|PAIRS_FILE ...] [--bin FILE.bin ...] [--out DIR]
        [--network r50] [--embedding-size 512] [--input-size 112] [--device cpu] [--no-flip]

``MODEL`` is one of

* a run dir of ours (``training.train`` / ``training.benchmark`` output: ``backbone.pt`` +
  ``model_config.json``), or such a ``backbone.pt``;
* an insightface ``arcface_torch`` checkpoint (``backbone.pth``, or a ``checkpoint_gpu_*.pt`` holding
  ``state_dict_backbone``) with ``--network r18|r34|r50|r100|r200|mbf|mobilefacenet``: our iResNet /
  MobileFaceNet use arcface_torch's module names, so its keys load one to one (``module.`` /
  ``backbone.`` / ``_orig_mod.`` prefixes are stripped); the embedding size and the input size are
  read from the weights' shapes (``fc`` / ``features`` of iResNet, the GDC kernel of MobileFaceNet).

``--pairs`` takes an LFW-layout folder (``ROOT/images/<Name>/<Name>_NNNN.jpg`` + ``ROOT/pairs.txt``),
or a pairs file (LFW ``pairs.txt`` or a ``#synthface-pairs v1`` list, images under the file's folder or
``--image-root``, e.g. a benchmark's ``pairs_extended.txt`` with ``--image-root ../shared/data/lfw-dev``),
optionally ``NAME=PATH`` to name the set and ``PATH@4,5`` to keep some 1-based folds. ``--bin`` takes
insightface ``.bin`` files (``lfw.bin``, ``agedb_30.bin``, ``cfp_fp.bin`` ...; 10 contiguous folds).

For every set, one run prints and writes (``OUT``, default ``eval/<model name>``): ``results.md``
(the table: accuracy +- std over the file's folds, TAR@FAR 1e-4 .. 1e-1, AUC, EER, pair counts),
``results.json``, ``roc.png`` (all sets), and per set ``<set>_roc.png``, ``<set>_hist.png`` (genuine
and impostor score histograms) and ``<set>_results.json``. TAR@FAR is "n/a" where the set has fewer
than ``1 / FAR`` impostor pairs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from common.errors import EXIT_FAILED, EvaluateError, report
from common.io import atomic_write_text

from .verification import DEFAULT_FARS, plot_roc, summarize, verify_bin

__all__ = ["EvaluateInputError", "EvalSet", "LoadedModel", "load_model", "parse_set", "evaluate_sets", "format_table", "write_report",
           "main"]

FARS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
assert set(FARS) == set(DEFAULT_FARS)


class EvaluateInputError(EvaluateError):
    """A bad model file / layout or eval set (the message names the file); exit code 2."""


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A backbone ready to embed, and where it came from."""

    model: nn.Module
    name: str
    source: str          # "run" (ours) or "arcface_torch"
    network: str
    embedding_size: int
    input_size: tuple[int, int]


def _shape_info(sd: Mapping[str, torch.Tensor], network: str) -> tuple[int, int | None]:
    """``(embedding_size, input_size or None)`` read from an arcface_torch state dict."""
    from .backbones import _ALIASES

    key = _ALIASES.get(network.lower(), network.lower())
    if key.startswith("iresnet"):
        if "features.weight" not in sd or "fc.weight" not in sd:
            raise KeyError("fc.weight / features.weight")
        emb = int(sd["features.weight"].shape[0])
        cells = int(sd["fc.weight"].shape[1]) // 512
        side = math.isqrt(cells)
        return emb, (side * 16 if side * side == cells else None)
    if key in ("mbf", "mobilefacenet"):
        w = sd.get("features.layers.2.weight")
        k = sd.get("features.layers.0.layers.0.weight")
        if w is None or k is None:
            raise KeyError("features.layers.2.weight / features.layers.0.layers.0.weight")
        return int(w.shape[0]), int(k.shape[-1]) * 16
    raise KeyError(f"no shape rules for network {network!r}")


def load_model(path: str | os.PathLike, network: str | None = None, embedding_size: int | None = None,
               input_size: int | None = None, device: str = "cpu") -> LoadedModel:
    """Load ``path`` (see the module docstring). Raises :class:`EvaluateInputError` naming the file for
    a missing file, a run dir without a finished backbone, an unknown network or a layout mismatch."""
    from .backbones import _extract_state_dict, _PREFIXES, create_backbone, list_backbones, load_arcface_torch
    from .module import load_backbone

    p = Path(path)
    if not p.exists():
        raise EvaluateInputError(f"{p}: no such model file or run dir")
    meta_dir = p if p.is_dir() else p.parent
    ours = (meta_dir / "model_config.json").is_file() and (p.is_dir() or p.suffix == ".pt") and network is None
    if p.is_dir() and not ours:
        has = ", ".join(sorted(x.name for x in p.iterdir())[:8]) or "nothing"
        raise EvaluateInputError(f"{p}: a run dir needs backbone.pt + model_config.json (a finished training run); "
                                 f"it holds {has}")
    name = (p.name if p.is_dir() else (p.parent.name if p.stem in ("backbone", "model") else p.stem)) or "model"
    if ours:
        weights = p / "backbone.pt" if p.is_dir() else p
        if not weights.is_file():
            raise EvaluateInputError(f"{weights}: missing (the run in {meta_dir} has not finished)")
        try:
            model = load_backbone(p)
        except (RuntimeError, KeyError, json.JSONDecodeError) as e:
            raise EvaluateInputError(f"{weights}: does not match {meta_dir / 'model_config.json'}: {e}") from None
        meta = json.loads((meta_dir / "model_config.json").read_text())
        isz = tuple(getattr(model, "input_size", (meta["input_size"],) * 2))
        return LoadedModel(model.to(device).eval(), name, "run", meta["backbone"], int(meta["embedding_size"]),
                           (int(isz[0]), int(isz[-1])))
    if network is None:
        raise EvaluateInputError(f"{p}: not a run dir of ours (no model_config.json beside it); for an arcface_torch "
                                 f"checkpoint pass --network (r18, r34, r50, r100, r200, mbf, mobilefacenet)")
    from .backbones import _ALIASES

    if _ALIASES.get(network.lower(), network.lower()) not in list_backbones():
        raise EvaluateInputError(f"--network {network!r}: unknown; registered: {', '.join(list_backbones())} "
                                 f"(and arcface_torch's r18 r34 r50 r100 r200)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise EvaluateInputError(f"{p}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})") from None
    try:
        sd = _extract_state_dict(obj)
    except ValueError as e:
        raise EvaluateInputError(f"{p}: {e}") from None
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    try:
        emb, isz = _shape_info(sd, network)
    except KeyError as e:
        raise EvaluateInputError(f"{p}: not an arcface_torch {network} state dict (missing {e.args[0]}; "
                                 f"its first keys: {', '.join(list(sd)[:6])})") from None
    emb = embedding_size or emb
    isz = input_size or isz or 112
    model = create_backbone(network, emb, input_size=isz)
    try:
        load_arcface_torch(model, p, strict=True)
    except RuntimeError as e:
        raise EvaluateInputError(str(e)) from None
    return LoadedModel(model.to(device).eval(), name, "arcface_torch", network, emb, (isz, isz))


# ----------------------------------------------------------------------------------------------
# eval sets
# ----------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """One verification set: ``kind`` ``"pairs"`` (``root`` with ``images/``, ``pairs`` file, optional
    1-based ``folds``) or ``"bin"`` (``path`` of an insightface ``.bin``)."""

    name: str
    kind: str
    path: str
    root: str | None = None
    folds: list[int] | None = None


def parse_set(spec: str, kind: str, image_root: str | os.PathLike | None = None) -> EvalSet:
    """``[NAME=]PATH[@f1,f2,...]`` -> :class:`EvalSet`; checks that the files exist. A pairs file whose
    folder has no ``images/`` takes its images from ``image_root`` (an LFW-layout folder)."""
    name = None
    if "=" in spec.split("/")[0]:
        name, spec = spec.split("=", 1)
    folds = None
    if "@" in spec:
        spec, fs = spec.rsplit("@", 1)
        try:
            folds = [int(x) for x in fs.split(",") if x]
        except ValueError:
            raise EvaluateInputError(f"{spec}@{fs}: folds must be 1-based integers, e.g. @4,5") from None
    p = Path(spec)
    if kind == "bin":
        if folds is not None:
            raise EvaluateInputError(f"{spec}: --bin sets use 10 contiguous folds; @folds is for --pairs")
        if not p.is_file():
            raise EvaluateInputError(f"{p}: no such .bin file")
        return EvalSet(name or p.stem, "bin", str(p))
    if p.is_dir():
        root, txt = p, p / "pairs.txt"
        if not txt.is_file():
            raise EvaluateInputError(f"{p}: an LFW-layout folder needs pairs.txt (and images/<Name>/...)")
    elif p.is_file():
        root, txt = p.parent, p
        if not (root / "images").is_dir() and image_root is not None:
            root = Path(image_root)
    else:
        raise EvaluateInputError(f"{p}: no such pairs folder or file")
    if not (root / "images").is_dir():
        raise EvaluateInputError(f"{root}: no images/ folder for {txt.name} (LFW layout: images/<Name>/<Name>_NNNN.jpg; "
                                 f"--image-root DIR for a pairs file kept elsewhere)")
    default = root.name if txt.name == "pairs.txt" else txt.stem
    return EvalSet(name or default, "pairs", str(txt), str(root), folds)


def evaluate_sets(model: nn.Module, sets: Sequence[EvalSet], out_dir: str | os.PathLike | None = None,
                  device: str = "cpu", batch_size: int = 128, flip: bool = True,
                  image_size: int | Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
    """``{set name: results}`` (:func:`~training.verification.evaluate_pairs`' dict plus ``num_images``)
    for every set. Pair sets are read with :func:`common.people.read_pairs` and the union of their
    images is embedded once (:func:`~training.verification.embed`); ``.bin`` sets go through
    :func:`verify_bin`. With ``out_dir`` each set writes its ROC, score histograms and JSON there.
    Set errors are raised as :class:`EvaluateInputError` naming the file."""
    import numpy as np

    from common.people import read_pairs

    from .verification import MissingImageError, UnsafePickleError, _default_image_size, _finish, embed, evaluate_pairs

    names = [s.name for s in sets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EvaluateInputError(f"two eval sets are named {dup[0]!r}; name them with NAME=PATH")
    pair_lists: dict[str, list[tuple[str, str, bool, int]]] = {}
    for s in sets:
        if s.kind != "pairs":
            continue
        try:
            pairs = read_pairs(s.path, image_root=s.root)
        except (MissingImageError, ValueError) as e:
            msg = str(e)
            raise EvaluateInputError(msg if str(s.path) in msg else f"{s.path}: {msg}") from None
        if s.folds is not None:
            have = sorted({p[3] + 1 for p in pairs})
            if any(f not in have for f in s.folds) or len(set(s.folds)) < 2:
                raise EvaluateInputError(f"{s.path}: folds {s.folds} requested; need at least 2 of its folds {have}")
            keep = {f - 1 for f in s.folds}
            pairs = [p for p in pairs if p[3] in keep]
        pair_lists[s.name] = pairs
    emb: dict[str, np.ndarray] = {}
    if pair_lists:
        keys = list(dict.fromkeys(k for ps in pair_lists.values() for p in ps for k in p[:2]))
        size = _default_image_size(model, image_size)
        e = embed(model, keys, batch_size=batch_size, device=device, flip=flip, image_size=size)
        emb = dict(zip(keys, e))
    out: dict[str, dict[str, Any]] = {}
    for s in sets:
        if s.kind == "bin":
            try:
                out[s.name] = verify_bin(model, s.path, device=device, batch_size=batch_size, out_dir=out_dir,
                                         flip=flip, image_size=image_size, fars=FARS)
            except UnsafePickleError as e:
                raise EvaluateInputError(str(e)) from None
            except ValueError as e:
                msg = str(e)
                raise EvaluateInputError(msg if str(s.path) in msg else f"{s.path}: {msg}") from None
            continue
        pairs = pair_lists[s.name]
        ea = np.stack([emb[p[0]] for p in pairs])
        eb = np.stack([emb[p[1]] for p in pairs])
        try:
            res = evaluate_pairs(ea, eb, [p[2] for p in pairs], folds=[p[3] for p in pairs], fars=FARS)
        except ValueError as e:
            raise EvaluateInputError(f"{s.path}: {e}") from None
        res["num_images"] = len({k for p in pairs for k in p[:2]})
        out[s.name] = _finish(res, out_dir, s.name)
    return out


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------


def _pct(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None else f"{100 * v:.{nd}f}"


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The field's verification table (Markdown), one row per set, figures in percent."""
    head = ("| set | pairs (genuine / impostor) | folds | accuracy ± std | "
            + " | ".join(f"TAR@FAR={f:.0e}" for f in FARS) + " | AUC | EER |")
    lines = [head, "|---|---:|---:|---:|" + "---:|" * len(FARS) + "---:|---:|"]
    for name, r in results.items():
        tar = r["tar_at_far"]
        tars = " | ".join(_pct(tar.get(f)) for f in FARS)
        lines.append(f"| {name} | {r['num_pairs']} ({r['num_genuine']} / {r['num_impostors']}) | {r['num_folds']} "
                     f"| {_pct(r['accuracy'])} ± {_pct(r['accuracy_std'])} | {tars} | {_pct(r['auc'])} "
                     f"| {_pct(r['eer'])} |")
    return "\n".join(lines)


def write_report(results: Mapping[str, Mapping[str, Any]], out_dir: str | os.PathLike, title: str,
                 header: Sequence[str] = ()) -> dict[str, str]:
    """``results.md``, ``results.json`` and ``roc.png`` (all sets) in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", "", *header, "" if header else None, format_table(results), "",
          "Accuracy: mean ± std over the set's folds, the threshold of each fold chosen on the others. "
          "TAR@FAR: from all impostor pairs (n/a: fewer than 1/FAR impostors). Figures in percent."]
    md_p = atomic_write_text(out / "results.md", "\n".join(x for x in md if x is not None) + "\n")
    js = {k: summarize(v) for k, v in results.items()}
    js_p = atomic_write_text(out / "results.json", json.dumps(js, indent=2, default=float))
    roc_p = plot_roc(dict(results), out / "roc.png", title=title)
    return {"md": str(md_p), "json": str(js_p), "roc": str(roc_p)}


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a run dir of ours / its backbone.pt, or an arcface_torch .pth (with --network)")
    ap.add_argument("--pairs", nargs="+", action="extend", default=[], metavar="[NAME=]ROOT|FILE[@FOLDS]",
                    help="LFW-layout folder or pairs file (LFW pairs.txt or #synthface-pairs v1)")
    ap.add_argument("--bin", nargs="+", action="extend", default=[], metavar="[NAME=]FILE.bin")
    ap.add_argument("--image-root", default=None,
                    help="LFW-layout folder holding images/ for --pairs files with no images/ beside them")
    ap.add_argument("--out", default=None, help="output folder (default eval/<model name>)")
    ap.add_argument("--network", default=None, help="arcface_torch network of a .pth: r18 r34 r50 r100 r200 mbf ...")
    ap.add_argument("--embedding-size", type=int, default=None, help="override the size read from the weights")
    ap.add_argument("--input-size", type=int, default=None, help="override the size read from the weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--no-flip", action="store_true", help="no flip-test (embedding of the image alone)")
    args = ap.parse_args(argv)
    if not args.pairs and not args.bin:
        ap.error("give at least one --pairs or --bin set")
    try:
        sets = [parse_set(s, "pairs", args.image_root) for s in args.pairs] + [parse_set(s, "bin") for s in args.bin]
        lm = load_model(args.model, args.network, args.embedding_size, args.input_size, device=args.device)
        out = Path(args.out or Path("eval") / lm.name)
        print(f"evaluate: {lm.source} model {lm.name} ({lm.network}, {lm.embedding_size}-d, "
              f"{lm.input_size[0]}x{lm.input_size[1]} input) on {len(sets)} set(s) -> {out}")
        results = evaluate_sets(lm.model, sets, out_dir=out, device=args.device, batch_size=args.batch_size,
                                flip=not args.no_flip)
    except EvaluateInputError as e:
        return report(e, "evaluate: error")
    except (OSError, RuntimeError) as e:
        report(e, "evaluate: failed")
        return EXIT_FAILED
    header = [f"Model: `{args.model}` ({lm.source}, {lm.network}, {lm.embedding_size}-d, "
              f"{lm.input_size[0]} px); flip-test {'off' if args.no_flip else 'on'}.",
              "Sets: " + ", ".join(f"{s.name} = `{s.path}`" + (f" folds {s.folds}" if s.folds else "") for s in sets)
              + "."]
    paths = write_report(results, out, f"Verification of {lm.name}", header)
    print(format_table(results))
    print(f"evaluate: wrote {paths['md']}, {paths['json']}, {paths['roc']} and per-set ROC / histograms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
