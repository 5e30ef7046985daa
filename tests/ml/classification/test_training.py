import json

import numpy as np
import torch
import pytest

from ml.classification import load_classifier
from ml.classification.data import fixed_split
from ml.classification.evaluate import evaluate_cells
from ml.classification.train import TrainConfig, fit


@pytest.fixture(scope="module")
def trained_run(small_cells, tmp_path_factory):
    cells, _ = small_cells
    tr, va, te = fixed_split(cells.names, cells.labels, val=0.0, test=0.3)
    out = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(backbone="cbam_cnn_small", epochs=12, batch=32, lr=4e-3, img_size=32, augment=0.3,
                      time_budget_s=90)
    run = fit(cfg, cells.subset(tr), cells.subset(te), out)
    return run, cells.subset(te)


def test_short_training_beats_chance_by_a_wide_margin(trained_run):
    run, test = trained_run
    r = evaluate_cells(load_classifier(run), test)
    chance = 1 / len(test.classes)
    assert r["accuracy"] > 3 * chance, r["accuracy"]


def test_run_directory_has_log_and_checkpoints(trained_run):
    run, _ = trained_run
    log = json.loads((run / "log.json").read_text())
    assert log and {"train_loss", "train_accuracy", "train_macro_f1", "val_loss", "val_accuracy",
                    "val_macro_f1"} <= set(log[0])
    assert (run / "best.pt").exists() and (run / "last.pt").exists()
    clf = load_classifier(run)
    assert clf.temperature > 0 and "val_ece" in clf.metrics


def test_saved_model_reloads_and_predicts_the_same(saved_classifier, smear):
    from ml.boxes import Box

    boxes = [Box(55, 65, 105, 115), Box(200, 130, 260, 190)]
    a = load_classifier(saved_classifier).classify(smear, boxes)
    b = load_classifier(saved_classifier / "best.pt").classify(smear, boxes)
    assert [p.label for p in a] == [p.label for p in b]
    for pa, pb in zip(a, b):
        assert pa.probabilities == pytest.approx(pb.probabilities, abs=1e-6)
        assert sum(pa.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert pa.confidence == pytest.approx(max(pa.probabilities.values()))


def test_a_blood_prior_moves_probability_towards_common_cells(saved_classifier, smear):
    """Bayes' rule with a normal peripheral-blood differential: the ratio of the neutrophil to the
    eosinophil probability grows by exactly the ratio of their priors (0.58 / 0.03)."""
    from ml.boxes import Box

    boxes = [Box(55, 65, 105, 115)]
    plain = load_classifier(saved_classifier).classify(smear, boxes)[0].probabilities
    blood = load_classifier(saved_classifier, prior="blood").classify(smear, boxes)[0].probabilities
    assert sum(blood.values()) == pytest.approx(1.0, abs=1e-5)
    ratio = (blood["neutrophil"] / blood["eosinophil"]) / (plain["neutrophil"] / plain["eosinophil"])
    assert ratio == pytest.approx(0.58 / 0.03, rel=1e-3)


def test_artifact_carries_what_inference_needs(saved_classifier):
    import torch

    ckpt = torch.load(saved_classifier / "best.pt", weights_only=True)
    for key in ("classes", "input_size", "mean", "std", "crop", "architecture", "version", "stain_norm",
                "temperature"):
        assert key in ckpt
    clf = load_classifier(saved_classifier)
    assert clf.crop_rule.out_size == 48 and clf.architecture == "cbam_cnn_small" and clf.version


def test_loading_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "nothing")


def test_heatmap_overlays_one_per_cell(saved_classifier, smear):
    from ml.boxes import Box

    clf = load_classifier(saved_classifier)
    overlays = clf.heatmap_overlays(smear, [Box(55, 65, 105, 115), Box(200, 130, 260, 190)])
    assert len(overlays) == 2 and all(o.shape == (48, 48, 3) and o.dtype == np.uint8 for o in overlays)


def test_train_cli_rejects_bad_input_without_traceback(tmp_path, capsys):
    from ml.classification.__main__ import main

    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--backbone", "nope"]) == 2


