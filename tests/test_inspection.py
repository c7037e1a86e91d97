"""skcnn.inspection: top losses, label issues, duplicates, class activation maps, pictures, `skcnn inspect`."""

import sys
import warnings
from collections import Counter
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from skcnn import CNNClassifier, CNNFeatureTransformer, cli
from skcnn.datasets import flip_labels, load_half_textures, load_photo_crops, load_texture_patches, near_copies
from skcnn.images import BadImagesWarning
from skcnn.inspection import (
    class_activation_maps,
    find_duplicates,
    label_issues,
    plot_duplicates,
    plot_top_losses,
    top_losses,
)

SIZE = 64
PHOTOS = ("astronaut", "coffee", "rocket", "camera", "coins", "immunohistochemistry", "chelsea", "page")


def codes(**params):
    return CNNFeatureTransformer(input_size=SIZE, precision="fp32", progress=False, **params)


@pytest.fixture(scope="module")
def patches():
    X, y = load_texture_patches(n_per_class=20, patch_size=48)
    X_test, y_test = load_texture_patches("test", n_per_class=10, patch_size=48)
    return X, y, X_test, y_test


@pytest.fixture(scope="module")
def scaled_pipeline(patches):
    X, y, _, _ = patches
    return make_pipeline(codes(), StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)


# -- top_losses ------------------------------------------------------------------


def test_top_losses_scores_every_image_worst_first(patches, scaled_pipeline):
    _, _, X_test, y_test = patches
    y_given = y_test.copy()
    y_given[3] = "grass" if y_test[3] != "grass" else "brick"  # one wrong label
    table = top_losses(scaled_pipeline, X_test, y_given)
    assert list(table.columns) == ["position", "label", "predicted", "probability", "loss"]
    assert sorted(table["position"]) == list(range(len(X_test)))
    assert table["loss"].is_monotonic_decreasing
    assert table["position"].iloc[0] == 3  # the wrong label costs the most
    proba = scaled_pipeline.predict_proba(X_test)
    classes = list(scaled_pipeline.classes_)
    for row in table.itertuples():
        assert row.label == y_given[row.position]
        assert row.predicted == scaled_pipeline.predict(X_test[row.position : row.position + 1])[0]
        assert row.probability == pytest.approx(proba[row.position, classes.index(row.label)], abs=1e-6)
        assert row.loss == pytest.approx(-np.log(row.probability), rel=1e-9)


