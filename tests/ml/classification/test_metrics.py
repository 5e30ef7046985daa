import numpy as np
import pytest

from ml.classification.metrics import (abstention, classification_report, confusion_matrix, ece, fit_temperature,
                                       softmax)


def test_report_matches_hand_computed_scores():
    # true: a a a b b c ; pred: a a b b c c
    r = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    # a: P=1 R=2/3 F1=0.8 ; b: P=1/2 R=1/2 F1=0.5 ; c: P=1/2 R=1 F1=2/3
    assert r["per_class"]["a"]["f1"] == pytest.approx(0.8)
    assert r["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert r["per_class"]["c"]["recall"] == pytest.approx(1.0)
    assert r["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert r["weighted_f1"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3 * 1) / 6)
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_confusion_matrix_counts_pairs():
    cm = confusion_matrix([1, 1, 0], [1, 0, 0], 2)
    assert cm.tolist() == [[1, 0], [1, 1]]


def test_ece_of_hand_made_probabilities():
    # Two cells at confidence 0.9, one right one wrong: |0.9 - 0.5| = 0.4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert ece(probs, [0, 1]) == pytest.approx(0.4)
    assert ece(np.array([[1.0, 0.0]]), [0]) == pytest.approx(0.0)


def test_temperature_scaling_softens_an_overconfident_model():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    logits = rng.normal(0, 1, (2000, 3))
    logits[np.arange(2000), y] += 1.0
    logits *= 8  # overconfident
    t = fit_temperature(logits, y)
    assert t > 3
    assert ece(softmax(logits, t), y) < ece(softmax(logits), y) / 2


def test_abstention_sends_low_confidence_cells_to_unidentified():
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.2, 0.8]])
    r = abstention(probs, [0, 1, 0], threshold=0.7)
    assert r["unidentified_rate"] == pytest.approx(1 / 3)
    assert r["accuracy_identified"] == pytest.approx(0.5)


def test_class_priors_follow_bayes_rule():
    from ml.classification.priors import PERIPHERAL_BLOOD, load_prior, prior_shift

    classes = ["eosinophil", "lymphocyte", "neutrophil", "other"]
    assert not prior_shift(classes, None).any()
    shift = prior_shift(classes, {"eosinophil": 1, "lymphocyte": 1, "neutrophil": 2})
    # unnamed classes get the mean weight (4/3): pi = (1, 1, 2, 4/3) / (16/3), against uniform 1/4
    assert np.allclose(np.exp(shift), np.array([1, 1, 2, 4 / 3]) / (16 / 3) * 4, atol=1e-5)
    # a model trained under other frequencies is corrected for them too
    shift = prior_shift(["a", "b"], {"a": 1, "b": 1}, trained_prior=[0.8, 0.2])
    assert np.allclose(np.exp(shift), [0.5 / 0.8, 0.5 / 0.2], atol=1e-5)
    assert not prior_shift(["x", "y"], PERIPHERAL_BLOOD).any()  # names none of them: uniform
    assert load_prior("blood") == PERIPHERAL_BLOOD and load_prior("uniform") is None


def test_adaptation_recovers_a_samples_class_frequencies():
    from ml.classification.priors import adapt

    # cells of three classes with Gaussian features; posteriors exact under equal frequencies
    rng = np.random.default_rng(0)
    truth = np.array([0.1, 0.2, 0.7])
    y = rng.choice(3, 6000, p=truth)
    x = rng.normal(y.astype(float), 0.6)
    lik = np.exp(-0.5 * ((x[:, None] - np.arange(3)[None]) / 0.6) ** 2)
    post = lik / lik.sum(1, keepdims=True)
    equal = np.full(3, 1 / 3)
    probs, freq = adapt(post, equal, strength=0)
    assert np.allclose(freq, np.bincount(y) / len(y), atol=0.02)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    # Bayes' rule with the recovered frequencies: more cells right than under equal frequencies
    assert (probs.argmax(1) == y).mean() > (post.argmax(1) == y).mean() + 0.03
    # the prior counts as `strength` cells: the estimate lies between the sample's alone and the prior
    _, half = adapt(post, equal, strength=len(post))
    assert np.all((np.minimum(freq, equal) < half) & (half < np.maximum(freq, equal)))
    assert np.abs(half - equal).min() > 0.03 and np.abs(half - freq).min() > 0.03


def test_adaptation_keeps_the_prior_for_a_few_cells_and_hand_computed_cases():
    from ml.classification.priors import adapt

    prior = np.array([0.9, 0.1])
    p = np.array([[0.3, 0.7]])
    # one certain-looking cell against 100 pseudo-cells: f = (post + 100 prior) / 101, post at f
    probs, freq = adapt(p, prior, strength=100)
    post = p[0] * freq / prior
    post /= post.sum()
    assert np.allclose(freq, (post + 100 * prior) / 101, atol=1e-6)
    assert abs(freq[1] - 0.1) < 0.01 and probs.argmax() == 1
    # a sample of cells all certain of class 1: f = (n + strength * 0.1) / (n + strength) for class 1
    certain = np.tile([[1e-9, 1 - 1e-9]], (50, 1))
    _, freq = adapt(certain, prior, strength=50)
    assert freq[1] == pytest.approx((50 + 5) / 100, abs=1e-4)
    assert adapt(np.zeros((0, 2)), prior)[0].shape == (0, 2)
    with pytest.raises(ValueError, match="do not match"):
        adapt(p, np.array([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match=">= 0"):
        adapt(p, prior, strength=-1)


def test_bad_class_priors_are_refused_with_a_message(tmp_path):
    from ml.classification.priors import load_prior

    with pytest.raises(ValueError, match="unknown class prior"):
        load_prior("bloood")
    (tmp_path / "p.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_prior(tmp_path / "p.json")
    (tmp_path / "p.json").write_text('{"neutrophil": -1}')
    with pytest.raises(ValueError, match="positive"):
        load_prior(tmp_path / "p.json")
    (tmp_path / "p.json").write_text('{"neutrophil": 3, "eosinophil": 1}')
    assert load_prior(tmp_path / "p.json") == {"neutrophil": 3.0, "eosinophil": 1.0}


def test_cross_lab_scores_count_an_answer_outside_the_labelled_classes_as_wrong():
    """As ml.analyze answers: any of the model's classes; an ig answer or a missed cell is wrong."""
    from ml.classification.evaluate import _any_class_scores

    classes = ["basophil", "eosinophil", "ig", "lymphocyte", "monocyte", "neutrophil"]
    labels = ["neutrophil", "neutrophil", "lymphocyte", "monocyte"]
    pred = np.array([5, 2, 3, 5])  # neutrophil, ig, lymphocyte, neutrophil (but that cell was not found)
    found = np.array([True, True, True, False])
    r = _any_class_scores(pred, found, classes, labels)
    assert r["accuracy"] == 0.5 and r["other_answers"] == 1
    # neutrophil P 1 R 1/2; lymphocyte 1; monocyte 0; basophil, eosinophil neither labelled nor answered
    assert r["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
