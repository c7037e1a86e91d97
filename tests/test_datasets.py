"""The small real image sets shipped for demos and tests: their splits never share an image."""

import numpy as np
import pytest

from skcnn.datasets import load_digit_images


def test_digit_splits_are_disjoint_and_balanced():
    X, y = load_digit_images(n_per_class=20)
    _, y_test = load_digit_images("test", n_per_class=20, test_per_class=5)
    assert X.shape == (200, 8, 8) and X.dtype == np.uint8 and np.bincount(y).tolist() == [20] * 10
    assert np.bincount(y_test).tolist() == [5] * 10
    rest, _ = load_digit_images("test", n_per_class=20)
    assert len(rest) == 1797 - 200  # every other scan
    from sklearn.datasets import load_digits

    scans = sorted(np.round(load_digits().images * (255 / 16)).astype(np.uint8).reshape(1797, -1).tolist())
    assert sorted(np.concatenate([X, rest]).reshape(1797, -1).tolist()) == scans  # each scan in one split


@pytest.mark.parametrize("params", [dict(split="val"), dict(n_per_class=0), dict(n_per_class=171)])
def test_bad_digit_parameters_are_clear_errors(params):
    with pytest.raises(ValueError, match=r"split|n_per_class"):
        load_digit_images(**params)
