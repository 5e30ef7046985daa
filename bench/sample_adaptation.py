"""Differential counts of simulated slides: a fixed class prior against adapting to each sample.

    python bench/sample_adaptation.py --checkpoint runs/default --data ../shared/datasets/pbc \\
        [--cells 200 --slides 200 --strength 0 100 1000 --norm-strength 100 --out runs/sample-adaptation.json]

A slide is simulated by drawing ``--cells`` white cells (with replacement) from the held-out test
split of the benchmark's fixed PBC split (``ml.classification.data.fixed_split``), with the class
frequencies of a clinical scenario (below). Each method labels every cell; the slide's differential
is the share of each label. Printed per scenario and method: the cells' accuracy and the
differential error, half the summed absolute difference between the labelled and the true shares in
percentage points (the share of the slide's cells counted in a wrong class). Methods: ``uniform``
(the model as trained on balanced classes), ``blood`` (the fixed peripheral-blood prior of
``ml.analyze``) and ``adapt N`` (:func:`ml.classification.priors.adapt` starting from the blood prior,
which counts as N cells) and ``norm N`` (the blood prior, with the network's normalization
statistics moved towards the slide's cells, the trained ones counting as N cells:
:mod:`ml.classification.sample_norm`; ``balanced norm N``: the same over the slide's cells
resampled to a balanced class mix). The crops are scored clean and under corruptions of
``ml.classification.robustness`` (``--corruptions name:severity ...``), a stand-in for another lab.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Class shares of each scenario (classes not named: 0). "normal" is the peripheral-blood prior itself;
# the others are typical of the conditions named (textbook orders of magnitude, not fitted to data).
SCENARIOS = {
    "normal": {"neutrophil": 0.58, "lymphocyte": 0.30, "monocyte": 0.06, "eosinophil": 0.03, "basophil": 0.01,
               "ig": 0.005, "erythroblast": 0.002, "platelet": 0.005},
    "neutrophilia": {"neutrophil": 0.85, "lymphocyte": 0.08, "monocyte": 0.04, "eosinophil": 0.01,
                     "basophil": 0.005, "ig": 0.015},
    "lymphocytosis": {"neutrophil": 0.20, "lymphocyte": 0.75, "monocyte": 0.04, "eosinophil": 0.01},
    "eosinophilia": {"neutrophil": 0.50, "lymphocyte": 0.24, "monocyte": 0.05, "eosinophil": 0.20,
                     "basophil": 0.01},
    "monocytosis": {"neutrophil": 0.50, "lymphocyte": 0.27, "monocyte": 0.20, "eosinophil": 0.02,
                    "basophil": 0.01},
    "left shift": {"neutrophil": 0.65, "lymphocyte": 0.18, "monocyte": 0.05, "eosinophil": 0.02, "ig": 0.10},
}


def differential_error(pred: np.ndarray, true: np.ndarray, k: int) -> float:
    """Half the L1 distance between the label shares of ``pred`` and ``true``, in percentage points."""
    a = np.bincount(pred, minlength=k) / len(pred)
    b = np.bincount(true, minlength=k) / len(true)
    return float(50.0 * np.abs(a - b).sum())


def simulate(probs_blood: np.ndarray, probs_uniform: np.ndarray, y: np.ndarray, classes: list[str],
             prior: np.ndarray, strengths: list[float], *, cells: int, slides: int, seed: int,
             extra: dict | None = None, progress=None) -> dict:
    """``{scenario: {method: {"accuracy", "differential_error"}}}`` averaged over ``slides`` slides.

    ``extra``: more methods, ``{name: f}`` with ``f(indices)`` the probabilities of those cells
    when they form one slide."""
    from ml.classification.priors import adapt

    k = len(classes)
    pools = [np.flatnonzero(y == c) for c in range(k)]
    rng = np.random.default_rng(seed)
    out = {}
    for name, shares in SCENARIOS.items():
        p = np.array([shares.get(c, 0.0) for c in classes])
        p /= p.sum()
        scores: dict[str, list[tuple[float, float]]] = {}
        for _ in range(slides):
            counts = rng.multinomial(cells, p)
            idx = np.concatenate([rng.choice(pools[c], n) for c, n in enumerate(counts) if n])
            truth = y[idx]
            answers = {"uniform": probs_uniform[idx].argmax(1), "blood": probs_blood[idx].argmax(1)}
            for s in strengths:
                answers[f"adapt {s:g}"] = adapt(probs_blood[idx], prior, s)[0].argmax(1)
            for m, f in (extra or {}).items():
                answers[m] = f(idx).argmax(1)
            for m, a in answers.items():
                scores.setdefault(m, []).append((float((a == truth).mean()), differential_error(a, truth, k)))
            if progress:
                progress()
        out[name] = {m: {"accuracy": float(np.mean([v[0] for v in vs])),
                         "differential_error": float(np.mean([v[1] for v in vs]))} for m, vs in scores.items()}
    return out


def _normalized(clf, crops: np.ndarray, strength: float, balanced: bool = False):
    """Probabilities (blood prior) of a slide's cells with normalization statistics from the slide."""
    from ml.classification.metrics import softmax

    def run(idx: np.ndarray) -> np.ndarray:
        sub = crops[idx]
        own = clf.sample_normalized(sub, strength, balanced=balanced)
        return softmax(own.scaled_logits(own.logits_of_crops(sub)), own.temperature)
    return run


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from ml.classification import load_classifier
    from ml.classification.data import cache_size_for, fixed_split, load_folder
    from ml.classification.metrics import softmax
    from ml.classification.robustness import CORRUPTIONS, corrupt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="classifier run directory or checkpoint")
    ap.add_argument("--data", type=Path, required=True, help="PBC (class-per-folder) with the benchmark's classes")
    ap.add_argument("--cells", type=int, default=200, help="white cells per simulated slide")
    ap.add_argument("--slides", type=int, default=200, help="slides per scenario")
    ap.add_argument("--strength", type=float, nargs="+", default=[100.0],
                    help="adaptation strengths to compare (the prior counts as this many cells)")
    ap.add_argument("--norm-strength", type=float, nargs="*", default=[],
                    help="also re-estimate the network's normalization statistics on each slide, the trained "
                         "ones counting as this many cells")
    ap.add_argument("--balanced-norm-strength", type=float, nargs="*", default=[],
                    help="the same with the statistics of the slide's cells resampled to a balanced class mix")
    ap.add_argument("--corruptions", nargs="*", default=["stain_shift:2", "colour_cast:2"],
                    help="name:severity (1-3) of ml.classification.robustness, besides the clean crops")
    ap.add_argument("--balance-by", choices=("shape", "network"),
                    help="what the balanced draw reads the cells' classes from (default: the classifier's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    conditions = [("clean", 0)]
    for spec in args.corruptions:
        name, _, sev = spec.partition(":")
        if name not in CORRUPTIONS or sev not in ("1", "2", "3"):
            print(f"error: unknown corruption {spec!r}; use name:1|2|3 with name in {', '.join(CORRUPTIONS)}",
                  file=sys.stderr)
            return 2
        conditions.append((name, int(sev)))
    try:
        clf = load_classifier(args.checkpoint, prior="blood")
        if args.balance_by:
            clf.balance_by = args.balance_by
        cells = load_folder(args.data, size=cache_size_for(clf.crop_rule.out_size, clf.crop_rule.margin))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = sorted(set(c for s in SCENARIOS.values() for c in s) - set(clf.classes))
    if missing:
        print(f"error: the model lacks the scenarios' classes {missing}", file=sys.stderr)
        return 2
    test = cells.subset(fixed_split(cells.names, cells.labels)[2])
    index = [clf.classes.index(c) for c in test.classes]
    y = np.array([index[k] for k in test.labels])
    crops = np.stack([clf.crops(test.images[i], [test.box(i)])[0] for i in range(len(test))])
    results = {"checkpoint": str(args.checkpoint), "version": clf.version, "cells": args.cells,
               "slides": args.slides, "test_cells": int(len(y)), "conditions": {}}
    bar = tqdm(total=len(conditions) * len(SCENARIOS) * args.slides, desc="slides", file=sys.stderr)
    for name, sev in conditions:
        x = crops if name == "clean" else corrupt(crops, name, sev - 1)
        logits = clf.logits_of_crops(x)
        p_uniform = softmax(logits, clf.temperature)
        p_blood = softmax(clf.scaled_logits(logits), clf.temperature)
        label = name if name == "clean" else f"{name} {sev}"
        extra = {f"norm {s:g}": _normalized(clf, x, s) for s in args.norm_strength}
        extra.update({f"balanced norm {s:g}": _normalized(clf, x, s, True) for s in args.balanced_norm_strength})
        results["conditions"][label] = simulate(p_blood, p_uniform, y, clf.classes, clf.prior_probs, args.strength,
                                                cells=args.cells, slides=args.slides, seed=args.seed, extra=extra,
                                                progress=lambda: bar.update())
    bar.close()
    methods = (["uniform", "blood"] + [f"adapt {s:g}" for s in args.strength]
               + [f"norm {s:g}" for s in args.norm_strength]
               + [f"balanced norm {s:g}" for s in args.balanced_norm_strength])
    print(f"{args.slides} simulated slides of {args.cells} cells per scenario from {len(y)} held-out PBC cells; "
          f"{clf.architecture} {clf.version}")
    print("differential error (pp of the slide's cells in a wrong class) / cell accuracy")
    for label, table in results["conditions"].items():
        print(f"\n{label}\n| scenario | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods))
        for scen, row in table.items():
            print(f"| {scen} | " + " | ".join(f"{row[m]['differential_error']:.1f} / {row[m]['accuracy']:.3f}"
                                              for m in methods) + " |")
        abnormal = [s for s in table if s != "normal"]
        print("| mean of the abnormal | " + " | ".join(
            f"{np.mean([table[s][m]['differential_error'] for s in abnormal]):.1f}" for m in methods) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
