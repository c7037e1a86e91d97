"""CNNClassifier: a pretrained network fine-tuned as a scikit-learn classifier (mechanics, small images)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score

from skcnn import BadImagesError, CNNClassifier, CNNFeatureTransformer, CNNRegressor
from skcnn.datasets import load_texture_patches
from skcnn.finetuning import training
from skcnn.images import BadImagesWarning

SMALL = dict(input_size=32, batch_size=16, random_state=0)


@pytest.fixture(autouse=True)
def own_temporary_folder(tmp_path, monkeypatch):
    """Decoded images beyond ``memory_limit`` go to the temporary folder: each test has its own."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture(scope="module")
def patches():
    X, y = load_texture_patches(n_per_class=10, patch_size=32)
    X_test, y_test = load_texture_patches("test", n_per_class=10, patch_size=32)
    return X, y, X_test, y_test


@pytest.fixture(scope="module")
def fitted(patches):
    X, y, _, _ = patches
    return CNNClassifier(**SMALL, max_epochs=2, unfreeze="blocks.5", early_stopping=False).fit(X, y)


@pytest.mark.slow
def test_fit_predict_probabilities_and_labels_of_any_kind(fitted, patches):
    _, _, X_test, y_test = patches
    assert fitted.classes_.tolist() == ["brick", "grass", "gravel"]
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (30, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5) and (proba >= 0).all()
    assert set(fitted.predict(X_test)) <= set(fitted.classes_)
    assert fitted.score(X_test, y_test) > 0.8  # the head starts from a linear probe on pretrained codes
    assert fitted.decision_function(X_test).shape == (30, 3)
    assert fitted.n_epochs_ == len(fitted.history_) - 1 == fitted.best_epoch_ == 2  # no validation: the last epoch
    # augment="auto" measured that flips and rotations keep the class of these textures; tta="auto" had
    # no validation split to weigh their views on.
    assert fitted.strategy_ == {
        "layer": "penultimate",
        "unfreeze": "blocks.5",
        "batchnorm": "frozen",
        "augment": "dihedral",
        "tta": None,
        "reason": "as given; augment 'dihedral' (class kept under ['hflip', 'rot90', 'vflip']); "
        "tta None ('dihedral' not measured: no validation split)",
    }
    assert fitted.tta_ is None
    assert set(fitted.history_[0]) == {
        "epoch", "train_loss", "validation_score", "validation_score_views", "learning_rates", "seconds"
    }  # fmt: skip
    assert len(fitted.history_[1]["learning_rates"]) == 2  # pretrained layers and head
    rates = fitted.history_[-1]["learning_rates"]
    assert rates[0] < rates[1]  # the pretrained layers learn slower than the head


def test_two_classes_and_a_torchvision_backbone(patches):
    X, y, X_test, _ = patches
    keep = y != "gravel"
    model = CNNClassifier(
        backbone="resnet18", weights=None, layer="layer3", unfreeze="layer3", max_epochs=1, **SMALL
    ).fit(X[keep], y[keep])
    assert model.classes_.tolist() == ["brick", "grass"]
    proba, scores = model.predict_proba(X_test), model.decision_function(X_test)
    assert proba.shape == (30, 2) and scores.shape == (30,)
    np.testing.assert_array_equal(scores > 0, proba[:, 1] > 0.5)  # the positive class's logit over the other's


def test_only_the_unfrozen_layers_change(fitted):
    from skcnn.network import backbones

    original = backbones.load_backbone("efficientnet_lite0", "DEFAULT", "cpu").network.state_dict()
    tuned = fitted.state_dict_
    for key in ("conv_stem.weight", "blocks.4.0.conv_pw.weight", "classifier.weight"):  # frozen, or never run
        assert torch.equal(tuned[f"network.{key}"], original[key])
    assert not torch.equal(tuned["network.blocks.5.0.conv_pw.weight"], original["blocks.5.0.conv_pw.weight"])
    assert tuned["head.weight"].shape == (3, 1280)


def test_the_network_trains_in_channels_last_with_the_same_function(fitted):
    import copy

    from skcnn.finetuning.model import TappedClassifier

    # The fitted network trained in channels_last (CPU); its state dict loads into an NCHW copy unchanged.
    trained = fitted.module_
    assert trained.network.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    nchw = TappedClassifier(copy.deepcopy(trained.network).to(memory_format=torch.contiguous_format),
                            trained.layer, trained.network_head, copy.deepcopy(trained.head))  # fmt: skip
    nchw.load_state_dict(fitted.state_dict_)
    assert nchw.network.conv_stem.weight.is_contiguous()
    batch = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(trained.eval()(batch), nchw.eval()(batch), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_deterministic_on_the_cpu_and_pickles_without_the_device(fitted, patches):
    X, y, X_test, _ = patches
    again = clone(fitted).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X_test), fitted.predict_proba(X_test))
    blob = pickle.dumps(fitted)
    restored = pickle.loads(blob)
    assert "_network" not in vars(restored) and "_predictor" not in vars(restored)
    assert all(value.device.type == "cpu" for value in restored.state_dict_.values())
    np.testing.assert_allclose(restored.predict_proba(X_test), fitted.predict_proba(X_test), atol=1e-6)
    assert not hasattr(clone(fitted), "state_dict_")


