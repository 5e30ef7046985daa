import numpy as np
import pytest
import torch

from ml.classification import create_classifier, list_classifiers
from ml.classification.heatmaps import cell_heatmaps, overlay

MODELS = list_classifiers()


def test_registry_lists_the_five_issue_models():
    for name in ("resnet18", "resnet50_gn", "resnetv2_50x1_bit", "cbam_cnn", "conv_attention"):
        assert name in MODELS


def test_unknown_name_gives_a_clear_error_listing_known_names():
    with pytest.raises(ValueError, match="known: .*cbam_cnn.*resnet18"):
        create_classifier("no_such_net", 3)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_runs_forward_backward_and_gives_a_crop_sized_heatmap(name):
    torch.manual_seed(0)
    model = create_classifier(name, num_classes=5)
    x = torch.randn(2, 3, 48, 48)
    model.train()
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    maps = cell_heatmaps(model, x)
    assert maps.shape == (2, 48, 48)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    crop = np.zeros((48, 48, 3), np.uint8)
    assert overlay(crop, maps[0]).shape == (48, 48, 3)


@pytest.mark.parametrize("name", ["cbam_cnn", "conv_attention"])
def test_attention_models_expose_spatial_maps(name):
    model = create_classifier(name, num_classes=4).eval()
    model(torch.randn(3, 3, 64, 64))
    maps = model.attention_maps()
    assert maps and maps[-1].shape[0] == 3 and maps[-1].dim() == 4
