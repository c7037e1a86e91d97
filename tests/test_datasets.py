"""The small real image sets shipped for demos and tests: their splits never share an image."""

from pathlib import Path

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


def test_load_image_folder_reads_class_folders_as_load_files_does(tmp_path):
    from PIL import Image

    from skcnn.datasets import find_image_files, load_image_folder

    for label in ("cat", "dog"):
        (tmp_path / label / "sub").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / label / "1.png")
        Image.new("RGB", (8, 8)).save(tmp_path / label / "sub" / "2.JPG")
        (tmp_path / label / "readme.txt").write_text("not an image")
        (tmp_path / label / ".hidden.png").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".git" / "x.png")
    data = load_image_folder(tmp_path)
    assert data.target.tolist() == ["cat", "cat", "dog", "dog"]
    assert [Path(f).name for f in data.filenames] == ["1.png", "2.JPG"] * 2
    assert data.target_names.tolist() == ["cat", "dog"]
    X, y = load_image_folder(tmp_path, return_X_y=True)
    assert X == data.filenames and y.tolist() == data.target.tolist()
    assert find_image_files([tmp_path / "cat" / "readme.txt"]) == [str(tmp_path / "cat" / "readme.txt")]


def test_load_image_folder_refuses_what_is_not_a_class_folder_tree(tmp_path):
    from skcnn.datasets import find_image_files, load_image_folder

    with pytest.raises(ValueError, match="is not a folder"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="at least two"):
        load_image_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_image_files([tmp_path / "nowhere"])
