"""Fixtures for the localization tests: real BCCD fields when ``../shared/datasets`` is present,
generated smears otherwise, so the suite runs anywhere. No Django, no database."""
from __future__ import annotations

import numpy as np
import pytest

from ml.localization.data import bccd_root
from ml.localization.formats import Annotation, Sample, write_voc


def bccd_available() -> bool:
    root = bccd_root()
    return (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir()


@pytest.fixture(scope="session")
def smear_samples(tmp_path_factory) -> list[Sample]:
    """A dozen annotated fields: BCCD test-split fields, or generated ones written as a VOC folder."""
    if bccd_available():
        from ml.localization.data import load_split

        return load_split(part="test")[:12]
    from PIL import Image

    from ml.localization.synthetic import synthetic_field

    root = tmp_path_factory.mktemp("smears")
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    out = []
    for i in range(12):
        img, boxes = synthetic_field(seed=i, n_wbc=1 + i % 2)
        name = f"field_{i:03d}.png"
        Image.fromarray(img).save(root / "JPEGImages" / name)
        ann = Annotation(name, img.shape[1], img.shape[0], boxes)
        write_voc(ann, root / "Annotations" / f"field_{i:03d}.xml")
        out.append(Sample(root / "JPEGImages" / name, ann))
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)
