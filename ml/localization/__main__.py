"""Command line for WBC localization.

    python -m ml.localization train --method deep --data DIR --out RUN_DIR [--epochs N --img-size PX ...]
    python -m ml.localization tune --data DIR --out FILE [--trials N]
    python -m ml.localization evaluate --method classical|deep [--checkpoint RUN_DIR] --data DIR [--json]
    python -m ml.localization predict --method classical|deep [--checkpoint RUN_DIR] IMAGE...
        (one JSON object, ``{"images": [{"image", "width", "height", "method", "boxes"}, ...]}``)
    python -m ml.localization convert SRC DST --to voc|coco|yolo

DIR is an annotated folder (Pascal VOC ``Annotations/`` + ``JPEGImages/``, COCO json, or YOLO
``images/`` + ``labels/`` + ``classes.txt``). ``--split train|test|all`` picks a part of the
fixed split (see :mod:`ml.localization.data`); the default is all fields.
User errors print one line on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ml.jsonio import dumps


def _localizer(args):
    from ml.localization import load_localizer

    views = {} if args.views is None else {"views": args.views}
    if args.method is None:  # a checkpoint is a deep detector's run
        args.method = "deep" if args.checkpoint else "classical"
    if args.method == "classical" and args.checkpoint:
        raise ValueError("--checkpoint is a deep detector's run: use --method deep (the classical method takes --config)")
    if args.method == "classical":
        return load_localizer(f"classical:{args.config}" if args.config else "classical", rescale=args.rescale,
                              device=args.device, **views)
    if not args.checkpoint:
        raise ValueError("--method deep needs --checkpoint RUN_DIR (a directory written by 'train')")
    return load_localizer(args.checkpoint, rescale=args.rescale, device=args.device, **views)


def _rescale(text: str):
    from ml.localization.scale import parse_rescale

    try:
        return parse_rescale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def _samples(args):
    from ml.localization.data import load_split, require_cells

    return require_cells(load_split(args.data, args.split), args.data, part=args.split)


def cmd_train(args) -> int:
    if args.method != "deep":
        raise ValueError("only '--method deep' is trained; fit the classical method with 'tune'")
    import torch

    from ml.localization.data import train_val_split
    from ml.localization.deep import STRIDE
    from ml.localization.report import evaluate_localizer, write_report
    from ml.localization.train import TrainConfig, train_detector

    if args.img_size % STRIDE or args.img_size < 64:
        raise ValueError(f"--img-size must be a multiple of {STRIDE} and at least 64, got {args.img_size}")
    if args.val_every < 0:
        raise ValueError(f"--val-every must be 0 (no validation) or more, got {args.val_every}")
    samples = _samples(args)
    fit, val = train_val_split(samples, every=args.val_every) if args.val_every > 0 else (samples, [])
    if not fit:
        raise ValueError(f"{args.data}: no training fields (every field validates with --val-every {args.val_every})")
    lo, hi = args.scale_jitter or TrainConfig.scale_jitter
    if not lo <= hi <= 10 * lo:
        raise ValueError(f"--scale-jitter LO HI needs LO <= HI <= 10 x LO, got {lo:g} {hi:g}")
    cfg = TrainConfig(backbone=args.backbone, pretrained=args.pretrained, epochs=args.epochs or TrainConfig.epochs,
                      img_size=args.img_size, scale=args.scale, scale_jitter=(lo, hi), batch_size=args.batch_size,
                      lr=args.lr, num_threads=args.threads, seed=args.seed, ema=args.ema, device=args.device,
                      workers=args.workers, views=args.views)
    torch.set_num_threads(args.threads)
    summary = train_detector(fit, val, args.out, cfg, progress=not args.quiet)
    if val:
        from ml.localization.deep import DeepLocalizer

        metrics, preds = evaluate_localizer(DeepLocalizer(args.out, device=args.device), val)
        metrics.update({"split": "validation", **summary})
        write_report(args.out, metrics, val, preds)
    print(dumps(summary, indent=2))
    return 0


def cmd_tune(args) -> int:
    from ml.imageio import read_image
    from ml.localization.classical import ClassicalConfig
    from ml.localization.tune import tune_classical

    samples = _samples(args)
    start = ClassicalConfig.load(args.config) if args.config else ClassicalConfig()
    images = [read_image(s.image_path) for s in samples]
    gts = [s.annotation.of_label("WBC") for s in samples]
    cfg, metrics, history = tune_classical(images, gts, start=start, trials=args.trials, seed=args.seed,
                                           progress=not args.quiet)
    cfg.save(args.out)
    if args.history:
        Path(args.history).write_text(dumps(history, indent=1, default=float))
    print(dumps({"config": str(args.out), **metrics}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    import torch

    from ml.localization.report import evaluate_localizer, write_report

    torch.set_num_threads(args.threads)
    loc = _localizer(args)
    samples = _samples(args)
    metrics, preds = evaluate_localizer(loc, samples, progress=not (args.json or args.quiet))
    metrics["method"] = loc.method
    if args.out:
        write_report(args.out, metrics, samples, preds)
    if args.json:
        print(dumps(metrics))
    else:
        for k, v in metrics.items():
            print(f"{k:>18}: {v:.4f}" if isinstance(v, float) else f"{k:>18}: {v}")
    return 0


def cmd_predict(args) -> int:
    import torch

    from ml.imageio import read_image

    torch.set_num_threads(args.threads)
    loc = _localizer(args)
    out, unread = [], 0
    for path in args.images:
        try:  # an image that cannot be read is named, and the others are still done
            img = read_image(path)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            out.append({"image": str(path), "error": str(exc)})
            unread += 1
            continue
        boxes = loc.detect(img, min_score=args.min_score, labels=("WBC",) if args.wbc_only else None)
        out.append({"image": str(path), "width": img.shape[1], "height": img.shape[0], "method": loc.method,
                    "boxes": [{"label": b.label, "score": round(b.score, 4),
                               "box": [round(v, 1) for v in b.as_list()]} for b in boxes]})
    print(dumps({"images": out}, indent=1))  # the same shape for one image or many, as ml.analyze prints
    if not unread:
        return 0
    return 2 if unread == len(args.images) else 1


def cmd_convert(args) -> int:
    from ml.localization import formats

    samples = formats.load_dataset(args.src)
    dst = Path(args.dst)
    labels = list(formats.DEFAULT_LABELS) + sorted(
        {b.label for s in samples for b in s.annotation.boxes} - set(formats.DEFAULT_LABELS))
    if args.to == "coco":
        if dst.suffix != ".json":
            dst.mkdir(parents=True, exist_ok=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        formats.write_coco([s.annotation for s in samples], dst if dst.suffix == ".json" else dst / "annotations.json",
                           labels=labels)
    elif args.to == "voc":
        (dst / "Annotations").mkdir(parents=True, exist_ok=True)
        for s in samples:
            formats.write_voc(s.annotation, dst / "Annotations" / (Path(s.annotation.image).stem + ".xml"))
    else:
        (dst / "labels").mkdir(parents=True, exist_ok=True)
        (dst / "classes.txt").write_text("\n".join(labels) + "\n")
        for s in samples:
            formats.write_yolo(s.annotation, dst / "labels" / (Path(s.annotation.image).stem + ".txt"), labels=labels)
    print(f"wrote {len(samples)} annotations to {dst} ({args.to}); images are not copied")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ml.localization.classical import CONFIG_PATH

    p = argparse.ArgumentParser(prog="python -m ml.localization", description="WBC localization")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, *, data_required=True):
        sp.add_argument("--data", required=data_required, help="annotated folder (VOC, COCO or YOLO)")
        sp.add_argument("--split", default="all", choices=["all", "train", "test"],
                        help="part of the fixed split to use (default: all)")
        sp.add_argument("--threads", type=_positive(int), default=2, help="CPU threads for torch (default 2)")
        sp.add_argument("--quiet", action="store_true")

    def device(sp):
        sp.add_argument("--device", help="auto (a GPU when there is one; the default, or $LEUKOLAB_DEVICE), "
                                         "cpu, cuda or cuda:N")

    def method(sp):
        sp.add_argument("--method", choices=["classical", "deep"],
                        help="default: deep where --checkpoint is given, else classical")
        sp.add_argument("--checkpoint", help="deep: run directory (or model.pt) written by 'train'")
        sp.add_argument("--config", help="classical: parameter file (default: the packaged classical.yaml)")
        sp.add_argument("--rescale", type=_rescale, default=1.0,
                        help="multiply the trained scale (about 2 when cells look half as large as in the "
                             "training images), or 'auto': judged from the size of the cells found "
                             "(default 1)")
        sp.add_argument("--views", type=int, choices=[1, 2, 4],
                        help="deep: mirrored views averaged per field (default: the checkpoint's own)")

    t = sub.add_parser("train", help="train the deep detector")
    common(t)
    device(t)
    t.add_argument("--method", choices=["deep"], default="deep")
    t.add_argument("--out", required=True, help="run directory to write")
    t.add_argument("--epochs", type=_positive(int),
                   help="passes over the training fields (default: TrainConfig's, 120)")
    t.add_argument("--img-size", type=int, default=256,
                   help="square training crop, input pixels, a multiple of 8 (default 256)")
    t.add_argument("--scale", type=_positive(float), default=0.4, help="input pixels per image pixel (default 0.4)")
    t.add_argument("--scale-jitter", type=_positive(float), nargs=2, metavar=("LO", "HI"),
                   help="training fields are resized by a random factor from LO to HI (log-uniform), so that "
                        "cells of other sizes are found (default: the packaged setting, see "
                        "bench/localization.md)")
    t.add_argument("--batch-size", type=_positive(int), default=16)
    t.add_argument("--lr", type=_positive(float), default=3e-3)
    t.add_argument("--backbone", default="tiny", help="'tiny', 'small' or timm:<model> (default tiny)")
    t.add_argument("--pretrained", action="store_true", help="timm backbones: start from pretrained weights")
    t.add_argument("--ema", type=float, default=0.0, help="weight averaging decay, e.g. 0.998 (default off)")
    t.add_argument("--val-every", type=int, default=10, help="every Nth field validates (0: none)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, help="augmentation threads (default: none on a CPU, up to 8 on a GPU)")
    t.add_argument("--views", type=int, choices=[1, 2, 4], default=4,
                   help="mirrored views averaged at inference, kept in the checkpoint; the validation "
                        "fields choose the score threshold with them (default 4)")
    t.set_defaults(func=cmd_train)

    u = sub.add_parser("tune", help="search the classical parameters on annotated fields")
    common(u)
    u.add_argument("--config", help="starting parameters (default: built-in defaults)")
    u.add_argument("--out", required=True,
                   help=f"parameter file to write (the packaged one, used by default elsewhere, is {CONFIG_PATH})")
    u.add_argument("--trials", type=int, default=60)
    u.add_argument("--seed", type=int, default=0)
    u.add_argument("--history", help="also write every trial to this JSON file")
    u.set_defaults(func=cmd_tune)

    e = sub.add_parser("evaluate", help="metrics of a localizer on annotated fields")
    common(e)
    method(e)
    device(e)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--out", help="also write metrics.json and plots here")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("predict", help="print the boxes found in images as one JSON object, {\"images\": [...]}",
                       epilog="Exit status 1 when some images could not be read (each named on stderr and by its "
                              "entry's \"error\"; the others are done); 2 when none could be read, or on an error that stops the run.")
    method(r)
    r.add_argument("images", nargs="+")
    r.add_argument("--min-score", type=float, help="report boxes down to this score (default: trained threshold)")
    r.add_argument("--wbc-only", action="store_true", help="only white cells (default: every class found)")
    r.add_argument("--threads", type=_positive(int), default=2)
    device(r)
    r.set_defaults(func=cmd_predict)

    c = sub.add_parser("convert", help="convert annotations between VOC, COCO and YOLO")
    c.add_argument("src", help="annotated folder or COCO json")
    c.add_argument("dst", help="output folder (or .json file for COCO)")
    c.add_argument("--to", required=True, choices=["voc", "coco", "yolo"])
    c.set_defaults(func=cmd_convert)
    return p


def main(argv: list[str] | None = None) -> int:
    # before torch starts its thread pool: idle OpenMP threads yield instead of spinning, which keeps
    # a 2-thread forward pass fast when other jobs share the cores (180 ms -> 25 ms measured here)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as exc:  # AnnotationError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
