"""skcnn.export and skcnn.serving: one ONNX file per fitted model, predicting without torch as the model does."""

import csv
import io
import json
import os
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC

from skcnn import CNNClassifier, CNNFeatureTransformer, cli
from skcnn.datasets import load_digit_images, load_photo_crops, load_texture_patches
from skcnn.export import to_onnx
from skcnn.images import load_image
from skcnn.serving import OnnxImageClassifier

#: The parity the served file keeps with the fitted model (absolute, on probabilities).
PROBABILITY_TOLERANCE = 1e-3
#: On the decision scores of a classifier without probabilities (LinearSVC: unbounded, here up to 8;
#: Pillow's resize is one level off torch's on a few pixels in a thousand, measured 2.7e-3).
SCORE_TOLERANCE = 1e-2
#: Where the served crops are the fitted model's, pixel for pixel (images the resize enlarges): float32 rounding.
EXACT_SCORE_TOLERANCE = 1e-4
SIZE = 64


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    """Real photos as JPEG files (crops of scikit-image's photos and textures, varied sizes), labelled."""
    folder = tmp_path_factory.mktemp("photos")
    crops, photo = load_photo_crops(160, photos=("astronaut", "coffee", "rocket", "chelsea"))
    paths = []
    for i, crop in enumerate(crops):
        image = Image.fromarray(crop)
        if i % 3 == 1:
            image = image.resize((200, 130))  # not square: the resize and crop rules count
        path = folder / f"{i}.jpg"
        image.save(path, quality=88)
        paths.append(str(path))
    return paths, photo


@pytest.fixture(scope="module")
def exported_pipeline(photo_files, tmp_path_factory):
    """A Lite0 pipeline (StandardScaler, LogisticRegression) fitted on paths, exported from the shell."""
    paths, labels = photo_files
    folder = tmp_path_factory.mktemp("model")
    transformer = CNNFeatureTransformer(input_size=SIZE, progress=False)
    model = make_pipeline(transformer, StandardScaler(), LogisticRegression(max_iter=2000)).fit(paths, labels)
    joblib.dump(model, folder / "model.pkl")
    assert cli.main(["export", str(folder / "model.pkl"), str(folder / "model.onnx")]) == 0
    return model, folder / "model.onnx"


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """scikit-learn's digits as gray PNG files of 28 px and 64 px (MNIST-like: the resize enlarges them), labelled."""
    folder = tmp_path_factory.mktemp("digits")
    images, labels = load_digit_images(n_per_class=4)
    paths = {}
    for side in (28, 64):
        paths[side] = []
        for i, image in enumerate(images):
            path = folder / f"{side}_{i}.png"
            Image.fromarray(image).resize((side, side), Image.BILINEAR).save(path)
            paths[side].append(str(path))
    return paths, labels


def assert_parity(fitted, served, paths, scores="predict_proba"):
    expected, got = getattr(fitted, scores)(paths), getattr(served, scores)(paths)
    tolerance = PROBABILITY_TOLERANCE if scores == "predict_proba" else SCORE_TOLERANCE
    assert np.abs(np.asarray(expected) - got).max() <= tolerance
    assert (fitted.predict(paths) == served.predict(paths)).mean() >= 0.995


@pytest.mark.slow
def test_a_pipeline_becomes_one_file_that_predicts_as_it_does(exported_pipeline, photo_files):
    model, path = exported_pipeline
    paths, _ = photo_files
    served = OnnxImageClassifier(path)
    assert_parity(model, served, paths)
    assert served.classes_.tolist() == model.classes_.tolist()
    meta = served.metadata_
    assert meta["kind"] == "classifier" and meta["input"]["layout"] == "NHWC uint8 RGB"
    assert meta["preprocessing"]["crop_size"] == [SIZE, SIZE] and meta["preprocessing"]["jpeg_dct_margin"] == 3.0


