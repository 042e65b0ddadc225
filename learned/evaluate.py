"""Evaluate a face generator (or any labelled face folder) through a frozen face-recognition encoder.

``python -m learned.evaluate --encoder SPEC (--dataset DIR | --source NAME --ids N --per-id K) [--real DIR]
[--train DIR] --out DIR`` writes ``report.json``, ``report.md`` and PNGs. Every number is computed in the
embedding space of the chosen encoder (:func:`learned.encoder.load_encoder`: a ``training/`` run dir or
``backbone.pt``, ``ARCH:PATH`` for an insightface arcface_torch ``.pth``). Each image set (evaluated,
real, training) is embedded exactly once, in batches, and kept in memory.

Metrics (``c_k`` is the L2-normalised mean of identity ``k``'s unit image embeddings, its *centre*):

* **Verification**: genuine pairs = pairs of images of one identity, impostor pairs = pairs of images of
  two identities (all of them, or a seeded uniform sample of ``max_pairs`` each when there are more);
  cosine-similarity histograms and the equal error rate (EER, the point of the ROC of "accept when
  cosine >= t" where false accept rate = false reject rate, linearly interpolated) with its threshold.
* **Uniqueness** (after DCFace, Kim et al., CVPR 2023): the fraction of identities that are distinct
  subjects. Identities are visited in label order; identity ``k`` is *unique* when ``cos(c_k, c_j) <=
  tau_u`` for every earlier unique identity ``j`` (a greedy de-duplication, so ``m`` mutual look-alikes
  count once). ``Uniqueness = #unique / #identities`` in ``(0, 1]``; ``tau_u`` defaults to 0.3, the
  cosine threshold DCFace uses to decide that two subjects are the same person. (DCFace measures both
  Uniqueness and Consistency with a pretrained FR model and a same-subject cosine threshold; the exact
  counting rules stated here are the ones this module implements.)
* **Consistency** (after DCFace): the fraction of images whose identity the encoder confirms: image
  ``i`` of identity ``k`` is consistent when ``cos(e_i, c_k^(-i)) > tau_c``, where ``c_k^(-i)`` is the
  centre of identity ``k`` computed *without* image ``i`` (leave-one-out, so that an image does not vote
  for itself); ``tau_c`` defaults to 0.3. Identities with one image are not scored. Also reported: the
  mean leave-one-out similarity and the *label agreement* (fraction of images whose nearest centre,
  their own taken leave-one-out, is their own identity).
* **Identity preservation**: ``cos(e_i, z_k)`` between each image and the condition embedding ``z_k``
  (``Identities.embedding``) of its identity; applicable only when a source is rendered and its identity
  embedding has the encoder's dimension (the embedding of a learned source lives in its FR encoder's
  space); "not applicable" otherwise (morphable source: a shape/texture space; dataset folders carry no
  conditions). The report records whether the source names the same encoder (``same_encoder``).
* **Memorisation** (with ``train``): for each sample, its most similar training image by cosine; the
  distribution of those maxima, the fraction above ``memorisation_threshold`` and a picture pairing the
  most similar samples with their nearest training images. A fixed threshold only suits strong
  encoders, so the check is also calibrated to the encoder: the fraction of samples closer to a
  training image than the 99th percentile of how close real training faces come to *another person's*
  training image (:func:`real_reference`).
* **Frechet distance** (with ``real``): ``|mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2))`` between
  Gaussian fits (mean, unbiased covariance) of the generated and real embeddings. The trace of the
  matrix square root is computed as ``Tr((S_g^(1/2) S_r S_g^(1/2))^(1/2))`` from symmetric
  eigendecompositions in float64, round-off eigenvalues (negative, or below ``dim * eps * max``) set to
  0 (same value as
  ``scipy.linalg.sqrtm``, but real and stable when covariances are singular, e.g. fewer images than
  dimensions).
* **Separability**: :func:`engine.interface.separability_report` of the identity centres, with the
  minimum distance ``sqrt(2 - 2 tau_u)`` (the Euclidean distance of unit vectors at cosine ``tau_u``).
* **Contact sheet**: rows = identities, columns = variations (up to 8 x 8).
* **Real-face judge** (``--judge``, optional extra ``judge``): :mod:`engine.judge`'s dlib figures of the
  evaluated images (detection rate, genuine/impostor descriptor distances, FAR@0.6, EER, rank-1).

Python API: :func:`evaluate` (everything, writes the report), :func:`embed_dataset` /
:func:`embed_source` (:class:`EmbeddedSet`), and the metric functions :func:`verification_scores`,
:func:`equal_error_rate`, :func:`identity_centres`, :func:`uniqueness`, :func:`consistency`,
:func:`identity_preservation`, :func:`nearest_neighbours`, :func:`memorisation`,
:func:`frechet_distance`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from common.errors import EvaluateError
from common.metrics import equal_error_rate
from common.plots import plot_score_histograms
from common import cli
from common.config import nest_dotted, parse_override

from .eval_metrics import (DEFAULT_ID_THRESHOLD, DEFAULT_MAX_PAIRS, DEFAULT_MEMORISATION_THRESHOLD, DEFINITIONS,
                           _quantiles, consistency, frechet_distance, identity_centres, identity_preservation,
                           memorisation, nearest_neighbours, real_reference, uniqueness, verification_scores)
from .eval_report import _contact_sheet_png, _hist_png, _memorised_png, render_markdown
from .eval_sets import EmbeddedSet, _check_positive, embed_dataset, embed_source

__all__ = [
    "EvaluateError", "EmbeddedSet", "embed_dataset", "embed_source", "evaluate", "verification_scores",
    "equal_error_rate", "identity_centres", "uniqueness", "consistency", "identity_preservation",
    "nearest_neighbours", "memorisation", "real_reference", "frechet_distance", "main", "DEFINITIONS",
]

# ------------------------------------------------------------------------------------------------
# the evaluation
# ------------------------------------------------------------------------------------------------


def _check_threshold(name: str, v: float) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or not -1.0 <= v <= 1.0:
        raise EvaluateError(f"{name} must be a cosine in [-1, 1], got {v!r}")
    return float(v)


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        d = torch.device(device)
    except RuntimeError as e:
        raise EvaluateError(f"bad device {device!r}: {e}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise EvaluateError(f"device {device!r} requested but CUDA is not available")
    return str(d)


def _load_encoder(spec, device: str, allow_random: bool):
    from learned.encoder import EncoderError, load_encoder

    if hasattr(spec, "embed") and hasattr(spec, "embedding_size"):
        return spec.to(device)
    try:
        return load_encoder(spec, device=device, allow_random=allow_random)
    except EncoderError as e:
        raise EvaluateError(f"bad encoder spec {spec!r}: {e}") from None


def _make_source(name, checkpoint, preset, size, device, overrides=None):
    from engine.interface import IdentitySampler
    from engine.sources import SourceError, SourceSpec

    if isinstance(name, IdentitySampler):
        return name, getattr(name, "name", type(name).__name__)
    kwargs: dict[str, Any] = {"device": device}
    if checkpoint is not None:
        kwargs["checkpoint"] = str(checkpoint)
    if preset is not None:
        kwargs["preset"] = preset
    if size is not None:
        _check_positive("size", size, 8)
        kwargs["size"] = int(size)
    if overrides:  # dotted keys ("identity.mode") nest, as engine.render --override does
        kwargs["overrides"] = nest_dotted(dict(overrides), "overrides")
    try:
        return SourceSpec(str(name), kwargs).create(), str(name)
    except SourceError as e:  # unknown source, checkpoint not found or not taken
        raise EvaluateError(str(e)) from None
    except (ValueError, TypeError, OSError, KeyError, RuntimeError) as e:
        raise EvaluateError(f"cannot create source {name!r}: {e}") from None


def _same_encoder(cond: Any, spec: Mapping[str, Any]) -> bool | None:
    """Whether the condition encoder a source names (its config's ``encoder`` spec) is the evaluation
    encoder (``spec``: the resolved spec of an :class:`FREncoder`); ``None`` when the source names none.
    Paths compare resolved (a run dir equals its ``backbone.pt``); other keys compare by value."""
    from learned.encoder import _normalise_spec

    if cond is None:
        return None
    try:
        c = _normalise_spec(cond)
    except Exception:
        return False

    def place(p: Any) -> Path:
        q = Path(str(p)).expanduser().resolve()
        return q.parent if q.is_file() and q.name in ("backbone.pt", "model_config.json") else q

    for k, val in c.items():
        if k in ("path", "checkpoint"):
            if spec.get(k) is None or place(val) != place(spec[k]):
                return False
        elif k == "input_size":
            norm = (lambda x: [int(x), int(x)] if isinstance(x, (int, float)) else [int(v) for v in x])
            if k in spec and norm(val) != norm(spec[k]):
                return False
        elif k in spec and spec[k] != val:
            return False
    return True


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (bool, int, str)) or x is None:
        return x
    return str(x)


def evaluate(encoder, *, dataset=None, source=None, checkpoint=None, ids: int | None = None,
             per_id: int | None = None, seed: int = 0, preset: str | None = None, size: int | None = None,
             overrides: Mapping[str, Any] | None = None, real=None, train=None, out=None, max_images: int | None = None, batch_size: int = 128,
             device: str = "cpu", workers: int = 0, max_pairs: int = DEFAULT_MAX_PAIRS,
             uniqueness_threshold: float = DEFAULT_ID_THRESHOLD,
             consistency_threshold: float = DEFAULT_ID_THRESHOLD,
             memorisation_threshold: float = DEFAULT_MEMORISATION_THRESHOLD,
             allow_random_encoder: bool = False, log: Callable[[str], None] | None = None,
             judge: bool = False) -> dict[str, Any]:
    """Run every metric (see the module docstring) and, with ``out``, write ``report.json``,
    ``report.md`` and the PNGs there. Returns the report dict (the JSON content).

    ``encoder`` is a spec for :func:`learned.encoder.load_encoder` (or an :class:`FREncoder`). Give
    exactly one of ``dataset`` (a path) and ``source`` (a registry name, ``module:Class`` or an
    ``IdentitySampler`` instance, with ``ids`` and ``per_id``; ``overrides`` go to the source as in
    ``engine.render --override``). ``real`` and ``train`` are face folders
    (or any dataset :func:`engine.formats.open_dataset` reads); ``max_images`` caps each dataset read.
    ``allow_random_encoder`` accepts an untrained ``random_init_seed`` encoder spec (tests only).
    """
    say = log or (lambda _m: None)
    t_start = time.perf_counter()
    if (dataset is None) == (source is None):
        raise EvaluateError("give exactly one of --dataset DIR or --source NAME")
    if dataset is not None and (ids is not None or per_id is not None or checkpoint is not None or overrides):
        raise EvaluateError("--ids/--per-id/--checkpoint/--override go with --source, not --dataset")
    if source is not None and (ids is None or per_id is None):
        raise EvaluateError("--source needs --ids N and --per-id K")
    _check_positive("max_images", max_images, 2)
    _check_positive("batch_size", batch_size)
    _check_positive("workers", workers, 0)
    _check_positive("max_pairs", max_pairs)
    tau_u = _check_threshold("uniqueness threshold", uniqueness_threshold)
    tau_c = _check_threshold("consistency threshold", consistency_threshold)
    tau_m = _check_threshold("memorisation threshold", memorisation_threshold)
    if judge:  # fail before the long work when the optional extra is missing
        from engine.judge import find_models, require_dlib

        try:
            require_dlib()
            judge_models = find_models()
        except (ImportError, FileNotFoundError) as e:
            raise EvaluateError(f"--judge: {e}") from None
    device = _resolve_device(device)
    enc = _load_encoder(encoder, device, allow_random_encoder)
    say(f"encoder: {enc.spec} (D={enc.embedding_size}, input {enc.input_size[0]}x{enc.input_size[1]}) on {device}")

    cache: dict[str, EmbeddedSet] = {}

    def folder(path, what: str, min_ids: int) -> EmbeddedSet:
        key = str(Path(path).expanduser().resolve())
        if key not in cache:
            say(f"embedding {what} {path} ...")
            cache[key] = embed_dataset(path, enc, max_images=max_images, batch_size=batch_size, workers=workers,
                                       min_identities=min_ids, what=what)
            s = cache[key]
            say(f"  {len(s)} images, {s.num_identities} identities in {s.seconds:.1f}s")
        return cache[key]

    if dataset is not None:
        gen = folder(dataset, "dataset", 2)
        src_obj = None
    else:
        src_obj, src_name = _make_source(source, checkpoint, preset, size, device, overrides)
        say(f"rendering {ids} x {per_id} images from source {src_name} (seed {seed}) ...")
        gen = embed_source(src_obj, enc, int(ids), int(per_id), seed=seed, batch_size=batch_size)
        gen.describe.update(source=src_name, checkpoint=None if checkpoint is None else str(checkpoint),
                            preset=preset, overrides=dict(overrides or {}),
                            identity_mode=(gen.extra.get("identity_report") or {}).get("mode"))
        say(f"  {len(gen)} images in {gen.seconds:.1f}s")
    # validate the optional folders before the (possibly long) metrics
    real_set = folder(real, "real folder", 1) if real is not None else None
    train_set = folder(train, "training folder", 1) if train is not None else None

    outdir = Path(out) if out is not None else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    counts = torch.bincount(gen.labels)
    report: dict[str, Any] = {
        "encoder": {"spec": enc.spec, "embedding_size": enc.embedding_size, "input_size": list(enc.input_size)},
        "input": gen.describe,
        "num_images": len(gen),
        "num_identities": gen.num_identities,
        "images_per_identity": {"min": int(counts.min()), "mean": float(counts.double().mean()),
                                "max": int(counts.max())},
        "definitions": DEFINITIONS,
    }

    # verification
    scores, issame = verification_scores(gen.embeddings, gen.labels, max_pairs=max_pairs, seed=seed)
    eer, eer_t = equal_error_rate(scores, issame)
    g, i_ = scores[issame], scores[~issame]
    d_prime = float((g.mean() - i_.mean()) / math.sqrt(0.5 * (g.var() + i_.var()))) if g.var() + i_.var() > 0 else None
    report["verification"] = {
        "eer": eer, "eer_threshold": eer_t, "num_genuine": int(issame.sum()), "num_impostor": int((~issame).sum()),
        "genuine_mean": float(g.mean()), "impostor_mean": float(i_.mean()), "d_prime": d_prime,
        "genuine_quantiles": _quantiles(torch.from_numpy(g)), "impostor_quantiles": _quantiles(torch.from_numpy(i_)),
    }
    if outdir is not None:
        plot_score_histograms(scores, issame, outdir / "similarity_histograms.png", threshold=eer_t,
                              title=f"Genuine vs impostor cosine (EER {100 * eer:.2f}%)")
        files["similarity_histograms"] = "similarity_histograms.png"

    # DCFace uniqueness / consistency
    centres, _sums, _counts = identity_centres(gen.embeddings, gen.labels)
    uq = uniqueness(centres, tau_u)
    cons = consistency(gen.embeddings, gen.labels, tau_c)
    per_id_cons = cons.pop("per_identity")
    cons_sims = cons.pop("similarities")
    worst = sorted(per_id_cons.items(), key=lambda kv: kv[1])[:5]
    cons["least_consistent_identities"] = [{"identity": gen.names[k], "mean_similarity": v} for k, v in worst]
    report["uniqueness"] = uq
    report["consistency"] = cons
    if outdir is not None:
        files["consistency_histogram"] = _hist_png(
            cons_sims, outdir / "consistency_histogram.png",
            f"Consistency {100 * cons['consistency']:.1f}%: image vs own identity centre (leave-one-out)",
            "cosine similarity to own identity centre", tau_c, "tau_c")

    # identity preservation
    ip: dict[str, Any]
    if gen.conditions is None:
        ip = {"applicable": False, "reason": "not applicable: a dataset folder carries no identity conditions"}
    elif gen.conditions.shape[1] != enc.embedding_size:
        ip = {"applicable": False,
              "reason": (f"not applicable: the source's identity embedding has dimension {gen.conditions.shape[1]}, "
                         f"the encoder's {enc.embedding_size} (not the encoder's space, e.g. the morphable "
                         "shape/texture space)")}
    else:
        res = identity_preservation(gen.embeddings, gen.labels, gen.conditions)
        sims = res.pop("similarities")
        per = res.pop("per_identity")
        cfg = gen.extra.get("config")
        cond_enc = cfg.get("encoder") if isinstance(cfg, Mapping) else None
        same = _same_encoder(cond_enc, enc.spec)
        ip = {"applicable": True, **res, "condition_encoder": cond_enc, "same_encoder": same,
              "worst_identities": [{"identity": gen.names[k], "mean_similarity": v}
                                   for k, v in sorted(per.items(), key=lambda kv: kv[1])[:5]]}
        if outdir is not None:
            files["identity_preservation_histogram"] = _hist_png(
                sims, outdir / "identity_preservation_histogram.png",
                f"Identity preservation: image vs condition (mean {res['mean']:.3f})", "cosine similarity")
    report["identity_preservation"] = ip

    # memorisation
    if train_set is not None:
        mem = memorisation(gen.embeddings, train_set.embeddings, tau_m, training_labels=train_set.labels)
        rec = {k: v for k, v in mem.items() if k not in ("max_similarity", "nearest", "top")}
        rec.update(applicable=True, training_set=train_set.describe, most_similar=[
            {"sample": gen.item_name(i), "identity": gen.names[int(gen.labels[i])],
             "nearest_training_image": train_set.item_name(int(mem["nearest"][i])),
             "similarity": float(mem["max_similarity"][i])} for i in mem["top"]])
        if outdir is not None:
            files["memorisation_histogram"] = _hist_png(
                mem["max_similarity"], outdir / "memorisation_histogram.png",
                f"Nearest training image: {100 * rec['fraction_above']:.1f}% of samples above {tau_m:.2f}",
                "max cosine similarity to the training set", tau_m, "threshold")
            files["memorisation_pairs"] = _memorised_png(gen, train_set, mem, outdir / "memorisation_pairs.png")
        report["memorisation"] = rec
    else:
        report["memorisation"] = {"applicable": False, "reason": "no --train folder given"}

    # Frechet distance
    if real_set is not None:
        fd = frechet_distance(gen.embeddings, real_set.embeddings)
        note = None
        if min(len(gen), len(real_set)) <= enc.embedding_size:
            note = (f"fewer images than dimensions ({min(len(gen), len(real_set))} <= {enc.embedding_size}): the "
                    "covariances are singular and the distance is biased upwards; compare only equal-size runs")
        report["frechet"] = {"applicable": True, "distance": fd, "num_generated": len(gen),
                             "num_real": len(real_set), "real_set": real_set.describe, "note": note}
    else:
        report["frechet"] = {"applicable": False, "reason": "no --real folder given"}

    # separability
    from engine.interface import separability_report

    report["separability"] = separability_report(centres.float(), space=f"encoder centres ({enc.embedding_size}-d)",
                                                 min_distance=math.sqrt(2.0 - 2.0 * tau_u))

    if judge:
        from engine.judge import judge_arrays

        say("judging the evaluated images with dlib (engine.judge) ...")
        batches = (gen.fetch(range(s, min(s + batch_size, len(gen)))) for s in range(0, len(gen), batch_size))
        report["judge"] = judge_arrays(batches, gen.labels.numpy(), seed=seed, models=judge_models)

    if outdir is not None:
        files["contact_sheet"] = _contact_sheet_png(gen, outdir / "contact_sheet.png")
    report["files"] = files
    # embedding seconds of each distinct set (a folder given in several roles is embedded once)
    secs = {"generated_set": round(gen.seconds, 3)}
    if real_set is not None and real_set is not gen:
        secs["real_set"] = round(real_set.seconds, 3)
    if train_set is not None and train_set is not gen and train_set is not real_set:
        secs["training_set"] = round(train_set.seconds, 3)
    report["seconds"] = {**secs, "total": round(time.perf_counter() - t_start, 3)}
    report = _jsonable(report)
    if outdir is not None:
        (outdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (outdir / "report.md").write_text(render_markdown(report))
        say(f"report written to {outdir}/report.md")
    return report


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "learned.evaluate",
        description="Evaluate a generator checkpoint/source or a face dataset folder under a frozen FR encoder: "
                    "similarity histograms + EER, DCFace Uniqueness/Consistency, identity preservation, "
                    "memorisation, Frechet distance, separability and a contact sheet.")
    p.add_argument("--encoder", required=True,
                   help="FR encoder: a training/ run dir or backbone.pt, or ARCH:PATH of an arcface_torch .pth")
    g = p.add_argument_group("what to evaluate (one of)")
    g.add_argument("--dataset", help="ImageFolder/RecordIO dataset (python -m engine.render output) or any face "
                                     "folder DIR/<identity>/<image>")
    g.add_argument("--source", help="identity source to render (morphable, diffusion, gan or module:Class)")
    g.add_argument("--checkpoint", help="generator checkpoint (passed to the source as checkpoint=)")
    g.add_argument("--ids", type=int, help="identities to render")
    g.add_argument("--per-id", type=int, help="variations per identity")
    g.add_argument("--seed", type=int, default=0, help="render seed (also seeds pair sampling; default 0)")
    g.add_argument("--preset", help="source preset")
    g.add_argument("--size", type=int, help="source image size")
    cli.add_override(g, help="source override (YAML value), as in engine.render (e.g. identity.mode=fitted)")
    p.add_argument("--real", help="real face folder for the Frechet distance (e.g. ../shared/data/lfw-dev)")
    p.add_argument("--train", help="the generator's training folder, for the memorisation check")
    cli.add_out(p, default="eval_report", help="output directory (default: eval_report)")
    p.add_argument("--max-images", type=int, help="use at most this many images of each dataset read")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0, help="DataLoader decode workers for datasets (default 0)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--max-pairs", type=int, default=DEFAULT_MAX_PAIRS,
                   help=f"cap on genuine and on impostor pairs (sampled beyond; default {DEFAULT_MAX_PAIRS})")
    p.add_argument("--uniqueness-threshold", type=float, default=DEFAULT_ID_THRESHOLD)
    p.add_argument("--consistency-threshold", type=float, default=DEFAULT_ID_THRESHOLD)
    p.add_argument("--memorisation-threshold", type=float, default=DEFAULT_MEMORISATION_THRESHOLD)
    p.add_argument("--allow-random-encoder", action="store_true",
                   help="TESTS ONLY: accept an untrained encoder spec (JSON with random_init_seed)")
    p.add_argument("--judge", action="store_true",
                   help='also score the images with dlib\'s real-face recogniser (engine.judge; needs pip install -e ".[judge]")')
    cli.add_quiet(p)
    return p


def _parse_encoder(spec: str, allow_random: bool):
    s = spec.strip()
    if s.startswith("{"):  # a JSON spec, e.g. {"arch": "iresnet50", "checkpoint": PATH, "embedding_size": 512}
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise EvaluateError(f"bad encoder spec: not valid JSON ({e})") from None
    return s


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))

    def work() -> None:
        # one override syntax (common.config.parse_override); recorded as given, dotted
        overrides = {".".join(keys): value for keys, value in map(parse_override, args.override)}
        report = evaluate(
            _parse_encoder(args.encoder, args.allow_random_encoder), dataset=args.dataset, source=args.source,
            checkpoint=args.checkpoint, ids=args.ids, per_id=args.per_id, seed=args.seed, preset=args.preset,
            size=args.size, overrides=overrides, real=args.real, train=args.train, out=args.out, max_images=args.max_images,
            batch_size=args.batch_size, device=args.device, workers=args.workers, max_pairs=args.max_pairs,
            uniqueness_threshold=args.uniqueness_threshold, consistency_threshold=args.consistency_threshold,
            memorisation_threshold=args.memorisation_threshold, allow_random_encoder=args.allow_random_encoder,
            log=log, judge=args.judge)
        v = report["verification"]
        print(f"EER {100 * v['eer']:.2f}% | uniqueness {report['uniqueness']['uniqueness']:.4f} | consistency "
              f"{report['consistency']['consistency']:.4f} | report: {Path(args.out) / 'report.md'}")

    # bad input to the evaluator (EvaluateError: a missing or unusable dataset, source or encoder, ...): one line
    return cli.run(work)


if __name__ == "__main__":
    # Run the importable module, not this ``__main__`` copy (same classes as ``import learned.evaluate``).
    from learned.evaluate import main as _main

    sys.exit(_main())