def test_a_data_set_smaller_than_one_batch_still_trains(tmp_path):
    from ml.classification import load_classifier
    from ml.classification.data import synthetic_cells
    from ml.classification.train import TrainConfig, fit

    cells = synthetic_cells(n_per_class=5, classes=["lymphocyte", "neutrophil"])
    run = fit(TrainConfig(backbone="cbam_cnn_small", img_size=32, batch=64, epochs=2), cells, cells, tmp_path / "run")
    clf = load_classifier(run)
    assert (run / "best.pt").exists() and clf.classes == ["lymphocyte", "neutrophil"]


def test_the_packaged_training_configs_are_valid():
    from pathlib import Path

    import yaml

    from ml.classification.registry import list_classifiers
    from ml.classification.train import TrainConfig

    configs = sorted((Path(__file__).parents[3] / "ml" / "classification" / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = TrainConfig(**yaml.safe_load(path.read_text()))
        assert cfg.backbone in list_classifiers()


@pytest.mark.parametrize("random_conv", [0.0, 0.5])
def test_augmented_batches_do_not_depend_on_the_number_of_threads(small_cells, random_conv):
    from ml.classification.train import AugmentedCrops, EpochBatches

    cells, _ = small_cells
    cfg = TrainConfig(img_size=32, seed=3, random_conv=random_conv)
    ds = AugmentedCrops(cells, cfg)
    order = np.random.default_rng(0).permutation(len(cells))[:40]
    serial = list(EpochBatches(ds, order, batch=8, epoch=2, workers=0))
    threaded = list(EpochBatches(ds, order, batch=8, epoch=2, workers=3))
    assert len(serial) == len(threaded) == 5
    for (xs, ys), (xt, yt) in zip(serial, threaded):
        assert torch.equal(xs, xt) and torch.equal(ys, yt)
    other_epoch = next(iter(EpochBatches(ds, order, batch=8, epoch=3, workers=0)))[0]
    assert not torch.equal(serial[0][0], other_epoch)
    if random_conv:  # the same crops without random convolutions differ in some of them, not in all
        plain = next(iter(EpochBatches(AugmentedCrops(cells, TrainConfig(img_size=32, seed=3)), order, batch=8,
                                       epoch=2, workers=0)))[0]
        differs = (plain != serial[0][0]).flatten(1).any(1)
        assert 0 < differs.sum() < 8


def test_the_cache_keeps_a_larger_input_at_full_resolution(tmp_path, monkeypatch):
    from ml.classification.data import CACHE_SIZE, cache_size_for, load_folder, synthetic_cells

    assert cache_size_for(48) == cache_size_for(64) == CACHE_SIZE
    for size in (80, 96, 128):  # the rule's window holds at least the model's input in pixels
        assert cache_size_for(size) * 1.4 / 2.0 >= size and cache_size_for(size) % 16 == 0
    monkeypatch.setenv("LEUKOLAB_CACHE", str(tmp_path / "cache"))
    cells = synthetic_cells(n_per_class=2, classes=["a", "b"])
    import cv2

    for i, name in enumerate(cells.names):
        (tmp_path / "data" / name.split("/")[0]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "data" / f"{name}.png"), cv2.resize(cells.images[i], (336, 336)))
    small, large = (load_folder(tmp_path / "data", size=s) for s in (CACHE_SIZE, 144))
    assert small.images.shape[1:] == (CACHE_SIZE, CACHE_SIZE, 3) and large.images.shape[1:] == (144, 144, 3)
    np.testing.assert_allclose(large.boxes * CACHE_SIZE / 144, small.boxes, atol=0.5)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one cache file per size


def test_test_time_views_make_predictions_invariant_to_rotation_and_mirroring(saved_classifier, smear):
    """With all eight right-angle rotations and mirrors averaged, a cell turned or mirrored on the
    slide gets the same probabilities; with one view it does not (the untrained model is not
    invariant), so the test can tell."""
    from ml.boxes import Box
    from ml.classification.artifact import dihedral_logits

    clf = load_classifier(saved_classifier, device="cpu")  # exact arithmetic: the GPU's rounds differently
    crop = clf.crops(smear, [Box(50, 60, 110, 120)])
    turned = np.ascontiguousarray(np.rot90(crop, 1, axes=(1, 2)))
    mirrored = np.ascontiguousarray(crop[:, :, ::-1])
    assert not np.allclose(clf.logits_of_crops(crop), clf.logits_of_crops(turned), atol=1e-4)
    clf.tta = 8
    for other in (turned, mirrored):
        np.testing.assert_allclose(clf.logits_of_crops(crop), clf.logits_of_crops(other), atol=1e-4)
    x = clf.tensor(crop)
    with torch.inference_mode():
        two = dihedral_logits(clf.model, x, 2)
        expected = (clf.model(x) + clf.model(torch.flip(x, dims=(3,)))) / 2
    np.testing.assert_allclose(two.numpy(), expected.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="views"):
        dihedral_logits(clf.model, x, 3)


def test_weight_averaging_and_test_time_views_are_kept_in_the_run(tmp_path):
    from ml.classification.data import synthetic_cells

    cells = synthetic_cells(n_per_class=12, classes=["lymphocyte", "neutrophil", "monocyte"])
    tr, va, _ = fixed_split(cells.names, cells.labels, val=0.3, test=0.0)
    cfg = TrainConfig(backbone="cbam_cnn_small", img_size=32, batch=8, epochs=2, ema=0.9, tta=4)
    run = fit(cfg, cells.subset(tr), cells.subset(va), tmp_path / "run")
    log = json.loads((run / "log.json").read_text())
    assert {"val_accuracy_raw", "val_macro_f1_raw"} <= set(log[-1])
    averaged, raw = load_classifier(run / "last.pt"), load_classifier(run / "raw.pt")
    assert averaged.tta == raw.tta == 4
    a = dict(averaged.model.state_dict())
    b = dict(raw.model.state_dict())
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_gradcam_explains_the_class_given_not_the_networks_own(trained_run):
    """With a prior that overrules the network, the heatmap follows the answer shown to the user."""
    from ml.classification.heatmaps import cell_heatmaps, overlay

    run, test = trained_run
    clf = load_classifier(run)
    image, box = test.images[0], test.box(0)
    crops = clf.crops(image, [box])
    x = clf.tensor(crops)
    own = int(clf.logits_of_crops(crops)[0].argmax())
    maps = [cell_heatmaps(clf.model, x, "gradcam", target=[k])[0] for k in range(len(clf.classes))]
    given = next(k for k in range(len(clf.classes)) if k != own and not np.allclose(maps[k], maps[own]))
    clf.set_prior({c: (1e6 if i == given else 1.0) for i, c in enumerate(clf.classes)})
    assert clf.classify(image, [box])[0].label == clf.classes[given]
    np.testing.assert_allclose(clf.heatmaps(image, [box])[0], maps[given], atol=1e-6)
    labelled = clf.heatmap_overlays(image, [box], labels=[clf.classes[own]])[0]
    np.testing.assert_array_equal(labelled, overlay(crops[0], maps[own]))


def test_bfloat16_training_on_a_cpu_that_computes_it_natively(tmp_path):
    from ml.classification.data import synthetic_cells
    from ml.classification.train import native_cpu_bf16

    cells = synthetic_cells(n_per_class=12, classes=["lymphocyte", "neutrophil", "monocyte"])
    tr, va, _ = fixed_split(cells.names, cells.labels, val=0.3, test=0.0)
    cfg = TrainConfig(backbone="cbam_cnn_small", img_size=32, batch=8, epochs=2, cpu_bf16=True, device="cpu")
    run = fit(cfg, cells.subset(tr), cells.subset(va), tmp_path / "run")
    clf = load_classifier(run / "last.pt")
    metrics = clf.metrics
    # emulated bfloat16 is slower than float32, so only a CPU with native bfloat16 takes it
    assert metrics["precision"] == ("bfloat16" if native_cpu_bf16() else "float32")
    assert metrics["mixed_precision"] is native_cpu_bf16()
    # the weights stay float32 (autocast computes in bfloat16, the optimizer steps in float32)
    assert all(p.dtype == torch.float32 for p in clf.model.parameters())
    assert np.isfinite(json.loads((run / "log.json").read_text())[-1]["train_loss"])


def test_cutmix_pastes_a_rectangle_of_the_partner_and_weights_the_label_by_its_area():
    from ml.classification.train import cutmix_batch

    x = torch.stack([torch.full((3, 20, 30), float(i)) for i in range(4)])
    perm = torch.tensor([1, 2, 3, 0])
    lams = []
    for seed in range(20):
        mixed, lam = cutmix_batch(x, perm, 0.6, np.random.default_rng(seed))
        for i in range(4):
            own = (mixed[i, 0] == i).float().mean().item()
            partner = (mixed[i, 0] == perm[i].item()).float().mean().item()
            assert own + partner == pytest.approx(1.0)
            assert own == pytest.approx(lam)  # the label's weight is the share still its own
        assert torch.equal(x[:, 0, 0, 0], torch.arange(4.0))  # the input batch is untouched
        assert lam >= 1 - 13 * 19 / 600 - 1e-9  # the rectangle: 13 x 19 pixels, smaller where clipped
        lams.append(lam)
    assert min(lams) < 0.6 < max(lams)  # some rectangles lie whole inside the crop, some run off it
    with pytest.raises(ValueError, match="cutmix"):
        TrainConfig(cutmix=-1.0)


def test_a_run_with_cutmix_and_mixup_trains(tmp_path):
    from ml.classification.data import synthetic_cells

    cells = synthetic_cells(n_per_class=8, classes=["lymphocyte", "neutrophil"])
    cfg = TrainConfig(backbone="cbam_cnn_small", img_size=32, batch=8, epochs=2, cutmix=1.0, mixup=0.2)
    run = fit(cfg, cells, cells, tmp_path / "run")
    assert load_classifier(run).classes == ["lymphocyte", "neutrophil"]
    assert all(np.isfinite(e["train_loss"]) for e in json.loads((run / "log.json").read_text()))


def test_the_jensen_shannon_divergence_against_hand_computed_cases():
    import math

    from ml.classification.train import js_divergence

    a = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    assert js_divergence(a, a.clone()).item() == pytest.approx(0.0, abs=1e-7)
    far = torch.tensor([[30.0, -30.0]]), torch.tensor([[-30.0, 30.0]])  # certain of opposite classes
    assert js_divergence(*far).item() == pytest.approx(math.log(2), rel=1e-4)
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])  # by hand: (KL(p||m) + KL(q||m)) / 2
    m = (p + q) / 2
    expected = 0.5 * float((p * (p / m).log()).sum() + (q * (q / m).log()).sum())
    assert js_divergence(p.log()[None], q.log()[None]).item() == pytest.approx(expected, rel=1e-5)


