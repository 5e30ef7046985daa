"""Whole-field analysis: localize every white cell, then classify each one.

The worker and the ``python -m ml.analyze`` command both call :func:`analyze_image`.
"""
from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ml.boxes import Box
from ml.jsonio import dumps

# Per-sample class-frequency adaptation (ml.classification.priors.adapt): how ``python -m ml.analyze``
# groups cells by default, and how many cells the prior counts for.
ADAPT_DEFAULT = "off"
ADAPT_STRENGTH = 100.0
# The network's normalization statistics moved towards those of the sample's cells, drawn to a
# balanced class mix (ml.classification.sample_norm), the trained statistics counting as this many
# cells: a 200-cell slide weighs its own by 200 / 1200. "off": the trained statistics alone.
NORM_DEFAULT = "1000"
# Cells classified (and explained) at a time, so that a scan's thousands report their progress; each
# cell's answer is its own, whatever the cells beside it.
CLASSIFY_CHUNK = 256
# The longest file name, in bytes, that the common file systems take (ext4, XFS, APFS): heatmap
# names are cut to it.
NAME_MAX = 255


@dataclass
class CellResult:
    box: Box
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None
    heatmap_overlay: np.ndarray | None = None  # HxWx3 uint8: the cell crop with its heatmap blended in


def analyze_image(
    image: np.ndarray,
    *,
    localizer,
    classifier=None,
    heatmaps: bool = False,
    progress: Callable[[float], None] | None = None,
    rescale: float | str | None = None,
    boxes: list[Box] | None = None,
) -> list[CellResult]:
    """Find and (when a classifier is given) classify the white cells of one RGB image.

    ``rescale`` tells the localizer the image's magnification relative to its training images
    (a factor, or ``"auto"``; None: the localizer's own setting), see :mod:`ml.localization.scale`.
    ``boxes``: the cells already found in this image (the localizer is then not asked)."""
    def report(f: float) -> None:
        if progress:
            progress(f)

    # the progress bar: finding the cells (unless they are given), classifying them, explaining them
    find = 0.0 if boxes is not None else (0.5 if classifier is not None else 1.0)
    explain = 0.3 * (1.0 - find) if heatmaps else 0.0
    if boxes is None:
        boxes = localizer.detect(image, progress=lambda f: report(find * f), rescale=rescale)
    cells = [CellResult(box=b) for b in boxes]
    if classifier is not None and boxes:
        chunks = range(0, len(boxes), CLASSIFY_CHUNK)
        predictions = []
        for i in chunks:
            predictions += classifier.classify(image, boxes[i:i + CLASSIFY_CHUNK])
            report(find + (1.0 - find - explain) * min(1.0, (i + CLASSIFY_CHUNK) / len(boxes)))
        for cell, pred in zip(cells, predictions):
            cell.label = pred.label
            cell.probabilities = dict(pred.probabilities)
            cell.confidence = float(pred.confidence)
        if heatmaps:
            labels = [p.label for p in predictions]  # Grad-CAM explains the class given
            for i in chunks:
                part = slice(i, i + CLASSIFY_CHUNK)
                for cell, overlay in zip(cells[part], classifier.heatmap_overlays(image, boxes[part], labels=labels[part])):
                    cell.heatmap_overlay = overlay
                report(1.0 - explain + explain * min(1.0, (i + CLASSIFY_CHUNK) / len(boxes)))
    report(1.0)
    return cells


def adapt_to_sample(cell_lists: list[list[CellResult]], classifier, strength: float) -> dict[str, float] | None:
    """Re-weight the classified cells of one sample (a slide: all its images) towards the sample's
    own class frequencies (:func:`ml.classification.priors.adapt`, ``strength`` pseudo-cells of the
    classifier's prior); updates the cells in place and returns the estimated frequencies (None
    when no cell was classified)."""
    cells = [c for cl in cell_lists for c in cl if c.probabilities]
    if not cells:
        return None
    classes = classifier.classes
    probs = np.array([[c.probabilities[k] for k in classes] for c in cells], np.float64)
    new, freq = classifier.adapt(probs, strength)
    for cell, p in zip(cells, new):
        k = int(p.argmax())
        cell.probabilities = {c: float(v) for c, v in zip(classes, p)}
        cell.label, cell.confidence = classes[k], float(p[k])
    return freq


def parse_cells(value: str | float | None) -> float | None:
    """A strength counted in cells (a number >= 0; ``--norm``, the worker's settings), or None for
    ``off``."""
    if value is None or str(value).strip().lower() in {"off", "no", "false", "none"}:
        return None
    try:
        cells = float(value)
    except ValueError:
        cells = -1.0
    if not cells >= 0:
        raise ValueError(f"must be a number of cells >= 0 or 'off', got {value!r}")
    return cells