@pytest.mark.parametrize("batchnorm", ["frozen", "adapt", "train"])
def test_batchnorm_frozen_keeps_the_statistics_adapt_and_train_change_them(patches, batchnorm):
    X, y, _, _ = patches
    model = CNNClassifier(**SMALL, max_epochs=1, unfreeze="all", batchnorm=batchnorm, early_stopping=False).fit(X, y)
    from skcnn.network import backbones

    original = backbones.load_backbone("efficientnet_lite0", "DEFAULT", "cpu").network.state_dict()
    key = "blocks.2.0.bn1.running_mean"
    same = torch.equal(model.state_dict_[f"network.{key}"], original[key])
    assert same == (batchnorm == "frozen")
    assert {key: model.strategy_[key] for key in ("layer", "unfreeze", "batchnorm")} == {
        "layer": "penultimate",
        "unfreeze": "all",
        "batchnorm": batchnorm,
    }


def test_set_mode_keeps_batchnorm_in_eval_mode_after_train():
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    training.set_mode(network, True, "frozen")
    assert network.training and not network[1].training
    training.set_mode(network, True, "train")
    assert network[1].training


@pytest.mark.slow
def test_augmentation_is_applied_to_training_batches_only(patches):
    X, y, X_test, _ = patches
    calls = []

    def recording(image):
        calls.append(tuple(image.shape))
        return image

    model = CNNClassifier(**SMALL, max_epochs=2, unfreeze="blocks.6", augment=recording, n_iter_no_change=5)
    model.fit(X, y)
    n_train = len(X) - int(np.ceil(0.1 * len(X)))
    assert len(calls) == 2 * n_train and set(calls) == {(3, 32, 32)}  # never the validation split
    model.predict(X_test)
    assert len(calls) == 2 * n_train  # never prediction


@pytest.mark.slow
def test_auto_strategy_follows_size(patches):
    from skcnn import LayerSearchCV

    X, y, _, _ = patches
    small = CNNClassifier(**SMALL, max_epochs=1, tta=None).fit(X, y)
    # The search the head's layer="auto" runs: average codes of one view, by the logistic regression (the head's kind).
    codes = CNNFeatureTransformer(input_size=32, precision="fp32")
    search = LayerSearchCV(codes, classifier="logistic", poolings=["avg"], ttas=None, cv=3).fit(X, y)
    assert small.strategy_["layer"] == search.best_layer_ and small.strategy_["unfreeze"] == "head"
    assert small.strategy_["batchnorm"] == "frozen" and f"small data ({len(X)} images" in small.strategy_["reason"]
    assert "cross-validated best" in small.strategy_["reason"]
    large = CNNClassifier(**SMALL, max_epochs=1, early_stopping=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("skcnn.finetuning.strategy.FINE_TUNING_PAYS_FROM", 5)
        large.fit(X, y)
    assert large.strategy_["unfreeze"] == "all" and large.strategy_["layer"] == "penultimate"
    assert "large data" in large.strategy_["reason"] and "pays from about 5 per class" in large.strategy_["reason"]


@pytest.mark.slow
def test_a_head_on_an_earlier_layer_reads_the_transformers_codes(patches, tmp_path):
    X, y, X_test, _ = patches
    model = CNNClassifier(**SMALL, layer="blocks.4", unfreeze="blocks.4", max_epochs=1, early_stopping=False)
    model.fit(X, y)
    pretrained = CNNFeatureTransformer(input_size=32, layer="blocks.4", precision="fp32")
    assert model.state_dict_["head.weight"].shape == (3, pretrained.fit(X).n_features_out_)
    transformer = model.to_transformer(tmp_path / "tuned.pt", precision="fp32")
    assert transformer.layer == "blocks.4"
    codes = transformer.fit_transform(X_test)
    logits = model.state_dict_["head.weight"].numpy() @ codes.T + model.state_dict_["head.bias"].numpy()[:, None]
    np.testing.assert_allclose(logits.T, model.decision_function(X_test), rtol=1e-4, atol=1e-4)
    assert not np.allclose(codes, pretrained.transform(X_test), atol=1e-4)  # blocks.4 was fine-tuned


@pytest.mark.slow
@pytest.mark.parametrize("tta", [None, "flips"])
def test_head_only_is_the_frozen_codes_baseline(patches, tta):
    from sklearn.pipeline import make_pipeline

    from skcnn.frozen.search import default_classifier

    X, y, X_test, _ = patches
    model = CNNClassifier(**SMALL, layer="blocks.2", unfreeze="head", tta=tta).fit(X, y)
    assert model.n_epochs_ == model.best_epoch_ == 0 and [epoch["epoch"] for epoch in model.history_] == [0]
    # With tta the probe is fit on the views' averaged codes, as the transformer's tta gives them.
    codes = CNNFeatureTransformer(input_size=32, layer="blocks.2", precision="fp32", tta=tta)
    baseline = make_pipeline(codes, default_classifier()).fit(X, y)
    np.testing.assert_allclose(model.decision_function(X_test), baseline.decision_function(X_test), atol=1e-3)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(layer="blocks.9"), r"layer='blocks.9' is not a layer"),
        (dict(layer="blocks.4", unfreeze="blocks.5"), r"unfreeze='blocks.5' must be .* up to layer='blocks.4'"),
        (dict(runtime="onnxruntime", precision="bf16"), r"runtime='onnxruntime': it computes in fp32"),
    ],
)
def test_layer_and_unfreeze_are_checked(patches, params, message):
    with pytest.raises(ValueError, match=message):
        CNNClassifier(**SMALL, max_epochs=1, **params).fit(*patches[:2])


