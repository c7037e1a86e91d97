"""Targets beyond one class per image: several labels (CNNClassifier), continuous values (CNNRegressor)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, hamming_loss, r2_score
from sklearn.preprocessing import MultiLabelBinarizer

from skcnn import CNNClassifier, CNNFeatureTransformer, CNNRegressor
from skcnn.datasets import load_texture_patches
from skcnn.finetuning import probe, strategy, targets

SMALL = dict(input_size=32, batch_size=16, random_state=0)
TEXTURES = ("brick", "grass", "gravel")


@pytest.fixture(autouse=True)
def own_temporary_folder(tmp_path, monkeypatch):
    """Decoded images beyond ``memory_limit`` go to the temporary folder: each test has its own."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _two_textures(split: str, n: int, seed: int):
    """Images whose left columns show one texture and the rest another, the border at a random column.

    Returns the images, the set of textures each shows, and the share of each image that is brick.
    """
    patches, names = load_texture_patches(split, n_per_class=n, patch_size=32, random_state=seed)
    by_name = {name: patches[names == name] for name in TEXTURES}
    rng = np.random.default_rng(seed)
    images, shown, brick = [], [], []
    for _ in range(3 * n):
        left, right = rng.choice(len(TEXTURES), 2)
        border = int(rng.integers(4, 29))
        image = by_name[TEXTURES[right]][rng.integers(n)].copy()
        image[:, :border] = by_name[TEXTURES[left]][rng.integers(n)][:, :border]
        images.append(image)
        shown.append({TEXTURES[left], TEXTURES[right]})
        brick.append(((TEXTURES[left] == "brick") * border + (TEXTURES[right] == "brick") * (32 - border)) / 32)
    return np.stack(images), shown, np.array(brick)


@pytest.fixture(scope="module")
def mixed():
    X, shown, brick = _two_textures("train", 12, 0)
    X_test, shown_test, brick_test = _two_textures("test", 8, 1)
    binarizer = MultiLabelBinarizer(classes=TEXTURES)
    return X, binarizer.fit_transform(shown), brick, X_test, binarizer.transform(shown_test), brick_test


@pytest.fixture(scope="module")
def multilabel(mixed):
    X, Y, _, _, _, _ = mixed
    return CNNClassifier(**SMALL, max_epochs=1, unfreeze="blocks.6", n_iter_no_change=2).fit(X, Y)


@pytest.fixture(scope="module")
def regressor(mixed):
    """The share of brick, from the frozen codes (a ridge probe): transfer, with the pretrained weights."""
    X, _, brick, _, _, _ = mixed
    # On torch in fp32: the mechanics, without an ONNX export per test (the multi-label model runs ONNX Runtime).
    return CNNRegressor(**SMALL, layer="penultimate", unfreeze="head", runtime="torch", precision="fp32").fit(X, brick)


# -- the kinds of target, on their own ---------------------------------------------------------------------------


def test_each_kind_scores_as_documented():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, (40, 3))
    logits = rng.normal(size=(40, 3))
    weights = rng.uniform(0.5, 2, 40)
    predicted = (logits > 0).astype(int)
    labels = targets.Labels(3)
    assert labels.score(logits, truth, weights) == pytest.approx(
        1 - hamming_loss(truth, predicted, sample_weight=weights)
    )
    balanced = np.mean([balanced_accuracy_score(truth[:, j], predicted[:, j], sample_weight=weights) for j in range(3)])
    assert targets.Labels(3, "balanced_accuracy").score(logits, truth, weights) == pytest.approx(balanced)
    classes = targets.Classes(np.arange(2), "balanced_accuracy")
    expected = balanced_accuracy_score(truth[:, 0], logits[:, :2].argmax(1))
    assert classes.score(logits[:, :2], truth[:, 0], None) == expected
    values = targets.Values.of(logits)
    assert values.score(logits + 0.1, logits, None) == pytest.approx(r2_score(logits, logits + 0.1))
    assert not labels.stratify and not values.stratify and classes.stratify


