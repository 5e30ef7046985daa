"""Evaluating a saved classifier: held-out cells, the tecom second lab, and the report's PNGs."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from ml.boxes import Box
from ml.classification.artifact import Classifier
from ml.classification.data import CellSet, TECOM_CLASSES, load_tecom
from ml.classification.metrics import (abstention, classification_report, confusion_matrix, per_class, reliability,
                                       softmax)


def report_from_logits(logits: np.ndarray, y: np.ndarray, classes: list[str], temperature: float,
                       threshold: float | None = None) -> dict:
    probs = softmax(logits, temperature)
    r = classification_report(y, probs.argmax(1), classes)
    rel = reliability(probs, y)
    r["ece"] = rel["ece"]
    r["ece_raw"] = reliability(softmax(logits), y)["ece"]
    r["temperature"] = float(temperature)
    r["reliability"] = rel
    if threshold is not None:
        r.update(abstention(probs, y, threshold))
    return r


def model_labels(clf: Classifier, cells: CellSet) -> np.ndarray:
    """The cells' labels as indices of ``clf.classes`` (by name); a ``ValueError`` when the data hold
    a class the model does not know."""
    index = {c: i for i, c in enumerate(clf.classes)}
    missing = sorted(set(cells.classes) - set(index))
    if missing:
        raise ValueError(f"classes {missing} of the data are unknown to the model ({clf.classes})")
    return np.array([index[cells.classes[k]] for k in cells.labels])


def labelled_crops(clf: Classifier, cells: CellSet) -> tuple[np.ndarray, np.ndarray]:
    """The cells' crops as ``clf`` sees them and their labels as in :func:`model_labels`."""
    y = model_labels(clf, cells)
    crops = np.stack([clf.crops(cells.images[i], [cells.box(i)])[0] for i in range(len(cells))])
    return crops, y


