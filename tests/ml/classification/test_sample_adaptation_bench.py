"""bench/sample_adaptation.py: the differential error and the slide simulation it reports."""

import numpy as np
import pytest

from tests.helpers import load_bench

bench = load_bench("sample_adaptation")
CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def test_differential_error_is_the_share_of_cells_in_a_wrong_class():
    truth = np.array([0, 0, 1, 1])
    assert bench.differential_error(truth, truth, 3) == 0.0
    # one cell of class 1 counted as class 2: 25 % of the cells are in a wrong class
    assert bench.differential_error(np.array([0, 0, 1, 2]), truth, 3) == pytest.approx(25.0)
    # two swapped labels leave the differential right although two cells are wrong
    assert bench.differential_error(np.array([0, 1, 0, 1]), truth, 3) == 0.0


def test_simulation_scores_a_perfect_model_perfectly_and_a_blind_one_badly():
    from ml.classification.priors import PERIPHERAL_BLOOD, prior_vector

    y = np.repeat(np.arange(8), 30)
    perfect = np.eye(8)[y] * 0.99 + 0.01 / 8
    prior = prior_vector(CLASSES, PERIPHERAL_BLOOD)
    r = bench.simulate(perfect, perfect, y, CLASSES, prior, [100.0], cells=100, slides=5, seed=0)
    assert set(r) == set(bench.SCENARIOS)
    for scores in r.values():
        for m in ("uniform", "blood", "adapt 100"):
            assert scores[m]["accuracy"] == 1.0 and scores[m]["differential_error"] == 0.0
    # a model that cannot tell the cells apart: the blood prior answers "neutrophil" for every cell
    blind = np.full((len(y), 8), 1 / 8)
    blood = blind * prior / (blind * prior).sum(1, keepdims=True)
    r = bench.simulate(blood, blind, y, CLASSES, prior, [100.0], cells=100, slides=5, seed=0)
    lympho = r["lymphocytosis"]["blood"]
    assert lympho["differential_error"] == pytest.approx(100 - lympho["accuracy"] * 100, abs=1e-6)
    assert lympho["accuracy"] < 0.3