def test_losses_are_weighted_means_of_each_images_loss():
    outputs, truth = torch.tensor([[2.0, -1.0], [0.5, 0.5]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    per_image = torch.nn.functional.binary_cross_entropy_with_logits(outputs, truth, reduction="none").mean(1)
    labels = targets.Labels(2)
    torch.testing.assert_close(labels.loss(outputs, truth, None), per_image.mean())
    torch.testing.assert_close(labels.loss(outputs, truth, torch.tensor([0.0, 2.0])), per_image[1])
    values = targets.Values(np.zeros(2), np.ones(2))
    torch.testing.assert_close(
        values.loss(outputs, truth, torch.tensor([2.0, 0.0])), ((outputs[0] - truth[0]) ** 2).mean()
    )


def test_a_probe_per_label_gives_the_heads_rows():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, (60, 3))
    codes = (rng.normal(size=(60, 6)) + np.hstack([truth, truth]) * 2).astype(np.float32)
    head, loss = targets.Labels(3).probe(codes, torch.as_tensor(truth, dtype=torch.float32), None)
    assert head.weight.shape == (3, 6) and 0 < loss < np.log(2)
    for j in range(3):  # row j is label j's own logistic regression
        weight, bias = probe.linear_probe(codes, truth[:, j], None)
        np.testing.assert_allclose(head.weight[j].detach().numpy(), weight[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(head.bias[j].item(), bias[0], rtol=1e-5, atol=1e-6)
    # A label none of the probe's images has (its positives held out): no weights, a low bias.
    head, _ = targets.Labels(2).probe(
        codes, torch.as_tensor(np.c_[truth[:, 0], np.zeros(60)], dtype=torch.float32), None
    )
    assert not head.weight[1].any() and head.bias[1] < -3


def test_the_ridge_probe_folds_both_standardisations():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(50, 8)) * [1, 10, 100, 0.1, 1, 1, 1, 1]
    y = np.c_[codes[:, 1] / 10 + 0.1 * rng.normal(size=50), codes[:, 2] / 100] * [5.0, 0.2] + [3.0, -1.0]
    kind = targets.Values.of(y)
    head, loss = kind.probe(codes.astype(np.float32), kind.encode(y), None)
    assert head.weight.shape == (2, 8) and loss < 0.1  # standardised units: the mean predicts 1
    kind.fold(head)
    with torch.inference_mode():
        predicted = head(torch.as_tensor(codes, dtype=torch.float32)).numpy()
    assert r2_score(y, predicted) > 0.9  # the targets themselves, not their standardised values


def test_unfreeze_auto_counts_positives_per_label_and_images_for_values():
    from skcnn.frozen.advice import FINE_TUNING_PAYS_FROM as PAYS

    few = np.zeros((3 * PAYS, 3), dtype=int)
    few[: PAYS - 1] = 1  # 199 positives per label on average
    unfreeze, why = strategy.resolved_unfreeze("auto", few, targets.Labels(3).size(few))
    assert unfreeze == "head" and f"{PAYS - 1} positives per label" in why
    few[PAYS - 1] = 1
    assert strategy.resolved_unfreeze("auto", few, targets.Labels(3).size(few))[0] == "all"
    values = np.arange(2 * PAYS - 1, dtype=float)[:, None]
    unfreeze, why = strategy.resolved_unfreeze("auto", values, targets.Values.of(values).size(values))
    assert unfreeze == "head" and f"fine-tuning pays from about {2 * PAYS} images" in why
    values = np.arange(2 * PAYS, dtype=float)[:, None]
    assert strategy.resolved_unfreeze("auto", values, targets.Values.of(values).size(values))[0] == "all"


# -- several labels per image ------------------------------------------------------------------------------------


def test_several_labels_fit_predict_shapes_and_probabilities(multilabel, mixed):
    from sklearn.utils.multiclass import type_of_target

    _, Y, _, X_test, Y_test, _ = mixed
    assert multilabel.target_type_ == type_of_target(Y) == "multilabel-indicator"
    assert multilabel.classes_.tolist() == [0, 1, 2]
    proba, scores, predicted = (f(X_test) for f in (multilabel.predict_proba, multilabel.decision_function,
                                                    multilabel.predict))  # fmt: skip
    assert proba.shape == scores.shape == predicted.shape == Y_test.shape
    assert ((proba >= 0) & (proba <= 1)).all() and not np.allclose(proba.sum(axis=1), 1)  # each label its own
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-scores)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predicted, (proba > 0.5).astype(int))
    assert type_of_target(predicted) == "multilabel-indicator"
    assert multilabel.score(X_test, Y_test) == accuracy_score(Y_test, predicted)  # subset accuracy
    assert multilabel.state_dict_["head.weight"].shape == (3, 1280)
    assert multilabel.strategy_["augment"] == "photo" and "not measured" in multilabel.strategy_["reason"]
    assert multilabel.strategy_["tta"] is multilabel.tta_ is None  # flips and rotations are measured on classes
    assert 0 <= multilabel.probe_score_ <= 1 and len(multilabel.history_) == 2  # early stopping scored epoch 0
    assert 1 - hamming_loss(Y_test, predicted) > 0.6  # two textures of three per image: better than chance


