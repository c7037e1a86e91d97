"""Regressors and multi-label classifiers exported to ONNX, served without torch, predicted from the shell."""

import csv
import io
import os
import pathlib

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcnn import CNNClassifier, CNNFeatureTransformer, CNNRegressor, cli
from skcnn.datasets import load_texture_patches
from skcnn.export import to_onnx
from skcnn.serving import ModelFileError, OnnxImageClassifier, OnnxImageRegressor, load_onnx, validate_metadata

#: The parity the served file keeps with the fitted model (absolute).
TOLERANCE = 1e-3
SIZE = 32


@pytest.fixture(scope="module")
def texture_files(tmp_path_factory):
    """Texture patches as PNG files, with a continuous target per image: its mean brightness and its contrast."""
    folder = tmp_path_factory.mktemp("textures")
    images, _ = load_texture_patches(n_per_class=6, patch_size=SIZE)  # enlarged by the resize: the same pixels
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    targets = np.array([[image.mean() / 255, image.std() / 255] for image in images])
    return paths, targets


def _ridge(paths, y):
    transformer = CNNFeatureTransformer(input_size=SIZE, progress=False)
    return make_pipeline(transformer, StandardScaler(), RidgeCV()).fit(paths, y)


@pytest.fixture(scope="module")
def ridge_of_two(texture_files, tmp_path_factory):
    """A pipeline ending in a ridge of the two targets, exported once: (model, its .onnx file)."""
    paths, targets = texture_files
    model = _ridge(paths, targets)
    return model, to_onnx(model, tmp_path_factory.mktemp("ridge") / "model.onnx")


@pytest.mark.parametrize(
    "outputs",
    [pytest.param("vector", marks=pytest.mark.slow), pytest.param("one column", marks=pytest.mark.slow), "two columns"],
)
def test_a_regressor_pipeline_is_served_as_it_predicts(texture_files, ridge_of_two, outputs, tmp_path):
    paths, targets = texture_files
    if outputs == "two columns":
        model, path = ridge_of_two
    else:
        model = _ridge(paths, targets[:, 0] if outputs == "vector" else targets[:, :1])
        path = to_onnx(model, tmp_path / "model.onnx")
    served = load_onnx(path)
    assert isinstance(served, OnnxImageRegressor)
    expected = model.predict(paths)
    assert served.predict(paths).shape == expected.shape
    np.testing.assert_allclose(served.predict(paths), expected, atol=TOLERANCE)
    assert served.n_outputs_ == (2 if outputs == "two columns" else 1)


def test_a_regressor_file_is_refused_by_the_classifier_class_by_name(ridge_of_two):
    with pytest.raises(ModelFileError, match=r"holds a regressor.*OnnxImageRegressor"):
        OnnxImageClassifier(ridge_of_two[1])


def test_a_regressor_files_metadata_is_checked(ridge_of_two):
    """``output_ndim`` 1 with two outputs: a vector cannot hold them."""
    meta = load_onnx(ridge_of_two[1]).metadata_
    for field, value in [("n_outputs", 0), ("n_outputs", "2"), ("output_ndim", 3), ("output_ndim", 1), ("outputs", [])]:
        with pytest.raises(ModelFileError, match=field):
            validate_metadata({**meta, field: value}, "model.onnx")


@pytest.mark.parametrize("kind", ["onnx", "joblib"])
def test_cli_predict_writes_a_regressors_predictions(texture_files, ridge_of_two, kind, tmp_path, capsys):
    paths, _ = texture_files
    model, path = ridge_of_two
    if kind == "joblib":
        path = tmp_path / "model.joblib"
        joblib.dump(model, path)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert cli.main(["predict", str(path), *paths[:4], str(bad)]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "prediction(0)", "prediction(1)", "error"]
    np.testing.assert_allclose(np.array(rows[1:5])[:, 1:3].astype(float), model.predict(paths[:4]), atol=TOLERANCE)
    assert rows[5][1:3] == ["", ""] and "bad.png" in rows[5][3]


@pytest.mark.parametrize("n_outputs", [pytest.param(n, marks=pytest.mark.slow) for n in (1, 2)])
def test_a_cnn_regressor_is_served_as_it_predicts(texture_files, n_outputs, tmp_path):
    paths, targets = texture_files
    y = targets[:, 0] if n_outputs == 1 else targets
    model = CNNRegressor(input_size=SIZE, unfreeze="head", progress=False).fit(paths, y)
    served = load_onnx(to_onnx(model, tmp_path / "model.onnx"))
    assert isinstance(served, OnnxImageRegressor) and served.n_outputs_ == n_outputs
    expected = model.predict(paths)
    assert served.predict(paths).shape == expected.shape == ((len(paths),) if n_outputs == 1 else (len(paths), 2))
    np.testing.assert_allclose(served.predict(paths), expected, atol=TOLERANCE)


@pytest.fixture(scope="module")
def multilabel(texture_files, tmp_path_factory):
    """A multi-label CNNClassifier (the head alone) of which of three brightness and contrast facts hold: the
    model, its images and its .onnx file."""
    paths, targets = texture_files
    Y = np.c_[targets[:, 0] > np.median(targets[:, 0]), targets[:, 1] > np.median(targets[:, 1])]
    Y = np.c_[Y, Y[:, 0] ^ Y[:, 1]].astype(int)
    model = CNNClassifier(input_size=SIZE, unfreeze="head", progress=False).fit(paths, Y)
    return model, paths, to_onnx(model, tmp_path_factory.mktemp("multilabel") / "model.onnx")