def test_consistency_batches_hold_two_colour_views_of_the_same_cut(small_cells, tmp_path):
    from ml.classification.train import AugmentedCrops

    cells, _ = small_cells
    idx = np.arange(6)
    same = AugmentedCrops(cells, TrainConfig(img_size=32, consistency=1.0, augment=0.0))
    x, y = same.batch(idx, np.random.default_rng(0))
    assert x.shape[0] == 12 and y.shape[0] == 6
    assert torch.equal(x[:6], x[6:])  # without photometric augmentation the two views are one crop
    coloured = AugmentedCrops(cells, TrainConfig(img_size=32, consistency=1.0, augment=1.0))
    x, _ = coloured.batch(idx, np.random.default_rng(0))
    assert not torch.equal(x[:6], x[6:])
    # the same cut: the views' brightness patterns (shape, position) agree far better than two cells'
    a, b = x[:6].mean(1).flatten(1), x[6:].mean(1).flatten(1)
    same_cell = torch.stack([torch.corrcoef(torch.stack([a[i], b[i]]))[0, 1] for i in range(6)])
    other_cell = torch.stack([torch.corrcoef(torch.stack([a[i], b[(i + 1) % 6]]))[0, 1] for i in range(6)])
    assert same_cell.mean() > other_cell.mean() + 0.2, (same_cell, other_cell)
    with pytest.raises(ValueError, match="consistency"):
        TrainConfig(consistency=1.0, mixup=0.2)
    from ml.classification.data import synthetic_cells

    few = synthetic_cells(n_per_class=8, classes=["lymphocyte", "neutrophil"])
    cfg = TrainConfig(backbone="cbam_cnn_small", img_size=32, batch=8, epochs=2, consistency=12.0)
    run = fit(cfg, few, few, tmp_path / "run")
    assert all(np.isfinite(e["train_loss"]) for e in json.loads((run / "log.json").read_text()))