def test_the_probe_is_kept_when_no_epoch_beats_it(patches):
    X, y, X_test, y_test = patches
    # A learning rate that wrecks the network in its first steps: the started network must win.
    model = CNNClassifier(**SMALL, max_epochs=4, unfreeze="all", learning_rate=50.0, n_iter_no_change=1).fit(X, y)
    assert model.best_epoch_ == 0
    assert all(epoch["validation_score"] < model.probe_score_ for epoch in model.history_[1:])
    assert model.score(X_test, y_test) > 0.8  # the linear probe on pretrained codes
    # Patience counts only epochs that end with the learning rates at half their peak or below: the
    # first such epoch ends the run (n_iter_no_change=1); the epochs before it, near the peak, did not.
    head_rates = [epoch["learning_rates"][-1] / 50.0 for epoch in model.history_[1:]]
    assert 1 < model.n_epochs_ < 4 and head_rates[-1] <= 0.5 and all(rate > 0.5 for rate in head_rates[:-1])


def test_plot_history(fitted):
    import matplotlib

    matplotlib.use("Agg")
    ax = fitted.plot_history()
    assert ax.get_xlabel() == "epoch" and "blocks.5" in ax.get_title()
    losses = np.concatenate([line.get_ydata() for line in ax.get_lines()])
    assert fitted.history_[0]["train_loss"] in losses  # epoch 0, the probe, is drawn


def test_history_starts_with_epoch_0_the_probe(patches):
    import matplotlib

    matplotlib.use("Agg")
    X, y, _, _ = patches
    model = CNNClassifier(**SMALL, max_epochs=2, unfreeze="blocks.6", n_iter_no_change=5).fit(X, y)
    assert [epoch["epoch"] for epoch in model.history_] == [0, 1, 2]
    start = model.history_[0]
    assert start["validation_score"] == model.probe_score_ and 0 <= model.probe_score_ <= 1
    assert start["learning_rates"] == [] and start["train_loss"] > 0 and start["seconds"] > 0
    # The probe is fit on these codes: its loss on them is below a uniform guess's.
    assert start["train_loss"] < np.log(3)

    head_only = CNNClassifier(**SMALL, layer="blocks.2", unfreeze="head").fit(X, y)
    (start,) = head_only.history_
    assert start["epoch"] == 0 and 0 < start["train_loss"] < np.log(3) and np.isnan(start["validation_score"])
    ax = head_only.plot_history()  # no epochs: the probe's point, and a title that says so
    assert "no epochs ran" in ax.get_title()
    assert [line.get_ydata().tolist() for line in ax.get_lines() if len(line.get_ydata())] == [
        [start["train_loss"]],
        [start["train_loss"]],
    ]


def _eager_fp32_logits(model, X):
    """The fitted network run as prediction ran before runtimes: eager torch in fp32, no copy."""
    from skcnn.decoding import loading

    network, logits = model.module_, []
    with torch.inference_mode():
        for _, batch in loading.iter_batches(list(X), range(len(X)), model._recipe_of_weights, 8, []):
            logits.append(network(batch).numpy())
    return np.concatenate(logits)


