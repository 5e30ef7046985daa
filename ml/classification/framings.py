"""A trained classifier saved again to answer each cell over several framings of its box.

One network's answer can flip when the cell's box is a tenth larger or smaller (another lab's
localizer, a looser annotation): the crop rule scales the cell to the input from its box. A
classifier with framings ``(0.9, 1, 1.1)`` cuts each cell at the three box scales and averages the
logits, which steadies the answer at the cost of one network pass per framing. Most cells do not
need it: with ``below`` set, only the cells answered with less confidence than that with the box
as found are cut again (a fifth of PBC's held-out cells at 0.9 for the served default). The
sample's normalization statistics and the heatmaps keep the box as found.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ml.classification.artifact import _resolve, check_framing_below, check_framings, load_classifier, save_checkpoint


BELOW = 0.9  # the default bound: cells answered at 90 % or more keep their first answer


def add_framings(run, framings: Sequence[float], data, out_dir, *, below: float | None = BELOW,
                 progress: Callable[[float, str], None] | None = None) -> Path:
    """Save the classifier of ``run`` again with ``framings`` (for the cells answered with less
    confidence than ``below`` with the box as found; None: every cell), its temperature refitted
    on the validation cells of ``data`` (the class-per-folder images it was trained on, split as
    the benchmark's fixed split) answered that way, and its held-out test scores recorded. Writes
    ``out_dir/best.pt`` and returns ``out_dir``."""
    from ml.classification.data import cache_size_for, fixed_split, load_folder
    from ml.classification.evaluate import evaluate_cells, labelled_logits
    from ml.classification.metrics import classification_report, ece, fit_temperature, softmax

    report = progress or (lambda f, m: None)
    framings, below = check_framings(framings), check_framing_below(below)
    path = _resolve(Path(run))
    clf = load_classifier(path, device="cpu")
    rule = clf.crop_rule
    cells = load_folder(Path(data), size=cache_size_for(rule.out_size, rule.margin), progress=report)
    _, va, te = fixed_split(cells.names, cells.labels, seed=int(clf.metrics.get("split_seed", 0)))  # as trained
    before = evaluate_cells(clf, cells.subset(te))
    clf.framings, clf.framing_below = framings, below
    report(0.6, f"fitting the temperature on the validation cells over framings {', '.join(f'{f:g}' for f in framings)}")
    logits, y = labelled_logits(clf, cells.subset(va))
    clf.temperature = fit_temperature(logits, y)
    report(0.8, "scoring the held-out cells")
    test = evaluate_cells(clf, cells.subset(te))
    vr = classification_report(y, logits.argmax(1), clf.classes)
    keys = ("n", "accuracy", "macro_f1", "weighted_f1", "ece")
    metrics = {**clf.metrics, "temperature": clf.temperature, "val_accuracy": vr["accuracy"],
               "val_macro_f1": vr["macro_f1"], "val_ece": ece(softmax(logits, clf.temperature), y),
               "test": {k: test[k] for k in keys}, "test_one_framing": {k: before[k] for k in keys},
               "framed_share_test": framed_share(clf, cells.subset(te)),
               "framings_added_to": str(path)}
    out = Path(out_dir)
    save_checkpoint(out / "best.pt", clf.model, architecture=clf.architecture, model_kwargs=clf.model_kwargs,
                    classes=clf.classes, crop=rule, stain_norm=clf.stain_norm, temperature=clf.temperature,
                    metrics=metrics, mean=clf.mean, std=clf.std, trained_prior=clf.trained_prior, tta=clf.tta,
                    shape_opinion=clf.shape_opinion.to_state() if clf.shape_opinion is not None else None,
                    framings=framings, framing_below=below)
    report(1.0, f"held-out accuracy {before['accuracy']:.3f} with the box as found, "
                f"{test['accuracy']:.3f} over the framings")
    return out


def framed_share(clf, cells) -> float:
    """The share of ``cells`` that ``clf`` answers again over its framings (all of them when it has
    no confidence bound; none when it has one framing)."""
    from ml.classification.evaluate import labelled_crops

    if clf.framings == (1.0,) or not len(cells):
        return 0.0
    crops, _ = labelled_crops(clf, cells)
    return len(clf.framed_cells(clf.logits_of_crops(crops))) / len(cells)
