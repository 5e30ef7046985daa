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


def test_mixstyle_mixes_feature_statistics_in_training_only():
    from ml.classification.models.cbam import MixStyle

    torch.manual_seed(0)
    x = torch.randn(4, 8, 6, 6) * torch.arange(1, 5).view(4, 1, 1, 1) + torch.arange(4).view(4, 1, 1, 1)
    layer = MixStyle(p=1.0, alpha=0.1)
    mixed = layer.train()(x)
    assert mixed.shape == x.shape
    # each cell keeps its normalized content; only its per-channel mean and spread change
    z = lambda t: (t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True)
    torch.testing.assert_close(z(mixed), z(x), atol=1e-3, rtol=1e-3)
    assert not torch.allclose(mixed.mean((2, 3)), x.mean((2, 3)), atol=1e-3)
    assert torch.equal(layer.eval()(x), x)
    # the same weights give the same predictions with or without it once trained
    a = create_classifier("cbam_cnn", 3, mixstyle=0.5)
    b = create_classifier("cbam_cnn", 3)
    b.load_state_dict(a.state_dict())
    img = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(a.eval()(img), b.eval()(img))


def test_ibn_normalizes_half_the_channels_per_cell():
    from ml.classification.models.cbam import IBN

    torch.manual_seed(0)
    layer = IBN(8).eval()
    x = torch.randn(3, 8, 6, 6)
    # a cell brighter and more contrasted in every channel: the instance half does not see it
    y, y2 = layer(x), layer(x * 3 + 2)
    torch.testing.assert_close(y2[:, :4], y[:, :4], atol=1e-3, rtol=1e-3)
    assert not torch.allclose(y2[:, 4:], y[:, 4:], atol=1e-2)
    # in the network: the stem and the first norm of every stage but the last; trains and explains
    model = create_classifier("cbam_cnn_small", 4, ibn=True)
    ibns = [m for m in model.modules() if isinstance(m, IBN)]
    assert len(ibns) == 4 and isinstance(model.blocks[-1].bn1, torch.nn.BatchNorm2d)
    out = model.train()(torch.randn(4, 3, 48, 48))
    out.sum().backward()
    assert out.shape == (4, 4) and model.stem[1].inorm.weight.grad is not None
    model.eval()(torch.randn(2, 3, 48, 48))
    assert model.attention_maps()