@pytest.mark.parametrize(
    "params, runtime",
    [
        (dict(), "onnxruntime"),  # "auto": EfficientNet runs ONNX Runtime in fp32, on any CPU
        (dict(runtime="onnxruntime", precision="fp32"), "onnxruntime"),
        (dict(runtime="torch", precision="fp32"), "torch"),  # a copy with batch norm folded, channels_last
    ],
    ids=["auto", "onnxruntime", "torch-fp32"],
)
def test_predictions_on_the_transformers_runtime_are_the_fp32_networks(fitted, patches, params, runtime):
    import warnings

    _, _, X_test, _ = patches
    model = pickle.loads(pickle.dumps(fitted)).set_params(**params)
    expected = _eager_fp32_logits(model, X_test)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to torch
        logits = model.decision_function(X_test)
        proba = model.predict_proba(X_test)
    assert model._prediction().runtime == runtime
    np.testing.assert_array_equal(logits.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_array_equal(model.predict(X_test), model.classes_[expected.argmax(axis=1)])
    np.testing.assert_allclose(proba, torch.softmax(torch.as_tensor(expected), 1).numpy(), atol=1e-3)
    np.testing.assert_allclose(logits, expected, atol=1e-3 * np.abs(expected).max())


@pytest.mark.slow
def test_the_export_is_keyed_by_the_fine_tuned_weights(fitted, patches, monkeypatch, tmp_path):
    from skcnn.network import onnx_runtime

    _, _, X_test, _ = patches
    monkeypatch.setenv(onnx_runtime.CACHE_DIR_ENV, str(tmp_path))
    pickle.loads(pickle.dumps(fitted)).predict(X_test)
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    pickle.loads(pickle.dumps(fitted)).predict(X_test)  # another copy of the same weights reads the file
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    # Same backbone, layer and input size, the pretrained weights: another export, which every
    # head-only model shares (their networks are the pretrained one).
    X, y = patches[:2]
    head_only = CNNClassifier(**SMALL, layer="penultimate", unfreeze="head").fit(X, y)
    exported = len(list(tmp_path.glob("*.onnx")))  # and the transformer's, whose codes the probe read
    head_only.predict(X_test)
    assert len(list(tmp_path.glob("*.onnx"))) == exported + 1
    CNNClassifier(**SMALL, layer="penultimate", unfreeze="head").fit(X[::2], y[::2]).predict(X_test)
    assert len(list(tmp_path.glob("*.onnx"))) == exported + 1


def test_a_network_that_does_not_export_predicts_on_torch_with_one_warning(fitted, patches, monkeypatch, tmp_path):
    import warnings

    from skcnn.network import onnx_runtime

    def unsupported(*args, **kwargs):
        raise RuntimeError("Unsupported operator: aten::my_custom_op")

    _, _, X_test, _ = patches
    monkeypatch.setattr(torch.onnx, "export", unsupported)
    monkeypatch.setenv(onnx_runtime.CACHE_DIR_ENV, str(tmp_path))  # no export kept from an earlier test
    model = pickle.loads(pickle.dumps(fitted))
    with pytest.warns(RuntimeWarning, match="my_custom_op.*running it on torch"):
        proba = model.predict_proba(X_test)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # said once
        again = model.predict_proba(X_test)
    expected = torch.softmax(torch.as_tensor(_eager_fp32_logits(model, X_test)), 1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-3)
    np.testing.assert_array_equal(again, proba)


def test_prediction_shows_a_progress_bar_in_images(fitted, patches, capsys):
    _, _, X_test, _ = patches
    model = pickle.loads(pickle.dumps(fitted))
    model.set_params(progress=True).predict(X_test)
    assert "30/30" in capsys.readouterr().err
    model.set_params(progress=False).predict_proba(X_test)
    model.set_params(progress="auto").decision_function(X_test)  # not a terminal
    assert "30/30" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_fit_resumes_from_the_last_finished_epoch(patches, tmp_path, monkeypatch):
    X, y, X_test, _ = patches
    params = dict(SMALL, max_epochs=3, unfreeze="blocks.6", early_stopping=False, checkpoint=tmp_path / "ft.pt")
    real_epoch = training._epoch
    epochs_run = []

    def dying(*args, **kwargs):
        if len(epochs_run) == 2:
            raise RuntimeError("killed")
        epochs_run.append(1)
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "_epoch", dying)
    with pytest.raises(RuntimeError, match="killed"):
        CNNClassifier(**params).fit(X, y)
    assert (tmp_path / "ft.pt").is_file()
    monkeypatch.setattr(training, "_epoch", lambda *a, **k: epochs_run.append(1) or real_epoch(*a, **k))
    resumed = CNNClassifier(**params).fit(X, y)
    assert len(epochs_run) == 3 and resumed.n_epochs_ == 3  # two from the checkpoint, one more
    monkeypatch.setattr(training, "_epoch", real_epoch)
    uninterrupted = CNNClassifier(**{**params, "checkpoint": tmp_path / "other.pt"}).fit(X, y)
    np.testing.assert_allclose(resumed.predict_proba(X_test), uninterrupted.predict_proba(X_test), atol=1e-5)


def test_ctrl_c_keeps_the_best_weights_so_far(patches, monkeypatch):
    X, y, _, _ = patches
    real_epoch = training._epoch

    def interrupted(network, optimizer, schedule, scaler, data, recipe, augment, plan, state):
        if state.epoch == 1:
            state.interrupted = True  # as a KeyboardInterrupt in a batch leaves it
        return real_epoch(network, optimizer, schedule, scaler, data, recipe, augment, plan, state)

    monkeypatch.setattr(training, "_epoch", interrupted)
    with pytest.warns(UserWarning, match="interrupted in epoch 2"):
        model = CNNClassifier(**SMALL, max_epochs=4, unfreeze="blocks.6", n_iter_no_change=4).fit(X, y)
    assert model.n_epochs_ == 2 and model.predict(X[:2]).shape == (2,)


