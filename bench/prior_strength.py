"""How strongly the served class prior should count: accuracy and macro-F1 of a natural smear's mix.

``ml.analyze`` and the worker apply the differential of normal blood to a classifier trained on
balanced classes by Bayes' rule, ``p(c|x) ~ p_trained(c|x) * (pi_c / q_c)``. That maximizes the
expected accuracy where the model's probabilities are calibrated, i.e. on cells like its training
cells; on another lab's cells they are not, and the rare classes (monocytes, eosinophils,
basophils), which macro-F1 weighs as much as neutrophils, are the ones the prior holds down. This
benchmark raises the prior's ratio to a power ``alpha`` (0: the model as trained, 1: the full
prior) and scores each on PBC validation cells, clean and under the 30 corruptions of
:mod:`ml.classification.robustness`, answered as ``ml.analyze`` answers (the shape opinion, the
sample's own statistics at ``ml.analyze``'s default strength, any of the model's classes):

* each condition's confusion of the five white-cell classes other labs label (basophil, eosinophil,
  lymphocyte, monocyte, neutrophil), row-normalized, its rows weighted by the prior's frequencies of
  those five: the cells of a normal smear; its accuracy and macro-F1 over the five (an answer
  outside them is wrong);
* ``score`` = half the clean condition's mean of the two, half the corruptions' mean of it.

With ``--tecom`` it also reports tecom as ``ml.analyze`` answers (validation only: nothing here
feeds a choice but the PBC score).

    python bench/prior_strength.py --checkpoint runs/default [runs/other ...] \\
        --data ../shared/datasets/pbc [--tecom ../shared/datasets/tecom]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WBC = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def mix_scores(y: np.ndarray, pred: np.ndarray, classes: list[str], prior: dict[str, float]) -> tuple[float, float]:
    """Accuracy and macro-F1 over :data:`WBC` of answers ``pred`` to cells ``y`` (indices into
    ``classes``) had the five classes come in the proportions ``prior`` gives them (each class's
    recall weighted by its share; cells of other classes are left out, answers outside the five are
    wrong)."""
    idx = [classes.index(c) for c in WBC]
    share = np.array([prior[c] for c in WBC], np.float64)
    share /= share.sum()
    k = len(WBC)
    rows = np.zeros((k, k + 1))  # true class x answer (the last column: any other class)
    for i, c in enumerate(idx):
        mine = pred[y == c]
        if not len(mine):
            raise ValueError(f"no {WBC[i]} among the cells")
        for j, d in enumerate(idx):
            rows[i, j] = (mine == d).mean()
        rows[i, k] = 1.0 - rows[i, :k].sum()
    w = rows * share[:, None]
    accuracy = float(np.trace(w[:, :k]))
    recall = np.diag(rows[:, :k])
    answered = w[:, :k].sum(0)
    precision = np.divide(np.diag(w[:, :k]), answered, out=np.zeros(k), where=answered > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    return accuracy, float(f1.mean())


def main(argv: list[str] | None = None) -> int:
    import torch
    from tqdm import tqdm

    from ml.analyze import NORM_DEFAULT, parse_cells
    from ml.classification import load_classifier
    from ml.classification.data import cache_size_for, fixed_split, load_folder
    from ml.classification.evaluate import evaluate_tecom, labelled_crops
    from ml.classification.priors import PERIPHERAL_BLOOD, prior_shift
    from ml.classification.robustness import CORRUPTIONS, corrupt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, nargs="+", required=True, help="classifier run directories or checkpoints")
    ap.add_argument("--data", type=Path, required=True, help="the class-per-folder data they were trained on (PBC)")
    ap.add_argument("--tecom", type=Path, help="tecom: report it as ml.analyze answers (validation only)")
    ap.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS), help="powers of the prior's ratio (0-4; above 1 the prior weighs more than Bayes' rule gives it)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if any(not 0 <= a <= 4 for a in args.alphas):
        ap.error("--alphas must lie between 0 and 4")
    torch.set_num_threads(args.threads)
    norm = parse_cells(NORM_DEFAULT)
    total = {a: [] for a in args.alphas}
    for run in args.checkpoint:
        try:
            clf = load_classifier(run, device="cpu")
            missing = sorted(set(WBC) - set(clf.classes))
            if missing:
                raise ValueError(f"{run}: the model lacks {', '.join(missing)}")
            rule = clf.crop_rule
            cells = load_folder(args.data, size=cache_size_for(rule.out_size, rule.margin))
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        _, va, _ = fixed_split(cells.names, cells.labels)
        crops, y = labelled_crops(clf, cells.subset(va))
        shift = prior_shift(clf.classes, PERIPHERAL_BLOOD, clf.trained_prior) * clf.temperature
        conditions = [None] + [(name, sev) for name in CORRUPTIONS for sev in range(3)]  # None: clean
        logits = []
        for condition in tqdm(conditions, desc=f"{run}: conditions", file=sys.stderr):
            c = crops if condition is None else corrupt(crops, *condition)
            served = clf.sample_normalized(c, norm, balanced=True) if norm is not None else clf
            logits.append(served.logits_of_crops(c))
        print(f"\n{run}: PBC validation ({len(y)} cells) as a normal smear's mix of the five white-cell classes")
        print(f"{'alpha':>6} {'clean acc':>9} {'clean F1':>8} {'corr. acc':>9} {'corr. F1':>8} {'score':>7}"
              + ("   tecom as ml.analyze (any class)" if args.tecom else ""))
        for a in args.alphas:
            s = [mix_scores(y, (lg + a * shift).argmax(1), clf.classes, PERIPHERAL_BLOOD) for lg in logits]
            clean, corr = np.array(s[0]), np.mean(s[1:], axis=0)
            score = 0.5 * clean.mean() + 0.5 * corr.mean()
            total[a].append(score)
            text = f"{a:>6.2f} {clean[0]:>9.3f} {clean[1]:>8.3f} {corr[0]:>9.3f} {corr[1]:>8.3f} {score:>7.4f}"
            if args.tecom:
                as_analyzed = copy.copy(clf)
                as_analyzed.set_prior("blood")
                as_analyzed.log_prior = as_analyzed.log_prior * a
                t = evaluate_tecom(as_analyzed, args.tecom, boxes="localizer", norm=norm, norm_balanced=norm is not None)
                text += f"   {t['accuracy']:.3f} / {t['macro_f1']:.3f} ({t['any_class']['accuracy']:.3f} / {t['any_class']['macro_f1']:.3f})"
            print(text, flush=True)
    if len(args.checkpoint) > 1:
        print("\nmean score over the runs: " + ", ".join(f"alpha {a:g}: {np.mean(v):.4f}" for a, v in total.items()))
    best = max(np.mean(v) for v in total.values())
    print(f"best alpha (ties: the larger): {max(a for a, v in total.items() if np.mean(v) == best):g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
