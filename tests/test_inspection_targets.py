"""Regression and multi-label targets: the texture mixtures and collages, and their inspection."""

import doctest

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.multiclass import OneVsRestClassifier
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import make_pipeline

from skcnn import CNNFeatureTransformer
from skcnn import datasets as skcnn_datasets
from skcnn.datasets import MIXED_TEXTURES, make_texture_collages, make_texture_mixtures
from skcnn.inspection import label_issues, out_of_fold_losses, plot_top_losses, top_losses

SIZE = 32


def codes():
    """Untrained ResNet-18 codes at 32 px: mechanics, not transfer."""
    return CNNFeatureTransformer(backbone="resnet18", weights=None, input_size=SIZE, progress=False)


def regressor():
    return make_pipeline(codes(), Ridge(alpha=1.0))


def multilabel():
    return make_pipeline(codes(), OneVsRestClassifier(LogisticRegression(max_iter=1000)))


@pytest.fixture(scope="module")
def mixtures():
    return make_texture_mixtures(24, patch_size=SIZE, random_state=0, return_X_y=True)


@pytest.fixture(scope="module")
def collages():
    return make_texture_collages(24, patch_size=SIZE, random_state=0)


# -- the data sets ----------------------------------------------------------------


def test_texture_mixtures_are_shares_in_0_1_seeded_and_split():
    data = make_texture_mixtures(20, patch_size=SIZE, random_state=3)
    assert data.images.shape == (20, SIZE, SIZE) and data.images.dtype == np.uint8
    assert data.target.shape == (20,) and data.target_names.tolist() == ["brick"]
    assert ((0 <= data.target) & (data.target <= 1)).all() and data.target.std() > 0.1
    X, y = make_texture_mixtures(20, patch_size=SIZE, random_state=3, return_X_y=True)
    np.testing.assert_array_equal(X, data.images)
    np.testing.assert_array_equal(y, data.target)
    assert not np.array_equal(X, make_texture_mixtures(20, patch_size=SIZE, random_state=4).images)
    train = make_texture_mixtures(20, patch_size=SIZE, split="train").images
    assert not np.array_equal(train, make_texture_mixtures(20, patch_size=SIZE, split="test").images)
    assert len({image.tobytes() for image in X}) == 20  # no exact repeats
    _, shares = make_texture_mixtures(20, patch_size=SIZE, n_outputs=3, return_X_y=True)
    assert shares.shape == (20, 3) and (shares.sum(axis=1) <= 1 + 1e-9).all()
    _, every = make_texture_mixtures(20, patch_size=SIZE, n_outputs=len(MIXED_TEXTURES), return_X_y=True)
    np.testing.assert_allclose(every.sum(axis=1), 1.0)  # four textures fill the image


def test_the_target_is_the_share_of_pixels_each_texture_covers():
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (128, 128)).astype(np.uint8) for _ in range(4)]
    for seed in range(6):
        shares = np.array([0.5, 0.3, 0.2])
        image, covered = skcnn_datasets._texture_layout(
            photos, np.array([3, 0, 1]), shares, 48, np.random.default_rng(seed)
        )
        assert image.shape == (48, 48)
        np.testing.assert_allclose(covered, [0.3, 0.2, 0.0, 0.5], atol=0.01)


@pytest.mark.parametrize("params", [dict(patch_size=8), dict(n_outputs=5), dict(split="val")])
def test_bad_mixture_parameters_are_clear_errors(params):
    with pytest.raises(ValueError, match=r"patch_size|n_outputs|split"):
        make_texture_mixtures(2, **params)


def test_texture_collages_hold_one_to_three_textures_each_a_visible_share():
    data = make_texture_collages(60, patch_size=SIZE, random_state=0)
    assert data.images.shape == (60, SIZE, SIZE) and data.target.shape == (60, 4)
    assert data.target_names.tolist() == list(MIXED_TEXTURES)
    assert set(np.unique(data.target)) == {0, 1}
    counts = data.target.sum(axis=1)
    assert counts.min() == 1 and counts.max() == 3 and len(set(counts)) == 3
    assert (data.shares[data.target == 1] >= 0.09).all() and (data.shares[data.target == 0] == 0).all()
    np.testing.assert_allclose(data.shares.sum(axis=1), 1.0)
    assert (data.target.mean(axis=0) > 0.25).all()  # every texture appears often
    again = make_texture_collages(60, patch_size=SIZE, random_state=0, return_X_y=True)
    np.testing.assert_array_equal(again[0], data.images)
    np.testing.assert_array_equal(again[1], data.target)
    _, single = make_texture_collages(10, patch_size=SIZE, max_labels=1, return_X_y=True)
    assert (single.sum(axis=1) == 1).all()
    with pytest.raises(ValueError, match="min_share"):
        make_texture_collages(2, max_labels=3, min_share=0.5)