@pytest.mark.slow
def test_bad_training_images_are_named_or_skipped(patches, tmp_path):
    X, y, _, _ = patches
    images, labels = [*X, str(tmp_path / "missing.png"), np.zeros((2, 2, 5))], [*y, y[0], y[1]]
    with pytest.raises(BadImagesError, match=r"missing\.png") as error:
        CNNClassifier(**SMALL, max_epochs=1, unfreeze="head").fit(images, labels)
    assert [failure.index for failure in error.value.failures] == [30, 31]
    with pytest.warns(BadImagesWarning, match=r"2 of 32 training images"):
        model = CNNClassifier(**SMALL, max_epochs=1, unfreeze="head", on_error="skip").fit(images, labels)
    assert [failure.index for failure in model.failed_] == [30, 31]


@pytest.mark.parametrize(
    "labels, message",
    [
        (["a"] * 30, "single class"),
        (["a"] * 29 + ["b"], r"classes \['b'\] have one image"),
        (["a", "b"] * 10, "one label per image"),
    ],
)
def test_bad_labels_are_clear_errors(patches, labels, message):
    with pytest.raises(ValueError, match=message):
        CNNClassifier(**SMALL).fit(patches[0], labels)


@pytest.mark.slow
def test_grid_search_and_cross_validation(patches):
    X, y, _, _ = patches
    model = CNNClassifier(**SMALL, layer="penultimate", max_epochs=1, batchnorm="frozen", early_stopping=False)
    grid = GridSearchCV(model, {"unfreeze": ["head", "blocks.6"], "learning_rate": [1e-3]}, cv=2).fit(X, y)
    assert grid.best_params_["unfreeze"] in ("head", "blocks.6")
    scores = cross_val_score(clone(model).set_params(unfreeze="head"), X, y, cv=2)
    assert scores.shape == (2,) and (scores > 0.5).all()


@pytest.mark.slow
def test_to_transformer_gives_the_fine_tuned_networks_codes(fitted, patches, tmp_path):
    _, _, X_test, _ = patches
    transformer = fitted.to_transformer(tmp_path / "tuned.pt", precision="fp32")
    codes = transformer.fit_transform(X_test)
    pretrained = CNNFeatureTransformer(input_size=32, precision="fp32").fit_transform(X_test)
    assert codes.shape == pretrained.shape == (30, 1280)
    assert not np.allclose(codes, pretrained, atol=1e-4)  # blocks.5 and 6 were fine-tuned
    assert transformer.extractor_.backbone == "efficientnet_lite0"


