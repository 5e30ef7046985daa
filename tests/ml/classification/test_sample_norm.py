"""Normalization statistics of the sample: the trained ones blended with the sample's own."""
import numpy as np
import pytest
import torch
from torch import nn

from ml.classification.sample_norm import sample_normalized


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    net.train()
    with torch.no_grad():
        for _ in range(20):  # trained statistics of inputs around 0
            net(torch.randn(16, 3, 8, 8))
    return net.eval()


def test_the_samples_own_statistics_undo_a_shift_of_its_inputs():
    net = _net()
    x = torch.randn(32, 3, 8, 8)
    shifted = x * 2.0 + torch.tensor([2.0, -1.5, 1.0]).view(1, 3, 1, 1)  # another lab's colour and contrast
    with torch.no_grad():
        before = net(x)
        off = net(shifted)
        on_x = sample_normalized(net, [x], len(x), strength=0)(x)
        on_shifted = sample_normalized(net, [shifted], len(shifted), strength=0)(shifted)
    assert (off - before).abs().mean() > 0.1  # the trained statistics do not fit the shifted sample
    assert torch.allclose(on_x, on_shifted, atol=1e-3)  # its own statistics remove the shift
    # and the statistics are the sample's: the first layer's mean is the mean of its input
    bn = sample_normalized(net, [x[:16], x[16:]], len(x), strength=0)[1]
    with torch.no_grad():
        h = net[0](x)
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)


def test_the_trained_statistics_count_as_strength_cells_and_stay_untouched():
    net = _net()
    mean0 = net[1].running_mean.clone()
    x = torch.randn(10, 3, 8, 8) + 2.0
    with torch.no_grad():
        h_mean = net[0](x).mean((0, 2, 3))
    half = sample_normalized(net, [x], len(x), strength=10)[1]
    assert torch.allclose(half.running_mean, 0.5 * h_mean + 0.5 * mean0, atol=1e-5)
    strong = sample_normalized(net, [x], len(x), strength=1e9)
    with torch.no_grad():
        assert torch.allclose(strong(x), net(x), atol=1e-4)
    assert torch.equal(net[1].running_mean, mean0) and not net.training  # the served model is unchanged
    assert not half.training and half.momentum == net[1].momentum
    with pytest.raises(ValueError, match=">= 0"):
        sample_normalized(net, [x], len(x), strength=-1)


def test_a_counted_batch_gives_the_statistics_of_the_batch_it_repeats():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1),
                        nn.BatchNorm2d(4, affine=False), nn.ReLU(), nn.Conv2d(4, 2, 1))
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(8, 3, 8, 8))
    net.eval()
    cells = torch.randn(6, 3, 8, 8) * 1.5 + 0.5
    first, second = torch.tensor([0, 0, 0, 2, 5, 5]), torch.tensor([1, 1, 3, 4])  # two batches of a draw
    repeated = sample_normalized(net, [cells[first], cells[second]], 12, strength=4)
    counted = []
    for batch in (first, second):
        distinct, counts = torch.unique(batch, return_counts=True)
        counted.append((cells[distinct], counts))
    by_count = sample_normalized(net, counted, 12, strength=4)
    for a, b in ((repeated[1], by_count[1]), (repeated[4], by_count[4])):
        assert torch.allclose(a.running_mean, b.running_mean, atol=1e-6)
        assert torch.allclose(a.running_var, b.running_var, rtol=1e-5)
        assert int(b.num_batches_tracked) == 2 and not b.training
    with torch.no_grad():
        assert torch.allclose(repeated(cells), by_count(cells), atol=1e-5)
        assert not torch.allclose(by_count(cells), net(cells), atol=1e-3)  # the statistics did move
    assert all("forward" not in vars(m) for m in by_count.modules())  # its layers forward as usual again
    # a network with other batch-norm layers than 2-d ones gets the repeated batch itself
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5), nn.BatchNorm1d(5)).eval()
    by_count = sample_normalized(flat, counted, 12, strength=4)
    repeated = sample_normalized(flat, [cells[first], cells[second]], 12, strength=4)
    assert torch.allclose(by_count[2].running_mean, repeated[2].running_mean, atol=1e-6)
    assert torch.allclose(by_count[2].running_var, repeated[2].running_var, rtol=1e-5)


def test_a_network_without_batch_norm_is_left_as_it_is():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten())
    x = torch.randn(4, 3, 6, 6) * 3
    with torch.no_grad():
        assert torch.allclose(sample_normalized(net, [x], len(x), strength=0)(x), net(x))


def _untrained_classifier(tmp_path):
    """A saved and reloaded cbam_cnn_small of three classes, 32 px crops, random weights (seeded)."""
    from ml.classification import load_classifier
    from ml.classification.artifact import save_checkpoint
    from ml.classification.crop import CropRule
    from ml.classification.registry import create_classifier

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "best.pt", create_classifier("cbam_cnn_small", 3), architecture="cbam_cnn_small",
                    model_kwargs={}, classes=["a", "b", "c"], crop=CropRule(0.2, 32))
    return load_classifier(tmp_path / "best.pt")