def test_several_labels_pickle_and_start_from_a_probe_per_label(multilabel, mixed):
    _, _, _, X_test, _, _ = mixed
    restored = pickle.loads(pickle.dumps(multilabel))
    assert "_network" not in vars(restored)
    np.testing.assert_allclose(restored.predict_proba(X_test), multilabel.predict_proba(X_test), atol=1e-6)
    assert not hasattr(clone(multilabel), "target_type_")


@pytest.mark.slow
def test_head_only_labels_are_one_frozen_codes_logistic_regression_each(mixed):
    from skcnn.frozen.search import default_classifier

    X, Y, _, X_test, _, _ = mixed
    model = CNNClassifier(**SMALL, layer="penultimate", unfreeze="head").fit(X, Y)
    transformer = CNNFeatureTransformer(input_size=32, precision="fp32")
    codes, codes_test = transformer.fit_transform(X), transformer.transform(X_test)
    expected = np.column_stack(
        [default_classifier().fit(codes, Y[:, j]).decision_function(codes_test) for j in range(3)]
    )
    np.testing.assert_allclose(model.decision_function(X_test), expected, atol=1e-3)


@pytest.mark.parametrize(
    "y, params, message",
    [
        (lambda Y: np.c_[Y, np.zeros(len(Y), dtype=int)], {}, r"label\(s\) \[3\] of y are on every image or on none"),
        (lambda Y: np.c_[Y, np.ones(len(Y), dtype=int)], {}, r"on every image or on none"),
        (lambda Y: [{"a", "b"} if row[0] else {"a"} for row in Y], {}, r"label\(s\) \['a'\] of y are on every"),
        (lambda Y: Y, dict(class_weight="balanced"), "class_weight weighs one class per image"),
        (lambda Y: Y * 3, {}, r"0 and 1 alone, a column per label\); it holds \[0, 3\]"),
        (lambda Y: Y + Y[:, ::-1], {}, "one label per image, or a binary indicator matrix"),  # multiclass-multioutput
        (lambda Y: Y[:-1], {}, "X has 36 images, y has shape"),
    ],
)
def test_bad_labels_are_clear_errors(mixed, y, params, message):
    X, Y, _, _, _, _ = mixed
    with pytest.raises(ValueError, match=message):
        CNNClassifier(**SMALL, **params).fit(X, y(Y))


# -- continuous targets ------------------------------------------------------------------------------------------


