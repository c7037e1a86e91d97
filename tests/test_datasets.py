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


def test_surface_defects_are_small_seeded_and_imbalanced():
    from skcnn.datasets import DEFECT_SHARES, make_surface_defects

    X, y = make_surface_defects(200, image_size=96, random_state=0)
    again, same = make_surface_defects(200, image_size=96, random_state=0)
    other, _ = make_surface_defects(200, image_size=96, random_state=1)
    assert X.shape == (200, 96, 96) and X.dtype == np.uint8
    np.testing.assert_array_equal(X, again)
    np.testing.assert_array_equal(y, same)
    assert not np.array_equal(X, other)
    shares = {label: np.mean(y == label) for label in DEFECT_SHARES}
    assert max(shares, key=shares.get) == "ok" and 0.45 < shares["ok"] < 0.7 and shares["scratch"] > 0
    with pytest.raises(ValueError, match="image_size"):
        make_surface_defects(2, image_size=600)


def test_a_defect_changes_a_small_part_of_the_surface():
    from skcnn.datasets import _surface_crop, _with_defect

    rng = np.random.default_rng(3)
    surface = _surface_crop(np.random.default_rng(0).integers(0, 256, (300, 300)).astype(np.uint8), 200, rng)
    for label in ("crack", "spot", "scratch"):
        changed = np.mean(_with_defect(surface, label, 0.35, rng) != surface.astype(np.uint8))
        assert 0.002 < changed < 0.05, (label, changed)  # local evidence: well under a twentieth of the image
    np.testing.assert_array_equal(_with_defect(surface, "ok", 0.35, rng), surface.astype(np.uint8))