def test_the_default_recipe_keeps_each_class_f1_its_robustness_and_its_figures(classifier_run):
    """What the model registry shows of a version: held-out F1 per class, accuracy under corruptions, and plots."""
    from ml.classification.evaluate import RUN_FIGURES
    from ml.classification.robustness import CORRUPTIONS

    metrics = json.loads((classifier_run / "metrics.json").read_text())
    f1 = metrics["test"]["f1"]
    assert sorted(f1) == ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    assert sum(f1.values()) / len(f1) == pytest.approx(metrics["test"]["macro_f1"], abs=1e-3)
    table = metrics["robustness"]
    assert set(table) == {"clean", *CORRUPTIONS}
    assert all(len(v) == 3 and all(0 <= a <= 1 for a in v) for k, v in table.items() if k != "clean")
    for name in ("confusion.png", "reliability.png", "curves.png", "robustness.png"):
        assert name in RUN_FIGURES and (classifier_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not (classifier_run / "confusion_other_lab.png").exists()  # generated cells: no other lab to score


def test_a_model_trained_with_its_context_faded_keeps_the_fade_and_serves_it(small_cells, tmp_path, smear):
    """The fade is part of the crop rule: trained with it, saved with it, answered with it."""
    from ml.boxes import Box

    cells, _ = small_cells
    tr, va, _ = fixed_split(cells.names, cells.labels, val=0.2, test=0.0)
    cfg = TrainConfig(backbone="cbam_cnn_small", epochs=1, batch=32, img_size=32, augment=0.3, fade=0.8)
    run = fit(cfg, cells.subset(tr), cells.subset(va), tmp_path / "run")
    clf = load_classifier(run)
    assert clf.crop_rule.fade == 0.8
    crops = clf.crops(smear, [Box(58, 68, 102, 112)])
    x = clf.tensor(crops)
    white = (1.0 - torch.tensor(clf.mean)) / torch.tensor(clf.std)
    corner, seen = crops[0, 0, 0] / 255.0, x[0, :, 0, 0]
    assert torch.allclose(seen, (1.0 - 0.2 * (1.0 - torch.tensor(corner, dtype=torch.float32)) - torch.tensor(clf.mean))
                          / torch.tensor(clf.std), atol=1e-5)
    assert not torch.allclose(seen, white)
    assert len(load_classifier(run).classify(smear, [Box(58, 68, 102, 112)])) == 1
    with pytest.raises(ValueError, match="fade must be between 0 and 1"):
        TrainConfig(fade=1.5)


def test_faded_surroundings_in_training_only_are_drawn_per_crop_and_not_served(small_cells):
    """``fade_p``: each training crop's surroundings faded by its own fraction in [fade, 1], with that
    probability; the batches of a run without it are as before."""
    from ml.classification.train import AugmentedCrops

    cells, _ = small_cells
    plain = AugmentedCrops(cells, TrainConfig(img_size=32))
    assert plain.faded(8, np.random.default_rng(0)) is None
    always = AugmentedCrops(cells, TrainConfig(img_size=32, fade=0.25, fade_p=1.0))
    w = always.faded(200, np.random.default_rng(0))
    corners = w[:, 0, 0, 0]
    assert w.shape == (200, 1, 32, 32) and (w[:, 0, 16, 16] == 1.0).all()
    assert corners.max() <= 0.75 + 1e-6 and corners.min() < 0.05 and corners.std() > 0.1  # 1 - fraction in [0.25, 1]
    half = AugmentedCrops(cells, TrainConfig(img_size=32, fade_p=0.5)).faded(200, np.random.default_rng(0))
    assert 60 < (half[:, 0, 0, 0] < 1.0).sum() < 140
    x, _ = always.batch(np.arange(4), np.random.default_rng(1))
    assert x.shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="fade_p must be a probability"):
        TrainConfig(fade_p=2.0)