def labelled_logits(clf: Classifier, cells: CellSet) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's logits of the cells as it serves them (over its framings, with any shape
    opinion; before the prior) and their labels as in :func:`labelled_crops`."""
    crops, y = labelled_crops(clf, cells)
    return clf.framed_logits(crops, clf.cut_each(cells.images, [cells.box(i) for i in range(len(cells))])), y


def evaluate_cells(clf: Classifier, cells: CellSet, threshold: float | None = None) -> dict:
    """Scores of ``clf`` on cells whose labels are among the model's classes (by name), answered as
    the classifier serves them (over its framings)."""
    logits, y = labelled_logits(clf, cells)
    r = report_from_logits(clf.scaled_logits(logits), y, clf.classes, clf.temperature, threshold)
    r["prior"] = clf.prior_name
    return r


def robustness_of(clf: Classifier, cells: CellSet) -> dict:
    """Accuracy of ``clf`` on ``cells`` under each corruption of :mod:`robustness` at its three
    severities (``robustness_table``'s layout), the crops stain-normalized as the model serves them."""
    from ml.classification.robustness import robustness_table
    from ml.classification.stain import normalize

    y = model_labels(clf, cells)
    crops = cells.crops(clf.crop_rule.margin, clf.crop_rule.out_size)  # corrupted before the stain is normalized
    return robustness_table(
        lambda c: clf.probabilities_of_crops(np.stack([normalize(x, clf.stain_norm) for x in c])).argmax(1), crops, y)


def evaluate_tecom_as_analyzed(clf: Classifier, tecom_dir: Path) -> dict:
    """Tecom as ``ml.analyze`` answers by default: the classical localizer's boxes, the
    peripheral-blood prior and the normalization statistics of the sample (its 300 cells) at
    ``ml.analyze``'s default strength. ``clf`` itself is left as it was."""
    from ml.analyze import NORM_DEFAULT, parse_cells

    as_analyzed = copy.copy(clf)  # shares the network; only the prior differs
    as_analyzed.set_prior("blood")
    norm = parse_cells(NORM_DEFAULT)
    return evaluate_tecom(as_analyzed, tecom_dir, boxes="localizer", norm=norm, norm_balanced=norm is not None)


def localized_boxes(images: list[np.ndarray], expert: list[Box], localizer) -> tuple[list[Box], np.ndarray]:
    """Each image's box as ``localizer`` finds it (the one nearest the expert box), and whether it was
    found: where no box overlaps the expert one by IoU 0.3, the expert box stands in and ``found`` is
    False (the cell counts as missed)."""
    use, found = [], np.ones(len(images), bool)
    for i, (im, gt) in enumerate(zip(images, expert)):
        best = max(localizer.detect(im), key=gt.iou, default=None)
        if best is None or best.iou(gt) < 0.3:
            found[i] = False
            use.append(gt)
        else:
            use.append(best)
    return use, found


def evaluate_tecom(clf: Classifier, tecom_dir: Path, *, restrict: bool = True, boxes: str = "expert",
                   localizer=None, threshold: float | None = None, adapt: float | None = None,
                   norm: float | None = None, norm_balanced: bool = False, box_scale: float = 1.0) -> dict:
    """Cross-lab accuracy on tecom (validation only: nothing here may feed training or tuning).

    ``restrict``: the argmax is taken over the five WBC classes tecom labels (basophil,
    eosinophil, lymphocyte, monocyte, neutrophil); otherwise any other answer counts as wrong.
    ``boxes``: ``expert`` crops the annotated WBC box; ``localizer`` uses the localizer's box
    nearest the expert one, as ``ml.analyze`` would (a cell it misses counts as wrong).
    ``adapt``: the 300 cells are one sample whose class frequencies are estimated from the cells
    (:func:`priors.adapt` with this strength), as ``ml.analyze --adapt all`` does over its images.
    ``norm``: the network's normalization statistics are moved towards those of the cells found
    (:mod:`sample_norm`, the trained ones counting as this many cells); ``norm_balanced``: over the
    cells resampled to a balanced class mix. ``box_scale``: every box (expert or the localizer's) is
    scaled about its centre by this factor before the crop rule frames it (how much the answers
    depend on the box: ``bench/cross_lab_boxes.py``); a localizer's box is matched to the expert
    one before scaling.
    """
    if box_scale <= 0:
        raise ValueError(f"box_scale must be positive, got {box_scale}")
    images, gt_boxes, labels, _ = load_tecom(Path(tecom_dir))
    keep = [clf.classes.index(c) for c in TECOM_CLASSES if c in clf.classes]
    if len(keep) < len(TECOM_CLASSES):
        raise ValueError(f"the model lacks tecom classes: {sorted(set(TECOM_CLASSES) - set(clf.classes))}")
    found = np.ones(len(images), bool)
    if boxes == "localizer":
        from ml.localization import load_localizer

        localizer = localizer or load_localizer("classical", rescale="auto")  # as ml.analyze does
        use, found = localized_boxes(images, gt_boxes, localizer)
    elif boxes == "expert":
        use = gt_boxes
    else:
        raise ValueError(f"unknown box source {boxes!r}; known: expert, localizer")
    if box_scale != 1.0:
        use = [b.scaled(box_scale) for b in use]
    crops = np.concatenate([clf.crops(im, [b]) for im, b in zip(images, use)])
    if norm is not None:  # the sample's statistics from the boxes as found, as ml.analyze takes them
        clf = clf.sample_normalized(crops[found], norm, balanced=norm_balanced)
    logits = clf.scaled_logits(clf.framed_logits(crops, clf.cut_each(images, use)))
    freq = None
    if adapt is not None:
        # ml.analyze adapts over the cells it found; the temperature-scaled log-probabilities stand
        # in for the logits (their softmax at the model's temperature gives the adapted probabilities)
        probs, freq = clf.adapt(softmax(logits[found], clf.temperature), adapt)
        logits = logits.copy()
        logits[found] = clf.temperature * np.log(np.clip(probs, 1e-12, None))
    any_class = _any_class_scores(logits.argmax(1), found, list(clf.classes), labels)
    if restrict:
        classes = [clf.classes[k] for k in keep]
        logits = logits[:, keep]
    else:
        classes = list(clf.classes)
    y = np.array([classes.index(c) for c in labels])
    r = report_from_logits(logits, y, classes, clf.temperature, threshold)
    if boxes == "localizer":
        pred = softmax(logits).argmax(1)
        pred[~found] = -1
        r["accuracy"] = float((pred == y).mean())
        r["localized_fraction"] = float(found.mean())
    r["any_class"] = any_class
    r["restricted_to"] = classes if restrict else None
    r["prior"] = clf.prior_name
    r["boxes"] = boxes
    r["adapt"] = adapt
    r["norm"] = norm
    r["norm_balanced"] = bool(norm is not None and norm_balanced)
    if freq is not None:
        r["sample_frequencies"] = freq
    return r


def _any_class_scores(pred: np.ndarray, found: np.ndarray, classes: list[str], labels: list[str]) -> dict:
    """Accuracy and macro-F1 over tecom's five classes when the answer may be any of the model's
    classes, as ``ml.analyze`` answers: an answer outside the five (ig, erythroblast, platelet) or a
    cell not found is wrong."""
    other = len(TECOM_CLASSES)
    answer = np.array([TECOM_CLASSES.index(classes[k]) if classes[k] in TECOM_CLASSES else other for k in pred])
    answer[~found] = other
    y = np.array([TECOM_CLASSES.index(c) for c in labels])
    cm = confusion_matrix(y, answer, other + 1)
    f1 = per_class(cm)[2][:other]
    present = (cm[:other].sum(1) > 0) | (cm[:, :other].sum(0) > 0)
    return {"accuracy": float((answer == y).mean()), "macro_f1": float(f1[present].mean()),
            "other_answers": int(((answer == other) & found).sum())}


# -- figures -----------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(report: dict, path: Path) -> None:
    plt = _plt()
    cm = np.asarray(report["confusion_matrix"], float)
    cmn = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    classes = report["classes"]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(cmn, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{cmn[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if cmn[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(report: dict, path: Path) -> None:
    plt = _plt()
    rel = report["reliability"]
    edges = np.asarray(rel["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(centres, rel["accuracy"], width=edges[1] - edges[0], edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "r--", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {rel['ece']:.3f} (T = {report.get('temperature', 1):.2f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(log_path: Path, path: Path) -> bool:
    if not Path(log_path).exists():
        return False
    try:
        log = json.loads(Path(log_path).read_text())
    except (OSError, ValueError) as exc:  # a log cut short: the curves are left out, the scores stand
        import logging

        logging.getLogger(__name__).warning("%s: cannot be read (%s); no training curves", log_path, exc)
        return False
    if not isinstance(log, list) or not log or not all(isinstance(e, dict) and "epoch" in e for e in log):
        return False
    plt = _plt()
    ep = [e["epoch"] for e in log]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy", "macro_f1")):
        for split in ("train", "val"):
            k = f"{split}_{key}"
            if k in log[0]:
                ax.plot(ep, [e[k] for e in log], label=split)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# the figures a training run keeps beside its checkpoints (the model registry shows them)
RUN_FIGURES = {"confusion.png": "Confusion matrix, held-out cells",
               "confusion_other_lab.png": "Confusion matrix, another lab's cells (expert boxes)",
               "confusion_other_lab_analyzed.png": "Confusion matrix, another lab's cells as slides are answered "
                                                   "(cells found by the localizer, blood prior, the sample's statistics)",
               "curves.png": "Training curves",
               "reliability.png": "Reliability, held-out cells",
               "robustness.png": "Accuracy under corruptions, held-out cells"}


def write_run_figures(run_dir: Path, test: dict, *, robustness: dict | None = None,
                      other_lab: dict | None = None, other_lab_analyzed: dict | None = None) -> list[Path]:
    """The run's figures (:data:`RUN_FIGURES`) in ``run_dir``: from the held-out report ``test``, the
    ``log.json`` of training, a :func:`robustness_of` table and reports on another lab's cells, with
    expert boxes (``other_lab``) and as ``ml.analyze`` answers (``other_lab_analyzed``)."""
    from ml.classification.robustness import plot_table

    run_dir = Path(run_dir)
    plot_confusion(test, run_dir / "confusion.png")
    plot_reliability(test, run_dir / "reliability.png")
    written = [run_dir / "confusion.png", run_dir / "reliability.png"]
    if plot_curves(run_dir / "log.json", run_dir / "curves.png"):
        written.append(run_dir / "curves.png")
    if robustness is not None:
        plot_table(robustness, run_dir / "robustness.png")
        written.append(run_dir / "robustness.png")
    for report, name in ((other_lab, "confusion_other_lab.png"), (other_lab_analyzed, "confusion_other_lab_analyzed.png")):
        if report is not None:
            plot_confusion(report, run_dir / name)
            written.append(run_dir / name)
    return written
