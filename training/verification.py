"""Face verification benchmarks: LFW ``pairs.txt`` and insightface ``.bin`` sets.

Pipeline: read pairs -> decode images to ``(B, 3, S, S)`` float in ``[-1, 1]`` -> :func:`embed`
(flip-test, L2-normalised) -> :func:`evaluate_pairs` (cosine similarity; k-fold accuracy with the
threshold chosen on the other folds, insightface style; TAR@FAR from all impostor scores; EER;
AUC) -> optional plots (:func:`plot_roc`, :func:`plot_score_histograms`).

Conveniences: :func:`verify_lfw` (LFW layout ``<root>/images/<Name>/<Name>_%04d.jpg`` with
LFW's own folds) and :func:`verify_bin` (``lfw.bin``, ``agedb_30.bin``, ``cfp_fp.bin``,
``calfw.bin``, ``cplfw.bin`` ...: consecutive images ``2i, 2i+1`` form pair ``i``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.metrics import equal_error_rate, roc_curve
from common.people import MissingImageError, read_lfw_pairs, read_pairs
from common.plots import new_figure, plot_score_histograms, save_figure

__all__ = [
    "MissingImageError",
    "UnsafePickleError",
    "read_lfw_pairs",
    "read_bin",
    "load_image",
    "load_images",
    "embed",
    "evaluate_pairs",
    "evaluate_scores",
    "roc_curve",
    "summarize",
    "format_results",
    "plot_roc",
    "plot_score_histograms",
    "verify_lfw",
    "verify_bin",
    "DEFAULT_FARS",
]

DEFAULT_FARS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)

PathLike = str | os.PathLike


class UnsafePickleError(pickle.UnpicklingError):
    """A ``.bin`` file references a global that is not on the allow-list."""


# ----------------------------------------------------------------------------------------------
# insightface .bin
# ----------------------------------------------------------------------------------------------

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
_ALLOWED_GLOBALS: set[tuple[str, str]] = {
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),  # protocol < 3 pickles bytes as _codecs.encode(str, 'latin1')
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy", "bool_"),
    *((m, n) for m in _NUMPY_MODULES for n in ("_reconstruct", "scalar", "_frombuffer")),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "__builtin__":
            module = "builtins"
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: .bin verification files may only contain "
                "bytes, bools and numpy arrays (the file is corrupt or not an insightface .bin)")
        return super().find_class(module, name)


def _to_bytes(x: Any, i: int) -> bytes:
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if isinstance(x, np.ndarray) and (x.dtype in (np.uint8, np.int8) or x.dtype.kind == "S"):
        return x.tobytes()
    if isinstance(x, str):  # a Python-2 str decoded as latin-1
        return x.encode("latin1")
    raise ValueError(f"image {i}: expected encoded image bytes, got {type(x).__name__}"
                     + (f" of dtype {x.dtype}" if isinstance(x, np.ndarray) else ""))


def read_bin(path: PathLike) -> tuple[list[bytes], np.ndarray]:
    """Read an insightface verification ``.bin`` into ``(jpeg_bytes_list, issame)``.

    The file is a pickle of ``(bins, issame_list)``; pair ``i`` is images ``2i`` and ``2i + 1``.
    It is loaded with a restricted unpickler that allows only ``bytes``/``bytearray``, protocol-2
    byte strings and numpy array/scalar reconstruction (``encoding='bytes'`` for the Python 2
    pickles insightface ships); any other global raises :class:`UnsafePickleError`.

    Returns:
        ``bins``: list of ``2N`` encoded images (bytes); ``issame``: ``np.ndarray[bool]`` of ``N``.
    """
    with open(path, "rb") as f:
        try:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{path}: {e}") from None
        except (pickle.UnpicklingError, EOFError) as e:
            raise ValueError(f"{path}: not a valid pickle ({e})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"{path}: expected a pickled (bins, issame_list), got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple, np.ndarray)):
        raise ValueError(f"{path}: bins must be a list, got {type(bins).__name__}")
    bins = [_to_bytes(b, i) for i, b in enumerate(bins)]
    try:
        issame = np.asarray(issame)
        if issame.dtype.kind not in "biu" or issame.ndim != 1:
            raise TypeError
        issame = issame.astype(bool)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: issame_list must be a flat list of bools") from None
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    return bins, issame


# ----------------------------------------------------------------------------------------------
# images and embeddings
# ----------------------------------------------------------------------------------------------


def load_image(src: PathLike | bytes | bytearray | np.ndarray, size: int | Sequence[int] = 112) -> torch.Tensor:
    """Decode one image (path, encoded bytes or HxWx3 uint8 array) with PIL to a ``(3, H, W)``
    float32 RGB tensor in ``[-1, 1]`` (``(x / 255 - 0.5) / 0.5``), bilinearly resized to ``size``
    if needed."""
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if isinstance(src, np.ndarray):
        img = Image.fromarray(np.ascontiguousarray(src).astype(np.uint8))
    elif isinstance(src, (bytes, bytearray, memoryview)):
        img = Image.open(io.BytesIO(bytes(src)))
    else:
        img = Image.open(src)
    img = img.convert("RGB")
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


def load_images(srcs: Iterable[PathLike | bytes], size: int | Sequence[int] = 112) -> torch.Tensor:
    """:func:`load_image` for many images -> ``(N, 3, H, W)``."""
    return torch.stack([load_image(s, size) for s in srcs])


def _is_image_source(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike, bytes, bytearray, memoryview)) or (
        isinstance(x, np.ndarray) and x.ndim == 3)


def _batches(images: Any, batch_size: int, size) -> Iterable[torch.Tensor]:
    """Yield float tensors (b, 3, H, W) of at most ``batch_size`` images."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        yield from images.split(batch_size)
        return
    buf: list[torch.Tensor] = []
    n = 0
    for item in images:
        if _is_image_source(item):
            item = load_image(item, size)
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"cannot embed an item of type {type(item).__name__}")
        if item.ndim == 3:
            item = item.unsqueeze(0)
        if item.ndim != 4:
            raise ValueError(f"expected (3, H, W) images or (B, 3, H, W) batches, got {tuple(item.shape)}")
        buf.append(item)
        n += item.shape[0]
        while n >= batch_size:
            cat = torch.cat(buf)
            yield cat[:batch_size]
            rest = cat[batch_size:]
            buf, n = ([rest] if len(rest) else []), len(rest)
    if n:
        yield torch.cat(buf)


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def embed(model: nn.Module, images: torch.Tensor | Iterable[Any], batch_size: int = 64,
          device: str | torch.device = "cpu", flip: bool = True,
          image_size: int | Sequence[int] = 112) -> np.ndarray:
    """Embed images -> ``(N, D)`` L2-normalised float32 numpy array.

    Args:
        model: backbone mapping ``(B, 3, H, W)`` in ``[-1, 1]`` to ``(B, D)``; run in eval mode
            under ``torch.inference_mode`` (its train/eval state is restored afterwards) and moved
            to ``device``.
        images: a ``(N, 3, H, W)`` float tensor in ``[-1, 1]``, or an iterable of such tensors
            (``(3, H, W)`` images or ``(B, 3, H, W)`` batches) and/or image sources (paths,
            encoded bytes) that are decoded lazily with :func:`load_image` at ``image_size``.
        flip: flip-test: embedding = ``f(x) + f(hflip(x))`` before normalising.
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be > 0")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    model.to(device)
    dtype = _model_dtype(model)
    outs: list[torch.Tensor] = []
    try:
        with torch.inference_mode():
            for x in _batches(images, batch_size, image_size):
                x = x.to(device=device, dtype=dtype, non_blocking=True)
                if flip:
                    e = model(torch.cat([x, x.flip(-1)]))
                    e = e[: len(x)] + e[len(x):]
                else:
                    e = model(x)
                outs.append(F.normalize(e.float(), dim=1).cpu())
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("no images to embed")
    return torch.cat(outs).numpy().astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def _best_threshold(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Threshold maximising accuracy of 'same if score > t' -> (t, accuracy).

    Candidates are midpoints between consecutive distinct scores (plus below-min/above-max);
    ties go to the lowest threshold (as insightface's argmax over ascending thresholds)."""
    order = np.argsort(scores, kind="mergesort")
    s, yy = scores[order], y[order]
    n = len(s)
    # cut k: indices < k predicted different, >= k predicted same
    neg_below = np.r_[0, np.cumsum(~yy)]          # (n+1,)
    pos_above = np.r_[yy.sum(), yy.sum() - np.cumsum(yy)]
    correct = neg_below + pos_above
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[1:] > s[:-1]                   # cannot cut between equal scores
    correct = np.where(valid, correct, -1)
    k = int(np.argmax(correct))
    if k == 0:
        t = s[0] - 1e-6
    elif k == n:
        t = s[-1] + 1e-6
    else:
        t = 0.5 * (s[k - 1] + s[k])
    return float(t), float(correct[k]) / n


