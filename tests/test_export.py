"""skcnn.export and skcnn.serving: one ONNX file per fitted model, predicting without torch as the model does."""

import json
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
from skcnn.datasets import load_photo_crops, load_texture_patches
from skcnn.export import to_onnx
from skcnn.serving import OnnxImageClassifier

#: The parity the served file keeps with the fitted model (absolute, on probabilities).
PROBABILITY_TOLERANCE = 1e-3
#: On the decision scores of a classifier without probabilities (LinearSVC: unbounded, here up to 8;
#: Pillow's resize is one level off torch's on a few pixels in a thousand, measured 2.7e-3).
SCORE_TOLERANCE = 1e-2
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


def assert_parity(fitted, served, paths, scores="predict_proba"):
    expected, got = getattr(fitted, scores)(paths), getattr(served, scores)(paths)
    tolerance = PROBABILITY_TOLERANCE if scores == "predict_proba" else SCORE_TOLERANCE
    assert np.abs(np.asarray(expected) - got).max() <= tolerance
    assert (fitted.predict(paths) == served.predict(paths)).mean() >= 0.995


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


def test_two_backbones_and_a_classifier_without_probabilities(photo_files, tmp_path):
    paths, labels = photo_files
    two = CNNFeatureTransformer(backbone=["resnet18", "alexnet"], weights=None, input_size=SIZE, precision="fp32",
                                progress=False)  # fmt: skip
    model = make_pipeline(two, StandardScaler(), LinearSVC()).fit(paths, labels)
    served = OnnxImageClassifier(to_onnx(model, tmp_path / "two.onnx"))
    assert served.metadata_["scores"] == "decision_function"
    assert_parity(model, served, paths, scores="decision_function")
    with pytest.raises(AttributeError, match="no predict_proba"):
        served.predict_proba(paths[:1])


def test_a_cnn_classifier_head_only_and_fine_tuned(photo_files, tmp_path):
    paths, labels = photo_files
    head = CNNClassifier(input_size=SIZE, unfreeze="head", layer="blocks.5", progress=False).fit(paths, labels)
    assert_parity(head, OnnxImageClassifier(to_onnx(head, tmp_path / "head.onnx")), paths)
    tuned = CNNClassifier(backbone="resnet18", weights=None, input_size=SIZE, unfreeze="layer4", max_epochs=1,
                          early_stopping=False, random_state=0, progress=False).fit(paths, labels)  # fmt: skip
    served = OnnxImageClassifier(to_onnx(tuned, tmp_path / "tuned.onnx"))
    assert_parity(tuned, served, paths)
    assert served.predict(paths[:2]).dtype.kind == "U"


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
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[1] for line in lines] == model.predict(paths[:3]).tolist()
