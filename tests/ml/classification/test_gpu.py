"""The classifier on a GPU (mixed precision, channels-last): trained there, served the same on
either device. Skipped on machines without a GPU."""
import json

import numpy as np
import pytest
import torch

from ml.boxes import Box

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def test_models_load_on_the_device_asked_for(saved_classifier):
    from ml.classification import load_classifier

    clf = load_classifier(saved_classifier, device="cpu")
    assert clf.device == torch.device("cpu")
    assert next(clf.model.parameters()).device == torch.device("cpu")


@gpu
def test_a_classifier_trained_on_the_gpu_serves_the_same_on_cpu_and_gpu(small_cells, tmp_path, smear):
    from ml.classification import load_classifier
    from ml.classification.data import fixed_split
    from ml.classification.evaluate import evaluate_cells
    from ml.classification.train import TrainConfig, fit

    cells, _ = small_cells
    tr, va, te = fixed_split(cells.names, cells.labels, val=0.0, test=0.3)
    cfg = TrainConfig(backbone="cbam_cnn_small", epochs=12, batch=32, lr=4e-3, img_size=32, augment=0.3,
                      device="cuda", tta=2)
    run = fit(cfg, cells.subset(tr), cells.subset(te), tmp_path / "run")
    log = json.loads((run / "log.json").read_text())
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    on_gpu = load_classifier(run, device="cuda")
    on_cpu = load_classifier(run, device="cpu")
    assert on_gpu.metrics["device"].startswith("cuda") and on_gpu.metrics["mixed_precision"] is True
    assert evaluate_cells(on_gpu, cells.subset(te))["accuracy"] > 3 / len(cells.classes)
    boxes = [Box(55, 65, 105, 115), Box(200, 130, 260, 190)]
    a, b = on_gpu.classify(smear, boxes), on_cpu.classify(smear, boxes)
    for pa, pb in zip(a, b):  # the GPU's convolutions round differently (TF32), not more than that
        assert pa.probabilities == pytest.approx(pb.probabilities, abs=1e-2)
    crops = on_cpu.crops(smear, boxes)  # the two cells as one sample with its own statistics
    ga = on_gpu.sample_normalized(crops, 10, balanced=True).probabilities_of_crops(crops)
    gb = on_cpu.sample_normalized(crops, 10, balanced=True).probabilities_of_crops(crops)
    assert ga == pytest.approx(gb, abs=1e-2)
    maps = on_gpu.heatmaps(smear, boxes)  # Grad-CAM on the GPU, maps back as arrays
    assert len(maps) == 2 and maps[0].shape == (32, 32) and np.isfinite(maps[0]).all()