def test_swapped_surroundings_keep_the_cell_and_take_the_partners_ring():
    """``context_swap``: beyond the cell's circle (and the partner's), a crop's pixels are its partner's;
    within, its own; a batch without it is cut and coloured as before."""
    from ml.classification.crop import surroundings
    from ml.classification.transforms import swap_surroundings

    a, b = np.full((32, 32, 3), 40, np.uint8), np.full((32, 32, 3), 200, np.uint8)
    placed = [(16.0, 16.0, 6.0), (16.0, 16.0, 6.0)]
    out = swap_surroundings([a, b], placed, np.random.default_rng(0), 1.0, 1.15)
    assert (out[0][16, 16] == 40).all() and (out[0][0, 0] == 200).all()
    assert (out[1][16, 16] == 200).all() and (out[1][31, 31] == 40).all()
    # the partner's cell, off centre and larger, is not pasted: its circle keeps the crop's own pixels
    off = swap_surroundings([a, b], [(16.0, 16.0, 4.0), (26.0, 16.0, 5.0)], np.random.default_rng(0), 1.0, 1.15)
    assert (off[0][16, 27] == 40).all() and (off[0][2, 2] == 200).all()
    assert surroundings(32, (16.0, 16.0, 6.0), 1.15)[16, 16] == 0.0
    assert swap_surroundings([a], placed[:1], np.random.default_rng(0), 1.0, 1.15)[0] is a
    with pytest.raises(ValueError, match="context_swap must be a probability"):
        TrainConfig(context_swap=1.5)