def test_a_classifier_adapts_a_copy_for_one_sample(tmp_path):
    clf = _untrained_classifier(tmp_path)
    crops = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    own = clf.sample_normalized(crops, strength=0)
    assert own is not clf and own.model is not clf.model and own.classes == clf.classes
    p, q = clf.probabilities_of_crops(crops), own.probabilities_of_crops(crops)
    assert p.shape == q.shape and np.allclose(q.sum(1), 1, atol=1e-5) and not np.allclose(p, q)
    assert np.allclose(clf.probabilities_of_crops(crops), p)  # the classifier itself is unchanged


def test_a_balanced_draw_evens_out_the_sample_class_mix():
    from ml.classification.sample_norm import balanced_draw

    rng = np.random.default_rng(1)
    y = rng.choice(3, 400, p=[0.8, 0.15, 0.05])
    probs = np.eye(3)[y] * 0.99 + 0.01 / 3  # confident answers; diffuse ones leak weight to other classes
    idx = balanced_draw(probs, draws=3000)
    assert len(idx) == 3000 and idx.min() >= 0 and idx.max() < 400
    shares = np.bincount(y[idx], minlength=3) / len(idx)
    assert np.allclose(shares, 1 / 3, atol=0.04)
    assert np.array_equal(balanced_draw(probs, draws=3000), idx)  # seeded
    assert len(balanced_draw(probs[:5], draws=2)) == 5 and len(balanced_draw(np.zeros((0, 3)))) == 0


def test_a_classifier_can_take_balanced_statistics(tmp_path):
    clf = _untrained_classifier(tmp_path)
    crops = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    own = clf.sample_normalized(crops, strength=0, balanced=True)
    q = own.probabilities_of_crops(crops)
    assert q.shape == (6, 3) and np.allclose(q.sum(1), 1, atol=1e-5)
    assert clf.sample_normalized(crops[:0], strength=0, balanced=True).probabilities_of_crops(crops).shape == (6, 3)


def test_a_large_sample_lends_its_statistics_through_a_seeded_subset():
    from ml.classification.sample_norm import statistics_subset

    assert np.array_equal(statistics_subset(5, 8), np.arange(5))
    assert np.array_equal(statistics_subset(5000, None), np.arange(5000))
    idx = statistics_subset(5000, 512)
    assert len(idx) == 512 and len(np.unique(idx)) == 512 and np.all(np.diff(idx) > 0) and idx.max() < 5000
    assert np.array_equal(statistics_subset(5000, 512), idx)  # the same sample, the same statistics
    for cells in (0, -5):
        with pytest.raises(ValueError):
            statistics_subset(3, cells)


def test_a_capped_sample_keeps_its_full_weight(tmp_path):
    """Statistics from a subset of the cells, blended at the weight of the whole sample."""
    from ml.classification.sample_norm import batchnorm_layers, statistics_subset

    clf = _untrained_classifier(tmp_path)
    crops = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    crops[20:] //= 3  # two looks, so which cells are used shows in the statistics
    capped = clf.sample_normalized(crops, strength=30, max_cells=10)
    by_hand = sample_normalized(clf.model, [clf.tensor(crops[statistics_subset(40, 10)])], 40, strength=30)
    everything = clf.sample_normalized(crops, strength=30, max_cells=None)
    for a, b, c in zip(batchnorm_layers(capped.model), batchnorm_layers(by_hand), batchnorm_layers(everything.model)):
        assert torch.allclose(a.running_mean, b.running_mean, atol=1e-5)
        assert torch.allclose(a.running_var, b.running_var, atol=1e-5)
    assert not torch.allclose(batchnorm_layers(capped.model)[0].running_var, batchnorm_layers(everything.model)[0].running_var)
    same = clf.sample_normalized(crops, strength=30, max_cells=40).probabilities_of_crops(crops)
    np.testing.assert_allclose(same, everything.probabilities_of_crops(crops), atol=1e-6)


def test_a_samples_normalization_state_comes_back_as_the_same_answers(classifier_run):
    """What a slide's analysis keeps (the statistics its cells gave the network) gives a later answer
    on that slide exactly the normalized classifier's answers."""
    from ml.classification import load_classifier
    from ml.classification.data import synthetic_cells

    clf = load_classifier(classifier_run)
    cells = synthetic_cells(n_per_class=12, seed=3, classes=clf.classes)
    crops = cells.crops(clf.crop_rule.margin, clf.crop_rule.out_size)
    normalized = clf.sample_normalized(crops, 50, balanced=True)
    state = normalized.normalization_state()
    assert state and all(v.dtype.kind == "f" for v in state.values())
    again = clf.with_normalization_state(state)
    assert np.array_equal(again.network_logits(crops), normalized.network_logits(crops))
    assert not np.array_equal(clf.network_logits(crops), normalized.network_logits(crops))  # it did move
    assert np.array_equal(clf.network_logits(crops), load_classifier(classifier_run).network_logits(crops))  # untouched
    with pytest.raises(ValueError, match="not of this classifier"):
        clf.with_normalization_state({"layer.running_mean": np.zeros(3)})