def test_cli_finetune_then_predict(tmp_path, patches, capsys):
    from PIL import Image

    from skcnn import cli

    X, y, _, _ = patches
    for i, (image, label) in enumerate(zip(X, y, strict=True)):
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "data" / label / f"{i}.png")
    (tmp_path / "data" / "grass" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "model.joblib"
    argv = ["finetune", str(tmp_path / "data"), "--out", str(out), "--input-size", "32", "--unfreeze", "blocks.6"]
    flags = ["--class-weight", "balanced", "--memory-limit", "0", "--store-dir", str(tmp_path / "crops")]
    assert cli.main([*argv, "--max-epochs", "1", "--random-state", "0", *flags]) == 0
    assert list((tmp_path / "crops").rglob("*.u8"))  # beyond the memory limit: the crops in files
    printed = capsys.readouterr().out
    assert "31 images, 3 classes" in printed and "broken.png" in printed and "1 epochs" in printed
    assert cli.main(["predict", str(out), str(tmp_path / "data" / "brick" / "0.png")]) == 0
    header, line = capsys.readouterr().out.strip().splitlines()
    assert header == "path,label,p(brick),p(grass),p(gravel),error"
    path, label, *proba, error = line.split(",")
    assert path.endswith("0.png") and label in ("brick", "grass", "gravel") and error == ""
    assert abs(sum(map(float, proba)) - 1) < 1e-4


@pytest.mark.parametrize(
    "check",
    [
        "check_estimator_cloneable",
        "check_estimator_repr",
        "check_no_attributes_set_in_init",
        "check_parameters_default_constructible",
        "check_get_params_invariance",
        "check_set_params",
        "check_estimators_unfitted",
        "check_estimator_tags_renamed",
        "check_valid_tag_types",
    ],
)
@pytest.mark.parametrize("estimator", [CNNClassifier, CNNRegressor])
def test_sklearn_api_checks(check, estimator):
    """The checks that need no 2-D numeric table (the estimator takes images, as its tags say)."""
    from sklearn.utils import estimator_checks

    getattr(estimator_checks, check)(estimator.__name__, estimator())


def test_defaults_are_declared_once():
    from dataclasses import fields

    from skcnn.options import FINETUNING

    params = CNNClassifier().get_params()
    assert all(params[field.name] == getattr(FINETUNING, field.name) for field in fields(FINETUNING))


@pytest.fixture
def training_decodes(monkeypatch):
    """Images the store decodes for training (uint8 crops), counted across fits."""
    from skcnn.decoding import loading

    decoded = []
    real = loading.iter_batches

    def counting(images, positions, *args, **kwargs):
        if kwargs.get("normalize") is False:
            decoded.extend(positions)
        return real(images, positions, *args, **kwargs)

    monkeypatch.setattr(loading, "iter_batches", counting)
    return decoded


@pytest.fixture
def no_kept_crops():
    from skcnn.finetuning.store import clear_decoded_images

    clear_decoded_images()
    yield
    clear_decoded_images()


def test_images_beyond_memory_limit_train_from_files_to_the_same_model(patches, tmp_path, no_kept_crops):
    X, y, X_test, _ = patches
    params = dict(SMALL, max_epochs=2, unfreeze="blocks.6", n_iter_no_change=2)
    in_memory = CNNClassifier(**params).fit(X, y)
    from skcnn.finetuning.store import clear_decoded_images

    clear_decoded_images()
    on_disk = CNNClassifier(**params, memory_limit=0, store_dir=tmp_path / "crops").fit(X, y)
    assert list((tmp_path / "crops").rglob("*.u8"))
    np.testing.assert_array_equal(on_disk.predict_proba(X_test), in_memory.predict_proba(X_test))
    assert on_disk.history_ == [{**epoch, "seconds": on_disk.history_[i]["seconds"]} for i, epoch in
                                enumerate(in_memory.history_)]  # fmt: skip


@pytest.mark.slow
def test_grid_search_clones_and_refits_decode_each_training_image_once(patches, training_decodes, no_kept_crops):
    X, y, _, _ = patches
    model = CNNClassifier(**SMALL, unfreeze="blocks.6", max_epochs=1, early_stopping=False)
    GridSearchCV(model, {"learning_rate": [1e-3, 3e-3]}, cv=2).fit(X, y)
    assert len(training_decodes) == len(X)  # 2 x 2 fits + a refit, each image once


@pytest.mark.slow
def test_a_killed_fit_resumes_with_images_in_files(patches, tmp_path, monkeypatch, no_kept_crops):
    X, y, X_test, _ = patches
    params = dict(SMALL, max_epochs=2, unfreeze="blocks.6", early_stopping=False, memory_limit="1kB")
    real_epoch = training._epoch

    calls = []

    def dying_in_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real_epoch(*args, **kwargs)

    first = dict(params, checkpoint=tmp_path / "ft.pt", store_dir=tmp_path / "crops")
    monkeypatch.setattr(training, "_epoch", dying_in_the_second_epoch)
    with pytest.raises(RuntimeError, match="killed"):
        CNNClassifier(**first).fit(X, y)
    monkeypatch.setattr(training, "_epoch", real_epoch)
    from skcnn.finetuning.store import clear_decoded_images

    clear_decoded_images()  # as a new process: the crops come from the files, the epochs from the checkpoint
    resumed = CNNClassifier(**first).fit(X, y)
    uninterrupted = CNNClassifier(**params).fit(X, y)
    np.testing.assert_allclose(resumed.predict_proba(X_test), uninterrupted.predict_proba(X_test), atol=1e-5)


@pytest.mark.slow
def test_head_only_computes_the_codes_once_for_search_and_probe(patches, monkeypatch, no_kept_crops):
    from skcnn.decoding import loading

    X, y, _, _ = patches
    decodes = []
    real = loading.decode
    monkeypatch.setattr(loading, "decode", lambda image, *a, **k: decodes.append(1) or real(image, *a, **k))
    model = CNNClassifier(**SMALL, unfreeze="head", tta=None).fit(X, y)
    assert model.strategy_["layer"] != "auto" and len(decodes) == len(X)  # the search's pass; the probe reads its codes
    decodes.clear()
    # tta="auto": the symmetries measured on a sample (all 30 here), then one pass with the views that also
    # stores the codes of the images as they are, which the one-view candidates read.
    model = CNNClassifier(**SMALL, unfreeze="head").fit(X, y)
    assert "tta" in model.strategy_ and len(decodes) == 2 * len(X)


def test_sample_weight_follows_scikit_learns_rules(patches):
    X, y, X_test, _ = patches
    head = dict(SMALL, layer="blocks.2", unfreeze="head")
    unweighted = CNNClassifier(**head).fit(X, y)
    ones = CNNClassifier(**head).fit(X, y, sample_weight=[1.0] * len(X))  # a list is taken as an array
    np.testing.assert_allclose(ones.predict_proba(X_test), unweighted.predict_proba(X_test), atol=1e-4)
    weights = np.linspace(0.5, 2.0, len(X))
    kept = weights.copy()
    CNNClassifier(**head).fit(X, y, sample_weight=weights)
    np.testing.assert_array_equal(weights, kept)  # not overwritten
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(3,\), expected \(30,\)"):
        CNNClassifier(**head).fit(X, y, sample_weight=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="Negative values in data passed to"):
        CNNClassifier(**head).fit(X, y, sample_weight=-np.ones(len(X)))
    with pytest.raises(ValueError, match="every image a weight of 0"):
        CNNClassifier(**head, class_weight={label: 0 for label in set(y)}).fit(X, y)


def test_fine_tuning_with_unit_weights_is_fine_tuning_without(patches):
    X, y, X_test, _ = patches
    params = dict(SMALL, max_epochs=1, unfreeze="blocks.6")
    unweighted = CNNClassifier(**params).fit(X, y)
    ones = CNNClassifier(**params).fit(X, y, sample_weight=np.ones(len(X)))
    np.testing.assert_allclose(ones.predict_proba(X_test), unweighted.predict_proba(X_test), atol=1e-4)
    assert ones.probe_score_ == unweighted.probe_score_


@pytest.mark.slow
@pytest.mark.parametrize("unfreeze", ["head", "blocks.6"])
def test_class_weight_moves_the_decision_towards_the_weighted_class(patches, unfreeze):
    X, _, X_test, _ = patches
    y = np.array(["a", "b"] * (len(X) // 2))  # labels that say nothing: the weights decide
    params = dict(SMALL, layer="penultimate", unfreeze=unfreeze, max_epochs=1, early_stopping=False)
    plain = CNNClassifier(**params).fit(X, y)
    weighted = CNNClassifier(**params, class_weight={"a": 10.0}).fit(X, y)
    assert (weighted.predict(X_test) == "a").mean() > (plain.predict(X_test) == "a").mean() + 0.2
    balanced = CNNClassifier(**params, class_weight="balanced").fit(X, y)  # balanced classes: no change
    np.testing.assert_allclose(balanced.predict_proba(X_test), plain.predict_proba(X_test), atol=1e-4)


def test_validation_accuracy_is_weighted():
    class Constant(torch.nn.Module):  # predicts class 0 for every image
        def forward(self, images):
            return torch.tensor([[1.0, 0.0]]).expand(len(images), 2)

    class FourImages:  # what the loop reads of decoded images
        def __len__(self):
            return 4

        def batches(self, order, batch_size):
            return iter([torch.zeros((len(order), 3, 2, 2), dtype=torch.uint8)])

    images = FourImages()
    from torchvision.transforms import InterpolationMode

    from skcnn.decoding.preprocessing import Preprocessing

    recipe = Preprocessing((2, 2), 2, (0.5,) * 3, (0.5,) * 3, InterpolationMode.BILINEAR)
    plan = training.Plan(1, 4, 1e-3, 0.1, 0.0, "frozen", None, torch.device("cpu"), None, 0)
    targets = torch.tensor([0, 0, 0, 1])
    validation = training.Examples(images, targets, torch.tensor([1.0, 1.0, 1.0, 3.0]))
    assert training.validation_score(Constant(), validation, recipe, plan) == 0.5
    assert training.validation_score(Constant(), validation._replace(weights=None), recipe, plan) == 0.75
    # Balanced: the mean of the recalls (1 for class 0, 0 for class 1), whatever the weights.
    plan.scoring = "balanced_accuracy"
    assert training.validation_score(Constant(), validation, recipe, plan) == 0.5
    assert training.validation_score(Constant(), validation._replace(weights=None), recipe, plan) == 0.5


def test_the_probe_that_starts_fine_tuning_takes_a_stratified_draw_of_large_sets(patches, monkeypatch):
    from skcnn.finetuning import probe

    X, y, _, _ = patches
    seen = []
    linear_probe = probe.linear_probe
    monkeypatch.setattr(
        probe,
        "linear_probe",
        lambda codes, targets, weights: seen.append(targets) or linear_probe(codes, targets, weights),
    )
    monkeypatch.setattr(probe, "PROBE_MAX_IMAGES", 12)
    model = CNNClassifier(**SMALL, max_epochs=1, unfreeze="blocks.6", early_stopping=False).fit(X, y)
    assert len(seen[0]) == 12 and np.bincount(seen[0]).tolist() == [4, 4, 4]
    assert len(model.history_) == 2  # epoch 0 and one epoch: training itself took every image


def test_the_probe_folds_the_standardisation_into_the_head():
    from skcnn.finetuning import probe
    from skcnn.frozen.search import default_classifier

    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1, 2], 8)
    codes = rng.normal(size=(24, 5)) * [1, 10, 100, 0.1, 1] + targets[:, None]
    weight, bias = probe.linear_probe(codes, targets, None)
    baseline = default_classifier().fit(codes, targets)
    np.testing.assert_allclose(codes @ weight.T + bias, baseline.decision_function(codes), rtol=1e-6, atol=1e-6)
    head, loss = probe.probe_head(codes.astype(np.float32), torch.as_tensor(targets), None, 3)
    assert head.weight.shape == (3, 5) and 0 < loss < np.log(3)  # better than chance on its own codes
    two = probe.probe_head(codes[:16].astype(np.float32), torch.as_tensor(targets[:16]), None, 2)[0]
    assert two.weight.shape == (2, 5) and not two.weight[0].any()  # class 0's logit is 0, as scikit-learn's


def test_the_strategy_follows_the_images_per_class_alone():
    from skcnn.finetuning import strategy
    from skcnn.frozen.advice import FINE_TUNING_PAYS_FROM

    assert strategy.resolved_unfreeze("auto", np.repeat([0, 1], FINE_TUNING_PAYS_FROM))[0] == "all"
    unfreeze, why = strategy.resolved_unfreeze("auto", np.repeat([0, 1], FINE_TUNING_PAYS_FROM - 1))
    assert unfreeze == "head" and why.startswith("small data")
    assert strategy.resolved_unfreeze("blocks.5", np.repeat([0, 1], 2)) == ("blocks.5", "as given")
    chosen = strategy.chosen("auto", "all", "auto", "as given", ["blocks.5", "penultimate"])
    assert chosen.as_dict() == {"layer": "penultimate", "unfreeze": "all", "batchnorm": "frozen", "reason": "as given"}
    measured = chosen.with_augment("flips", {"vflip", "hflip"}).as_dict()
    assert measured["augment"] == "flips"
    assert measured["reason"] == "as given; augment 'flips' (class kept under ['hflip', 'vflip'])"


@pytest.mark.slow
def test_augment_auto_does_not_turn_digits():
    from skcnn.datasets import load_digit_images

    X, y = load_digit_images("train")
    rows = np.concatenate([np.flatnonzero(np.asarray(y) == digit)[:12] for digit in range(10)])
    X, y = np.asarray(X)[rows], np.asarray(y)[rows]
    model = CNNClassifier(**SMALL, max_epochs=1, unfreeze="blocks.6", early_stopping=False).fit(X, y)
    # Vertical flips and rotations change digits: neither "flips" nor "dihedral" is chosen.
    assert model.strategy_["augment"] in ("photo", "crop")


def test_early_stopping_scores_by_balanced_accuracy(patches):
    from sklearn.metrics import balanced_accuracy_score

    X, y, _, _ = patches
    X, y = X[4:], y[4:]  # brick rarer than the others
    model = CNNClassifier(**SMALL, max_epochs=1, unfreeze="blocks.6", scoring="balanced_accuracy").fit(X, y)
    assert 0 <= model.probe_score_ <= 1 and len(model.history_) == 2
    with pytest.raises(ValueError, match="scoring"):
        CNNClassifier(**SMALL, scoring="f1").fit(X, y)
    assert balanced_accuracy_score([0, 0, 0, 1], [0, 0, 0, 0]) == 0.5  # what a majority answer scores


def test_fit_with_auto_strategy_decodes_each_image_once(patches, monkeypatch):
    from skcnn import images as image_io

    X, y, _, _ = patches
    decoded = []
    load_image = image_io.load_image

    def counted(image, *args, **kwargs):
        decoded.append(1)
        return load_image(image, *args, **kwargs)

    monkeypatch.setattr(image_io, "load_image", counted)
    CNNClassifier(**SMALL, layer="penultimate", tta=None).fit(X, y)  # unfreeze="auto": no decode to choose it
    assert len(decoded) == len(X)


def test_a_first_fit_with_a_cache_decodes_each_image_once_and_caches_the_transformers_codes(
    patches, tmp_path, monkeypatch, no_kept_crops
):
    from collections import Counter

    from PIL import Image

    from skcnn.decoding import loading

    X, y, _, _ = patches
    paths = [str(tmp_path / f"{i}.png") for i in range(len(X))]
    for path, pixels in zip(paths, X, strict=True):
        Image.fromarray(np.asarray(pixels)).save(path)
    decodes = Counter()
    real = loading.decode
    monkeypatch.setattr(loading, "decode", lambda image, *a, **k: decodes.update([image]) or real(image, *a, **k))
    cache = tmp_path / "codes.h5"
    model = CNNClassifier(**SMALL, cache=cache, unfreeze="all", layer="penultimate", max_epochs=1,
                          early_stopping=False, progress=False)  # fmt: skip
    model.fit(paths, y)
    assert decodes == Counter(paths)  # the probe's codes are computed from the training crops
    params = dict(input_size=32, layer="penultimate", precision="fp32")
    cached = CNNFeatureTransformer(**params, cache=cache).fit(paths)
    codes = cached.transform(paths)
    assert cached.cache_info_.hits == len(paths) and cached.cache_info_.computed == 0
    np.testing.assert_allclose(codes, CNNFeatureTransformer(**params).fit_transform(paths), rtol=1e-5, atol=1e-5)