def test_a_multi_label_cnn_classifier_is_served_as_it_predicts(multilabel):
    model, paths, path = multilabel
    served = load_onnx(path)
    assert isinstance(served, OnnxImageClassifier) and served.metadata_["multilabel"] is True
    assert served.classes_.tolist() == [0, 1, 2]
    np.testing.assert_allclose(served.predict_proba(paths), model.predict_proba(paths), atol=TOLERANCE)
    np.testing.assert_allclose(served.decision_function(paths), model.decision_function(paths), atol=TOLERANCE)
    assert served.predict(paths).shape == (len(paths), 3)
    assert (served.predict(paths) == model.predict(paths)).mean() > 0.99  # a logit within 1e-3 of 0 may flip


def test_a_multi_label_files_metadata_is_checked(multilabel):
    meta = load_onnx(multilabel[2]).metadata_
    with pytest.raises(ModelFileError, match="multilabel"):
        validate_metadata({**meta, "multilabel": "yes"}, "model.onnx")
    with pytest.raises(ModelFileError, match="classes"):
        validate_metadata({**meta, "classes": [0, 0, 1]}, "model.onnx")


def test_cli_predict_writes_each_images_labels(multilabel, capsys):
    model, paths, path = multilabel
    assert cli.main(["predict", str(path), *paths[:6]]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "labels", "p(0)", "p(1)", "p(2)", "error"]
    probabilities = np.array(rows[1:])[:, 2:5].astype(float)
    np.testing.assert_allclose(probabilities, model.predict_proba(paths[:6]), atol=TOLERANCE)
    expected = [";".join(str(j) for j in np.flatnonzero(row >= 0.5)) for row in probabilities]
    assert [row[1] for row in rows[1:]] == expected


def _table(folder, paths, columns, rows) -> str:
    table = folder / "targets.csv"
    with open(table, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", *columns])
        writer.writerows([[os.path.relpath(path, folder), *row] for path, row in zip(paths, rows, strict=True)])
    return str(table)


def test_cli_finetune_a_regressor_from_a_table_then_predict(texture_files, tmp_path, capsys):
    paths, targets = texture_files
    folder = os.path.dirname(paths[0])
    table = _table(pathlib.Path(folder), paths, ["brightness", "contrast"], targets.tolist())
    out = tmp_path / "model.joblib"
    common = ["--input-size", str(SIZE), "--unfreeze", "head"]
    assert cli.main(["finetune", folder, "--task", "regression", "--targets", table, "--out", str(out), *common]) == 0
    assert "2 target(s)" in capsys.readouterr().out
    model = joblib.load(out)
    assert isinstance(model, CNNRegressor) and model.n_outputs_ == 2
    assert cli.main(["predict", str(out), *paths[:3]]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "prediction(0)", "prediction(1)", "error"]
    np.testing.assert_allclose(np.array(rows[1:])[:, 1:3].astype(float), model.predict(paths[:3]), atol=1e-5)


def test_cli_finetune_several_labels_from_a_table(texture_files, tmp_path, capsys):
    paths, targets = texture_files
    folder = pathlib.Path(os.path.dirname(paths[0]))
    bright, contrasted = targets[:, 0] > np.median(targets[:, 0]), targets[:, 1] > np.median(targets[:, 1])
    labels = [
        ";".join(name for name, on in [("bright", b), ("contrasted", c)] if on)
        for b, c in zip(bright, contrasted, strict=True)
    ]
    table = _table(folder, paths, ["labels"], [[label] for label in labels])
    out = tmp_path / "model.joblib"
    args = ["--task", "multilabel", "--targets", table, "--input-size", str(SIZE), "--unfreeze", "head"]
    assert cli.main(["finetune", str(folder), *args, "--out", str(out)]) == 0
    assert "2 labels" in capsys.readouterr().out
    model = joblib.load(out)
    assert model.target_type_ == "multilabel-indicator" and model.classes_.tolist() == ["bright", "contrasted"]
    assert cli.main(["predict", str(out), *paths[:6]]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "labels", "p(bright)", "p(contrasted)", "error"]
    predicted = model.predict(paths[:6])
    assert [row[1] for row in rows[1:]] == [";".join(np.array(["bright", "contrasted"])[row == 1]) for row in predicted]


@pytest.mark.parametrize(
    ("rows", "message"),
    [([["0.5", "1"]], "line 2: 3 fields where 2"), ([["bright"]], "needs numbers")],
)
def test_cli_finetune_names_a_bad_table(texture_files, rows, message, tmp_path, capsys):
    paths, _ = texture_files
    folder = pathlib.Path(os.path.dirname(paths[0]))
    table = _table(folder, paths[:1], ["brightness"], rows)
    args = ["finetune", str(folder), "--task", "regression", "--targets", table, "--out", str(tmp_path / "m.joblib")]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow  # 6-7 s: a multi-label fit exported and served
def test_a_multi_label_model_of_named_labels_is_served_with_its_names(texture_files, tmp_path):
    """Each image's labels as sets: the names are classes_, in the file and in the served model."""
    paths, targets = texture_files
    sets = [{"bright"} if t[0] > np.median(targets[:, 0]) else {"dark", "dim"} for t in targets]
    model = CNNClassifier(input_size=SIZE, unfreeze="head", progress=False).fit(paths, sets)
    assert model.classes_.tolist() == ["bright", "dark", "dim"]
    served = load_onnx(to_onnx(model, tmp_path / "model.onnx"))
    assert served.classes_.tolist() == ["bright", "dark", "dim"]
    assert served.predict(paths).dtype.kind == "i" and (served.predict(paths) == model.predict(paths)).mean() > 0.99