def test_the_cell_is_placed_where_the_jittered_crop_puts_its_box(small_cells):
    from ml.classification.crop import CropRule
    from ml.classification.transforms import AugmentConfig, geometric_crop, geometric_crop_placed

    cells, _ = small_cells
    rule, cfg = CropRule(0.2, 32), AugmentConfig()
    crop, (x, y, r) = geometric_crop_placed(cells.images[0], cells.box(0), rule, np.random.default_rng(3), cfg)
    assert (crop == geometric_crop(cells.images[0], cells.box(0), rule, np.random.default_rng(3), cfg)).all()
    assert abs(x - 16) <= 0.08 * 32 * 1.25 + 1 and abs(y - 16) <= 0.08 * 32 * 1.25 + 1
    assert 0.5 * 32 / 1.4 / 1.25 - 0.5 <= r <= 0.5 * 32 / 1.4 / 0.8 + 0.5


def test_a_batch_without_swapped_surroundings_is_drawn_as_before_and_with_them_differs(small_cells):
    """Without ``context_swap`` each cell is cut and coloured in turn, the draws of earlier runs."""
    from ml.classification.stain import normalize
    from ml.classification.train import AugmentedCrops
    from ml.classification.transforms import geometric_crop, photometric, to_tensor

    cells, _ = small_cells
    idx = np.arange(6)
    plain = AugmentedCrops(cells, TrainConfig(img_size=32, stain_norm="background"))
    rng = np.random.default_rng(1)
    by_hand = [normalize(photometric(geometric_crop(cells.images[i], cells.box(i), plain.rule, rng, plain.aug), rng,
                                     plain.aug), "background") for i in idx]
    x0, y0 = plain.batch(idx, np.random.default_rng(1))
    assert torch.equal(x0, to_tensor(by_hand))
    swapped = AugmentedCrops(cells, TrainConfig(img_size=32, stain_norm="background", context_swap=1.0))
    x1, y1 = swapped.batch(idx, np.random.default_rng(1))
    assert x1.shape == x0.shape and torch.equal(y0, y1) and not torch.equal(x0, x1)
