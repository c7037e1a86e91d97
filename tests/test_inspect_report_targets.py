"""`skcnn inspect --targets`: the report of a regressor and of a multi-label classifier."""

from collections import Counter
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from skcnn import CNNClassifier, CNNFeatureTransformer, CNNRegressor, cli

SIZE = 32
N = 24
#: The labels of the multi-label CSV; the model's columns are their names sorted.
COLOURS = ("red", "green", "blue")


def coloured(n: int = N, seed: int = 0):
    """RGB noise images whose labels are the colour channels lit (at least one each)."""
    rng = np.random.default_rng(seed)
    lit = np.zeros((n, 3), dtype=int)
    lit[np.arange(n), rng.integers(0, 3, n)] = 1
    lit |= (rng.random((n, 3)) < 0.35).astype(int)
    images = rng.integers(0, 90, (n, SIZE, SIZE, 3)).astype(np.uint8)
    images += (lit[:, None, None, :] * 140).astype(np.uint8)
    return images, lit


def write_images(folder: Path, images) -> list[str]:
    """PNG files of ``images`` and one file that is not an image (``broken.png``); their names."""
    folder.mkdir()
    names = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
        names.append(f"{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return names


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    pd.DataFrame(rows, columns=header).to_csv(path, index=False)
    return path


def counted_decodes(monkeypatch) -> Counter:
    """Calls of :func:`skcnn.images.load_image` from now on, by image file."""
    from skcnn import images as image_io

    decoded = Counter()
    load_image = image_io.load_image

    def counted(image, *args, **kwargs):
        decoded[str(image)] += 1
        return load_image(image, *args, **kwargs)

    monkeypatch.setattr(image_io, "load_image", counted)
    return decoded


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("model", "bound"),
    [
        # Frozen codes and the duplicates' in a pass each (another input size), once more to predict each fold.
        pytest.param(CNNRegressor(input_size=SIZE, unfreeze="head", progress=False), 3, marks=pytest.mark.slow),
        # Codes once for every fold; the duplicates' pass.
        (make_pipeline(CNNFeatureTransformer(input_size=SIZE, progress=False), Ridge()), 2),
    ],
    ids=["cnn-regressor", "pipeline"],
)
def test_inspect_a_regressor_writes_residuals_and_a_scatter_and_no_label_issues(
    tmp_path, capsys, monkeypatch, model, bound
):
    images, _ = coloured()
    brightness = images.mean(axis=(1, 2, 3)) / 255
    names = write_images(tmp_path / "images", images)
    table = write_csv(
        tmp_path / "shares.csv",
        ["path", "brightness"],
        [*([name, value] for name, value in zip(names, brightness, strict=True)), ["broken.png", 0.5]],
    )
    joblib.dump(model.fit(images, brightness), tmp_path / "model.joblib")
    report = tmp_path / "report"
    argv = ["inspect", str(tmp_path / "model.joblib"), str(tmp_path / "images"), "--targets", str(table)]
    decoded = counted_decodes(monkeypatch)
    assert cli.main([*argv, "--out", str(report), "--cv", "3", "--top", "4"]) == 0
    out = capsys.readouterr().out
    assert f"{N + 1} images, 1 target(s)" in out
    assert f"{N} of {N + 1} images scored (1 left out), R^2 " in out and ", MAE " in out
    assert "3-fold out of fold on the images" in out
    assert "no label_issues.csv: a regressor's targets have no classes" in out
    assert "left out 1 file(s) that could not be used: " in out and "broken.png" in out
    losses = pd.read_csv(report / "top_losses.csv")
    assert list(losses.columns) == ["position", "path", "target", "prediction", "residual", "loss"]
    assert len(losses) == N and losses["loss"].is_monotonic_decreasing
    np.testing.assert_allclose(losses["target"], brightness[losses["position"]], rtol=1e-6)
    assert not (report / "label_issues.csv").exists()
    assert pd.read_csv(report / "failed.csv")["path"].str.contains("broken.png").tolist() == [True]
    assert (report / "duplicates.csv").stat().st_size > 0
    for name in ("top_losses.png", "prediction_vs_target.png"):
        assert_png(report / name)
    assert not (report / "confusion.png").exists()
    shown = set(losses["path"].head(4))  # read again, to be shown
    files = [str(tmp_path / "images" / name) for name in names]
    counts = [decoded[path] for path in files if path not in shown]
    assert min(counts) >= 1 and max(counts) <= bound, Counter(counts)


