"""Benchmark of the five classifiers on a fixed split of PBC, with tecom as the cross-lab check.

    python bench/classification.py --budget-s 180 --folds 3 --fold-budget-s 120 --out /tmp/bench-cls

Split (``ml.classification.data.fixed_split``, seed 0): per class, files ordered by
``sha1("0:<class>/<file>")``; first 20% test, next 10% validation, rest training
(3,359 / 480 / 960 of the 4,799 readable PBC images). Every model trains from scratch with the
same crop rule, augmentation and wall-clock budget, on the CPU threads given. Inference speed is
cells/s of the served ``Classifier`` on test crops, batch 256, ``torch.set_num_threads(--threads)``.
Tecom (validation only, never trained or tuned on), argmax restricted to its five classes: with
the expert WBC boxes and the model as trained ("tecom"), and as ``ml.analyze`` answers by default
("tecom analyze": the classical localizer's boxes at automatic magnification, a cell it misses
counting as wrong, the peripheral-blood class prior and the normalization statistics of the
sample); "any class" lets that answer be any of the model's eight classes, as ``ml.analyze`` does
(an ig, erythroblast or platelet answer is wrong).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.classification import DEFAULT_CONFIG, load_classifier  # noqa: E402
from ml.classification.data import datasets_root, fixed_split, kfold_splits, load_folder  # noqa: E402
from ml.classification.evaluate import evaluate_cells, evaluate_tecom, evaluate_tecom_as_analyzed  # noqa: E402
from ml.classification.train import TrainConfig, fit  # noqa: E402

MODELS = ["cbam_cnn_small", "cbam_cnn", "conv_attention", "resnet18", "resnet50_gn", "resnetv2_50x1_bit"]


def cells_per_s(clf, crops: np.ndarray, repeats: int = 2) -> float:
    clf.logits_of_crops(crops[:64])  # warm-up
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        clf.logits_of_crops(crops)
        best = max(best, len(crops) / (time.perf_counter() - t))
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=datasets_root() / "pbc")
    p.add_argument("--tecom", type=Path, default=datasets_root() / "tecom")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--budget-s", type=float, default=180, help="wall-clock training budget per model")
    p.add_argument("--folds", type=int, default=3, help="cross-validation of the best model (0: skip)")
    p.add_argument("--fold-budget-s", type=float, default=120)
    p.add_argument("--threads", type=int, default=1, help="torch threads when measuring inference speed (2 threads on a busy 2-core box run 10x slower)")
    p.add_argument("--train-threads", type=int, default=1,
                   help="torch threads while training, beside one augmentation thread (default 1: the "
                        "64 px default recipe waits for augmentation; a model whose steps take longer than "
                        "its batches' augmentation trains faster with 2 on two idle cores)")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-classification"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        print(f"error: no PBC data at {args.data}", file=sys.stderr)
        return 2
    cells = load_folder(args.data)
    tr, va, te = fixed_split(cells.names, cells.labels)
    base = TrainConfig(**DEFAULT_CONFIG, threads=args.train_threads)
    rows = []
    for name in args.models:
        cfg = replace(base, backbone=name, time_budget_s=args.budget_s)
        run = fit(cfg, cells.subset(tr), cells.subset(va), args.out / name)
        clf = load_classifier(run)
        test = evaluate_cells(clf, cells.subset(te))
        tecom = evaluate_tecom(clf, args.tecom) if args.tecom.is_dir() else {}
        # as `ml.analyze` answers: the classical localizer's boxes (auto magnification), blood prior,
        # the sample's normalization statistics
        analyze = evaluate_tecom_as_analyzed(clf, args.tecom) if args.tecom.is_dir() else {}
        crops = np.concatenate([clf.crops(cells.images[i], [cells.box(i)]) for i in te[:512]])
        row = {"model": name, "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "ece": test["ece"],
               "params_M": sum(q.numel() for q in clf.model.parameters()) / 1e6,
               "train_img_s": clf.metrics.get("train_images_per_s"), "epochs": clf.metrics.get("epochs_run"),
               "infer_cells_s": cells_per_s(clf, crops),
               "tecom_accuracy": tecom.get("accuracy"), "tecom_macro_f1": tecom.get("macro_f1"),
               "analyze_accuracy": analyze.get("accuracy"), "analyze_macro_f1": analyze.get("macro_f1"),
               "analyze_any_accuracy": analyze.get("any_class", {}).get("accuracy"),
               "analyze_any_macro_f1": analyze.get("any_class", {}).get("macro_f1")}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        (args.out / "bench.json").write_text(json.dumps({"rows": rows, "args": vars(args)}, default=str, indent=2))
    best = max(rows, key=lambda r: r["macro_f1"])
    cv = None
    if args.folds >= 2:
        dev = np.concatenate([tr, va])
        dev_cells = cells.subset(dev)
        accs, f1s = [], []
        for k, (ftr, fva, fte) in enumerate(kfold_splits(dev_cells.names, dev_cells.labels, args.folds)):
            cfg = replace(base, backbone=best["model"], time_budget_s=args.fold_budget_s)
            run = fit(cfg, dev_cells.subset(ftr), dev_cells.subset(fva), args.out / f"cv_{best['model']}" / f"fold{k}")
            r = evaluate_cells(load_classifier(run), dev_cells.subset(fte))
            accs.append(r["accuracy"])
            f1s.append(r["macro_f1"])
        cv = {"model": best["model"], "folds": args.folds, "accuracy_mean": float(np.mean(accs)),
              "accuracy_std": float(np.std(accs)), "macro_f1_mean": float(np.mean(f1s)),
              "macro_f1_std": float(np.std(f1s))}
    header = ("| model | PBC acc | PBC macro-F1 | ECE | params (M) | train img/s | epochs | infer cells/s "
              "| tecom acc | tecom macro-F1 | tecom analyze acc | tecom analyze macro-F1 | any class acc | any class macro-F1 |")
    print(f"PBC fixed split (train {len(tr)}, val {len(va)}, test {len(te)}), {args.budget_s:.0f} s budget "
          f"per model, {args.train_threads} training / {args.threads} inference threads, img {base.img_size} px, "
          f"margin {base.margin}")
    print(header)
    print("|" + "---|" * 14)

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    for r in rows:
        print(f"| {r['model']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['ece']:.3f} | {r['params_M']:.2f} "
              f"| {r['train_img_s']} | {r['epochs']} | {r['infer_cells_s']:.0f} | {fmt(r['tecom_accuracy'])} "
              f"| {fmt(r['tecom_macro_f1'])} | {fmt(r['analyze_accuracy'])} | {fmt(r['analyze_macro_f1'])} "
              f"| {fmt(r['analyze_any_accuracy'])} | {fmt(r['analyze_any_macro_f1'])} |")
    if cv:
        print(f"\n{cv['folds']}-fold CV of {cv['model']} on train+val ({args.fold_budget_s:.0f} s per fold): "
              f"accuracy {cv['accuracy_mean']:.3f} ± {cv['accuracy_std']:.3f}, "
              f"macro-F1 {cv['macro_f1_mean']:.3f} ± {cv['macro_f1_std']:.3f}")
    (args.out / "bench.json").write_text(json.dumps({"rows": rows, "cv": cv, "args": vars(args)}, default=str,
                                                    indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
