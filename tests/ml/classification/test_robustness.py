import numpy as np
import pytest

from ml.classification.robustness import CORRUPTIONS, corrupt, robustness_table


@pytest.fixture
def crops():
    rng = np.random.default_rng(0)
    dark = rng.integers(20, 90, (6, 32, 32, 3))
    light = rng.integers(150, 230, (6, 32, 32, 3))
    return np.concatenate([dark, light]).astype(np.uint8), np.array([0] * 6 + [1] * 6)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_every_corruption_keeps_the_crop_shape_and_changes_it(name, crops):
    x, _ = crops
    for severity in range(3):
        out = corrupt(x, name, severity)
        assert out.shape == x.shape and out.dtype == np.uint8
        assert (out != x).any(), f"{name} at severity {severity + 1} changed nothing"
    assert (corrupt(x, name, 2) == corrupt(x, name, 2)).all()  # the same corruption for every model


def test_table_measures_what_a_corruption_does_to_a_model(crops):
    x, y = crops

    def by_brightness(c):  # a "model" that reads only the mean brightness
        return (c.reshape(len(c), -1).mean(1) > 128).astype(int)

    table = robustness_table(by_brightness, x, y)
    assert table["clean"] == 1.0
    assert set(table) == {"clean", *CORRUPTIONS} and all(len(v) == 3 for k, v in table.items() if k != "clean")
    assert table["brightness"][2] < 1.0  # +80 grey levels lifts the dark crops over the line
    assert table["field_edge"] == [1.0, 1.0, 1.0]  # a cut margin keeps the mean brightness
