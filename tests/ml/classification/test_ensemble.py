"""Ensembles: saved as one classifier, answering the mean of their members' calibrated probabilities."""
import json

import numpy as np
import pytest
import torch

from ml.boxes import Box
from ml.classification import load_classifier
from ml.classification.__main__ import main
from ml.classification.artifact import save_checkpoint
from ml.classification.crop import CropRule
from ml.classification.data import PBC_CLASSES
from ml.classification.ensemble import build_ensemble
from ml.classification.metrics import softmax
from ml.classification.registry import create_classifier


def _member(tmp_path, name, seed, temperature, crop=CropRule(0.2, 48), backbone="cbam_cnn_small"):
    torch.manual_seed(seed)
    model = create_classifier(backbone, len(PBC_CLASSES))
    for m in model.modules():  # statistics that make the members answer differently
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
    run = tmp_path / name
    save_checkpoint(run / "best.pt", model, architecture=backbone, model_kwargs={}, classes=PBC_CLASSES,
                    crop=crop, stain_norm="background", temperature=temperature)
    return run


@pytest.fixture()
def crops():
    return np.random.default_rng(0).integers(0, 255, (6, 48, 48, 3)).astype(np.uint8)


def test_an_ensemble_answers_the_mean_of_its_members_calibrated_probabilities(tmp_path, crops):
    runs = [_member(tmp_path, "a", 0, 1.5), _member(tmp_path, "b", 1, 0.7), _member(tmp_path, "c", 2, 1.0)]
    ens = load_classifier(build_ensemble(runs, tmp_path / "abc"))
    assert ens.architecture == "ensemble" and ens.classes == list(PBC_CLASSES)
    assert ens.crop_rule == CropRule(0.2, 48) and ens.stain_norm == "background"
    members = [load_classifier(r) for r in runs]
    expected = np.mean([m.probabilities_of_crops(crops) for m in members], axis=0)
    got = ens.probabilities_of_crops(crops)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # it is not just one of them
    assert all(np.abs(got - m.probabilities_of_crops(crops)).max() > 1e-3 for m in members)
    # the prior applies to the ensemble's answer as to any classifier's
    ens.set_prior("blood")
    assert not np.allclose(ens.probabilities_of_crops(crops), got)


def test_an_ensemble_serves_heatmaps_and_the_samples_own_statistics(tmp_path, crops):
    ens = load_classifier(build_ensemble([_member(tmp_path, "a", 0, 1.0), _member(tmp_path, "b", 1, 1.0)],
                                         tmp_path / "ab"))
    image = np.full((200, 200, 3), 230, np.uint8)
    image[80:120, 80:120] = (120, 60, 150)
    maps = ens.heatmaps(image, [Box(60, 60, 140, 140), Box(10, 10, 50, 50)])
    assert len(maps) == 2 and maps[0].shape == (48, 48)
    assert all(np.isfinite(m).all() and 0 <= m.min() and m.max() <= 1 for m in maps)
    normalized = ens.sample_normalized(crops, strength=2, balanced=True)
    assert not np.allclose(normalized.probabilities_of_crops(crops), ens.probabilities_of_crops(crops))
    np.testing.assert_allclose(ens.sample_normalized(crops, strength=1e9).probabilities_of_crops(crops),
                               ens.probabilities_of_crops(crops), atol=1e-5)


def test_members_that_disagree_on_what_inference_needs_are_refused(tmp_path):
    a = _member(tmp_path, "a", 0, 1.0)
    b = _member(tmp_path, "b", 1, 1.0, crop=CropRule(0.3, 48))
    with pytest.raises(ValueError, match="differs .* in crop"):
        build_ensemble([a, b], tmp_path / "ab")
    with pytest.raises(ValueError, match="at least two"):
        build_ensemble([a], tmp_path / "a-alone")
    ab = build_ensemble([a, _member(tmp_path, "c", 2, 1.0)], tmp_path / "ac")
    with pytest.raises(ValueError, match="cannot be a member"):
        build_ensemble([ab, a], tmp_path / "nested")


def test_the_ensemble_command_fits_a_temperature_and_records_test_scores(tmp_path, small_cells, capsys):
    cells, _ = small_cells
    data = tmp_path / "cells"
    import cv2

    for i in range(len(cells)):  # a class-per-folder copy of the fixture's cells
        d = data / cells.classes[cells.labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i}.png"), np.ascontiguousarray(cells.images[i][..., ::-1]))
    runs = [_member(tmp_path, "a", 0, 1.0), _member(tmp_path, "b", 1, 2.0)]
    assert main(["ensemble", *map(str, runs), "--out", str(tmp_path / "ab"), "--data", str(data)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["test"]["n"] > 0 and 0 <= out["test"]["accuracy"] <= 1
    assert out["temperature"] > 0
    assert load_classifier(tmp_path / "ab").temperature == pytest.approx(out["temperature"])
    assert main(["ensemble", str(runs[0]), "--out", str(tmp_path / "x")]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "t"), "--backbone", "ensemble"]) == 2
    assert "made of trained classifiers" in capsys.readouterr().err