def test_regressor_parameters_are_the_classifiers_where_they_apply():
    from dataclasses import fields

    from skcnn.options import FINETUNING

    params = CNNRegressor().get_params()
    assert set(CNNClassifier().get_params()) - set(params) == {"scoring", "class_weight"}
    assert all(params[f.name] == getattr(FINETUNING, f.name) for f in fields(FINETUNING) if f.name in params)
    assert CNNRegressor().__sklearn_tags__().estimator_type == "regressor"


def test_the_share_of_brick_is_learnt_from_frozen_codes(regressor, mixed):
    _, _, _, X_test, _, brick_test = mixed
    assert regressor.n_outputs_ == 1 and regressor.predict(X_test).shape == (len(X_test),)
    assert regressor.score(X_test, brick_test) > 0.3  # predicting the mean scores 0
    assert regressor.strategy_["layer"] == "penultimate" and regressor.n_epochs_ == 0


def test_the_head_predicts_the_targets_themselves(regressor, mixed):
    """The standardisation is folded into the head: ``module_`` outputs are the predictions (what export runs)."""
    _, _, _, X_test, _, _ = mixed
    from skcnn.decoding import loading

    network, outputs = regressor.module_, []
    with torch.inference_mode():
        for _, batch in loading.iter_batches(list(X_test), range(len(X_test)), regressor._recipe_of_weights, 8, []):
            outputs.append(network(batch).numpy())
    np.testing.assert_allclose(np.concatenate(outputs)[:, 0], regressor.predict(X_test), atol=1e-3)
    restored = pickle.loads(pickle.dumps(regressor))
    np.testing.assert_allclose(restored.predict(X_test), regressor.predict(X_test), atol=1e-6)


def test_images_of_weight_0_are_left_out(regressor, mixed):
    X, _, brick, X_test, _, _ = mixed
    junk = np.random.default_rng(0).uniform(5, 10, 6)  # targets far from any share
    weighted = clone(regressor).fit(np.concatenate([X, X[:6]]), np.r_[brick, junk], np.r_[np.ones(len(X)), np.zeros(6)])
    np.testing.assert_allclose(weighted.predict(X_test), regressor.predict(X_test), atol=1e-4)


@pytest.mark.slow
def test_fine_tuning_several_targets_with_early_stopping(mixed, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    X, _, brick, X_test, _, brick_test = mixed
    y = np.c_[brick, 10 * brick + 3]
    model = CNNRegressor(**SMALL, max_epochs=2, unfreeze="blocks.6", n_iter_no_change=2).fit(X, y)
    predicted = model.predict(X_test)
    assert model.n_outputs_ == 2 and predicted.shape == (len(X_test), 2)
    assert [epoch["epoch"] for epoch in model.history_] == [0, 1, 2] and np.isfinite(model.probe_score_)
    assert model.history_[model.best_epoch_]["validation_score"] == max(e["validation_score"] for e in model.history_)
    np.testing.assert_allclose(predicted[:, 1], 10 * predicted[:, 0] + 3, rtol=0.2, atol=0.5)
    assert r2_score(brick_test, predicted[:, 0]) > 0
    assert "R^2" in model.plot_history().get_figure().axes[1].get_ylabel()
    transformer = model.to_transformer(tmp_path / "tuned.pt", precision="fp32")
    assert transformer.fit_transform(X_test).shape == (len(X_test), 1280)


@pytest.mark.parametrize(
    "y, message",
    [
        (np.ones(36), r"y's target\(s\) \[0\] take a single value"),
        (np.arange(35.0), "X has 36 images, y has shape"),
        (np.zeros((36, 2, 2)), "Found array with dim 3"),
        (np.r_[np.nan, np.arange(35.0)], "NaN"),
        (np.array(["a", "b"] * 18), "could not convert"),
    ],
)
def test_bad_targets_are_clear_errors(mixed, y, message):
    with pytest.raises(ValueError, match=message):
        CNNRegressor(**SMALL).fit(mixed[0], y)
