"""The nucleus-shape opinion: its measurements on drawn nuclei, its model, and its place in a run."""
import json

import cv2
import numpy as np
import pytest
import torch

from ml.classification import load_classifier
from ml.classification.artifact import OVERLAP_CELLS
from ml.classification.data import fixed_split, synthetic_cells
from ml.classification.morphometry import (FEATURES, MEASURE_SIZE, WEIGHTS, ShapeOpinion, box_region,
                                          features_of_crops, nucleus_features)
from ml.classification.train import TrainConfig, fit, predict_logits
from tests.helpers import write_class_folders

PALE, CYTOPLASM, NUCLEUS = (235, 235, 235), (215, 190, 215), (80, 40, 150)


def cell(nuclei: list[tuple[int, int, int]], bridges: list[tuple[tuple[int, int], tuple[int, int]]] = ()) -> np.ndarray:
    """A 96 px box region: a cell filling it, with circular nuclei ``(x, y, radius)`` joined by thin bridges."""
    img = np.full((MEASURE_SIZE, MEASURE_SIZE, 3), PALE, np.uint8)
    cv2.circle(img, (48, 48), 44, CYTOPLASM, -1)
    for x, y, r in nuclei:
        cv2.circle(img, (x, y), r, NUCLEUS, -1)
    for a, b in bridges:
        cv2.line(img, a, b, NUCLEUS, 2)
    return img


def measured(region: np.ndarray) -> dict:
    return dict(zip(FEATURES, nucleus_features(region)))


def test_a_round_nucleus_is_one_convex_piece_of_its_drawn_size():
    f = measured(cell([(48, 48, 20)]))
    disc = np.pi * (MEASURE_SIZE * 0.48) ** 2
    assert f["nucleus_disc_fraction"] == pytest.approx(np.pi * 20 ** 2 / disc, rel=0.08)
    assert f["nucleus_solidity"] > 0.95
    assert 0.9 < f["nucleus_roughness"] < 1.3
    assert f["nucleus_pieces"] == 1 and f["nucleus_lobes"] == 1


def test_a_segmented_nucleus_has_lobes_and_is_not_convex():
    lobes = [(28, 40, 10), (50, 62, 10), (70, 36, 10)]
    f = measured(cell(lobes, bridges=[((28, 40), (50, 62)), ((50, 62), (70, 36))]))
    assert f["nucleus_lobes"] == 3  # the thin bridges do not survive the erosion
    assert f["nucleus_pieces"] == 1  # but join the lobes into one nucleus
    assert f["nucleus_solidity"] < 0.8
    assert f["nucleus_roughness"] > 1.5
    round_ = measured(cell([(48, 48, 17)]))
    assert f["nucleus_solidity"] < round_["nucleus_solidity"]


