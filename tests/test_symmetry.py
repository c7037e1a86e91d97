"""The symmetries of the square: views, random draws, which ones keep the class, augmentation policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skcnn.codes.invariance import label_preserving, policy_for, symmetries_kept
from skcnn.decoding import symmetry
from skcnn.finetuning.augment import policy_augment, resolve_augment


def test_views_are_the_flips_and_rotations_of_the_square():
    image = torch.arange(2 * 3 * 3).reshape(2, 3, 3)
    flips = [view(image) for view in symmetry.views("flips")]
    dihedral = [view(image) for view in symmetry.views("dihedral")]
    assert torch.equal(flips[0], image) and len(flips) == 4 and len(dihedral) == 8
    # Eight distinct arrangements of an asymmetric square, each a flip or rotation of it.
    assert len({tuple(view.flatten().tolist()) for view in dihedral}) == 8
    allowed = {tuple(torch.rot90(image, k, (1, 2)).flatten().tolist()) for k in range(4)}
    allowed |= {tuple(torch.rot90(image.flip(2), k, (1, 2)).flatten().tolist()) for k in range(4)}
    assert {tuple(view.flatten().tolist()) for view in dihedral} == allowed
    assert [view(image) for view in symmetry.views(None)] == [image]  # no tta: the image alone
    with pytest.raises(ValueError, match="Unknown symmetry policy"):
        symmetry.views("rotations")


def test_random_symmetry_keeps_every_pixel():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    draws = {tuple(symmetry.RandomSymmetry("dihedral")(image).flatten().tolist()) for _ in range(200)}
    assert len(draws) == 8  # every view is drawn
    for view in draws:
        assert sorted(view) == sorted(image.flatten().tolist())  # no crop, no resampling


def test_label_preserving_tells_a_symmetry_that_keeps_the_class_from_one_that_does_not():
    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1, 2], 60)
    centres = rng.normal(0, 3, size=(3, 16))
    codes = centres[targets] + rng.normal(size=(180, 16))
    kept = codes + rng.normal(scale=0.1, size=codes.shape)  # the view looks like its class
    changed = centres[(targets + 1) % 3] + rng.normal(size=(180, 16))  # the view looks like another class
    accuracies = label_preserving(codes, targets, {"hflip": kept, "vflip": changed})
    assert accuracies["hflip"][0] > 0.9 and accuracies["vflip"][0] < 0.2
    assert symmetries_kept(accuracies, len(targets)) == {"hflip"}


def test_policy_for_measured_symmetries():
    assert policy_for({"hflip", "vflip", "rot90"}) == "dihedral"
    assert policy_for({"hflip", "vflip"}) == "flips"
    assert policy_for({"hflip"}) == "photo"
    assert policy_for({"rot90"}) == "crop"


def test_augment_policies():
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    assert policy_augment("flips", (16, 16))(image).shape == (3, 16, 16)
    assert policy_augment("crop", (12, 12))(image).shape == (3, 12, 12)
    assert policy_augment("photo", (16, 16))(image).shape == (3, 16, 16)
    assert resolve_augment("auto", (16, 16), "dihedral").policy == "dihedral"
    assert resolve_augment("flips", (16, 16)).policy == "flips"
    with pytest.raises(ValueError, match="square input_size"):
        policy_augment("dihedral", (16, 24))
    with pytest.raises(ValueError, match="augment must be"):
        resolve_augment("rotations", (16, 16))


@pytest.fixture(scope="module")
def head_only():
    """A head-only CNNClassifier on 32 px texture patches, seen whole (no crop: every view is the same crop)."""
    from skcnn import CNNClassifier
    from skcnn.datasets import load_texture_patches

    X, y = load_texture_patches(n_per_class=6, patch_size=32)
    model = CNNClassifier(
        input_size=32, crop=False, unfreeze="head", layer="penultimate", precision="fp32", runtime="torch", tta=None
    )
    return model.fit(X, y), X[::3]


@pytest.mark.slow
def test_classifier_tta_averages_the_logits_of_the_views(head_only, tmp_path):
    from skcnn.export import to_onnx

    model, X = head_only
    flips = [X, X[:, :, ::-1], X[:, ::-1], X[:, ::-1, ::-1]]
    views = flips + [np.rot90(view, 1, axes=(1, 2)) for view in flips]  # the dihedral group's 8
    logits = [model.set_params(tta=None).decision_function(np.ascontiguousarray(view)) for view in views]
    for tta, expected in [("flips", np.mean(logits[:4], axis=0)), ("dihedral", np.mean(logits, axis=0))]:
        averaged = model.set_params(tta=tta).decision_function(X)
        np.testing.assert_allclose(averaged, expected, rtol=1e-4, atol=1e-4)
        assert np.abs(averaged - logits[0]).max() > 1e-3  # the views differ: the average is no single view's
        probabilities = model.predict_proba(X)
        np.testing.assert_allclose(probabilities, torch.softmax(torch.as_tensor(averaged), 1).numpy(), atol=1e-5)
        np.testing.assert_array_equal(model.predict(X), model.classes_[averaged.argmax(1)])
    # The exported file computes the views inside its graph: served scores are the model's (tta="dihedral").
    from skcnn.serving import OnnxImageClassifier

    served = OnnxImageClassifier(to_onnx(model, tmp_path / "model.onnx"))
    np.testing.assert_allclose(served.decision_function(X), averaged, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(served.predict(X), model.predict(X))
    with pytest.raises(ValueError, match="tta must be None or one of"):
        model.set_params(tta="rotations").predict(X)
    model.set_params(tta=None)


@pytest.mark.slow
def test_a_pipeline_with_tta_codes_is_served_as_it_predicts(tmp_path):
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from skcnn import CNNFeatureTransformer
    from skcnn.datasets import load_texture_patches
    from skcnn.export import to_onnx
    from skcnn.serving import OnnxImageClassifier

    X, y = load_texture_patches(n_per_class=6, patch_size=32)
    codes = CNNFeatureTransformer(input_size=32, crop=False, layer="blocks.4", tta="flips", precision="fp32")
    pipeline = make_pipeline(codes, LogisticRegression(max_iter=1000)).fit(X, y)
    served = OnnxImageClassifier(to_onnx(pipeline, tmp_path / "pipeline.onnx"))
    np.testing.assert_allclose(served.predict_proba(X), pipeline.predict_proba(X), atol=1e-4)
    # A clone: make_pipeline does not copy, and refitting ``codes`` itself would change ``pipeline``.
    untouched = make_pipeline(clone(codes).set_params(tta=None), LogisticRegression(max_iter=1000)).fit(X, y)
    assert not np.allclose(untouched.predict_proba(X), pipeline.predict_proba(X), atol=1e-3)  # the views count


def test_classifier_tta_is_checked_before_training(textures):
    from skcnn import CNNClassifier

    X_train, y_train, _, _ = textures
    with pytest.raises(ValueError, match="tta='dihedral' rotates by 90 degrees"):
        CNNClassifier(input_size=(48, 32), tta="dihedral", unfreeze="head").fit(X_train, y_train)
    with pytest.raises(ValueError, match="The 'tta' parameter of CNNClassifier must be"):
        CNNClassifier(input_size=48, tta="rotations", unfreeze="head").fit(X_train, y_train)


def test_a_model_pickled_before_tta_existed_predicts_from_one_view():
    import pickle

    from skcnn import CNNClassifier

    state = CNNClassifier(input_size=32).__getstate__()
    del state["tta"]  # as pickled by skcnn 0.8
    old = CNNClassifier.__new__(CNNClassifier)
    old.__setstate__(state)
    assert old.get_params()["tta"] is None
    assert pickle.loads(pickle.dumps(old)).get_params() == CNNClassifier(input_size=32, tta=None).get_params()


def test_tta_auto_weighs_the_views_the_measured_symmetries_allow():
    from skcnn.codes.invariance import tta_candidate
    from skcnn.finetuning.strategy import chosen_tta

    assert tta_candidate({"hflip", "vflip", "rot90"}, (32, 32)) == "dihedral"
    assert tta_candidate({"hflip", "vflip", "rot90"}, (32, 48)) == "flips"  # rotations need a square
    assert tta_candidate({"hflip", "vflip"}, (32, 32)) == "flips"
    assert tta_candidate({"hflip"}, (32, 32)) is None and tta_candidate(set(), (32, 32)) is None
    assert chosen_tta({"hflip", "vflip"}, "flips", (0.70, 0.72), "validation") == (
        "flips",
        "validation 0.720 with 'flips' against 0.700 from one view",
    )
    assert chosen_tta({"hflip", "vflip"}, "flips", (0.70, 0.70), "validation")[0] is None  # a tie: one view
    assert chosen_tta({"hflip", "vflip"}, "flips", None, "validation") == (
        None,
        "'flips' not measured: no validation split",
    )
    assert chosen_tta({"hflip"}, None, None, "validation") == (
        None,
        "no flip or rotation policy keeps the class (kept under ['hflip'])",
    )
    assert chosen_tta(None, None, None, "validation")[1].startswith("not measured")


@pytest.mark.parametrize("relu", [True, False])
def test_a_pass_with_views_stores_the_codes_of_the_images_as_they_are(tmp_path, relu):
    from skcnn import CNNFeatureTransformer
    from skcnn.datasets import load_texture_patches

    X, _ = load_texture_patches(n_per_class=4, patch_size=32)
    # Average pooling of maps ReLUs before pooling; max pooling and the pooled penultimate code defer it.
    params = dict(input_size=32, layer=["blocks.3", "penultimate"], pooling=["avg", "max"], precision="fp32", relu=relu)
    cache = tmp_path / "codes.h5"
    viewed = CNNFeatureTransformer(**params, tta="flips", cache=cache).fit(X).transform(X)
    single = CNNFeatureTransformer(**params, cache=cache).fit(X)
    codes = single.transform(X)
    assert single.cache_info_.hits == len(X) and single.cache_info_.computed == 0  # read, not computed
    np.testing.assert_array_equal(codes, CNNFeatureTransformer(**params).fit(X).transform(X))
    np.testing.assert_array_equal(viewed, CNNFeatureTransformer(**params, tta="flips").fit(X).transform(X))
    assert (codes < 0).any() != relu and (viewed < 0).any() != relu


def test_tta_auto_with_the_head_alone_is_cross_validated_against_one_view(textures):
    import pickle
    import re

    from skcnn import CNNClassifier

    X, y, X_test, _ = textures
    model = CNNClassifier(
        input_size=32, crop=False, layer="penultimate", unfreeze="head", precision="fp32", random_state=0
    ).fit(X, y)
    # Textures keep their class under flips and rotations: the eight views are weighed against one.
    found = re.search(
        r"cross-validated ([0-9.]+) with 'dihedral' against ([0-9.]+) from one view", model.strategy_["reason"]
    )
    assert found, model.strategy_["reason"]
    viewed, single = map(float, found.groups())
    assert model.strategy_["tta"] == model.tta_ == ("dihedral" if viewed > single else None)
    decision = model.decision_function(X_test)
    explicit = CNNClassifier(**{**model.get_params(), "tta": model.tta_}).fit(X, y)
    np.testing.assert_allclose(explicit.decision_function(X_test), decision, rtol=1e-4, atol=1e-4)
    # Set after the fit, a tta takes effect at once; "auto" is the fit's choice again, after pickling too.
    from skcnn.finetuning.estimator import predicted_views

    assert predicted_views(model.set_params(tta="flips")) == "flips" and model.tta_ == explicit.tta_
    assert predicted_views(pickle.loads(pickle.dumps(model.set_params(tta="auto")))) == explicit.tta_


def test_tta_auto_after_fine_tuning_is_weighed_on_the_validation_split(textures):
    import re

    from skcnn import CNNClassifier

    X, y, X_test, _ = textures
    model = CNNClassifier(input_size=32, crop=False, unfreeze="blocks.6", max_epochs=1, random_state=0).fit(X, y)
    found = re.search(
        r"validation ([0-9.]+) with 'dihedral' against ([0-9.]+) from one view", model.strategy_["reason"]
    )
    assert found and model.strategy_["augment"] == "dihedral", model.strategy_["reason"]
    viewed, single = map(float, found.groups())
    assert model.tta_ == ("dihedral" if viewed > single else None)
    # Every epoch was scored both ways; the kept one is the best of either, and its scores are the reason's.
    kept = model.history_[model.best_epoch_]
    assert (round(kept["validation_score"], 3), round(kept["validation_score_views"], 3)) == (single, viewed)
    best = max(max(epoch["validation_score"], epoch["validation_score_views"]) for epoch in model.history_)
    assert max(single, viewed) == round(best, 3)
    one_view = model.set_params(tta=None).decision_function(X_test)
    eight = model.set_params(tta="dihedral").decision_function(X_test)
    assert np.abs(one_view - eight).max() > 1e-3  # the views were weighed on logits that differ


def test_input_size_auto_sees_images_with_no_up_or_down_whole():
    from skcnn.codes.invariance import augment_policy
    from skcnn.finetuning.strategy import resolved_input, seen_whole
    from skcnn.network.backbones import load_backbone

    recipe = load_backbone("efficientnet_lite0", None, "cpu").preprocessing
    assert seen_whole({"hflip", "vflip"}) and not seen_whole({"hflip", "rot90"})
    assert resolved_input(recipe, 300, {"hflip", "vflip"}) == (
        300,
        "input 300x300, the images' own, no crop (no up or down: class kept under ['hflip', 'vflip'])",
    )
    weights = resolved_input(recipe, 300, {"hflip"})
    assert weights == (None, "input 224x224, the weights' (the images have an up: class kept under ['hflip'])")
    assert resolved_input(recipe, None, None)[0] is None  # images no larger: nothing measured
    assert "not measured" in resolved_input(recipe, 300, None)[1]  # labels, continuous targets
    assert augment_policy({"hflip", "vflip", "rot90"}, (32, 48)) == "flips"  # rotations need a square
    assert augment_policy({"hflip"}, (32, 32)) == "photo"


@pytest.mark.slow  # 6-10 s: the symmetries measured at 224 px, two fits at 288 px
def test_input_size_auto_fits_large_textures_at_their_own_size(textures, tmp_path):
    import pickle

    from skcnn import CNNClassifier

    X, y, X_test, _ = textures
    X, y = X[::3], y[::3]  # 7 of each texture
    large = [np.repeat(np.repeat(image, 6, axis=0), 6, axis=1) for image in (*X, *X_test[:4])]  # 288 px
    params = dict(layer="penultimate", unfreeze="head", tta=None, precision="fp32", random_state=0)
    model = CNNClassifier(**params).fit(large[: len(y)], y)
    # Textures keep their class under both flips: seen whole at their own size, without the crop.
    assert (model.input_size_, model.crop_) == (288, False), model.strategy_["reason"]
    assert "input 288x288, the images' own, no crop" in model.strategy_["reason"]
    assert model.preprocessing_["crop_size"] == [288, 288]
    explicit = CNNClassifier(**params, input_size=288, crop=False).fit(large[: len(y)], y)
    np.testing.assert_allclose(
        model.decision_function(large[len(y) :]), explicit.decision_function(large[len(y) :]), atol=1e-4
    )
    transformer = model.to_transformer(tmp_path / "weights.pt")
    assert (transformer.input_size, transformer.crop) == (288, False)
    # Inspection's folds fit at the fitted model's input: none measures it again.
    from skcnn.inspection.models import head_codes, inspected_params

    assert inspected_params(model) == {"tta": None, "input_size": 288, "crop": False}
    assert inspected_params(CNNClassifier(**params)) == {"tta": None, "input_size": None, "crop": True}
    assert (head_codes(model).input_size, head_codes(model).crop) == (288, False)
    # Small images: the weights' input, nothing measured; a model pickled before input_size_ keeps its input.
    small = CNNClassifier(**params).fit(X, y)
    assert (small.input_size_, small.crop_) == (None, True) and "the images are not larger" in small.strategy_["reason"]
    state = small.__getstate__()
    del state["input_size_"], state["crop_"]
    state["input_size"] = 48
    old = CNNClassifier.__new__(CNNClassifier)
    old.__setstate__(state)
    assert (pickle.loads(pickle.dumps(old)).input_size_, old.crop_) == (48, True)
