"""How much a classifier's answers on another lab's cells depend on the boxes that frame them.

The cells of a tecom-style folder (one white cell per image: its VOC box in ``Annotations/``, its class
in ``labels.csv``) are answered as ``ml.analyze`` answers them (the blood prior, the sample's own
normalization statistics at strength 1000 over a balanced mix), with the boxes of each source:
the folder's own (``expert``), the classical localizer (``classical``, at the scale ``auto`` finds, as
``ml.analyze`` runs it) and any trained deep detector given by its run directory (also ``auto``). Each
box is scaled about its centre by each ``--scales`` factor before the crop rule frames it. Prints,
per source and factor, each classifier's accuracy and macro-F1 over the five classes other labs
label, and the source's mean IoU with the folder's boxes (a cell no box of the source overlaps by
0.3 counts as wrong, as in ``evaluate --tecom-boxes localizer``). With ``--cells``, the held-out cells of
a class-per-folder set (its fixed split's test part, as ``evaluate --split test`` scores them: the model
as trained) are scored with their boxes scaled the same way, for comparison with the training lab.
``--average-scales`` also scores each classifier with its logits averaged over crops of the classical
localizer's boxes at those scales (a test-time average over framings; the sample's statistics taken
from the boxes as found), on the folder's cells and, with ``--cells``, on the held-out cells.

    python bench/cross_lab_boxes.py --checkpoint runs/default --data ../shared/datasets/tecom \\
        --sources expert classical runs/deep --scales 0.8 0.9 1 1.1 1.25 --cells ../shared/datasets/pbc
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class CachedLocalizer:
    """A localizer whose detections are kept per image (by its pixels), so that every classifier
    and factor is scored on the same boxes at the cost of one pass."""

    def __init__(self, localizer):
        self.localizer = localizer
        self.seen: dict[str, list] = {}

    def detect(self, image):
        key = hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)
        if key not in self.seen:
            self.seen[key] = self.localizer.detect(image)
        return self.seen[key]


def source_iou(localizer, data: Path) -> float:
    """Mean IoU of each cell's folder box with the source's best-matching box (0 where none)."""
    from ml.classification.data import load_tecom

    images, boxes, _, _ = load_tecom(data)
    return sum(max((b.iou(g) for b in localizer.detect(im)), default=0.0) for im, g in zip(images, boxes)) / len(boxes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", nargs="+", required=True, type=Path, help="classifier run(s) or checkpoint(s)")
    ap.add_argument("--data", required=True, type=Path, help="tecom-style folder (labels.csv, JPEGImages, Annotations)")
    ap.add_argument("--sources", nargs="+", default=["expert", "classical"],
                    help="expert, classical, or a deep detector's run directory (default: expert classical)")
    ap.add_argument("--scales", nargs="+", type=float, default=[0.8, 0.9, 1.0, 1.1, 1.25])
    ap.add_argument("--prior", default="blood", help="class prior, as ml.analyze --prior (default blood)")
    ap.add_argument("--norm", type=float, default=1000.0,
                    help="strength of the trained statistics against the sample's, as ml.analyze --norm; "
                         "negative: the trained statistics only")
    ap.add_argument("--cells", type=Path, default=None,
                    help="class-per-folder cells (e.g. PBC) whose fixed split's test part is scored at the same scales")
    ap.add_argument("--average-scales", nargs="+", type=float, default=None,
                    help="also score logits averaged over crops of the classical boxes at these scales")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if any(s <= 0 for s in args.scales + (args.average_scales or [])):
        ap.error("--scales and --average-scales must be positive")

    import torch

    from ml.classification import load_classifier
    from ml.classification.evaluate import TECOM_CLASSES, evaluate_tecom
    from ml.localization import load_localizer

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.data / "labels.csv").is_file():
        print(f"{args.data} is not a tecom-style folder (no labels.csv)", file=sys.stderr)
        return 2
    try:
        classifiers = [load_classifier(c, prior=args.prior) for c in args.checkpoint]
        sources = {}
        for s in args.sources:
            sources[s] = None if s == "expert" else CachedLocalizer(load_localizer(s, rescale="auto"))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    norm = None if args.norm < 0 else args.norm
    print(f"{args.data}: answered as ml.analyze (prior {args.prior}, sample statistics "
          f"{'off' if norm is None else f'at {norm:g}, balanced'}); accuracy / macro-F1 over {', '.join(TECOM_CLASSES)}")
    names = [Path(c).name or str(c) for c in args.checkpoint]
    print(f"{'boxes':<28}{'IoU':>6}{'scale':>7}  " + "  ".join(f"{n[:24]:>24}" for n in names))
    try:
        for s, loc in sources.items():
            iou = 1.0 if loc is None else source_iou(loc, args.data)
            for f in args.scales:
                cells = []
                for clf in classifiers:
                    r = evaluate_tecom(clf, args.data, boxes="expert" if loc is None else "localizer", localizer=loc,
                                       norm=norm, norm_balanced=norm is not None, box_scale=f)
                    cells.append(f"{r['accuracy']:.3f} / {r['macro_f1']:.3f}")
                print(f"{Path(s).name[:27]:<28}{iou:>6.3f}{f:>7.2f}  " + "  ".join(f"{c:>24}" for c in cells))
    except ValueError as e:  # e.g. a classifier without the five classes
        print(f"error: {e}", file=sys.stderr)
        return 2
    held_out = None
    if args.cells is not None:
        held_out = HeldOut(args.cells)
        try:
            for clf in classifiers:
                held_out.of(clf)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        held_out_cells(classifiers, held_out, args.scales)
    if args.average_scales:
        classical = sources.get("classical") or CachedLocalizer(load_localizer("classical", rescale="auto"))
        averaged_framings(classifiers, names, args.data, held_out, args.average_scales, norm, classical)
    return 0


class HeldOut:
    """The test part of a class-per-folder set's fixed split, read at the cache size each classifier's
    input needs (as ``evaluate --split test`` reads it)."""

    def __init__(self, folder: Path):
        self.folder, self.parts = folder, {}

    def of(self, clf):
        from ml.classification.data import cache_size_for, fixed_split, load_folder

        size = cache_size_for(clf.crop_rule.out_size, clf.crop_rule.margin)
        if size not in self.parts:
            cells = load_folder(self.folder, size=size)
            self.parts[size] = cells.subset(fixed_split(cells.names, cells.labels)[2])
        return self.parts[size]


def _as_trained(clf):
    import copy

    as_trained = copy.copy(clf)  # shares the network; only the prior differs
    as_trained.set_prior(None)
    return as_trained


def averaged_framings(classifiers, names, data: Path, held_out, scales, norm, localizer) -> None:
    """Each classifier with its logits averaged over crops of each box at ``scales``: the folder's
    cells as ``ml.analyze`` answers them (``localizer``'s boxes matched as in ``evaluate_tecom``), and the
    held-out cells as trained. With ``scales`` [1] this reproduces the rows at scale 1."""
    import numpy as np

    from ml.classification.data import load_tecom
    from ml.classification.evaluate import TECOM_CLASSES, localized_boxes, report_from_logits

    images, expert, labels, _ = load_tecom(data)
    boxes, found = localized_boxes(images, expert, localizer)
    y = np.array([TECOM_CLASSES.index(c) for c in labels])
    print(f"logits averaged over the boxes x{' x'.join(f'{f:g}' for f in scales)} (classical boxes):")
    for name, clf in zip(names, classifiers):
        crops = [np.concatenate([clf.crops(im, [b.scaled(f)]) for im, b in zip(images, boxes)]) for f in scales]
        as_found = crops[scales.index(1.0)] if 1.0 in scales else np.concatenate(
            [clf.crops(im, [b]) for im, b in zip(images, boxes)])
        adapted = clf if norm is None else clf.sample_normalized(as_found[found], norm, balanced=True)
        keep = [clf.classes.index(c) for c in TECOM_CLASSES]
        logits = np.mean([adapted.scaled_logits(adapted.logits_of_crops(c)) for c in crops], 0)[:, keep]
        r = report_from_logits(logits, y, TECOM_CLASSES, clf.temperature)
        accuracy = float((np.where(found, logits.argmax(1), -1) == y).mean())
        row = f"{accuracy:.3f} / {r['macro_f1']:.3f}"
        if held_out is not None:
            test = held_out.of(clf)
            as_trained = _as_trained(clf)
            index = {c: i for i, c in enumerate(clf.classes)}
            yh = np.array([index[test.classes[k]] for k in test.labels])
            views = [np.stack([as_trained.crops(test.images[i], [test.box(i).scaled(f)])[0]
                               for i in range(len(test))]) for f in scales]
            lh = np.mean([as_trained.scaled_logits(as_trained.logits_of_crops(v)) for v in views], 0)
            rh = report_from_logits(lh, yh, list(clf.classes), clf.temperature)
            row += f"   held-out {rh['accuracy']:.3f} / {rh['macro_f1']:.3f}"
        print(f"  {name[:26]:<26}  tecom {row}")


def held_out_cells(classifiers, held_out: HeldOut, scales) -> None:
    """Accuracy / macro-F1 of each classifier on the held-out cells with the boxes scaled."""
    import numpy as np

    from ml.classification.evaluate import evaluate_cells

    print(f"the class folders' test part ({len(held_out.of(classifiers[0]))} cells), as trained:")
    for f in scales:
        row = []
        for clf in classifiers:
            test = held_out.of(clf)
            scaled = test.subset(np.arange(len(test)))
            scaled.boxes = np.stack([test.box(i).scaled(f).as_list() for i in range(len(test))]).astype(np.float32)
            r = evaluate_cells(_as_trained(clf), scaled)
            row.append(f"{r['accuracy']:.3f} / {r['macro_f1']:.3f}")
        print(f"{'held-out cells':<28}{'':>6}{f:>7.2f}  " + "  ".join(f"{c:>24}" for c in row))


if __name__ == "__main__":
    sys.exit(main())