def test_the_measurements_do_not_depend_on_the_lamps_colour():
    region = cell([(40, 44, 14), (58, 54, 12)], bridges=[((40, 44), (58, 54))])
    warm = np.clip(region.astype(np.float32) * (1.0, 0.9, 0.7), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(nucleus_features(warm), nucleus_features(region), rtol=0.05, atol=0.02)


@pytest.mark.parametrize("level", [0, 128, 255])
def test_a_blank_region_measures_no_nucleus(level):
    assert not nucleus_features(np.full((40, 40, 3), level, np.uint8)).any()


def test_the_box_region_is_the_centre_of_the_crop_rule():
    crop = np.zeros((64, 64, 3), np.uint8)
    region = box_region(crop, 0.2)
    assert region.shape == (46, 46, 3)  # 64 / 1.4, rounded: the box inside the rule's margin
    assert box_region(crop, 0.0).shape == (64, 64, 3)
    assert features_of_crops(np.zeros((0, 64, 64, 3), np.uint8), 0.2).shape == (0, len(FEATURES))


def test_a_batch_is_measured_as_each_of_its_cells_alone(small_cells):
    """Measured together, cells do not touch: each row equals the cell measured alone, and the white
    balance is ml.colour's, number for number."""
    from ml.classification.morphometry import _white_balanced
    from ml.classification.stain import normalize
    from ml.colour import white_balance

    cells, _ = small_cells
    crops = np.stack([normalize(c, "background") for c in cells.crops(0.2, 64)])
    crops = np.concatenate([crops, np.full((2, 64, 64, 3), 200, np.uint8)])  # and blank ones among them
    together = features_of_crops(crops, 0.2, chunk=16)
    alone = np.stack([nucleus_features(box_region(c, 0.2)) for c in crops])
    np.testing.assert_array_equal(together, alone)
    assert (together[:-2, FEATURES.index("nucleus_pieces")] >= 1).all() and not together[-2:].any()
    regions = np.stack([cv2.resize(box_region(c, 0.2), (MEASURE_SIZE, MEASURE_SIZE)) for c in crops[:8]])
    np.testing.assert_array_equal(_white_balanced(regions), np.stack([white_balance(r) for r in regions]))


def test_the_shape_model_separates_real_lymphocytes_from_neutrophils(small_cells):
    """On PBC's cells (when present) a lymphocyte's round nucleus is more convex and takes more of
    its cell than a neutrophil's segmented one; generated cells have no such nuclei."""
    cells, real = small_cells
    if not real:
        pytest.skip("needs ../shared/datasets/pbc")
    from ml.classification.stain import normalize

    crops = np.stack([normalize(c, "background") for c in cells.crops(0.2, 64)])
    f = features_of_crops(crops, 0.2)
    names = np.array(cells.classes)[cells.labels]
    lym, neu = f[names == "lymphocyte"], f[names == "neutrophil"]
    solidity, fraction = FEATURES.index("nucleus_solidity"), FEATURES.index("nucleus_cell_fraction")
    assert np.median(lym[:, solidity]) > np.median(neu[:, solidity]) + 0.05
    assert np.median(lym[:, fraction]) > np.median(neu[:, fraction]) + 0.05


def separable(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0, 0.1, (n, len(FEATURES))).astype(np.float32)
    x[:, 0] += y
    return x, y


def test_the_opinion_is_added_to_the_networks_calibrated_log_probabilities():
    x, y = separable()
    opinion = ShapeOpinion.fit(x, y, 3)
    opinion.network_temperature = 2.0
    logits = np.random.default_rng(1).normal(0, 3, (len(y), 3)).astype(np.float32)
    alone = opinion.scores(logits, x, weight=0.0)
    np.testing.assert_allclose(np.exp(alone).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(alone - alone[:, :1], (logits - logits[:, :1]) / 2.0, rtol=1e-4, atol=1e-4)
    both = opinion.scores(logits, x, weight=0.5)
    np.testing.assert_allclose(both - alone, 0.5 * opinion.log_proba(x), rtol=1e-5, atol=1e-5)
    # noise logits: the shape model, right on these cells, wins with the largest weight
    acc = opinion.choose_weight(logits, x, y)
    assert set(acc) == set(WEIGHTS) and opinion.weight == max(w for w in WEIGHTS if acc[w] == max(acc.values()))


def test_a_few_cells_get_the_same_probabilities_from_the_flat_trees():
    from ml.classification.morphometry import FLAT_CELLS, _FlatTrees

    x, y = separable(90)
    opinion = ShapeOpinion.fit(x, y, 3)
    probe = np.concatenate([x[:10], np.random.default_rng(3).normal(0, 2, (10, len(FEATURES)))]).astype(np.float32)
    probe[::4, 0] = np.nan  # missing values go where each node learned to send them
    assert len(probe) <= FLAT_CELLS
    flat = _FlatTrees.of(opinion.model)
    np.testing.assert_array_equal(flat.predict_proba(probe), opinion.model.predict_proba(probe))
    np.testing.assert_array_equal(opinion.log_proba(probe), np.log(np.clip(opinion.model.predict_proba(probe), 1e-9, None)).astype(np.float32))
    assert isinstance(opinion._flat, _FlatTrees)  # built on the first few cells, kept for the next
    many = np.concatenate([probe] * 3)  # more cells than that go through scikit-learn: the same numbers
    np.testing.assert_array_equal(opinion.log_proba(many), np.concatenate([opinion.log_proba(probe)] * 3))
    assert _FlatTrees.of(object()) is False


def test_the_opinion_travels_without_pickle_and_comes_back_the_same():
    x, y = separable()
    opinion = ShapeOpinion.fit(x, y, 3)
    opinion.weight, opinion.network_temperature = 0.25, 1.3
    state = opinion.to_state()
    assert isinstance(state["trees"], bytes)
    back = ShapeOpinion.from_state(state)
    assert (back.weight, back.network_temperature) == (0.25, 1.3)
    np.testing.assert_array_equal(back.log_proba(x), opinion.log_proba(x))
    with pytest.raises(ValueError, match="other features"):
        ShapeOpinion.from_state({**state, "features": ["area"]})
    with pytest.raises(ValueError, match="damaged"):
        ShapeOpinion.from_state({**state, "trees": state["trees"][: len(state["trees"]) // 2]})
    with pytest.raises(ValueError, match="every class"):
        ShapeOpinion.fit(x[y < 2], y[y < 2], 3)


def test_a_run_with_the_opinion_serves_it(tmp_path):
    cells = synthetic_cells(n_per_class=14, classes=["lymphocyte", "neutrophil", "monocyte"])
    tr, va, _ = fixed_split(cells.names, cells.labels, val=0.3, test=0.0)
    cfg = TrainConfig(backbone="cbam_cnn_small", img_size=32, batch=8, epochs=2, shape_opinion=True)
    run = fit(cfg, cells.subset(tr), cells.subset(va), tmp_path / "run")
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)  # no pickle needed
    assert ckpt["shape_opinion"]["weight"] in WEIGHTS
    clf = load_classifier(run)
    assert clf.shape_opinion is not None
    assert set(clf.metrics["shape_val_accuracy"]) == {str(w) for w in WEIGHTS}
    assert clf.metrics["shape_weight"] == clf.shape_opinion.weight
    val = cells.subset(va)
    crops = np.stack([clf.crops(val.images[i], [val.box(i)])[0] for i in range(len(val))])
    expected = clf.shape_opinion.scores(predict_logits(clf.model, crops), features_of_crops(crops, clf.crop_rule.margin))
    np.testing.assert_allclose(clf.logits_of_crops(crops), expected, rtol=1e-4, atol=1e-4)
    many = np.concatenate([crops] * 4)  # enough cells to be measured in a second thread beside the network
    assert len(many) >= OVERLAP_CELLS
    np.testing.assert_allclose(clf.logits_of_crops(many), np.concatenate([expected] * 4), rtol=1e-4, atol=1e-4)
    assert json.loads((run / "config.json").read_text())["shape_opinion"] is True
    # a forked process (a worker's pool) measures in a thread of its own
    import os

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        torch.set_num_threads(1)  # torch's OpenMP threads do not survive a fork either
        ok = np.allclose(clf.logits_of_crops(many), np.concatenate([expected] * 4), rtol=1e-4, atol=1e-4)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    import select
    import signal

    if not select.select([read], [], [], 60)[0]:  # a child left without a thread would wait for ever
        os.kill(child, signal.SIGKILL)
    answered = os.read(read, 1) if select.select([read], [], [], 0)[0] else b""
    os.waitpid(child, 0)
    assert answered == b"1"


def test_a_samples_balanced_draw_reads_the_shape_opinion_and_keeps_its_answers(tmp_path):
    from ml.classification.sample_norm import balanced_draw, batchnorm_layers, sample_normalized

    cells = synthetic_cells(n_per_class=14, classes=["lymphocyte", "neutrophil", "monocyte"])
    tr, va, _ = fixed_split(cells.names, cells.labels, val=0.3, test=0.0)
    cfg = TrainConfig(backbone="cbam_cnn_small", img_size=32, batch=8, epochs=2, shape_opinion=True)
    clf = load_classifier(fit(cfg, cells.subset(tr), cells.subset(va), tmp_path / "run"))
    assert clf.balance_by == "shape"
    val = cells.subset(va)
    crops = np.stack([clf.crops(val.images[i], [val.box(i)])[0] for i in range(len(val))])
    sample = np.concatenate([crops, crops[:, ::-1], crops[:, :, ::-1]])  # enough cells for the second thread
    assert len(sample) >= OVERLAP_CELLS
    margin = clf.crop_rule.margin
    shape = clf.shape_opinion.log_proba(features_of_crops(sample, margin))

    def statistics_of(draw):  # the counted batches of a draw, as the classifier passes them
        for i in range(0, len(draw), clf.batch_size):
            idx, counts = np.unique(draw[i:i + clf.batch_size], return_counts=True)
            yield clf.network_input(sample[idx]), torch.from_numpy(counts)

    own = clf.sample_normalized(sample, strength=10, balanced=True)
    by_hand = sample_normalized(clf.model, statistics_of(balanced_draw(np.exp(shape))), len(sample), 10)
    for a, b in zip(batchnorm_layers(own.model), batchnorm_layers(by_hand)):
        assert torch.allclose(a.running_mean, b.running_mean, atol=1e-6)
        assert torch.allclose(a.running_var, b.running_var, atol=1e-6)
    # the sample's answers reuse the draw's measurements: the same numbers as measuring again
    np.testing.assert_array_equal(own.shape_log_proba(sample), shape)
    expected = clf.shape_opinion.joined(own.network_logits(sample), shape)
    np.testing.assert_allclose(own.logits_of_crops(sample), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(own.logits_of_crops(sample[:3]), expected[:3], rtol=1e-5, atol=1e-5)
    stranger = (sample[:2] // 2 + 60).astype(np.uint8)  # cells outside the sample are measured when asked
    mixed = np.concatenate([stranger, sample[:3]])
    np.testing.assert_array_equal(own.shape_log_proba(mixed), np.concatenate(
        [clf.shape_opinion.log_proba(features_of_crops(stranger, margin)), shape[:3]]))
    assert not clf._shape_memo  # the classifier itself remembers nothing
    twice = np.concatenate([sample, sample])  # measured in two threads, the same numbers
    assert len(twice) >= 2 * OVERLAP_CELLS
    np.testing.assert_array_equal(clf.shape_log_proba(twice, halves=True), np.concatenate([shape, shape]))
    # the network's own answers as trained, where asked for
    clf.balance_by = "network"
    by_network = clf.sample_normalized(sample, strength=10, balanced=True)
    t = clf.shape_opinion.network_temperature
    from ml.classification.metrics import softmax

    draw = balanced_draw(softmax(clf.network_logits(sample), t))
    assert not np.array_equal(draw, balanced_draw(np.exp(shape)))  # the two readings draw other cells
    by_hand = sample_normalized(clf.model, statistics_of(draw), len(sample), 10)
    for a, b in zip(batchnorm_layers(by_network.model), batchnorm_layers(by_hand)):
        assert torch.allclose(a.running_var, b.running_var, atol=1e-6)
    assert not by_network._shape_memo
    clf.balance_by = "colour"
    with pytest.raises(ValueError, match="balance_by"):
        clf.sample_normalized(sample, strength=10, balanced=True)


def test_the_opinion_needs_validation_cells(tmp_path):
    cells = synthetic_cells(n_per_class=6, classes=["lymphocyte", "neutrophil"])
    with pytest.raises(ValueError, match="validation cells"):
        fit(TrainConfig(img_size=32, epochs=1, shape_opinion=True), cells, None, tmp_path / "run")


def test_an_ensemble_averages_the_members_networks_and_leaves_their_opinions_out(tmp_path):
    from ml.classification.ensemble import build_ensemble

    cells = synthetic_cells(n_per_class=8, classes=["lymphocyte", "neutrophil"])
    tr, va, _ = fixed_split(cells.names, cells.labels, val=0.3, test=0.0)
    runs = [fit(TrainConfig(img_size=32, batch=8, epochs=1, shape_opinion=s, seed=k), cells.subset(tr),
                cells.subset(va), tmp_path / f"run{k}") for k, s in enumerate((False, True))]
    ckpt = torch.load(runs[1] / "best.pt", map_location="cpu", weights_only=True)
    ckpt["temperature"], ckpt["shape_opinion"]["network_temperature"] = 1.7, 0.6  # told apart below
    torch.save(ckpt, tmp_path / "with_opinion.pt")
    ens = load_classifier(build_ensemble([runs[0], tmp_path / "with_opinion.pt"], tmp_path / "ens"))
    assert ens.shape_opinion is None and "left out" in ens.metrics["shape_opinion"]
    first, second = ens.model.temperatures.tolist()
    assert first == pytest.approx(load_classifier(runs[0]).temperature)
    assert second == pytest.approx(0.6)  # the member's network at its own temperature



def test_the_cli_adds_an_opinion_to_a_trained_run_once(tmp_path, monkeypatch, capsys, saved_classifier):
    from ml.classification.__main__ import main
    from ml.classification.data import load_folder

    monkeypatch.setenv("LEUKOLAB_CACHE", str(tmp_path / "cache"))
    generated = synthetic_cells(n_per_class=14, classes=["lymphocyte", "monocyte", "neutrophil"])
    data = tmp_path / "data"
    write_class_folders(generated, data)
    cells = load_folder(data)
    tr, va, _ = fixed_split(cells.names, cells.labels)
    run = fit(TrainConfig(img_size=32, batch=8, epochs=1), cells.subset(tr), cells.subset(va), tmp_path / "run")

    assert main(["shape-opinion", str(run), "--data", str(data), "--out", str(tmp_path / "shape")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["shape_weight"] in WEIGHTS and printed["test"]["n"] > 0
    clf = load_classifier(tmp_path / "shape")
    assert clf.shape_opinion is not None and clf.version != load_classifier(run).version
    assert main(["shape-opinion", str(tmp_path / "shape"), "--data", str(data), "--out", str(tmp_path / "again")]) == 2
    assert "already" in capsys.readouterr().err
    # a model of eight classes cannot learn the shapes of classes the data lack
    assert main(["shape-opinion", str(saved_classifier), "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    assert "every class" in capsys.readouterr().err
    assert main(["shape-opinion", str(tmp_path / "missing"), "--data", str(data), "--out", str(tmp_path / "y")]) == 2
    # an ensemble given the members' data answers with an opinion of its own, as its members did
    from ml.classification.ensemble import build_ensemble

    ens = load_classifier(build_ensemble([run, tmp_path / "shape"], tmp_path / "ens", data=data))
    assert ens.architecture == "ensemble" and ens.shape_opinion is not None
    assert ens.shape_opinion.network_temperature == pytest.approx(ens.metrics["network_temperature"])