def _fold_ids(n: int, folds: Sequence[int] | np.ndarray | None, n_folds: int) -> np.ndarray:
    if folds is not None:
        f = np.asarray(folds)
        if f.shape != (n,):
            raise ValueError(f"folds must have one id per pair ({n}), got shape {f.shape}")
        return f
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must be in [2, {n}], got {n_folds}")
    # contiguous folds as sklearn KFold(n_splits, shuffle=False) (what insightface uses)
    return np.concatenate([np.full(len(c), i) for i, c in enumerate(np.array_split(np.arange(n), n_folds))])


def evaluate_pairs(emb_a: np.ndarray | torch.Tensor, emb_b: np.ndarray | torch.Tensor,
                   issame: Sequence[bool] | np.ndarray, folds: Sequence[int] | np.ndarray | None = None,
                   n_folds: int = 10, fars: Sequence[float] = DEFAULT_FARS) -> dict[str, Any]:
    """Verification metrics for pairs ``(emb_a[i], emb_b[i])`` with ground truth ``issame[i]``.

    Scores are cosine similarities (rows are L2-normalised here). Returns a dict with:

    * ``accuracy`` / ``accuracy_std``: mean/std over folds of the accuracy of 'same if score > t'
      where each fold's ``t`` is the best threshold on the *other* folds (insightface protocol);
      folds are the given ``folds`` ids (e.g. LFW's own) or ``n_folds`` contiguous splits;
      ``fold_accuracies``, ``fold_thresholds``, ``threshold`` (mean of fold thresholds);
    * ``best_threshold`` / ``best_accuracy``: the optimum on all pairs (optimistic, for reference);
    * ``tar_at_far``: ``{far: TAR or None}`` from all impostor scores, accepting scores above the
      ``floor(far * num_impostors)``-th highest impostor score; ``None`` when
      ``1 / num_impostors > far`` (not measurable); ``tar_at_far_thresholds``, ``far_achieved``;
    * ``eer`` (and ``eer_threshold``), ``auc``; ``num_pairs``, ``num_genuine``, ``num_impostors``;
    * ``scores``, ``issame`` and ``roc`` (``fpr``, ``tpr``, ``thresholds`` arrays) for plotting.
    """
    a = torch.as_tensor(np.asarray(emb_a, dtype=np.float64)) if not isinstance(emb_a, torch.Tensor) else emb_a.double()
    b = torch.as_tensor(np.asarray(emb_b, dtype=np.float64)) if not isinstance(emb_b, torch.Tensor) else emb_b.double()
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"emb_a and emb_b must both be (N, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    scores = (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1).cpu().numpy()
    return evaluate_scores(scores, issame, folds=folds, n_folds=n_folds, fars=fars)