def test_top_losses_out_of_fold_equals_cross_validating_the_whole_pipeline(patches):
    X, y, _, _ = patches
    pipeline = make_pipeline(codes(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    table = top_losses(pipeline, X, y, cv=folds).sort_values("position")
    expected = cross_val_predict(pipeline, X, y, cv=folds, method="predict_proba")
    classes = np.unique(y)
    given = expected[np.arange(len(y)), np.searchsorted(classes, y)]
    np.testing.assert_allclose(table["probability"], given, atol=1e-5)
    with pytest.raises(AttributeError):  # the estimator itself was cloned, never fitted
        pipeline[-1].coef_  # noqa: B018


def test_top_losses_of_a_classifier_without_probabilities_ranks_by_its_decision_function(patches):
    X, y, X_test, y_test = patches
    model = make_pipeline(codes(), LinearSVC()).fit(X, y)
    table = top_losses(model, X_test, y_test)
    scores = model.decision_function(X_test)
    column = np.searchsorted(model.classes_, y_test)
    margin = scores[np.arange(len(y_test)), column] - np.log(np.exp(scores).sum(axis=1))
    np.testing.assert_allclose(table.sort_values("position")["loss"], -margin, rtol=1e-6)


@pytest.mark.slow
def test_top_losses_of_a_cnn_classifier(patches):
    X, y, X_test, y_test = patches
    model = CNNClassifier(input_size=SIZE, unfreeze="head", layer="penultimate", progress=False).fit(X, y)
    table = top_losses(model, X_test, y_test).sort_values("position")
    proba = model.predict_proba(X_test)[np.arange(len(y_test)), np.searchsorted(model.classes_, y_test)]
    np.testing.assert_allclose(table["probability"], proba, rtol=1e-6)


@pytest.mark.slow
def test_out_of_fold_losses_of_a_cnn_classifier_leave_bad_images_out(tmp_path, patches):
    X, y, _, _ = patches
    paths = []
    for i, image in enumerate(X[::2]):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    model = CNNClassifier(input_size=SIZE, unfreeze="head", layer="penultimate", progress=False)
    with pytest.warns(BadImagesWarning, match="1 of 31 images could not be used"):
        table = top_losses(model, [*paths, str(tmp_path / "broken.png")], [*y[::2], "brick"], cv=2)
    assert sorted(table["position"]) == list(range(30))
    assert (table["predicted"] == table["label"]).mean() > 0.8


def test_top_losses_names_files_and_leaves_bad_ones_out(tmp_path, patches, scaled_pipeline):
    _, _, X_test, y_test = patches
    paths = []
    for i, image in enumerate(X_test[:5]):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths.insert(2, str(tmp_path / "broken.png"))
    labels = np.insert(y_test[:5], 2, y_test[0])
    with pytest.warns(BadImagesWarning, match="1 of 6 images could not be used.*broken.png"):
        table = top_losses(scaled_pipeline, paths, labels)
    assert sorted(table["position"]) == [0, 1, 3, 4, 5]
    assert all(table["path"] == [paths[i] for i in table["position"]])
    assert [failure.index for failure in table.attrs["failed"]] == [2]


def test_inspection_refuses_other_models_and_names_the_supported_ones(patches):
    X, y, _, _ = patches
    with pytest.raises(TypeError, match="CNNClassifier, or a scikit-learn Pipeline"):
        top_losses(LogisticRegression(), X, y, cv=2)
    with pytest.raises(ValueError, match="one label per image"):
        top_losses(make_pipeline(codes(), LogisticRegression()), X, y[:-1], cv=2)


# -- label_issues ----------------------------------------------------------------


def test_label_issues_and_out_of_fold_losses_find_planted_label_errors():
    X, y = load_texture_patches(n_per_class=40, patch_size=48)
    noisy, flipped = flip_labels(y, 0.1, random_state=0)
    model = make_pipeline(codes(), LogisticRegression(max_iter=2000))
    issues = label_issues(model, X, noisy, cv=5)
    top = set(issues["position"].head(len(flipped)))
    assert len(top & set(flipped)) >= 0.7 * len(flipped)
    assert issues["label_quality"].is_monotonic_increasing
    losses = top_losses(model, X, noisy, cv=5)
    assert len(set(losses["position"].head(len(flipped))) & set(flipped)) >= 0.7 * len(flipped)


def test_label_issues_without_cleanlab_says_how_to_install_it(monkeypatch, patches):
    X, y, _, _ = patches
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    with pytest.raises(ImportError, match="pip install cleanlab"):
        label_issues(make_pipeline(codes(), LogisticRegression()), X, y)


# -- find_duplicates -------------------------------------------------------------


def photo_crops():
    crops, _ = load_photo_crops(128, photos=PHOTOS)
    return crops


def test_find_duplicates_finds_planted_copies_and_not_other_photos_of_a_scene():
    photos = photo_crops()
    rng = np.random.default_rng(0)
    copied = list(range(0, len(photos), 4))
    test, source = [], []
    for i in copied:
        test += near_copies(photos[i], rng)
        source += [i] * 3
    unseen = photos[1::4]  # other crops of the same photos, not in training
    train = [photo for i, photo in enumerate(photos) if i % 4 != 1]
    position = {i: n for n, i in enumerate(i for i in range(len(photos)) if i % 4 != 1)}
    test += unseen
    pairs = find_duplicates(train, test)
    found = {(row.index, row.other_index) for row in pairs.itertuples()}
    planted = {(position[i], j) for j, i in enumerate(source)}
    recall = len(found & planted) / len(planted)
    assert recall >= 0.9, recall
    assert len(found - planted) <= len(planted)
    assert (pairs["similarity"] >= 0.93).all() and pairs["similarity"].is_monotonic_decreasing


def test_find_duplicates_within_a_set_reports_each_pair_once_and_exact_copies():
    photos = photo_crops()[:6]
    X = [*photos, photos[2].copy(), near_copies(photos[4])[0]]
    pairs = find_duplicates(X)
    assert pairs[["index", "other_index", "exact"]].values.tolist()[:2] == [[2, 6, True], [4, 7, False]]
    assert (pairs["index"] < pairs["other_index"]).all()
    assert pairs["similarity"].iloc[0] == 1.0


@pytest.mark.slow
def test_find_duplicates_names_files_and_checks_the_threshold(tmp_path):
    photos = photo_crops()[:3]
    paths = []
    for i, photo in enumerate([*photos, photos[1]]):
        Image.fromarray(photo).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    pairs = find_duplicates(paths, transformer=codes(layer="blocks.4", pooling="spp"))
    assert pairs.iloc[0][["path", "other_path", "exact"]].tolist() == [paths[1], paths[3], True]
    with pytest.raises(ValueError, match="threshold must be a cosine similarity"):
        find_duplicates(paths, threshold=1.5)


# -- class_activation_maps -------------------------------------------------------


def test_maps_are_exact_for_a_scaled_linear_pipeline(patches, scaled_pipeline):
    _, _, X_test, _ = patches
    maps = class_activation_maps(scaled_pipeline, X_test[:4], upsample=False)
    scaler, linear = scaled_pipeline[1], scaled_pipeline[-1]
    intercept = linear.intercept_ - (linear.coef_ / scaler.scale_) @ scaler.mean_
    np.testing.assert_allclose(
        maps.mean(axis=(2, 3)) + intercept, scaled_pipeline.decision_function(X_test[:4]), atol=1e-4
    )
    assert class_activation_maps(scaled_pipeline, X_test[:2]).shape == (2, 3, SIZE, SIZE)


def test_two_classes_give_two_maps_one_the_negative_of_the_other(patches):
    X, y, X_test, _ = patches
    two = y != "gravel"
    model = make_pipeline(codes(layer="blocks.4"), RidgeClassifier()).fit(X[two], y[two])
    maps = class_activation_maps(model, X_test[:3], upsample=False)
    assert maps.shape[1] == 2
    np.testing.assert_array_equal(maps[:, 0], -maps[:, 1])
    np.testing.assert_allclose(
        maps[:, 1].mean(axis=(1, 2)) + model[-1].intercept_, model.decision_function(X_test[:3]), atol=1e-4
    )


def test_maps_of_a_cnn_classifier_are_exact(patches):
    X, y, X_test, _ = patches
    model = CNNClassifier(input_size=SIZE, unfreeze="head", layer="blocks.4", progress=False).fit(X, y)
    maps = class_activation_maps(model, X_test[:3], upsample=False)
    bias = model.module_.head.bias.detach().numpy()
    np.testing.assert_allclose(maps.mean(axis=(2, 3)) + bias, model.decision_function(X_test[:3]), atol=1e-4)


def test_maps_put_their_mass_on_the_texture_not_on_the_grey_half():
    X, y, _ = load_half_textures(12, random_state=0)
    X_test, y_test, sides = load_half_textures(6, random_state=1)
    transformer = CNNFeatureTransformer(input_size=128, layer="blocks.4", precision="fp32", progress=False)
    model = make_pipeline(transformer, LogisticRegression(max_iter=2000)).fit(X, y)
    maps = class_activation_maps(model, X_test)
    own = np.clip(maps[np.arange(len(y_test)), np.searchsorted(model.classes_, y_test)], 0, None)
    half = own.shape[2] // 2
    on_texture = np.array([m[:, half:].sum() if s else m[:, :half].sum() for m, s in zip(own, sides, strict=True)])
    share = on_texture / own.sum(axis=(1, 2))
    assert share.mean() >= 0.7, share


def test_maps_refuse_models_they_cannot_compute_exactly(patches):
    X, y, _, _ = patches
    with pytest.raises(ValueError, match="pooling='max'"):
        class_activation_maps(make_pipeline(codes(pooling="max"), LogisticRegression()).fit(X, y), X[:1])
    with pytest.raises(ValueError, match="SVC has no linear decision function"):
        class_activation_maps(make_pipeline(codes(), SVC()).fit(X, y), X[:1])
    with pytest.raises(ValueError, match="SVC does not score each class as a weighted sum"):  # one-vs-one votes
        class_activation_maps(make_pipeline(codes(), SVC(kernel="linear")).fit(X, y), X[:1])
    alexnet = CNNFeatureTransformer(backbone="alexnet", weights=None, input_size=SIZE, progress=False)
    with pytest.raises(ValueError, match="not a global average pool of a conv map"):
        class_activation_maps(make_pipeline(alexnet, LogisticRegression()).fit(X, y), X[:1])


def test_maps_of_resnet_penultimate_codes_read_its_last_conv_map(patches):
    X, y, X_test, _ = patches
    resnet = CNNFeatureTransformer(backbone="resnet18", weights=None, input_size=SIZE, precision="fp32", progress=False)
    model = make_pipeline(resnet, LogisticRegression(max_iter=500)).fit(X, y)
    maps = class_activation_maps(model, X_test[:2], upsample=False)
    np.testing.assert_allclose(
        maps.mean(axis=(2, 3)) + model[-1].intercept_, model.decision_function(X_test[:2]), atol=1e-3
    )


# -- pictures and the command line ------------------------------------------------


def test_plots_show_the_images_with_their_titles(patches, scaled_pipeline):
    import matplotlib

    matplotlib.use("Agg")
    _, _, X_test, y_test = patches
    table = top_losses(scaled_pipeline, X_test, y_test)
    figure = plot_top_losses(table, X_test, k=5, model=scaled_pipeline, ncols=3)
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 5 and all(len(ax.images) == 2 for ax in shown)  # image and map
    first = table.iloc[0]
    assert shown[0].get_title().startswith(f"{first.label} / {first.predicted}")
    plain = plot_top_losses(table, X_test, k=2)
    assert [len(ax.images) for ax in plain.axes if ax.images] == [1, 1]
    pairs = find_duplicates(X_test[:4], [X_test[1]], transformer=codes())
    figure = plot_duplicates(pairs, X_test[:4], [X_test[1]])
    assert "same content" in figure.axes[1].get_title()


def write_class_folders(root, images, labels):
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / label / f"{i}.png")


def test_cli_inspect_writes_the_report_on_a_dirty_folder(tmp_path, capsys, patches):
    X, y, X_test, y_test = patches
    write_class_folders(tmp_path / "train", X[::2], y[::2])
    (tmp_path / "train" / "brick" / "broken.png").write_bytes(b"not an image")
    write_class_folders(tmp_path / "test", [*X_test[:3], X[0]], [*y_test[:3], y[0]])  # X[0] leaks
    model = make_pipeline(codes(), LogisticRegression(max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImagesWarning)
        model.fit(X[::2], y[::2])
    joblib.dump(model, tmp_path / "model.pkl")
    argv = ["inspect", str(tmp_path / "model.pkl"), str(tmp_path / "train"), "--out", str(tmp_path / "report")]
    assert cli.main([*argv, "--test", str(tmp_path / "test"), "--cv", "3", "--top", "4"]) == 0
    out = capsys.readouterr().out
    assert "31 images, 3 classes" in out
    assert "4 of 4 images scored (0 left out)" in out and "the --test images (held out)" in out
    assert "1 test images with a copy among the images" in out
    assert "left out 1 file(s) that could not be used: " in out and "broken.png" in out
    report = tmp_path / "report"
    assert len(pd.read_csv(report / "top_losses.csv")) == 4  # the --test images, not the training ones
    assert pd.read_csv(report / "failed.csv")["path"].str.contains("broken.png").all()
    for name in ("top_losses.csv", "label_issues.csv", "duplicates.csv", "leakage.csv"):
        assert (report / name).stat().st_size > 0
    for name in ("top_losses.png", "confusion.png"):
        assert (report / name).read_bytes()[:4] == b"\x89PNG"


def test_a_class_whose_every_image_fails_is_a_clear_error(tmp_path, patches):
    X, y, _, _ = patches
    broken = [str(tmp_path / f"broken{i}.png") for i in range(3)]
    for path in broken:
        Path(path).write_bytes(b"not an image")
    model = make_pipeline(codes(), LogisticRegression(max_iter=2000))
    with pytest.raises(ValueError, match=r"every image of class\(es\) \['lost'\] could not be used.*broken0.png"):
        top_losses(model, [*X[:12], *broken], [*y[:12], *["lost"] * 3], cv=2)


@pytest.mark.slow
def test_out_of_fold_inspection_decodes_each_image_a_bounded_number_of_times(patches, monkeypatch):
    from skcnn import images as image_io
    from skcnn.inspection import out_of_fold_losses

    X, y, _, _ = patches
    X, y = list(X[::2]), y[::2]
    decoded = []
    load_image = image_io.load_image
    monkeypatch.setattr(image_io, "load_image", lambda *a, **k: decoded.append(1) or load_image(*a, **k))
    classifier = CNNClassifier(input_size=SIZE, unfreeze="head", layer="penultimate", progress=False)
    label_issues(classifier, X, y, cv=5)
    # Once for the codes of every fold's fit (one code store), naming the bad images; once for the predictions.
    assert len(decoded) <= 2 * len(X)
    decoded.clear()
    out_of_fold_losses(make_pipeline(codes(), LogisticRegression(max_iter=2000)), X, y, cv=5)
    assert len(decoded) <= len(X)  # a frozen network: codes once, the steps cross-validated on them


def counted_decodes(monkeypatch) -> Counter:
    """Calls of :func:`skcnn.images.load_image` from now on, by image file (other images by id)."""
    from skcnn import images as image_io

    decoded = Counter()
    load_image = image_io.load_image

    def counted(image, *args, **kwargs):
        decoded[str(image) if isinstance(image, (str, Path)) else id(image)] += 1
        return load_image(image, *args, **kwargs)

    monkeypatch.setattr(image_io, "load_image", counted)
    return decoded


def decodes_of_cli_inspect(tmp_path, monkeypatch, model, patches, held_out: bool) -> dict[str, int]:
    """Decodes of each image file by `skcnn inspect` of ``model`` fit on the training images, but for
    the images top_losses.png shows (read again to be shown)."""
    X, y, X_test, y_test = patches
    write_class_folders(tmp_path / "train", X[::2], y[::2])
    write_class_folders(tmp_path / "test", X_test[:6], y_test[:6])
    joblib.dump(model.fit(X[::2], y[::2]), tmp_path / "model.pkl")
    argv = ["inspect", str(tmp_path / "model.pkl"), str(tmp_path / "train"), "--out", str(tmp_path / "report")]
    argv += ["--cv", "5", "--top", "2", *(["--test", str(tmp_path / "test")] if held_out else [])]
    decoded = counted_decodes(monkeypatch)
    assert cli.main(argv) == 0
    shown = set(pd.read_csv(tmp_path / "report" / "top_losses.csv")["path"].head(2))
    files = sorted(str(path) for path in tmp_path.glob(f"{'t' if held_out else 'train'}*/*/*.png"))
    assert len(files) == 36 if held_out else 30
    assert set(decoded) <= set(files)  # every decode counted is of one of the files
    return {path: decoded[path] for path in files if path not in shown}


@pytest.mark.slow
@pytest.mark.parametrize("held_out", [False, True], ids=["out-of-fold", "held-out"])
@pytest.mark.parametrize(
    ("model", "bound"),
    [
        # The network at its own input size, where the duplicates' codes are taken in the same pass.
        (make_pipeline(CNNFeatureTransformer(progress=False), LogisticRegression(max_iter=2000)), 1),
        # One pass for the codes the folds' heads are fit on and the duplicates', one for predictions.
        (CNNClassifier(unfreeze="head", layer="penultimate", progress=False), 2),
    ],
    ids=["pipeline", "cnn-classifier"],
)
def test_cli_inspect_decodes_each_image_a_bounded_number_of_times(
    tmp_path, monkeypatch, patches, model, bound, held_out
):
    decodes = decodes_of_cli_inspect(tmp_path, monkeypatch, clone(model), patches, held_out)
    assert min(decodes.values()) >= 1 and max(decodes.values()) <= bound, Counter(decodes.values())


def test_codes_read_in_one_pass_are_each_readers_own(patches, monkeypatch):
    from skcnn.inspection.codes import read_codes, tapped_together

    X = list(patches[0][:6])
    # On torch: ONNX Runtime would export a graph for each set of taps.
    model = codes(layer=["blocks.4", "penultimate"], pooling=["avg", "max"], runtime="torch")
    duplicates = codes(layer=["blocks.2", "blocks.4"], pooling="spp", runtime="torch")
    decoded = counted_decodes(monkeypatch)
    read = read_codes({"model": model, "duplicates": duplicates}, X)
    assert sorted(decoded.values()) == [1] * len(X)  # one pass for both
    for name, reader in (("model", model), ("duplicates", duplicates)):
        np.testing.assert_allclose(read[name].codes, clone(reader).fit_transform(X), rtol=1e-5, atol=1e-6)
    assert tapped_together(model, codes().set_params(input_size=96)) is None  # another input: a pass of its own
    assert tapped_together(model, codes(relu=False)) is None


@pytest.mark.slow
def test_out_of_fold_probabilities_of_a_cnn_classifier_are_those_of_fitting_each_fold(patches):
    from skcnn.inspection.models import out_of_fold_probabilities

    X, y, _, _ = patches
    X, y = list(X[::2]), y[::2]
    classifier = CNNClassifier(input_size=SIZE, unfreeze="head", layer="penultimate", progress=False, tta=None)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    result = out_of_fold_probabilities(classifier, X, y, folds)  # the folds' fits read one pass's codes
    for train, test in folds:
        fitted = clone(classifier).fit([X[i] for i in train], y[train])
        np.testing.assert_allclose(result.proba[test], fitted.predict_proba([X[i] for i in test]), atol=1e-5)
    # tta="auto" not fitted: the folds take one view (none measures the views again); fitted: its choice.
    auto = clone(classifier).set_params(tta="auto")
    np.testing.assert_allclose(out_of_fold_probabilities(auto, X, y, folds).proba, result.proba, atol=1e-6)
    auto.fit(X, y)
    viewed = out_of_fold_probabilities(auto, X, y, folds)
    for train, test in folds[:1]:
        fitted = clone(classifier).set_params(tta=auto.tta_).fit([X[i] for i in train], y[train])
        np.testing.assert_allclose(viewed.proba[test], fitted.predict_proba([X[i] for i in test]), atol=1e-5)