@pytest.mark.slow  # 7 s: a multi-label fit and its report
def test_inspect_a_multilabel_classifier_writes_label_issues_and_a_per_label_confusion(tmp_path, capsys):
    images, lit = coloured()
    names = write_images(tmp_path / "images", images)
    rows = [
        [name, ";".join(c for c, on in zip(COLOURS, row, strict=True) if on)]
        for name, row in zip(names, lit, strict=True)
    ]
    table = write_csv(tmp_path / "labels.csv", ["path", "labels"], [*rows, ["broken.png", "red"]])
    columns = sorted(COLOURS)  # blue, green, red: the model's classes_, as MultiLabelBinarizer orders them
    Y = lit[:, [COLOURS.index(name) for name in columns]]
    sets = [[name for name, on in zip(columns, row, strict=True) if on] for row in Y]
    model = CNNClassifier(input_size=SIZE, unfreeze="head", progress=False).fit(images, sets)
    assert model.classes_.tolist() == columns
    assert model.target_type_ == "multilabel-indicator"
    joblib.dump(model, tmp_path / "model.joblib")
    report = tmp_path / "report"
    argv = ["inspect", str(tmp_path / "model.joblib"), str(tmp_path / "images"), "--targets", str(table)]
    assert cli.main([*argv, "--out", str(report), "--cv", "3", "--top", "4"]) == 0
    out = capsys.readouterr().out
    assert f"{N + 1} images, 3 labels" in out
    assert f"{N} of {N + 1} images scored (1 left out), subset accuracy " in out
    assert "of the label decisions right (3 labels" in out
    assert "likely label errors (3-fold out-of-fold probabilities, multi-label confident learning)" in out
    losses = pd.read_csv(report / "top_losses.csv", keep_default_na=False)
    assert len(losses) == N
    assert [f"probability_{name}" for name in columns] == [c for c in losses.columns if c.startswith("probability_")]
    first = losses.iloc[0]
    given = [name for name, on in zip(columns, Y[first["position"]], strict=True) if on]
    assert first["labels"] == ", ".join(given)  # the CSV's names on the model's columns
    issues = pd.read_csv(report / "label_issues.csv")
    assert {"label_quality", "doubted"} <= set(issues.columns)
    assert f"{len(issues)} likely label errors" in out
    per_label = pd.read_csv(report / "per_label.csv")
    assert per_label["label"].tolist() == columns
    np.testing.assert_array_equal(per_label["given"], Y.sum(axis=0))
    assert (per_label["right"] + per_label["missed"] + per_label["extra"] == N).all()
    assert pd.read_csv(report / "failed.csv")["path"].str.contains("broken.png").tolist() == [True]
    for name in ("top_losses.png", "multilabel_confusion.png"):
        assert_png(report / name)


def test_a_csv_of_other_labels_or_no_csv_is_a_clear_error_before_any_image_is_read(tmp_path, capsys):
    images, lit = coloured(8)
    folder = tmp_path / "images"
    folder.mkdir()
    sets = [[name for name, on in zip(COLOURS, row, strict=True) if on] for row in lit]
    model = CNNClassifier(input_size=SIZE, unfreeze="head", progress=False).fit(images, sets)
    joblib.dump(model, tmp_path / "model.joblib")
    two = write_csv(tmp_path / "two.csv", ["path", "labels"], [[f"{i}.png", "red;purple"] for i in range(8)])
    argv = ["inspect", str(tmp_path / "model.joblib"), str(folder), "--out", str(tmp_path / "report")]
    assert cli.main([*argv, "--targets", str(two)]) == 2
    error = capsys.readouterr().err
    assert "names labels the model was not fit on: purple (its labels: blue, green, red)" in error
    assert cli.main(argv) == 2
    assert "multi-label classifier: give its images' targets with --targets CSV" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
