"""Cells per second of the served classifier on a sample, with and without the sample's statistics.

    python bench/served_speed.py --checkpoint runs/default --cells 200 1000 5000 --threads 1 2 \
        [--data ../shared/datasets/pbc --corruption colour_cast:2]

A sample of ``N`` crops is classified as the worker and ``ml.analyze`` do: by the trained network
alone (``--norm off``), and with the normalization statistics of the sample at ``ml.analyze``'s
default strength, balanced (``ml.analyze.classifier_for_sample``, included in the time), which takes
them from at most ``sample_norm.STATISTICS_CELLS`` of the sample's cells; ``all cells`` takes them
from every cell, as before that cap. The crops are random pixels at the model's input size, or with
``--data`` the held-out test cells of the benchmark's fixed PBC split, drawn with replacement and
optionally corrupted (``ml.classification.robustness``), and then the accuracy of each way is printed
too (answers as trained, without a class prior: the test cells are balanced). ``--framings`` (with
``--data``) answers each cell over crops of its box at those scales (``ml/classification/framings.py``):
the crops of the box as found are given, those of the other framings are cut within the timed call.
Best of ``--repeats``; one line per sample size and thread count.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def held_out_cells(clf, data: Path):
    """The fixed split's held-out cells as the classifier sees them, their labels (model's indices)
    and the cells themselves (a CellSet)."""
    from ml.classification.data import cache_size_for, fixed_split, load_folder
    from ml.classification.evaluate import labelled_crops

    r = clf.crop_rule
    cells = load_folder(data, size=cache_size_for(r.out_size, r.margin))
    test = cells.subset(fixed_split(cells.names, cells.labels)[2])
    return (*labelled_crops(clf, test), test)


def answer(clf, crops: np.ndarray, cells=None, idx=None) -> np.ndarray:
    """Probabilities of the crops as served: over the classifier's framings when it has several
    (the other framings cut from ``cells`` at ``idx``, here)."""
    if clf.framings == (1.0,):
        return clf.probabilities_of_crops(crops)
    from ml.classification.metrics import softmax

    logits = clf.framed_logits(crops, clf.cut_each([cells.images[i] for i in idx], [cells.box(i) for i in idx]))
    return softmax(clf.scaled_logits(logits), clf.temperature)


def timed(fn, repeats: int):
    """(best seconds, last result) of ``repeats`` calls of ``fn``."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> int:
    import torch

    from ml.analyze import NORM_DEFAULT, classifier_for_sample, parse_cells
    from ml.classification import load_classifier
    from ml.classification.robustness import CORRUPTIONS, corrupt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="classifier run directory or checkpoint")
    ap.add_argument("--cells", type=int, nargs="+", default=[200, 1000, 5000], help="sample sizes")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts")
    ap.add_argument("--data", type=Path, default=None, help="PBC (class-per-folder): real held-out cells")
    ap.add_argument("--corruption", default=None, help="name:severity (1-3) applied to the --data cells")
    ap.add_argument("--norm", default=NORM_DEFAULT, help="strength of the sample's statistics (default: ml.analyze's)")
    ap.add_argument("--framings", type=float, nargs="+", metavar="SCALE",
                    help="answer over these box scales (needs --data; default: the checkpoint's)")
    ap.add_argument("--balance-by", choices=("shape", "network"),
                    help="what the balanced draw reads the cells' classes from (default: the classifier's)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.cells) or any(t < 1 for t in args.threads) or args.repeats < 1:
        ap.error("--cells, --threads and --repeats must be positive")
    strength = parse_cells(args.norm)
    if strength is None:
        ap.error("--norm must be a strength (the trained statistics are always timed)")
    if args.corruption and args.data is None:
        ap.error("--corruption needs --data")
    if args.framings and args.data is None:
        ap.error("--framings needs --data")
    try:
        clf = load_classifier(args.checkpoint, device="cpu")
        if args.balance_by:
            clf.balance_by = args.balance_by
        if args.framings:
            from ml.classification.artifact import check_framings

            clf.framings = check_framings(args.framings)
        if clf.framings != (1.0,) and args.data is None:
            raise ValueError(f"{args.checkpoint} answers over framings {clf.framings}: give --data")
        if clf.framings != (1.0,) and args.corruption:
            raise ValueError("--corruption corrupts the crops of one framing: not with framings")
        rng = np.random.default_rng(0)
        test = None
        if args.data is not None:
            pool, labels, test = held_out_cells(clf, args.data)
            if args.corruption:
                name, _, sev = args.corruption.partition(":")
                if name not in CORRUPTIONS or sev not in ("1", "2", "3"):
                    raise ValueError(f"unknown corruption {args.corruption!r}; use name:1|2|3 with name in "
                                     f"{', '.join(CORRUPTIONS)}")
                pool = corrupt(pool, name, int(sev) - 1)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{clf.architecture} {clf.crop_rule.out_size} px, sample statistics at strength {strength:g}, "
          f"best of {args.repeats}; cells/s" + (" (accuracy)" if args.data else "")
          + (f"; {args.corruption}" if args.corruption else "")
          + (f"; framings {', '.join(f'{f:g}' for f in clf.framings)}" if clf.framings != (1.0,) else ""))
    print("cells  threads  trained statistics  sample's statistics  all cells")
    for n in args.cells:
        if args.data is None:
            size = clf.crop_rule.out_size
            crops, y, idx = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), None, None
        else:
            idx = rng.choice(len(pool), n)
            crops, y = pool[idx], labels[idx]
        for t in args.threads:
            torch.set_num_threads(t)
            clf.probabilities_of_crops(crops[:64])  # warm up
            cols = []
            for fn in (lambda: answer(clf, crops, test, idx),
                       lambda: answer(classifier_for_sample(clf, [crops], strength), crops, test, idx),
                       lambda: answer(clf.sample_normalized(crops, strength, balanced=True, max_cells=None),
                                      crops, test, idx)):
                s, p = timed(fn, args.repeats)
                cols.append(f"{n / s:,.0f}" + ("" if y is None else f" ({(p.argmax(1) == y).mean():.3f})"))
            print(f"{n:5d}  {t:7d}  {cols[0]:>18}  {cols[1]:>19}  {cols[2]:>9}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
