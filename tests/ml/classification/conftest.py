"""Shared fixtures: real PBC cells when ``../shared/datasets/pbc`` exists, generated cells otherwise."""
from __future__ import annotations

import numpy as np
import pytest

from ml.classification.data import datasets_root, load_folder, synthetic_cells


@pytest.fixture(scope="session")
def small_cells():
    """A few cells per class: ``(CellSet, is_real)``."""
    pbc = datasets_root() / "pbc"
    if pbc.is_dir():
        return load_folder(pbc, per_class=45), True
    return synthetic_cells(n_per_class=45, seed=1), False


@pytest.fixture(scope="session")
def saved_classifier(tmp_path_factory):
    """An (untrained) small classifier saved as a run directory."""
    import torch

    from ml.classification.artifact import save_checkpoint
    from ml.classification.crop import CropRule
    from ml.classification.data import PBC_CLASSES
    from ml.classification.registry import create_classifier

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    model = create_classifier("cbam_cnn_small", len(PBC_CLASSES))
    # Random BN statistics so outputs differ between inputs.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    save_checkpoint(run / "best.pt", model, architecture="cbam_cnn_small", model_kwargs={}, classes=PBC_CLASSES,
                    crop=CropRule(0.2, 48), temperature=1.5, metrics={"note": "untrained"})
    return run


@pytest.fixture
def smear():
    """A synthetic smear field: light background with two purple cells at known places."""
    import cv2

    img = np.full((240, 320, 3), (230, 220, 225), np.uint8)
    cv2.circle(img, (80, 90), 22, (200, 170, 210), -1)
    cv2.circle(img, (80, 90), 12, (90, 40, 130), -1)
    cv2.circle(img, (230, 160), 25, (200, 170, 210), -1)
    cv2.circle(img, (230, 160), 14, (90, 40, 130), -1)
    return img


@pytest.fixture
def torch_threads():
    """For tests of benchmarks that set the process's torch threads: given back after the test, pass or fail."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def second_lab(tmp_path, smear):
    """A tecom-style folder (labels.csv, JPEGImages, VOC Annotations) of 10 single-cell images."""
    from PIL import Image

    root = tmp_path / "lab"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    rows = ["image,category"]
    classes = ["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"]
    for i in range(10):
        name = f"{i:03d}"
        Image.fromarray(np.roll(smear, 3 * i, axis=1)).save(root / "JPEGImages" / f"{name}.png")
        x0 = 80 - 22 + 3 * i
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><object><name>WBC</name><bndbox><xmin>{x0}</xmin><ymin>68</ymin>"
            f"<xmax>{x0 + 44}</xmax><ymax>112</ymax></bndbox></object></annotation>")
        rows.append(f"{name},{classes[i % 5]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
