"""Command line: ``python -m ml.classification {train,train-default,evaluate,ensemble,shape-opinion,framings,list} ...``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from ml.jsonio import dumps


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ml.classification", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a classifier on a class-per-folder dataset")
    t.add_argument("--data", type=Path, required=True, help="class-per-folder images (PBC or webapp export)")
    t.add_argument("--out", type=Path, required=True, help="run directory to write")
    t.add_argument("--config", type=Path, help="YAML or JSON file of training options (flags override it)")
    t.add_argument("--backbone")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--img-size", type=int)
    t.add_argument("--margin", type=float, help="crop rule: box margin on each side, fraction of its side")
    t.add_argument("--mixup", type=float)
    t.add_argument("--fade", type=float, metavar="F",
                   help="the cell's surroundings moved this fraction of the way to white in what the network sees, "
                        "outside a circle about the cell (0 = off, 1 = white); kept in the checkpoint")
    t.add_argument("--fade-p", type=float, metavar="P",
                   help="probability per training crop of its surroundings faded by a fraction drawn in [--fade, 1] "
                        "(0 = off); what is served keeps --fade")
    t.add_argument("--context-swap", type=float, metavar="P",
                   help="probability per training crop of its cell's surroundings taken from another crop of the "
                        "batch (what lies about a cell no longer tells its class; 0 = off)")
    t.add_argument("--consistency", type=float, metavar="WEIGHT",
                   help="two colour views of each cell, their predictions' Jensen-Shannon divergence added to the "
                        "loss with this weight (twice the images per step; 0 = off)")
    t.add_argument("--cutmix", type=float, metavar="ALPHA",
                   help="CutMix: a rectangle of another crop pasted in, the loss weighted by area (0 = off)")
    t.add_argument("--freeze-bn", action="store_true", default=None)
    t.add_argument("--seed", type=int)
    t.add_argument("--balance", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--stain-norm", choices=["none", "background", "reinhard", "macenko"])
    t.add_argument("--pretrained", action="store_true", default=None)
    t.add_argument("--augment", type=float, help="photometric augmentation strength (0 = off)")
    t.add_argument("--random-conv", type=float, metavar="P",
                   help="probability per crop of a random convolution (shape over colour and texture; 0 = off)")
    t.add_argument("--amp-mix", type=float, metavar="P",
                   help="probability per crop of a Fourier amplitude spectrum mixed with another crop's (0 = off)")
    t.add_argument("--shape-opinion", action=argparse.BooleanOptionalAction, default=None,
                   help="add a second opinion from the nucleus's shape (ml/classification/morphometry.py)")
    t.add_argument("--budget-s", type=float, dest="time_budget_s", help="wall-clock budget per training")
    t.add_argument("--threads", type=int, help="torch CPU threads (default 1; 2 on two idle cores when the model's "
                                                  "step outlasts the augmentation of its batch, e.g. cbam_cnn at 80 px)")
    t.add_argument("--workers", type=int, help="augmentation threads (default 1; on a GPU, the free cores)")
    t.add_argument("--device", help="auto (a GPU when there is one; the default, or $LEUKOLAB_DEVICE), cpu, cuda or cuda:N")
    t.add_argument("--cpu-bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 mixed precision on a CPU that computes it natively (AVX-512 BF16 or AMX; "
                        "ignored elsewhere)")
    t.add_argument("--ema", type=float, help="moving average of the weights, decay per step (0 = off)")
    t.add_argument("--tta", type=int, choices=[1, 2, 4, 8],
                   help="test-time views kept in the checkpoint: rotations/flips averaged per cell")
    t.add_argument("--folds", type=int, default=0, help="k-fold cross-validation (K >= 2)")
    t.add_argument("--split-seed", type=int,
                   help="seed of the train/validation/test split (default 0: the benchmark's fixed split; "
                        "--seed changes the training's randomness only)")

    d = sub.add_parser("train-default", help="train the product's default classifier within a budget")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--data", type=Path)
    d.add_argument("--budget-s", type=float, default=480)

    e = sub.add_parser("evaluate", help="score a saved classifier; prints one JSON object with --json")
    e.add_argument("--checkpoint", type=Path, required=True, help="run directory or checkpoint file")
    e.add_argument("--data", type=Path, required=True, help="class-per-folder images, or the tecom folder")
    e.add_argument("--split", choices=["all", "test", "val", "train"], default="all",
                   help="part of a class-per-folder dataset by the fixed benchmark split")
    e.add_argument("--threshold", type=float, help="confidence below which a cell is 'unidentified'")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--plots", type=Path, help="folder for the PNGs (default: <run>/eval)")
    e.add_argument("--robustness", action="store_true", help="add accuracy under corruptions")
    e.add_argument("--tta", type=int, choices=[1, 2, 4, 8],
                   help="test-time views (default: the checkpoint's; the temperature stays as fitted)")
    e.add_argument("--framings", type=float, nargs="+", metavar="SCALE",
                   help="box scales whose crops' logits are averaged per cell (default: the checkpoint's; "
                        "the temperature stays as fitted)")
    e.add_argument("--tecom-boxes", choices=["expert", "localizer"], default="expert")
    e.add_argument("--device", help="auto (a GPU when there is one; the default, or $LEUKOLAB_DEVICE), cpu, cuda or cuda:N")
    e.add_argument("--prior", default="uniform",
                   help="expected class frequencies: uniform (as trained, default), blood (a normal "
                        "peripheral-blood differential) or a JSON file {class: weight}")
    e.add_argument("--adapt", type=float, metavar="CELLS",
                   help="tecom: treat its cells as one sample and estimate its class frequencies from them, "
                        "--prior counting as this many cells (as ml.analyze --adapt all)")
    e.add_argument("--norm", type=float, metavar="CELLS",
                   help="tecom: move the network's normalization statistics towards those of its cells, the "
                        "trained ones counting as this many cells (ml.classification.sample_norm)")
    e.add_argument("--norm-balanced", action="store_true",
                   help="with --norm: take the statistics over the cells resampled to a balanced class mix")
    e.add_argument("--balance-by", choices=("shape", "network"),
                   help="with --norm-balanced: read the draw's classes from the shape opinion's answers or the "
                        "network's (default: the classifier's, shape where it has a shape opinion)")

    m = sub.add_parser("ensemble", help="save several trained classifiers as one (their probabilities averaged)")
    m.add_argument("runs", type=Path, nargs="+", help="run directories or checkpoints (two or more)")
    m.add_argument("--out", type=Path, required=True, help="run directory to write (best.pt)")
    m.add_argument("--data", type=Path, help="the members' training data: fit the temperature on its validation "
                                             "split and record test scores")

    o = sub.add_parser("shape-opinion", help="save a trained classifier again with a nucleus-shape opinion "
                                             "(ml/classification/morphometry.py) fitted on its training data")
    o.add_argument("checkpoint", type=Path, help="run directory or checkpoint")
    o.add_argument("--data", type=Path, required=True, help="the class-per-folder data it was trained on "
                                                             "(the benchmark's fixed split)")
    o.add_argument("--out", type=Path, required=True, help="run directory to write (best.pt)")
    o.add_argument("--seed", type=int, default=0)

    f = sub.add_parser("framings", help="save a trained classifier again to answer each cell over several "
                                        "framings of its box (ml/classification/framings.py)")
    f.add_argument("checkpoint", type=Path, help="run directory or checkpoint")
    f.add_argument("--scales", type=float, nargs="+", required=True, metavar="SCALE",
                   help="box scales, e.g. 0.9 1 1.1 (1 to 5 of them, between 0.5 and 2)")
    f.add_argument("--data", type=Path, required=True, help="the class-per-folder data it was trained on "
                                                             "(the benchmark's fixed split)")
    f.add_argument("--below", type=float, default=0.9, metavar="CONFIDENCE",
                   help="only cells answered with less confidence than this with the box as found are cut again "
                        "(default 0.9; 1 answers every cell over the framings)")
    f.add_argument("--out", type=Path, required=True, help="run directory to write (best.pt)")

    sub.add_parser("list", help="list registered architectures")
    return p


def _config_file(path: Path) -> dict:
    """The options of a YAML or JSON config file; a file that is neither, or no mapping, is an error naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    else:
        raise ValueError(f"{path}: a config file is .yaml, .yml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    return data


def _check_out(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; name a folder to write to")


def _train(args) -> int:
    from ml.classification.data import cache_size_for, fixed_split, kfold_splits, load_folder
    from ml.classification.evaluate import evaluate_cells
    from ml.classification.train import TrainConfig, fit
    from ml.classification import load_classifier, score_run

    _check_out(args.out)
    cfg_dict = _config_file(args.config) if args.config else {}
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(cfg_dict) - names
    if unknown:
        raise ValueError(f"unknown options in {args.config}: {sorted(unknown)}; known: {sorted(names)}")
    for k in names:
        v = getattr(args, k.replace("-", "_"), None)
        if v is not None:
            cfg_dict[k] = v
    cfg = TrainConfig(**cfg_dict)
    from ml.classification.registry import create_classifier

    try:  # fail early, with the known names, on a bad backbone or options it does not take
        create_classifier(cfg.backbone, 2, **cfg.model_kwargs)
    except TypeError as exc:
        raise ValueError(f"model_kwargs {cfg.model_kwargs} do not fit {cfg.backbone} ({exc})") from None
    cells = load_folder(args.data, progress=lambda f, m: print(m, file=sys.stderr),
                        size=cache_size_for(cfg.img_size, cfg.margin))
    if len(cells.classes) < 2:
        raise ValueError(f"{args.data}: a classifier needs images of at least two classes (found only "
                         f"{', '.join(cells.classes)})")
    if args.folds == 1 or args.folds < 0:
        raise ValueError(f"--folds is 2 or more (0: no cross-validation), got {args.folds}")
    if args.folds >= 2:
        results = []
        for k, (tr, va, te) in enumerate(kfold_splits(cells.names, cells.labels, args.folds, cfg.split_seed)):
            run = fit(cfg, cells.subset(tr), cells.subset(va), args.out / f"fold{k}")
            r = evaluate_cells(load_classifier(run, device=cfg.device), cells.subset(te))
            results.append({"fold": k, "accuracy": r["accuracy"], "macro_f1": r["macro_f1"]})
            print(dumps(results[-1]), file=sys.stderr)
        acc = np.array([r["accuracy"] for r in results])
        f1 = np.array([r["macro_f1"] for r in results])
        summary = {"folds": results, "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
                   "macro_f1_mean": float(f1.mean()), "macro_f1_std": float(f1.std())}
        (args.out / "kfold.json").write_text(dumps(summary, indent=2))
        print(dumps(summary))
        return 0
    tr, va, te = fixed_split(cells.names, cells.labels, seed=cfg.split_seed)
    run = fit(cfg, cells.subset(tr), cells.subset(va), args.out)
    if not len(te):  # too few images per class to hold any out
        print(f"note: {args.data} is too small to hold out test images (3 or more a class are needed); "
              "the run is not scored", file=sys.stderr)
        print(dumps({"run": str(run), "test_accuracy": None, "test_macro_f1": None, "test_ece": None}))
        return 0
    r = score_run(run, cells.subset(te), device=cfg.device)  # into the run's metrics, with its figures, as the model registry shows them
    out = {"run": str(run), "test_accuracy": r["accuracy"], "test_macro_f1": r["macro_f1"], "test_ece": r["ece"]}
    (Path(run) / "test.json").write_text(dumps(r, indent=2))
    print(dumps(out))
    return 0


def _evaluate(args) -> int:
    from ml.classification import load_classifier
    from ml.classification.data import cache_size_for, fixed_split, load_folder
    from ml.classification.evaluate import (evaluate_cells, evaluate_tecom, plot_confusion, plot_curves,
                                            plot_reliability)

    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise ValueError(f"--threshold is a confidence between 0 and 1, got {args.threshold}")
    if args.plots is not None:
        _check_out(args.plots)
    clf = load_classifier(args.checkpoint, prior=args.prior, device=args.device)
    if args.tta:
        clf.tta = args.tta
    if args.framings:
        from ml.classification.artifact import check_framings

        clf.framings = check_framings(args.framings)
    if args.balance_by:
        clf.balance_by = args.balance_by
    run_dir = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    plots = args.plots or run_dir / "eval"
    plots.mkdir(parents=True, exist_ok=True)
    if (args.data / "labels.csv").exists():
        r = evaluate_tecom(clf, args.data, boxes=args.tecom_boxes, threshold=args.threshold, adapt=args.adapt,
                           norm=args.norm, norm_balanced=args.norm_balanced)
        cells = None
    else:
        if args.adapt is not None or args.norm is not None:
            raise ValueError("--adapt and --norm apply to a tecom-style folder (labels.csv), whose cells form one sample")
        cells = load_folder(args.data, size=cache_size_for(clf.crop_rule.out_size, clf.crop_rule.margin))
        if args.split != "all":  # the split the model was trained on
            tr, va, te = fixed_split(cells.names, cells.labels, seed=int(clf.metrics.get("split_seed", 0)))
            cells = cells.subset({"train": tr, "val": va, "test": te}[args.split])
            if not len(cells):
                raise ValueError(f"{args.data}: its {args.split!r} part is empty (too few images per class)")
        r = evaluate_cells(clf, cells, threshold=args.threshold)
    r["model"] = {"architecture": clf.architecture, "version": clf.version, "path": str(clf.path)}
    plot_confusion(r, plots / "confusion.png")
    plot_reliability(r, plots / "reliability.png")
    figs = [str(plots / "confusion.png"), str(plots / "reliability.png")]
    if plot_curves(run_dir / "log.json", plots / "curves.png"):
        figs.append(str(plots / "curves.png"))
    if args.robustness:
        from ml.classification.evaluate import robustness_of
        from ml.classification.robustness import format_table, plot_table

        if cells is None:
            raise ValueError("--robustness needs a class-per-folder dataset")
        table = robustness_of(clf, cells)
        r["robustness"] = table
        plot_table(table, plots / "robustness.png")
        figs.append(str(plots / "robustness.png"))
        print(format_table(table), file=sys.stderr)
    r["figures"] = figs
    if args.json:
        print(dumps(r))
    else:
        print(f"accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  ECE {r['ece']:.4f}  n {r['n']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            from ml.classification import list_classifiers

            print("\n".join(list_classifiers()))
            return 0
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "ensemble":
            from ml.classification.ensemble import build_ensemble

            run = build_ensemble(args.runs, args.out, args.data,
                                 progress=lambda f, m: print(m, file=sys.stderr, flush=True))
            from ml.classification import load_classifier

            clf = load_classifier(run)
            print(dumps({"run": str(run), "version": clf.version, "temperature": clf.temperature,
                              "test": clf.metrics.get("test")}))
            return 0
        if args.command == "shape-opinion":
            from ml.classification import load_classifier
            from ml.classification.morphometry import add_shape_opinion

            run = add_shape_opinion(args.checkpoint, args.data, args.out, seed=args.seed,
                                    progress=lambda f, m: print(m, file=sys.stderr, flush=True))
            clf = load_classifier(run)
            print(dumps({"run": str(run), "version": clf.version, "shape_weight": clf.shape_opinion.weight,
                              "temperature": clf.temperature, "test": clf.metrics.get("test")}))
            return 0
        if args.command == "framings":
            from ml.classification import load_classifier
            from ml.classification.framings import add_framings

            run = add_framings(args.checkpoint, args.scales, args.data, args.out,
                               below=None if args.below == 1.0 else args.below,
                               progress=lambda f, m: print(m, file=sys.stderr, flush=True))
            clf = load_classifier(run)
            print(dumps({"run": str(run), "version": clf.version, "framings": list(clf.framings),
                              "framing_below": clf.framing_below,
                              "framed_share_test": clf.metrics.get("framed_share_test"),
                              "temperature": clf.temperature, "test": clf.metrics.get("test"),
                              "test_one_framing": clf.metrics.get("test_one_framing")}))
            return 0
        if args.command == "train-default":
            from ml.classification import train_default

            t0 = time.time()
            run = train_default(args.data, args.out, time_budget_s=args.budget_s,
                                progress=lambda f, m: print(f"[{100 * f:5.1f}%] {m}", file=sys.stderr, flush=True))
            print(dumps({"run": str(run), "seconds": round(time.time() - t0, 1)}))
            return 0
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