def evaluate_scores(scores: np.ndarray, issame: Sequence[bool] | np.ndarray,
                    folds: Sequence[int] | np.ndarray | None = None, n_folds: int = 10,
                    fars: Sequence[float] = DEFAULT_FARS) -> dict[str, Any]:
    """:func:`evaluate_pairs` on precomputed similarity scores (higher = more similar)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(issame).astype(bool).reshape(-1)
    n = len(scores)
    if len(y) != n:
        raise ValueError(f"{n} scores but {len(y)} issame labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN/inf (did the model produce NaN embeddings?)")
    n_gen, n_imp = int(y.sum()), int((~y).sum())
    if n_gen == 0 or n_imp == 0:
        raise ValueError(f"need both genuine and impostor pairs, got {n_gen} genuine and {n_imp} impostor")

    # k-fold accuracy, threshold from the other folds
    fid = _fold_ids(n, folds, n_folds)
    fold_acc, fold_thr = [], []
    for f in np.unique(fid):
        test = fid == f
        train = ~test
        if not train.any():
            raise ValueError("need at least 2 folds")
        t, _ = _best_threshold(scores[train], y[train])
        fold_thr.append(t)
        fold_acc.append(float(np.mean((scores[test] > t) == y[test])))
    best_t, best_acc = _best_threshold(scores, y)

    # TAR@FAR from all impostors
    imp = np.sort(scores[~y])[::-1]
    gen = scores[y]
    tar, tar_thr, far_ach = {}, {}, {}
    for far in fars:
        far = float(far)
        if 1.0 / n_imp > far:
            tar[far] = tar_thr[far] = far_ach[far] = None
            continue
        k = int(np.floor(far * n_imp + 1e-9))  # allowed false accepts
        thr = float(imp[k]) if k < n_imp else float(imp[-1]) - 1e-12
        tar[far] = float(np.mean(gen > thr))
        tar_thr[far] = thr
        far_ach[far] = float(np.mean(imp > thr))

    roc = roc_curve(scores, y)
    eer, eer_t = equal_error_rate(scores, y)
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    auc = float((ranks[y].sum() - n_gen * (n_gen + 1) / 2) / (n_gen * n_imp))

    return {
        "accuracy": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
        "fold_accuracies": fold_acc,
        "fold_thresholds": fold_thr,
        "threshold": float(np.mean(fold_thr)),
        "best_threshold": best_t,
        "best_accuracy": best_acc,
        "tar_at_far": tar,
        "tar_at_far_thresholds": tar_thr,
        "far_achieved": far_ach,
        "eer": eer,
        "eer_threshold": eer_t,
        "auc": auc,
        "num_pairs": n,
        "num_genuine": n_gen,
        "num_impostors": n_imp,
        "num_folds": len(fold_acc),
        "scores": scores,
        "issame": y,
        "roc": roc,
    }


def summarize(results: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-friendly copy of a results dict (drops the per-pair arrays, stringifies FAR keys)."""
    out: dict[str, Any] = {}
    for k, v in results.items():
        if k in ("scores", "issame", "roc"):
            continue
        if isinstance(v, Mapping):
            v = {(f"{kk:g}" if isinstance(kk, float) else str(kk)): vv for kk, vv in v.items()}
        out[k] = v
    return out


