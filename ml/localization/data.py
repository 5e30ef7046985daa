"""Where the datasets live and the fixed BCCD split used by training, tuning and the benchmark.

Datasets are never copied into the repository: they are found through ``$LEUKOLAB_DATASETS`` or,
by default, ``<repo>/../shared/datasets``.

The BCCD split is deterministic by file id: the annotation files are sorted by name and every
5th one (positions 4, 9, 14, ... counting from 0) is a test field; the rest are training fields.
On the 304-field copy that gives 244 training and 60 test fields. Training holds out every
10th training field (positions 9, 19, ...) for validation (checkpoint and score threshold choice).
"""
from __future__ import annotations

import os
from pathlib import Path

from ml.localization.formats import Sample, load_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_EVERY = 5


def datasets_root() -> Path:
    """``$LEUKOLAB_DATASETS`` if set, else ``<repo>/../shared/datasets``."""
    env = os.environ.get("LEUKOLAB_DATASETS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets"


def bccd_root() -> Path:
    return datasets_root() / "bccd"


def split_samples(samples: list[Sample], part: str) -> list[Sample]:
    """The ``"train"`` or ``"test"`` part (or ``"all"``) of samples, by sorted image name."""
    ordered = sorted(samples, key=lambda s: s.image_path.name)
    if part == "all":
        return ordered
    if part == "test":
        return [s for i, s in enumerate(ordered) if i % TEST_EVERY == TEST_EVERY - 1]
    if part == "train":
        return [s for i, s in enumerate(ordered) if i % TEST_EVERY != TEST_EVERY - 1]
    raise ValueError(f"unknown split {part!r}: use 'train', 'test' or 'all'")


def load_split(root: str | os.PathLike | None = None, part: str = "all") -> list[Sample]:
    """Load a dataset folder (BCCD by default) and return one part of the fixed split."""
    return split_samples(load_dataset(root or bccd_root()), part)


def require_cells(samples: list[Sample], where: str | os.PathLike, *, part: str = "all",
                  label: str = "WBC") -> list[Sample]:
    """``samples``, or a ``ValueError`` naming ``where`` when there are none or none holds a ``label`` box
    (training, tuning or scoring on such a set would silently learn or measure nothing)."""
    if not samples:
        raise ValueError(f"{where}: no annotated fields" + (f" in the {part!r} part of the split" if part != "all" else ""))
    if not any(s.annotation.of_label(label) for s in samples):
        found = sorted({b.label for s in samples for b in s.annotation.boxes})
        raise ValueError(f"{where}: no box labelled {label} in {len(samples)} field(s) "
                         + (f"(labels found: {', '.join(found)})" if found else "(no boxes at all)"))
    return samples


def train_val_split(samples: list[Sample], every: int = 10) -> tuple[list[Sample], list[Sample]]:
    """Split training samples into fit and validation parts, deterministically by sorted name."""
    ordered = sorted(samples, key=lambda s: s.image_path.name)
    val = [s for i, s in enumerate(ordered) if i % every == every - 1]
    fit = [s for i, s in enumerate(ordered) if i % every != every - 1]
    return fit, val
