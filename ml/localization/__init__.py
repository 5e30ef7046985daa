"""White-cell localization: find every WBC in a smear image.

Public API (used by ``ml.analyze`` and the worker)::

    localizer = load_localizer("classical")      # or a deep-detector run directory / model.pt / "deep:PATH"
    boxes = localizer.detect(rgb_array)          # list[ml.boxes.Box], pixels of the original image
    everything = localizer.detect(rgb_array, labels=None)   # deep: also "RBC" and "Platelets" boxes

``detect`` returns white cells only unless ``labels=None`` is passed, so callers that classify
every box (``ml.analyze``) need no change when the deep detector is chosen.

Two methods a user can choose between and compare:

* ``classical`` (:mod:`ml.localization.classical`): OpenCV nucleus segmentation with a box
  calibration fitted on annotated fields; parameters in ``classical.yaml`` (``tune`` rewrites them).
* ``deep`` (:mod:`ml.localization.deep`): a centre-heatmap detector (WBC, RBC, platelets) trained
  from boxes with ``python -m ml.localization train``.

Both tile large images internally (bounded memory, ``progress`` callback from 0 to 1). Annotation
import/export (Pascal VOC, COCO, YOLO) lives in :mod:`ml.localization.formats`; metrics in
:mod:`ml.localization.metrics`. Data and the fixed BCCD split: :mod:`ml.localization.data`.
The command line: ``python -m ml.localization {train,tune,evaluate,predict,convert} --help``.
"""
from __future__ import annotations

import os
from pathlib import Path

from ml.localization.classical import ClassicalConfig, ClassicalLocalizer


def load_localizer(spec: str | os.PathLike = "classical", **options):
    """Build a localizer from ``"classical"``, ``"classical:CONFIG.yaml"``, or a trained deep-detector
    run (its directory, its ``model.pt``, or ``"deep:PATH"``). ``options`` go to the deep localizer
    (``score_threshold``, ``rescale``, ``device``); the classical one takes ``rescale`` (and runs on
    the CPU whatever ``device`` says). ``rescale`` is a factor for another magnification or ``"auto"``
    (see :mod:`ml.localization.scale`); ``device`` see :func:`ml.device.resolve_device`."""
    text = str(spec)
    if text == "classical" or text.startswith("classical:"):
        device = options.pop("device", None)  # OpenCV runs on the CPU; a bad name still gets its error
        if device is not None:
            from ml.device import resolve_device

            resolve_device(device)
        unknown = set(options) - {"rescale"}
        if unknown:
            raise ValueError(f"the classical localizer takes no {', '.join(sorted(unknown))}")
        config = ClassicalConfig.load(text.removeprefix("classical:")) if text != "classical" else None
        return ClassicalLocalizer(config, **options)
    path = Path(text.removeprefix("deep:"))
    if not path.exists():
        raise ValueError(f"unknown localizer {text!r}: use 'classical' or the path of a trained run")
    if path.is_dir() and not (path / "model.pt").exists():
        raise ValueError(f"{path} is not a localizer run this version can read (no model.pt)")
    from ml.localization.deep import DeepLocalizer

    return DeepLocalizer(path, **options)


def train_default(data_dir, out, *, time_budget_s=None, progress=None, epochs=None, **options):
    """Train the default deep localizer (see :func:`ml.localization.train.train_default`)."""
    from ml.localization.train import train_default as _train_default

    return _train_default(data_dir, out, time_budget_s=time_budget_s, progress=progress, epochs=epochs, **options)


__all__ = ["ClassicalConfig", "ClassicalLocalizer", "load_localizer", "train_default"]
