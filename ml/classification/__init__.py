"""White-cell classification: registry, crop rule, training, evaluation, serving, heatmaps.

Public API (used by ``ml.analyze``, the worker and ``make run``)::

    clf = load_classifier(run_dir_or_checkpoint)   # .classes .architecture .version .metrics
    preds = clf.classify(rgb_image, boxes)          # list[Prediction(label, probabilities, confidence)]
    overlays = clf.heatmap_overlays(rgb_image, boxes)
    model = create_classifier("cbam_cnn_small", num_classes=8)
    run_dir = train_default(data_dir, out_dir, time_budget_s=480, progress=cb)
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ml.classification.artifact import Classifier, Prediction, load_classifier
from ml.classification.crop import CropRule, cell_crop
from ml.classification.registry import create_classifier, list_classifiers, register_classifier

# The served default: small, fast on two CPU cores, strongly augmented for other labs, each crop
# white-balanced on its own background (another lab's lamp, camera and stain base), with a second
# opinion from the nucleus's shape (morphometry.py; README "A second opinion from the nucleus's shape").
# 100 epochs: a machine that cannot finish them within train_default's budget anneals on the budget
# (README "The served default's epochs").
DEFAULT_CONFIG = dict(backbone="cbam_cnn_small", img_size=64, margin=0.2, batch=64, lr=3e-3, epochs=100,
                      mixup=0.0, balance=True, augment=1.0, stain_norm="background", shape_opinion=True)


# held-out cells of each class the default recipe's accuracy under corruptions is measured on
ROBUSTNESS_PER_CLASS = 40


def train_default(data_dir: Path | None, out_dir: Path, *, time_budget_s: float = 480,
                  progress: Callable[[float, str], None] | None = None, extra: list[Path] | None = None) -> Path:
    """Train the product's default classifier within ``time_budget_s`` and return its run dir.

    Uses the class-per-folder images in ``data_dir`` (PBC by default) with the benchmark's fixed
    split: trains on its training part, fits the temperature on validation, and records the
    held-out test (and, when present, tecom cross-lab) scores, the accuracy under corruptions and the
    figures (:func:`score_run`). Without
    data, trains on generated synthetic cells so a model still exists, and says so.

    ``extra``: more class-per-folder sets (e.g. a lab's reviewed cells, as the webapp exports them), all
    of them trained on, in ``data_dir``'s classes; validation and test stay ``data_dir``'s, so that the
    figures of runs with and without them compare.
    """
    from ml.classification.data import datasets_root, fixed_split, load_folder, synthetic_cells
    from ml.classification.train import TrainConfig, fit

    t0 = time.time()
    report = progress or (lambda f, m: None)
    out_dir = Path(out_dir)
    if data_dir is None:
        candidate = datasets_root() / "pbc"
        data_dir = candidate if candidate.is_dir() else None
    if data_dir is not None and Path(data_dir).is_dir():
        report(0.0, f"reading {data_dir}")
        cells = load_folder(Path(data_dir), progress=lambda f, m: report(0.1 * f, m))
        source = str(data_dir)
    else:
        cells = synthetic_cells(n_per_class=80)
        source = "synthetic (no data found: this model knows generated cells, not real blood)"
    tr, va, te = fixed_split(cells.names, cells.labels)
    train = cells.subset(tr)
    added = {}
    for folder in extra or []:
        more = load_folder(Path(folder), use_cache=False)  # read once, often from a temporary folder
        train = train.with_cells_of(more)
        added[Path(folder).name] = added.get(Path(folder).name, 0) + len(more)  # by name: a temporary path says nothing
    budget = max(10.0, time_budget_s - (time.time() - t0) - 60.0)  # keep time to evaluate and score (score_run)
    cfg = TrainConfig(**DEFAULT_CONFIG, time_budget_s=budget)
    run = fit(cfg, train, cells.subset(va), out_dir, progress=lambda f, m: report(0.1 + 0.85 * f, m),
              extra_metrics={"data": source, **({"extra_data": added} if added else {})})
    report(0.95, "evaluating")
    score_run(run, cells.subset(te), other_lab=not source.startswith("synthetic"),
              progress=lambda f, m: report(0.95 + 0.05 * f, m))
    report(1.0, f"default classifier ready in {time.time() - t0:.0f} s")
    return run


def score_run(run: Path, test_cells, *, other_lab: bool = True, device: str | None = None,
              progress: Callable[[float, str], None] | None = None) -> dict:
    """Score a trained run as the model registry shows it, into its checkpoints' metrics and ``metrics.json``:
    the held-out ``test_cells`` (a ``CellSet``) with each class's F1; where ``other_lab`` and the tecom
    folder is at hand and the model knows its classes, the other lab's cells with expert boxes and as
    ``ml.analyze`` answers; the accuracy under corruptions of the first ``ROBUSTNESS_PER_CLASS`` held-out
    cells of each class (each version measured on the same ones, in seconds); and the run's figures
    (``evaluate.RUN_FIGURES``). Returns the held-out report."""
    import numpy as np

    from ml.classification.data import TECOM_CLASSES, datasets_root
    from ml.classification.evaluate import (evaluate_cells, evaluate_tecom, evaluate_tecom_as_analyzed, robustness_of,
                                            write_run_figures)

    report = progress or (lambda f, m: None)
    clf = load_classifier(run, device=device)
    test = evaluate_cells(clf, test_cells)
    scores = {"test": {**_brief(test), "f1": _f1(test)}}
    tecom, tecom_report, analyzed = datasets_root() / "tecom", None, None
    if other_lab and tecom.is_dir() and set(TECOM_CLASSES) <= set(clf.classes):
        report(0.2, "scoring another lab's cells")
        tecom_report = evaluate_tecom(clf, tecom)
        scores["tecom"] = {**_brief(tecom_report), "f1": _f1(tecom_report)}
        analyzed = evaluate_tecom_as_analyzed(clf, tecom)
        scores["tecom_analyze"] = {**_brief(analyzed), "f1": _f1(analyzed)}
    report(0.4, "measuring accuracy under corruptions")
    some = np.sort(np.concatenate([np.flatnonzero(test_cells.labels == k)[:ROBUSTNESS_PER_CLASS]
                                   for k in np.unique(test_cells.labels)]))
    scores["robustness"] = {k: _rounded(v) for k, v in robustness_of(clf, test_cells.subset(some)).items()}
    scores["robustness_n"] = len(some)
    _update_metrics(run, scores)
    report(0.9, "drawing the figures")
    write_run_figures(run, test, robustness=scores["robustness"], other_lab=tecom_report, other_lab_analyzed=analyzed)
    return test


def _brief(r: dict) -> dict:
    keys = ("n", "accuracy", "macro_f1", "weighted_f1", "ece", "ece_raw", "restricted_to", "prior", "boxes",
            "any_class", "norm", "norm_balanced")
    return {k: r[k] for k in keys if k in r}


def _f1(r: dict) -> dict:
    """Each class's F1 in a report, where the class occurs."""
    return {c: round(s["f1"], 4) for c, s in r["per_class"].items() if s["support"]}


def _rounded(v):
    return [round(x, 4) for x in v] if isinstance(v, list) else round(v, 4)


def _update_metrics(run: Path, extra: dict) -> None:
    """Add ``extra`` to the metrics of both checkpoints of ``run`` (and to ``metrics.json``)."""
    import json

    import torch

    for name in ("best.pt", "last.pt"):
        p = Path(run) / name
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        ckpt["metrics"] = {**ckpt.get("metrics", {}), **extra}
        torch.save(ckpt, p)
    (Path(run) / "metrics.json").write_text(json.dumps(load_classifier(run).metrics, indent=2))


__all__ = ["Classifier", "CropRule", "Prediction", "cell_crop", "create_classifier", "list_classifiers",
           "load_classifier", "register_classifier", "score_run", "train_default"]
