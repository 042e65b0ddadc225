"""The report of a generator evaluation: its PNG figures (score histograms, memorised pairs, contact
sheet) and ``report.md`` (:func:`render_markdown` of the ``report.json`` dict)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from common.plots import new_figure

from .eval_metrics import DEFINITIONS, SHEET_IDS, SHEET_VARIATIONS
from .eval_sets import EmbeddedSet

# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------


def _hist_png(values: torch.Tensor, path: Path, title: str, xlabel: str, threshold: float | None = None,
              threshold_label: str = "threshold") -> str:
    v = values.double().numpy()
    fig = new_figure((6.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = float(min(v.min(), threshold if threshold is not None else v.min())), float(v.max())
    edges = np.linspace(lo - 1e-3, max(hi, lo + 1e-3) + 1e-3, 51)
    ax.hist(v, bins=edges, color="tab:blue", alpha=0.75, label=f"{len(v)} images")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1.2, label=f"{threshold_label} {threshold:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path.name


def _memorised_png(gen: EmbeddedSet, train: EmbeddedSet, mem: Mapping[str, Any], path: Path) -> str:
    top = list(mem["top"])
    gi = gen.fetch(top)
    ti = train.fetch([int(mem["nearest"][i]) for i in top])
    k = len(top)
    fig = new_figure((1.75 * k + 0.9, 4.6))
    for j, i in enumerate(top):
        nearest = int(mem["nearest"][i])
        for row, (img, label) in enumerate(((gi[j], gen.item_name(i)), (ti[j], train.item_name(nearest)))):
            ax = fig.add_subplot(2, k, row * k + j + 1)
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            parts = label.replace(os.sep, "/").rsplit("/", 1)
            ax.set_xlabel("\n".join(t if len(t) <= 24 else t[:10] + ".." + t[-12:] for t in parts), fontsize=7)
            if row == 0:
                ax.set_title(f"cos {float(mem['max_similarity'][i]):.3f}", fontsize=10,
                             color="tab:red" if float(mem["max_similarity"][i]) > mem["threshold"] else "black")
            if j == 0:
                ax.set_ylabel("sample" if row == 0 else "nearest train", fontsize=10)
    fig.suptitle("Most memorised samples (top) and their nearest training images (bottom)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path.name


def _contact_sheet_png(s: EmbeddedSet, path: Path) -> str:
    from engine.contact_sheet import contact_sheet, save_png

    lab, var = s.labels, s.variation
    counts = torch.bincount(lab, minlength=s.num_identities)
    # the identities with the most images (label order among equals: the first ones of a rendered source)
    ids = sorted(range(s.num_identities), key=lambda k: (-int(counts[k]), k))[:SHEET_IDS]
    cols = max(1, min(SHEET_VARIATIONS, int(counts[ids].max())))
    cells: list[int | None] = []
    for k in ids:
        members = torch.nonzero((lab == k) & (var < cols)).reshape(-1).tolist()
        members.sort(key=lambda i: int(var[i]))
        cells.extend(members + [None] * (cols - len(members)))
    wanted = [i for i in cells if i is not None]
    imgs = s.fetch(wanted)
    blank = torch.ones_like(imgs[0])
    it = iter(imgs)
    grid = torch.stack([next(it) if i is not None else blank for i in cells])
    save_png(contact_sheet(grid, nrow=cols), path)
    return path.name


# ------------------------------------------------------------------------------------------------
# markdown
# ------------------------------------------------------------------------------------------------


def _f(x: Any, nd: int = 4) -> str:
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def render_markdown(r: Mapping[str, Any]) -> str:
    """The human-readable ``report.md`` of a report dict."""
    inp = r["input"]
    files = r.get("files", {})
    lines = ["# synthface evaluation report", ""]
    if inp["kind"] == "dataset":
        lines.append(f"Evaluated: dataset `{inp['path']}` ({inp['format']}), {inp['images_used']} of "
                     f"{inp['images_total']} images.")
    else:
        ck = f", checkpoint `{inp['checkpoint']}`" if inp.get("checkpoint") else ""
        pr = f", preset `{inp['preset']}`" if inp.get("preset") else ""
        ov = "".join(f", `{k}={v}`" for k, v in (inp.get("overrides") or {}).items())
        lines.append(f"Evaluated: source `{inp['source']}`{ck}{pr}{ov}, {inp['ids']} identities x {inp['per_id']} "
                     f"variations, seed {inp['seed']}.")
    e = r["encoder"]
    lines += [f"Encoder: `{json.dumps(e['spec'])}` ({e['embedding_size']}-d, input {e['input_size'][0]}x"
              f"{e['input_size'][1]}). All similarities are cosines of its unit embeddings.", "",
              f"{r['num_images']} images, {r['num_identities']} identities "
              f"({r['images_per_identity']['min']}-{r['images_per_identity']['max']} images each).", ""]
    v, u, c = r["verification"], r["uniqueness"], r["consistency"]
    ip, mem, fd, sep = r["identity_preservation"], r["memorisation"], r["frechet"], r["separability"]
    lines += ["## Summary", "", "| metric | value |", "| --- | --- |",
              f"| EER (threshold) | {100 * v['eer']:.2f}% ({_f(v['eer_threshold'], 4)}) |",
              f"| genuine / impostor mean cosine | {_f(v['genuine_mean'], 3)} / {_f(v['impostor_mean'], 3)} |",
              f"| Uniqueness (tau_u {u['threshold']:.2f}) | {u['uniqueness']:.4f} ({u['unique_identities']} of "
              f"{u['num_identities']}) |",
              f"| Consistency (tau_c {c['threshold']:.2f}) | {c['consistency']:.4f} |",
              f"| mean similarity to own centre / label agreement | {_f(c['mean_similarity'], 3)} / "
              f"{_f(c['label_agreement'], 4)} |",
              "| identity preservation (mean cosine to condition) | "
              + (_f(ip['mean'], 3) if ip.get("applicable") else "not applicable") + " |",
              "| memorisation (fraction above threshold) | "
              + (f"{100 * mem['fraction_above']:.2f}% above {mem['threshold']:.2f} (max "
                 f"{_f(mem['quantiles'].get('q100'), 3)})" if mem.get("applicable") else "not applicable") + " |",
              "| memorisation, calibrated (closer than 99% of real other-person neighbours) | "
              + (f"{100 * mem['fraction_above_real_q99']:.2f}%" if "fraction_above_real_q99" in mem else "not applicable")
              + " |",
              "| Frechet distance to real | " + (_f(fd['distance'], 4) if fd.get("applicable") else "not applicable")
              + " |",
              f"| separability: min centre distance (required {sep['min_distance_required']:.3f}) | "
              f"{_f(sep.get('achieved_min_distance'), 3)} |", ""]
    if files.get("contact_sheet"):
        lines += ["## Contact sheet", "", "Rows = identities, columns = variations.", "",
                  f"![contact sheet]({files['contact_sheet']})", ""]
    lines += ["## Verification", "", DEFINITIONS["verification"], "",
              f"{v['num_genuine']} genuine and {v['num_impostor']} impostor pairs; EER {100 * v['eer']:.2f}% at "
              f"cosine {_f(v['eer_threshold'], 4)}; d' {_f(v['d_prime'], 3)}.", ""]
    if files.get("similarity_histograms"):
        lines += [f"![similarity histograms]({files['similarity_histograms']})", ""]
    lines += ["## Uniqueness and Consistency", "", "**Uniqueness.** " + DEFINITIONS["uniqueness"], "",
              f"Uniqueness {u['uniqueness']:.4f}: {u['unique_identities']} unique of {u['num_identities']} "
              f"identities; {u['duplicate_pairs']} identity pairs with centre cosine > {u['threshold']:.2f}. "
              f"The thresholds are encoder-dependent (0.3 suits ArcFace/AdaFace-class encoders); this encoder's "
              f"EER threshold on this set is {_f(v['eer_threshold'], 3)}.", "",
              "**Consistency.** " + DEFINITIONS["consistency"], "",
              f"Consistency {c['consistency']:.4f} over {c['scored_images']} images ({c['unscored_images']} in "
              f"single-image identities not scored); mean leave-one-out similarity {_f(c['mean_similarity'], 3)}; "
              f"label agreement {_f(c['label_agreement'], 4)}.", ""]
    if c.get("least_consistent_identities"):
        lines.append("Least consistent identities: " + ", ".join(
            f"{w['identity']} ({w['mean_similarity']:.3f})" for w in c["least_consistent_identities"]) + ".")
        lines.append("")
    if files.get("consistency_histogram"):
        lines += [f"![consistency]({files['consistency_histogram']})", ""]
    lines += ["## Identity preservation", "", DEFINITIONS["identity_preservation"], ""]
    if ip.get("applicable"):
        lines.append(f"Mean {ip['mean']:.4f} (std {ip['std']:.4f}, median {_f(ip['quantiles'].get('q50'), 4)}); "
                     f"condition encoder: {ip.get('condition_encoder') or 'not named by the source'}; same encoder: "
                     f"{'unknown' if ip.get('same_encoder') is None else ip['same_encoder']}.")
        if files.get("identity_preservation_histogram"):
            lines += ["", f"![identity preservation]({files['identity_preservation_histogram']})"]
    else:
        lines.append(ip["reason"].capitalize() + ".")
    lines += ["", "## Memorisation", "", DEFINITIONS["memorisation"], ""]
    if mem.get("applicable"):
        ts = mem["training_set"]
        q = mem["quantiles"]
        lines += [f"Training set `{ts['path']}` ({ts['images_used']} images). Nearest-training-image cosine: mean "
                  f"{_f(mem['mean'], 3)}, median {_f(q.get('q50'), 3)}, 99th percentile {_f(q.get('q99'), 3)}, max "
                  f"{_f(q.get('q100'), 3)}; {mem['num_above']} samples ({100 * mem['fraction_above']:.2f}%) above "
                  f"{mem['threshold']:.2f}.", "", "| sample | nearest training image | cosine |", "| --- | --- | --- |"]
        if "real_other_q99" in mem:
            lines += [f"Calibrated to this encoder: a real training face's most similar training image of *another* "
                      f"person has cosine median {_f(mem['real_other_q50'], 3)}, 99th percentile "
                      f"{_f(mem['real_other_q99'], 3)} ({mem['real_reference_images']} faces); "
                      f"**{100 * mem['fraction_above_real_q99']:.2f}%** of the samples are closer than that 99th "
                      "percentile to a training image (about 1% is what unrelated new faces give).", ""]
        lines += [f"| {m['sample']} | {m['nearest_training_image']} | {m['similarity']:.4f} |" for m in mem["most_similar"]]
        lines.append("")
        for key in ("memorisation_histogram", "memorisation_pairs"):
            if files.get(key):
                lines += [f"![{key}]({files[key]})", ""]
    else:
        lines += ["Not applicable: " + mem["reason"] + ".", ""]
    lines += ["## Frechet distance", "", DEFINITIONS["frechet"], ""]
    if fd.get("applicable"):
        lines.append(f"Frechet distance {fd['distance']:.6f} between {fd['num_generated']} generated and "
                     f"{fd['num_real']} real embeddings (`{fd['real_set']['path']}`).")
        if fd.get("note"):
            lines.append("Note: " + fd["note"] + ".")
    else:
        lines.append("Not applicable: " + fd["reason"] + ".")
    lines += ["", "## Separability of identity centres", "", DEFINITIONS["separability"], "",
              f"Achieved minimum distance {_f(sep.get('achieved_min_distance'), 4)} (required "
              f"{sep['min_distance_required']:.4f}); pairwise mean {_f(sep.get('pairwise_mean'), 4)}, quantiles "
              + ", ".join(f"{k} {val:.3f}" for k, val in sep.get("pairwise_quantiles", {}).items()) + ".", ""]
    if r.get("judge"):
        from engine.judge import markdown_summary

        lines += markdown_summary(r["judge"]) + [""]
    return "\n".join(lines)