def test_the_served_file_runs_where_torch_cannot_be_imported(exported_pipeline, photo_files, tmp_path):
    model, path = exported_pipeline
    paths, _ = photo_files
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({"paths": paths, "proba": model.predict_proba(paths).tolist()}))
    script = textwrap.dedent(
        f"""
        import importlib.abc, json, sys
        import numpy as np

        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "timm"):
                    raise ImportError(f"{{name}} is not available here")

        sys.meta_path.insert(0, NoTorch())
        from skcnn.serving import OnnxImageClassifier

        data = json.load(open({str(expected)!r}))
        proba = OnnxImageClassifier({str(path)!r}).predict_proba(data["paths"])
        assert not any(m.split(".")[0] in ("torch", "torchvision", "timm") for m in sys.modules)
        print(float(np.abs(proba - np.array(data["proba"])).max()))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) <= PROBABILITY_TOLERANCE


@pytest.mark.slow
def test_two_backbones_and_a_classifier_without_probabilities(photo_files, tmp_path):
    paths, labels = photo_files
    two = CNNFeatureTransformer(backbone=["resnet18", "alexnet"], weights=None, input_size=SIZE, precision="fp32",
                                progress=False)  # fmt: skip
    model = make_pipeline(two, StandardScaler(), LinearSVC()).fit(paths, labels)
    served = OnnxImageClassifier(to_onnx(model, tmp_path / "two.onnx"))
    assert served.metadata_["outputs"] == ["label", "scores"]
    assert_parity(model, served, paths, scores="decision_function")
    assert not hasattr(served, "predict_proba")
    with pytest.raises(AttributeError, match="no predict_proba"):
        served.predict_proba(paths[:1])


@pytest.mark.slow
def test_a_cnn_classifier_head_only_and_fine_tuned(photo_files, tmp_path):
    paths, labels = photo_files
    head = CNNClassifier(input_size=SIZE, unfreeze="head", layer="blocks.5", progress=False).fit(paths, labels)
    assert_parity(head, OnnxImageClassifier(to_onnx(head, tmp_path / "head.onnx")), paths)
    # fp32: on a CPU with native bf16, precision="auto" runs ResNet-18 in bf16, 3e-3 off the fp32 graph.
    tuned = CNNClassifier(backbone="resnet18", weights=None, input_size=SIZE, unfreeze="layer4", max_epochs=1,
                          early_stopping=False, random_state=0, precision="fp32", progress=False)  # fmt: skip
    tuned.fit(paths, labels)
    served = OnnxImageClassifier(to_onnx(tuned, tmp_path / "tuned.onnx"))
    assert_parity(tuned, served, paths)
    assert served.predict(paths[:2]).dtype.kind == "U"


@pytest.mark.slow
def test_a_transformer_alone_gives_its_codes(photo_files, tmp_path):
    paths, _ = photo_files
    transformer = CNNFeatureTransformer(input_size=SIZE, layer=["blocks.4", "penultimate"], pooling="spp",
                                        progress=False).fit(paths)  # fmt: skip
    served = OnnxImageClassifier(to_onnx(transformer, tmp_path / "codes.onnx"))
    codes, expected = served.transform(paths[:6]), transformer.transform(paths[:6])
    assert codes.shape == expected.shape
    assert np.linalg.norm(codes - expected) / np.linalg.norm(expected) < 0.01
    with pytest.raises(AttributeError, match="use transform"):
        served.predict(paths[:1])


def test_bad_images_are_named_and_the_others_predicted(exported_pipeline, photo_files, tmp_path):
    model, path = exported_pipeline
    paths, _ = photo_files
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    served = OnnxImageClassifier(path)
    from skcnn import BadImagesError

    with pytest.raises(BadImagesError, match=r"broken\.jpg") as caught:
        served.predict_proba([paths[0], str(tmp_path / "broken.jpg"), paths[1]])
    np.testing.assert_allclose(caught.value.codes[[0, 2]], model.predict_proba(paths[:2]), atol=PROBABILITY_TOLERANCE)
    assert np.isnan(caught.value.codes[1]).all()


def test_what_cannot_be_exported_is_named(photo_files, tmp_path):
    X, y = load_texture_patches(n_per_class=4, patch_size=32)
    odd = make_pipeline(
        CNNFeatureTransformer(input_size=32, progress=False), FunctionTransformer(np.sqrt), KNeighborsClassifier(1)
    )
    with pytest.raises(ValueError, match=r"cannot convert the steps after the transformer \[functiontransformer"):
        to_onnx(odd.fit(X, y), tmp_path / "odd.onnx")
    with pytest.raises(TypeError, match="to_onnx takes a fitted CNNClassifier"):
        to_onnx(LogisticRegression().fit(np.eye(2), [0, 1]), tmp_path / "lr.onnx")


def test_cli_predict_takes_the_onnx_file(exported_pipeline, photo_files, capsys):
    model, path = exported_pipeline
    paths, _ = photo_files
    assert cli.main(["predict", str(path), *paths[:3]]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["label"] for row in rows] == model.predict(paths[:3]).tolist()


@pytest.mark.slow
@pytest.mark.parametrize("side", [28, 64])
def test_small_gray_sources_are_resized_as_the_fitted_model_does(digit_files, side, tmp_path):
    # Enlarged 28 px sources were 1-2 levels off on ~1% of values with Pillow's resize, 5e-3 in probabilities.
    paths, labels = digit_files
    paths = paths[side]
    model = make_pipeline(CNNFeatureTransformer(input_size=SIZE, progress=False), LogisticRegression(max_iter=2000))
    served = OnnxImageClassifier(to_onnx(model.fit(paths, labels), tmp_path / "digits.onnx"))
    recipe = model[0].extractor_.preprocessing(model[0].extractor_.load())
    for path in paths[:8]:
        fitted = recipe.crop(load_image(path)).numpy().transpose(1, 2, 0)
        np.testing.assert_array_equal(served.crop(path), np.broadcast_to(fitted, (SIZE, SIZE, 3)))
    assert np.abs(served.predict_proba(paths) - model.predict_proba(paths)).max() <= PROBABILITY_TOLERANCE
    assert (served.predict(paths) == model.predict(paths)).all()


@pytest.mark.slow
def test_decision_function_gives_the_fitted_models_scores(digit_files, tmp_path):
    paths, labels = digit_files
    paths, odd = paths[28], np.where(labels % 2 == 1, "odd", "even")
    transformer = CNNFeatureTransformer(input_size=SIZE, progress=False)
    several = make_pipeline(transformer, StandardScaler(), LogisticRegression(max_iter=2000)).fit(paths, labels)
    two = make_pipeline(transformer, StandardScaler(), LinearSVC()).fit(paths, odd)
    cnn = CNNClassifier(input_size=SIZE, unfreeze="head", layer="blocks.5", max_epochs=3, random_state=0,
                        precision="fp32", progress=False).fit(paths, odd)  # fmt: skip
    for name, model, shape in [("lr", several, (len(paths), 10)), ("svc", two, (len(paths),)),
                               ("cnn", cnn, (len(paths),))]:  # fmt: skip
        served = OnnxImageClassifier(to_onnx(model, tmp_path / f"{name}.onnx"))
        scores = served.decision_function(paths)
        assert scores.shape == shape
        np.testing.assert_allclose(scores, model.decision_function(paths), atol=EXACT_SCORE_TOLERANCE, rtol=1e-4)
        assert hasattr(served, "predict_proba") == hasattr(model, "predict_proba")
    probabilities = OnnxImageClassifier(tmp_path / "cnn.onnx").predict_proba(paths)
    np.testing.assert_allclose(probabilities, cnn.predict_proba(paths), atol=PROBABILITY_TOLERANCE)


def test_a_file_of_the_previous_version_is_read_or_refused_by_name(exported_pipeline, photo_files, tmp_path):
    import onnx

    model, path = exported_pipeline
    paths, _ = photo_files
    graph = onnx.load(path)
    meta = json.loads(graph.metadata_props[0].value)  # as skcnn 0.6 wrote it: no "scores" output
    meta.update({"outputs": ["label", "probabilities"], "scores": "probabilities", "skcnn_version": "0.6.0"})
    onnx.helper.set_model_props(graph, {"skcnn": json.dumps(meta)})
    onnx.save(graph, tmp_path / "old.onnx")
    served = OnnxImageClassifier(tmp_path / "old.onnx")
    assert_parity(model, served, paths)
    assert not hasattr(served, "decision_function")
    with pytest.raises(AttributeError, match=r"old\.onnx was exported by skcnn 0\.6\.0.*export the fitted model again"):
        served.decision_function(paths[:1])


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_the_file_has_a_new_files_usual_mode(umask, tmp_path):
    X, _ = load_texture_patches(n_per_class=2, patch_size=32)
    transformer = CNNFeatureTransformer(backbone="resnet18", weights=None, input_size=32, progress=False).fit(X)
    previous = os.umask(umask)
    try:
        path = to_onnx(transformer, tmp_path / "codes.onnx")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["codes.onnx"]  # no temporary file left