def format_results(results: Mapping[str, Any]) -> str:
    """One-line human-readable summary."""
    tars = ", ".join(f"TAR@FAR={far:g}: " + ("n/a" if t is None else f"{t:.4f}")
                     for far, t in results["tar_at_far"].items())
    return (f"acc {results['accuracy']:.4f} ± {results['accuracy_std']:.4f} ({results['num_folds']} folds), "
            f"EER {results['eer']:.4f}, AUC {results['auc']:.4f}, {tars} "
            f"[{results['num_genuine']} genuine / {results['num_impostors']} impostor pairs]")


# ----------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------


def _as_curves(obj: Any) -> dict[str, dict[str, Any]]:
    if isinstance(obj, Mapping) and "roc" in obj:
        return {"": obj}
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Mapping) and "roc" in v for v in obj.values()):
        return dict(obj)
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        scores, issame = obj
        y = np.asarray(issame).astype(bool)
        return {"": {"roc": roc_curve(np.asarray(scores), y), "num_impostors": int((~y).sum())}}
    raise TypeError("plot_roc expects a results dict from evaluate_pairs, a {label: results} dict, "
                    "or a (scores, issame) tuple")


def plot_roc(results_or_scores: Any, path: PathLike, title: str | None = None) -> Path:
    """Write a ROC plot (TAR vs FAR, log-scale FAR axis) as PNG.

    ``results_or_scores``: a results dict from :func:`evaluate_pairs`, a ``{label: results}``
    dict (one curve each), or a ``(scores, issame)`` tuple. Returns the path written.
    """
    curves = _as_curves(results_or_scores)
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    min_far = 1.0
    for label, res in curves.items():
        fpr, tpr = np.asarray(res["roc"]["fpr"]), np.asarray(res["roc"]["tpr"])
        n_imp = res.get("num_impostors") or 1
        floor = 1.0 / max(n_imp, 1)
        min_far = min(min_far, floor)
        # fpr = 0 cannot be drawn on a log axis; show it at the smallest measurable FAR
        ax.step(np.clip(fpr, floor, 1.0), tpr, where="post",
                label=(label or None) if not res.get("auc") else
                f"{label + ' ' if label else ''}AUC {res['auc']:.4f}")
    ax.set_xscale("log")
    ax.set_xlim(min_far, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("FAR (false accept rate)")
    ax.set_ylabel("TAR (true accept rate)")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# benchmarks
# ----------------------------------------------------------------------------------------------


def _embed_pairs(model, keys_a: Sequence[Any], keys_b: Sequence[Any], source_of: Mapping[Any, Any],
                 batch_size: int, device, flip: bool, image_size) -> tuple[np.ndarray, np.ndarray, int]:
    uniq = list(dict.fromkeys([*keys_a, *keys_b]))
    pos = {k: i for i, k in enumerate(uniq)}
    emb = embed(model, (source_of[k] for k in uniq), batch_size=batch_size, device=device, flip=flip,
                image_size=image_size)
    ia = np.fromiter((pos[k] for k in keys_a), dtype=np.int64, count=len(keys_a))
    ib = np.fromiter((pos[k] for k in keys_b), dtype=np.int64, count=len(keys_b))
    return emb[ia], emb[ib], len(uniq)


def _finish(res: dict[str, Any], out_dir: PathLike | None, name: str) -> dict[str, Any]:
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        res["roc_png"] = str(plot_roc(res, out / f"{name}_roc.png", title=name))
        res["hist_png"] = str(plot_score_histograms(res["scores"], res["issame"], out / f"{name}_hist.png",
                                                    threshold=res["threshold"], title=name))
        res["json"] = str(out / f"{name}_results.json")
        with open(res["json"], "w") as f:
            json.dump(summarize(res), f, indent=2)
    return res


def _default_image_size(model: nn.Module, image_size):
    if image_size is not None:
        return image_size
    return tuple(getattr(model, "input_size", (112, 112)))


def verify_lfw(model: nn.Module, root: PathLike, pairs_txt: PathLike | None = None, device: str | torch.device = "cpu",
               batch_size: int = 64, out_dir: PathLike | None = None, flip: bool = True,
               image_size: int | Sequence[int] | None = None, pairs_per_fold: int | None = None,
               fars: Sequence[float] = DEFAULT_FARS, folds: Sequence[int] | None = None,
               name: str = "lfw") -> dict[str, Any]:
    """LFW-protocol verification: ``<root>/pairs.txt`` (or ``pairs_txt``: an LFW ``pairs.txt`` or a
    ``#synthface-pairs v1`` pair list, see :func:`common.people.read_pairs`) with images under
    ``<root>/images``; accuracy uses the file's own folds. Each distinct image is embedded once.

    ``folds`` (1-based) keeps those folds only (at least 2); ``pairs_per_fold`` keeps only the first
    ``n`` same and first ``n`` different pairs of each fold (quick checks). ``image_size`` defaults to
    ``model.input_size`` or 112. With ``out_dir``, writes ``<name>_roc.png``, ``<name>_hist.png`` and
    ``<name>_results.json`` there. Returns :func:`evaluate_pairs`' dict plus ``num_images``.
    """
    root = Path(root)
    txt = Path(pairs_txt) if pairs_txt is not None else root / "pairs.txt"
    pairs = read_pairs(txt, image_root=root)
    if folds is not None:
        have = sorted({p[3] + 1 for p in pairs})
        bad = [f for f in folds if f not in have]
        if bad or len(set(folds)) < 2:
            raise ValueError(f"{txt}: folds {list(folds)} requested; need at least 2 of its folds {have}")
        keep = {int(f) - 1 for f in folds}
        pairs = [p for p in pairs if p[3] in keep]
    if pairs_per_fold is not None:
        seen: dict[tuple[int, bool], int] = {}
        kept = []
        for p in pairs:
            key = (p[3], p[2])
            if seen.get(key, 0) < pairs_per_fold:
                kept.append(p)
                seen[key] = seen.get(key, 0) + 1
        pairs = kept
    keys_a = [p[0] for p in pairs]
    keys_b = [p[1] for p in pairs]
    size = _default_image_size(model, image_size)
    ea, eb, n_img = _embed_pairs(model, keys_a, keys_b, {k: k for k in (*keys_a, *keys_b)}, batch_size, device,
                                 flip, size)
    res = evaluate_pairs(ea, eb, [p[2] for p in pairs], folds=[p[3] for p in pairs], fars=fars)
    res["num_images"] = n_img
    return _finish(res, out_dir, name)


def verify_bin(model: nn.Module, bin_path: PathLike, device: str | torch.device = "cpu", batch_size: int = 64,
               out_dir: PathLike | None = None, flip: bool = True, n_folds: int = 10,
               image_size: int | Sequence[int] | None = None, max_pairs: int | None = None,
               fars: Sequence[float] = DEFAULT_FARS) -> dict[str, Any]:
    """Verification on an insightface ``.bin`` (pairs ``(2i, 2i+1)``, ``n_folds`` contiguous folds
    as insightface). Byte-identical images are embedded once. ``max_pairs`` keeps the first pairs
    (quick checks). With ``out_dir``, writes ``<stem>_roc.png``, ``<stem>_hist.png`` and
    ``<stem>_results.json``. Returns :func:`evaluate_pairs`' dict plus ``num_images``.
    """
    bins, issame = read_bin(bin_path)
    if max_pairs is not None:
        bins, issame = bins[: 2 * max_pairs], issame[:max_pairs]
    digests = [hashlib.sha1(b).hexdigest() for b in bins]
    source = dict(zip(digests, bins))
    size = _default_image_size(model, image_size)
    ea, eb, n_img = _embed_pairs(model, digests[0::2], digests[1::2], source, batch_size, device, flip, size)
    res = evaluate_pairs(ea, eb, issame, n_folds=n_folds, fars=fars)
    res["num_images"] = n_img
    return _finish(res, out_dir, Path(bin_path).stem)