def test_grey_level_and_contrast_do_not_give_the_target_away():
    X, y = make_texture_mixtures(150, patch_size=48, random_state=1, return_X_y=True)
    flat = X.reshape(len(X), -1).astype(float)
    assert abs(np.corrcoef(flat.mean(axis=1), y)[0, 1]) < 0.3
    assert abs(np.corrcoef(flat.std(axis=1), y)[0, 1]) < 0.3


@pytest.mark.parametrize("function", [make_texture_mixtures, make_texture_collages])
def test_the_docstring_examples_run(function):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(function, globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert runner.summarize(verbose=False).attempted >= 3


# -- a regressor ------------------------------------------------------------------


def test_top_losses_of_a_regressor_puts_the_worst_residual_first(mixtures):
    X, y = mixtures
    model = regressor().fit(X, y)
    given = y.copy()
    given[5] = 3.0  # a target far outside [0, 1]
    table = top_losses(model, X, given)
    assert list(table.columns) == ["position", "target", "prediction", "residual", "loss"]
    assert table["position"].iloc[0] == 5
    assert table["loss"].is_monotonic_decreasing
    table = table.sort_values("position")
    np.testing.assert_allclose(table["prediction"], model.predict(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table["residual"], given - table["prediction"])
    np.testing.assert_allclose(table["loss"], table["residual"] ** 2)


def test_out_of_fold_residuals_are_those_of_cross_validating_the_pipeline_in_k_folds(mixtures):
    X, y = mixtures
    given = y.copy()
    given[7] = -2.0
    table = top_losses(regressor(), X, given, cv=3)
    assert table["position"].iloc[0] == 7
    frozen = codes().fit_transform(X)  # the network is frozen: cross-validating the steps after it is the same
    expected = cross_val_predict(Ridge(alpha=1.0), frozen, given, cv=KFold(3))  # KFold: not stratified
    np.testing.assert_allclose(table.sort_values("position")["prediction"], expected, rtol=1e-5, atol=1e-5)


def test_several_outputs_have_per_output_columns_and_their_summed_loss():
    X, y = make_texture_mixtures(24, patch_size=SIZE, n_outputs=2, random_state=2, return_X_y=True)
    targets = pd.DataFrame(y, columns=["brick", "grass"])
    table = top_losses(regressor(), X, targets, cv=3)
    assert list(table.columns) == [
        "position",
        *(f"{column}_{name}" for column in ("target", "prediction", "residual", "loss") for name in ("brick", "grass")),
        "loss",
    ]
    np.testing.assert_allclose(table["loss"], table["loss_brick"] + table["loss_grass"])
    np.testing.assert_allclose(table["loss_grass"], (table["target_grass"] - table["prediction_grass"]) ** 2)
    assert table["loss"].is_monotonic_decreasing


def test_label_issues_of_a_regressor_is_a_clear_error_before_any_image_is_read(mixtures):
    _, y = mixtures
    missing = [f"/nonexistent/{i}.png" for i in range(len(y))]
    with pytest.raises(ValueError, match=r"classifiers.*top_losses\(estimator, X, y, cv=5\)"):
        label_issues(regressor(), missing, y)
    with pytest.raises(ValueError, match="no classes"):
        out_of_fold_losses(regressor(), missing, y)


def test_a_regressor_that_does_not_take_images_is_refused(mixtures):
    X, y = mixtures
    with pytest.raises(TypeError, match="Pipeline whose first step is a CNNFeatureTransformer"):
        top_losses(Ridge(), X, y, cv=2)


# -- multi-label ------------------------------------------------------------------


def binary_log_loss(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_multilabel_losses_are_per_label_log_losses_summed(collages):
    model = multilabel().fit(collages.images, collages.target)
    table = top_losses(model, collages.images, collages.target, target_names=collages.target_names)
    names = list(collages.target_names)
    assert list(table.columns) == [
        "position",
        "labels",
        "predicted",
        *(f"probability_{name}" for name in names),
        *(f"loss_{name}" for name in names),
        "loss",
    ]
    assert table["loss"].is_monotonic_decreasing
    table = table.sort_values("position")
    proba = model.predict_proba(collages.images)
    for j, name in enumerate(names):
        np.testing.assert_allclose(table[f"probability_{name}"], proba[:, j], rtol=1e-6)
        np.testing.assert_allclose(
            table[f"loss_{name}"], binary_log_loss(collages.target[:, j], proba[:, j]), rtol=1e-6
        )
    np.testing.assert_allclose(table["loss"], table[[f"loss_{name}" for name in names]].sum(axis=1))
    first = table.iloc[0]
    given = [name for name, there in zip(names, collages.target[first.position], strict=True) if there]
    assert first["labels"] == ", ".join(given)
    predicted = [name for name, p in zip(names, proba[first.position], strict=True) if p >= 0.5]
    assert first["predicted"] == ", ".join(predicted)


def test_out_of_fold_multilabel_probabilities_are_cross_validated_in_k_folds(collages):
    X, Y = collages.images, collages.target
    table = top_losses(multilabel(), X, Y, cv=3).sort_values("position")
    frozen = codes().fit_transform(X)
    expected = cross_val_predict(multilabel()[1:], frozen, Y, cv=KFold(3), method="predict_proba")
    np.testing.assert_allclose(table[[f"probability_{j}" for j in range(4)]], expected, rtol=1e-5, atol=1e-6)
    # A MultiOutputClassifier's list of per-label (n, 2) probabilities reads as the same table.
    chain = make_pipeline(codes(), MultiOutputClassifier(LogisticRegression(max_iter=1000)))
    other = top_losses(chain, X, Y, cv=3).sort_values("position")
    np.testing.assert_allclose(other["loss"], table["loss"], rtol=1e-5)


def test_a_multilabel_classifier_without_probabilities_ranks_by_its_decision_function(collages):
    from sklearn.svm import LinearSVC

    model = make_pipeline(codes(), OneVsRestClassifier(LinearSVC())).fit(collages.images, collages.target)
    table = top_losses(model, collages.images, collages.target).sort_values("position")
    scores = model.decision_function(collages.images)
    np.testing.assert_allclose(table["probability_0"], 1 / (1 + np.exp(-scores[:, 0])), rtol=1e-6)


def coloured(n: int, seed: int = 0):
    """RGB noise images whose labels are the colour channels lit: learnable by untrained codes."""
    rng = np.random.default_rng(seed)
    Y = np.zeros((n, 3), dtype=int)
    Y[np.arange(n), rng.integers(0, 3, n)] = 1  # at least one label each
    Y |= (rng.random((n, 3)) < 0.35).astype(int)
    images = rng.integers(0, 90, (n, SIZE, SIZE, 3)).astype(np.uint8)
    images += (Y[:, None, None, :] * 140).astype(np.uint8)
    return images, Y


def test_multilabel_label_issues_flag_planted_flips_more_often_than_clean_labels():
    X, Y = coloured(60)
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(Y), size=6, replace=False)
    noisy = Y.copy()
    noisy[flipped, rng.integers(0, 3, len(flipped))] ^= 1  # one label added or dropped
    noisy[noisy.sum(axis=1) == 0, 0] = 1  # no image without a label
    flipped = np.flatnonzero((noisy != Y).any(axis=1))
    issues = label_issues(multilabel(), X, noisy, cv=3, target_names=["red", "green", "blue"])
    assert {"label_quality", "doubted", "loss_red", "probability_blue"} <= set(issues.columns)
    assert issues["label_quality"].is_monotonic_increasing
    flagged = set(issues["position"])
    clean = set(range(len(Y))) - set(flipped)
    assert len(flagged & set(flipped)) / len(flipped) > 2 * len(flagged & clean) / len(clean)
    doubted = issues.set_index("position")["doubted"]
    assert all(doubted[i] for i in flagged & set(flipped))  # the flipped label is named


# -- pictures ---------------------------------------------------------------------


def test_plots_title_regression_and_multilabel_rows_with_target_and_prediction(mixtures, collages):
    import matplotlib

    matplotlib.use("Agg")
    X, y = mixtures
    model = regressor().fit(X, y)
    table = top_losses(model, X, y)
    figure = plot_top_losses(table, X, k=3, model=model)
    first = table.iloc[0]
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 3
    assert shown[0].get_title().startswith(f"target {first.target:.3g} / predicted {first.prediction:.3g}")
    X3, y3 = make_texture_mixtures(8, patch_size=SIZE, n_outputs=3, return_X_y=True)
    several = top_losses(regressor().fit(X3, y3), X3, y3)
    title = plot_top_losses(several, X3, k=1).axes[0].get_title()
    assert title.startswith(f"target {several['target_0'].iloc[0]:.2f}, ") and "loss" in title
    labels = top_losses(multilabel().fit(collages.images, collages.target), collages.images, collages.target)
    title = plot_top_losses(labels, collages.images, k=2).axes[0].get_title()
    assert title.startswith(f"{labels['labels'].iloc[0]} / {labels['predicted'].iloc[0] or 'none'}\nloss ")
