"""Does a real-face recogniser read the gender our faces are drawn with?

A linear gender direction is fitted in dlib's descriptor space on real faces (one image per person;
labels from first names, :data:`FEMALE_FIRST_NAMES`, an approximation good enough for a direction:
its cross-validated AUC on the real faces is printed), then the morphable source's identities are
rendered in memory and scored along it against the gender estimate they were drawn with (< 0.5
female-read). Prints one JSON line: the real AUC and the gap between the mean scores of real women
and men; the same for our faces; and the quick judge's detection, genuine and impostor distance and
FAR@0.6 on the same renders.

    python benchmarks/judge_gender.py --real ../shared/data/lfw-dev/images
    python benchmarks/judge_gender.py --real ../shared/data/lfw-dev/images -o identity.sex_features=0

Needs the judge extra (``pip install -e ".[judge]"``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Common female first names (of LFW's public figures among others; names that men carry too, such as
#: Jean, Kim or Tracy, left out); a person whose folder name (``First_Last``) starts with one is
#: labelled female, everyone else male.
FEMALE_FIRST_NAMES = frozenset("""
Adriana Alexandra Alicia Allison Amanda Amber Amy Ana Angela Anna Anne Astrid Barbara Beatrice Betty Bianca
Brenda Bridget Brooke Camille Carla Carmen Carol Carolina Caroline Carolyn Catherine Cathy Cecilia Celine Charlotte
Chelsea Cheryl Christina Christine Cindy Claire Clare Claudia Colleen Connie Courtney Cristina Cynthia Daisy
Danielle Dawn Debra Denise Diana Diane Dianne Donna Doris Dorothy Eleanor Elaine Elena Elisabeth Elizabeth Ellen
Emily Emma Erika Erin Esther Eva Eve Faye Gabriella Gabrielle Georgia Geraldine Gillian Gina Gloria Grace Gretchen
Hannah Heather Heidi Helen Hillary Holly Ingrid Irene Irina Isabel Isabella Isabelle Ivana Jackie Jacqueline Jana
Jane Janet Janice Jeanne Jeanette Jennifer Jessica Joan Joanne Jodie Joy Judi Judy Julia Julie Juliette
Justine Karen Karin Kate Katharine Katherine Kathleen Kathy Katie Keira Kimberly Kirsten Kristin Laura
Lauren Liliana Linda Lindsay Lisa Liza Lorraine Louisa Lucy Lydia Madonna Margaret Maria Mariah Marie
Marina Marisol Martha Martina Mary Maureen Megan Melanie Melinda Melissa Mercedes Mia Michele Michelle Miranda
Monica Monique Nadia Nadine Nancy Naomi Natalia Natalie Nicole Nina Nora Olivia Oxana Pamela Patricia Patty Paula
Pauline Penelope Penny Priscilla Rachel Rebecca Regina Renee Rita Roberta Rosa Rose Ruth Sally Samantha Sandra Sarah
Sharon Sheila Sheryl Silvia Sophie Stacey Stefanie Stella Stephanie Sue Susan Suzanne Svetlana Sylvia Tammy Tanya
Tara Tatiana Teresa Theresa Tina Valentina Valerie Vanessa Veronica Victoria Wendy Whoopi Yoko
""".split())


def is_female_name(folder: str) -> bool:
    """Whether a ``First_Last`` folder name starts with a name of :data:`FEMALE_FIRST_NAMES`."""
    return folder.split("_")[0] in FEMALE_FIRST_NAMES


def gender_direction(x: np.ndarray, female: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, float]:
    """``(w (D,), b)``: the class-balanced ridge regression of +1 (female) / -1 (male) on
    descriptors ``x`` (N, D); ``x @ w + b`` is positive on the female side."""
    female = np.asarray(female, bool)
    if female.all() or not female.any():
        raise ValueError("a gender direction needs faces of both labels")
    wt = np.where(female, 0.5 / female.mean(), 0.5 / (1 - female.mean()))
    xa = np.hstack([x, np.ones((len(x), 1))])
    a = (xa * wt[:, None]).T @ xa + ridge * len(x) * np.eye(xa.shape[1])
    coef = np.linalg.solve(a, (xa * wt[:, None]).T @ np.where(female, 1.0, -1.0))
    return coef[:-1], float(coef[-1])


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (ties count half); NaN without both classes."""
    from scipy.stats import rankdata
    positive = np.asarray(positive, bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def cross_validated_auc(x: np.ndarray, female: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """AUC of :func:`gender_direction` on held-out faces (``folds``-fold)."""
    fold = np.random.default_rng(seed).integers(0, folds, len(x))
    score = np.zeros(len(x))
    for k in range(folds):
        w, b = gender_direction(x[fold != k], female[fold != k])
        score[fold == k] = x[fold == k] @ w + b
    return auc(score, female)


def real_faces(root: Path, n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """The first image of ``n`` people of ``root`` (``<First_Last>/<image>``, drawn by ``seed``) and
    their female labels."""
    from PIL import Image
    people = sorted(p for p in root.iterdir() if p.is_dir() and any(p.iterdir()))
    if not people:
        raise SystemExit(f"{root} has no person folders")
    pick = sorted(np.random.default_rng(seed).choice(len(people), min(n, len(people)), replace=False))
    imgs = [np.asarray(Image.open(sorted(people[i].iterdir())[0]).convert("RGB").resize((112, 112))) for i in pick]
    return imgs, np.array([is_female_name(people[i].name) for i in pick])


def main(argv: list[str] | None = None) -> None:
    from benchmarks.judge_quick import render_batches, render_parser
    from engine import judge as J
    ap = render_parser(__doc__, "frontal", 2)
    ap.add_argument("--real", type=Path, required=True, help="real faces DIR/<First_Last>/<image>, ArcFace-aligned 112 px")
    ap.add_argument("--real-people", type=int, default=1500)
    a = ap.parse_args(argv)
    J.require_dlib()
    models = J.find_models()
    imgs, fem = real_faces(a.real, a.real_people)
    d = J.describe_arrays([imgs[i:i + 64] for i in range(0, len(imgs), 64)], models, workers=a.workers)
    x, fem = d.descriptors[d.detected], fem[d.detected]
    w, b = gender_direction(x, fem)
    s_real = x @ w + b
    rows, renders, ids = render_batches(a)
    ds = J.describe_arrays((b.images for b in renders), models, workers=a.workers)
    ids_gender = ids.meta["gender"].numpy()
    lab = rows.numpy()
    det = ds.detected
    s_syn = ds.descriptors[det] @ w + b
    fem_syn = ids_gender[lab[det]] < 0.5
    pairs = J.genuine_impostor_distances(ds.descriptors[det], lab[det], seed=0)
    r = lambda v: round(float(v), 4)  # noqa: E731
    print(json.dumps({
        "preset": a.preset, "ids": a.ids, "per_id": a.per_id, "overrides": a.override,
        "real_people": len(x), "real_female": int(fem.sum()), "real_auc_cv": r(cross_validated_auc(x, fem)),
        "real_gap": r(s_real[fem].mean() - s_real[~fem].mean()),
        "auc": r(auc(s_syn, fem_syn)), "gap": r(s_syn[fem_syn].mean() - s_syn[~fem_syn].mean()),
        "female_score": r(s_syn[fem_syn].mean()), "male_score": r(s_syn[~fem_syn].mean()),
        "detection": r(det.mean()), "genuine": r(pairs["genuine"].mean()), "impostor": r(pairs["impostor"].mean()),
        "far_0.6": r(J.false_accept_rate(pairs["impostor"]))}))


if __name__ == "__main__":
    main()