def classifier_for_sample(classifier, crops: list[np.ndarray], strength: float | None):
    """``classifier`` with its network's normalization statistics moved towards those of one
    sample's cells (``crops``: per image, as ``classifier.crops`` cuts them), drawn to a balanced
    class mix, the trained statistics counting as ``strength`` cells
    (:meth:`ml.classification.Classifier.sample_normalized`). Unchanged when ``strength`` is None
    or the sample holds no cell."""
    crops = [c for c in crops if len(c)]
    if classifier is None or strength is None or not crops:
        return classifier
    return classifier.sample_normalized(np.concatenate(crops), strength, balanced=True)


def cells_as_json(cells: list[CellResult]) -> list[dict]:
    """The cells of one image in the ``ml.analyze --json`` format (boxes in original pixels)."""
    return [
        {"box": [round(v, 1) for v in c.box.as_list()], "class": c.label,
         "probabilities": {k: round(v, 5) for k, v in c.probabilities.items()},
         "confidence": None if c.confidence is None else round(c.confidence, 5)}
        for c in cells
    ]


def heatmap_names(stems: list[str], counts: list[int]) -> list[list[str]]:
    """The heatmap file names of each image's cells (``stems``: the images' file names without
    suffix, ``counts``: their numbers of cells), ``{stem}_cell{i:03d}.png``, no two alike within
    one run, also when compared without case (as macOS and Windows compare them), so that no file
    overwrites another. An image whose stem another image shares has its position in front
    (``001_{stem}``); one whose names would still meet names already given takes ``_2``, ``_3``...
    after its stem. Stems are cut so that each name fits in NAME_MAX bytes."""
    shared = Counter(stems)
    used: set[str] = set()
    out = []
    for k, (stem, n) in enumerate(zip(stems, counts)):
        base = stem if shared[stem] == 1 else f"{k:03d}_{stem}"
        longest = len(os.fsencode(f"_cell{max(n - 1, 0):03d}.png"))
        for attempt in itertools.count(1):
            suffix = "" if attempt == 1 else f"_{attempt}"
            head = base
            while head and len(os.fsencode(head + suffix)) + longest > NAME_MAX:
                head = head[:-1]
            names = [f"{head}{suffix}_cell{i:03d}.png" for i in range(n)]
            if used.isdisjoint(name.lower() for name in names):
                break
        used.update(name.lower() for name in names)
        out.append(names)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m ml.analyze --localizer classical --classifier RUN IMAGE... --json``."""
    import argparse
    import sys
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m ml.analyze", description="Find and classify the white cells of smear images.",
                                epilog="Exit status: 0 when every image was analyzed; 1 when some could not be read "
                                       "(each named on stderr and by its entry's \"error\"; the others are "
                                       "analyzed); 2 when none could be read, or on an error that stops the run.")
    p.add_argument("images", nargs="+", type=Path, help="smear images")
    p.add_argument("--localizer", default="classical", help="'classical' or a localizer run directory")
    p.add_argument("--classifier", type=Path, help="classifier run directory or checkpoint")
    p.add_argument("--rescale", default="auto",
                   help="magnification of the images relative to the localizer's training fields: a factor "
                        "(about 2 when cells look half as large as in BCCD fields) or 'auto' (default): "
                        "judged from the size of the cells found")
    p.add_argument("--prior", default="blood",
                   help="expected class frequencies of the cells: blood (a normal peripheral-blood differential, "
                        "default), uniform (the classifier as trained on balanced classes) or a JSON file "
                        "{class: weight}; see ml.classification.priors")
    p.add_argument("--adapt", default=ADAPT_DEFAULT, choices=["all", "image", "off"],
                   help="estimate the class frequencies of the sample from the cells themselves, starting from "
                        "--prior: 'all' (the images of this call are one sample, e.g. the fields of one slide), "
                        "'image' (each image is a sample) or 'off'; see ml.classification.priors.adapt")
    p.add_argument("--adapt-strength", type=float, default=ADAPT_STRENGTH, metavar="CELLS",
                   help=f"weight of --prior against the sample's cells, in cells (default {ADAPT_STRENGTH:g})")
    p.add_argument("--norm", default=NORM_DEFAULT, metavar="CELLS|off",
                   help="move the classifier's normalization statistics towards those of the cells of this call "
                        "(one sample, e.g. the fields of one slide), the trained ones counting as this many cells "
                        f"(default {NORM_DEFAULT}); 'off' keeps the trained ones; see ml.classification.sample_norm")
    p.add_argument("--framings", type=float, nargs="+", metavar="SCALE",
                   help="answer each cell over crops of its box at these scales, logits averaged (e.g. 0.9 1 1.1; "
                        "default: the classifier's own; see ml/classification/framings.py)")
    p.add_argument("--device", help="where the networks run: auto (a GPU when there is one; the default, or "
                                    "$LEUKOLAB_DEVICE), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--heatmaps", type=Path, metavar="DIR", help="write each cell's heatmap overlay as PNG here")
    args = p.parse_args(argv)
    try:
        if args.heatmaps is not None:
            if args.classifier is None:
                raise ValueError("--heatmaps needs --classifier")
            if args.heatmaps.exists() and not args.heatmaps.is_dir():
                raise ValueError(f"--heatmaps {args.heatmaps}: not a folder")
            try:
                args.heatmaps.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"--heatmaps {args.heatmaps}: {exc.strerror or exc}") from exc
        from ml.imageio import is_grey, load_image
        from ml.localization import load_localizer

        from ml.localization.scale import parse_rescale

        localizer = load_localizer(args.localizer, rescale=parse_rescale(args.rescale), device=args.device)
        classifier = None
        if args.classifier is not None:
            from ml.classification import load_classifier

            classifier = load_classifier(args.classifier, prior=args.prior, device=args.device)
        if args.framings:
            if classifier is None:
                raise ValueError("--framings needs --classifier")
            from ml.classification.artifact import check_framings

            classifier.framings = check_framings(args.framings)
        if not 0 <= args.adapt_strength < float("inf"):
            raise ValueError(f"--adapt-strength must be a number >= 0, got {args.adapt_strength}")
        try:
            norm = parse_cells(args.norm)
        except ValueError as exc:
            raise ValueError(f"--norm: {exc}") from exc

        # An image that cannot be read is reported (on stderr, and as its entry's "error") and the
        # others are analyzed: one broken file does not cost a run over a slide's fields.
        unreadable: dict[int, str] = {}
        # A grey image is analyzed, and said to be one (on stderr, and as its entry's "warning"): the
        # cells are found by the stain's colours and classified in colour.
        grey: dict[int, str] = {}

        def read(i: int, path: Path) -> np.ndarray | None:
            if i in unreadable:
                return None
            try:
                image = load_image(path)
            except (MemoryError, KeyboardInterrupt):
                raise
            except Exception as exc:  # Pillow raises several types for files it cannot decode
                unreadable[i] = f"cannot read image {path}: {exc}"
                print(f"error: {unreadable[i]}", file=sys.stderr)
                return None
            if i not in grey and is_grey(image):
                grey[i] = ("a grey image (no colour): white cells are found by the stain's colours and classified "
                           "in colour, so few or none are found and their classes are unreliable")
                print(f"warning: {path}: {grey[i]}", file=sys.stderr)
            return image

        found: dict[int, list[Box]] = {}
        if classifier is not None and norm is not None:
            # The sample's cells first: the classifier is normalized on all of them, then classifies them.
            crops = []
            for i, path in enumerate(args.images):
                image = read(i, path)
                if image is None:
                    continue
                found[i] = localizer.detect(image)
                crops.append(classifier.crops(image, found[i]))
                del image  # one image in memory at a time: a scan is read again below
            classifier = classifier_for_sample(classifier, crops, norm)
        results = []
        for i, path in enumerate(args.images):
            image = read(i, path)
            if image is None:
                continue
            cells = analyze_image(image, localizer=localizer, classifier=classifier, heatmaps=bool(args.heatmaps),
                                  boxes=found.get(i))
            del image
            if classifier is not None and args.adapt == "image":
                adapt_to_sample([cells], classifier, args.adapt_strength)
            results.append((i, path, cells))
        if classifier is not None and args.adapt == "all":
            adapt_to_sample([cells for _, _, cells in results], classifier, args.adapt_strength)
        listed = {i: {"path": str(args.images[i]), "error": message} for i, message in unreadable.items()}
        names = heatmap_names([path.stem for _, path, _ in results], [len(cells) for _, _, cells in results])
        for (i, path, cells), image_names in zip(results, names):
            entries = cells_as_json(cells)
            if args.heatmaps is not None:
                from ml.classification.heatmaps import save_png

                for c, entry, name in zip(cells, entries, image_names):
                    if c.heatmap_overlay is not None:
                        save_png(args.heatmaps / name, c.heatmap_overlay)
                        entry["heatmap"] = str(args.heatmaps / name)
            listed[i] = {"path": str(path), "cells": entries, **({"warning": grey[i]} if i in grey else {})}
        out = [listed[i] for i in sorted(listed)]  # in the order given
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(dumps({"images": out}))
    else:
        for im in out:
            if "error" in im:
                print(f"{im['path']}: not read")
                continue
            counts: dict[str, int] = {}
            for c in im["cells"]:
                counts[str(c["class"])] = counts.get(str(c["class"]), 0) + 1
            print(f"{im['path']}: {len(im['cells'])} cells {counts}")
    if not unreadable:
        return 0
    return 2 if len(unreadable) == len(args.images) else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
