"""White-cell localization: find every WBC in a smear image.

Public API (used by ``ml.analyze`` and the worker)::

    localizer = load_localizer("classical")      # or a deep-detector run directory / checkpoint
    boxes = localizer.detect(rgb_array)          # list[ml.boxes.Box], pixels of the original image
"""
from __future__ import annotations

import os
from pathlib import Path

from ml.localization.classical import ClassicalLocalizer


def load_localizer(spec: str | os.PathLike = "classical"):
    """Build a localizer from ``"classical"`` or the path of a trained deep-detector run."""
    if str(spec) == "classical":
        return ClassicalLocalizer()
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"unknown localizer {spec!r}: use 'classical' or the path of a trained run")
    raise ValueError(f"{path} is not a localizer run this version can read")


__all__ = ["ClassicalLocalizer", "load_localizer"]
