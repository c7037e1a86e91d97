"""Layer choice: one pass for many taps, cache_layers, several backbones, LayerSearchCV."""

import contextlib
import os

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import FeatureUnion, make_pipeline

from skcnn import CNNFeatureTransformer, LayerSearchCV
from skcnn.codes import extraction
from skcnn.frozen.search import (
    DEFAULT_CS,
    KERNEL_CANDIDATES,
    KERNEL_CS,
    default_classifier,
    kernel_classifier,
    logistic_path,
    ranked,
)
from skcnn.images import BadImagesError, BadImagesWarning
from skcnn.layers import candidate_layers, list_layers

SMALL = dict(backbone="efficientnet_lite0", input_size=32, batch_size=8)
SMALL_NET = CNNFeatureTransformer(input_size=32)


@contextlib.contextmanager
def counted_forward_passes():
    """Count the images that go through a network to make codes, whatever
    runs it (the one-time probe and self-checks of a network are not data
    passes)."""
    seen = []
    batch_codes = extraction.view_codes_of_batch

    def counting(backbone, batch, *args, **kwargs):
        seen.append(batch.shape[0])
        return batch_codes(backbone, batch, *args, **kwargs)

    extraction.view_codes_of_batch = counting
    try:
        yield seen
    finally:
        extraction.view_codes_of_batch = batch_codes


@pytest.fixture
def images():
    return np.random.default_rng(1).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)


@pytest.mark.slow
def test_several_layers_come_from_one_forward_pass_per_image(images):
    layers = ["blocks.1", "blocks.3", "penultimate"]
    with counted_forward_passes() as seen:
        codes = CNNFeatureTransformer(**SMALL, layer=layers).fit(images).transform(images)
    assert sum(seen) == len(images)
    alone = [CNNFeatureTransformer(**SMALL, layer=layer).fit_transform(images) for layer in layers]
    np.testing.assert_allclose(codes, np.concatenate(alone, axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cache_layers_store_the_other_candidates_in_the_same_pass(tmp_path, images):
    candidates = ["blocks.1", "blocks.3", "penultimate"]
    cache = os.fspath(tmp_path / "codes.h5")
    cached = {}
    with counted_forward_passes() as seen:
        first = CNNFeatureTransformer(**SMALL, layer="blocks.1", cache=cache, cache_layers=candidates)
        first.fit(images).transform(images)
        for layer in candidates[1:]:
            t = CNNFeatureTransformer(**SMALL, layer=layer, cache=cache).fit(images)
            cached[layer] = t.transform(images)
            assert t.cache_info_.computed == 0 and t.cache_info_.hits == len(images)
    assert sum(seen) == len(images)
    for layer, codes in cached.items():
        np.testing.assert_array_equal(codes, CNNFeatureTransformer(**SMALL, layer=layer).fit_transform(images))


@pytest.mark.slow
def test_grid_search_over_layer_with_cache_layers_costs_one_pass_per_image(tmp_path, textures):
    X, y = textures[0][::4], textures[1][::4]
    candidates = ["blocks.1", "blocks.3", "penultimate"]
    transformer = CNNFeatureTransformer(**SMALL, cache=os.fspath(tmp_path / "c.h5"), cache_layers=candidates)
    grid = GridSearchCV(make_pipeline(transformer, GaussianNB()), {"cnnfeaturetransformer__layer": candidates}, cv=3)
    with counted_forward_passes() as seen:
        grid.fit(X, y)
    assert sum(seen) == len(X)  # not 3 layers x 3 folds x (train + test)
    assert grid.best_params_["cnnfeaturetransformer__layer"] in candidates


def test_cache_layers_need_a_cache_and_valid_names(images):
    with pytest.raises(ValueError, match="cache_layers needs a cache"):
        CNNFeatureTransformer(**SMALL, cache_layers=["blocks.1"]).fit(images)
    with pytest.raises(ValueError, match=r"blocks.99.*not a tappable layer"):
        CNNFeatureTransformer(**SMALL, cache="x.h5", cache_layers=["blocks.99"]).fit(images)


def test_two_backbones_concatenate_with_their_own_preprocessing_and_prefixed_names(images):
    both = CNNFeatureTransformer(
        backbone=["efficientnet_lite0", "resnet18"],
        weights={"efficientnet_lite0": "DEFAULT", "resnet18": None},
        layer=["blocks.2", ["layer2", "penultimate"]],
        input_size=32,
    ).fit(images)
    codes = both.transform(images)
    assert codes.shape == (len(images), 40 + 128 + 512) == (len(images), both.n_features_out_)
    assert both.layers_ == {"efficientnet_lite0": ("blocks.2",), "resnet18": ("layer2", "penultimate")}
    lite0 = CNNFeatureTransformer(**SMALL, layer="blocks.2").fit_transform(images)
    resnet = CNNFeatureTransformer(
        backbone="resnet18", weights=None, layer=["layer2", "penultimate"], input_size=32
    ).fit_transform(images)
    np.testing.assert_array_equal(codes, np.hstack([lite0, resnet]))
    names = both.get_feature_names_out()
    assert names[0] == "efficientnet_lite0__blocks.2__0" and names[40] == "resnet18__layer2__0"
    assert names[-1] == "resnet18__penultimate__511" and len(set(names)) == len(names)
    # each backbone keeps its own normalisation (timm lite0: 0.5; torchvision: ImageNet mean)
    assert both.preprocessing_["efficientnet_lite0"]["mean"] != both.preprocessing_["resnet18"]["mean"]


def test_two_backbones_survive_clone_pickle_and_set_output(images):
    import pickle

    both = CNNFeatureTransformer(
        backbone=["efficientnet_lite0", "resnet18"], weights=["DEFAULT", None], input_size=32
    ).fit(images)
    codes = both.transform(images)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(both)).transform(images), codes)
    np.testing.assert_array_equal(clone(both).fit_transform(images), codes)
    frame = clone(both).set_output(transform="pandas").fit_transform(images)
    assert list(frame.columns) == both.get_feature_names_out().tolist()


def test_two_backbones_bad_image_is_one_failure_and_one_nan_row(tmp_path, images):
    paths = []
    for i, image in enumerate(images[:4]):
        from PIL import Image

        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    paths[2].write_bytes(b"not an image")
    params = dict(backbone=["efficientnet_lite0", "resnet18"], weights=["DEFAULT", None], input_size=32)
    with pytest.warns(BadImagesWarning, match="1 of 4 images"):
        t = CNNFeatureTransformer(**params, on_error="skip").fit(paths)
        codes = t.transform(paths)
    assert [f.index for f in t.failed_] == [2]
    assert np.isnan(codes[2]).all() and np.isfinite(codes[[0, 1, 3]]).all()
    with pytest.raises(BadImagesError, match=r"2.png") as raised:
        CNNFeatureTransformer(**params).fit(paths).transform(paths)
    np.testing.assert_array_equal(raised.value.codes, codes)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(layer=["penultimate"]), "one entry per backbone"),
        (dict(layer={"efficientnet_lite0": "penultimate"}), r"missing: \['resnet18'\]"),
        (dict(weights={"efficientnet_lite0": "DEFAULT", "resnet18": None, "vgg16": None}), r"unknown: \['vgg16'\]"),
    ],
)
def test_per_backbone_parameters_must_match_the_backbones(images, params, message):
    with pytest.raises(ValueError, match=message):
        CNNFeatureTransformer(backbone=["efficientnet_lite0", "resnet18"], input_size=32, **params).fit(images)


def test_repeated_backbone_and_per_backbone_dict_for_one_backbone_are_refused(images):
    with pytest.raises(ValueError, match="more than once"):
        CNNFeatureTransformer(backbone=["resnet18", "resnet18"], weights=None).fit(images)
    with pytest.raises(ValueError, match="per backbone"):
        CNNFeatureTransformer(**SMALL, layer={"efficientnet_lite0": "penultimate"}).fit(images)


def test_feature_union_of_two_backbones_shares_one_cache_file(tmp_path, images):
    cache = os.fspath(tmp_path / "shared.h5")

    def union():
        return FeatureUnion(
            [
                ("lite0", CNNFeatureTransformer(**SMALL, cache=cache)),
                ("resnet", CNNFeatureTransformer(backbone="resnet18", weights=None, input_size=32, cache=cache)),
            ]
        )

    first = union().fit_transform(images)
    again = union().fit(images)
    np.testing.assert_array_equal(again.transform(images), first)
    for _, part in again.transformer_list:
        assert part.cache_info_.computed == 0
    from skcnn.cache import CodeCache

    assert {c.attrs["backbone"] for c in CodeCache(cache).configs()} == {"efficientnet_lite0", "resnet18"}


def test_candidate_layers_spread_from_early_to_penultimate():
    for backbone in ("efficientnet_lite0", "resnet18", "vgg16", "alexnet"):
        names = candidate_layers(backbone)
        order = [layer.name for layer in list_layers(backbone)]
        assert names[-1] == "penultimate" and len(names) >= 5
        assert [order.index(n) for n in names] == sorted(order.index(n) for n in names)
        assert order.index(names[0]) < len(order) / 4  # starts early
    assert candidate_layers("efficientnet_lite0") == ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "penultimate"]
    assert "layer4" not in candidate_layers("resnet18")  # its average is the penultimate code
    assert "classifier.1" in candidate_layers("vgg16")  # fc6 of VGG, after its ReLU


def test_layer_search_one_extraction_table_and_best_estimator(tmp_path, textures):
    X, y = textures[0][::3], textures[1][::3]  # 20 patches, every class
    layers = ["blocks.1", "blocks.3", "penultimate"]
    search = LayerSearchCV(
        CNNFeatureTransformer(input_size=32, cache=os.fspath(tmp_path / "c.h5")),
        layers=layers,
        input_sizes=[32],
        ttas=None,
        cv=3,
    )
    with counted_forward_passes() as seen:
        search.fit(X, y)
    assert sum(seen) == len(X)  # the refit reads the best layer from the cache
    assert search.symmetries_ is None  # ttas given: nothing measured
    results = search.cv_results_
    linear = results["classifier"] == "logistic"
    assert linear[:5].all() and not linear[5:].any()  # every candidate first, by the logistic regression
    # Each map twice (average and generalised mean), the penultimate vector once.
    assert results["layer"][linear].tolist() == ["blocks.1", "blocks.1", "blocks.3", "blocks.3", "penultimate"]
    assert results["pooling"][linear].tolist() == ["avg", "gem", "avg", "gem", None]
    assert results["n_features"][linear].tolist() == [24, 24, 80, 80, 1280]
    assert results["input"].tolist() == ["32x32"] * 11
    assert np.all(np.diff(results["depth"][linear]) >= 0)
    # Then the RBF SVM, at each strength, on the three codes the logistic regression ranked best.
    top = ranked(results, linear)[:KERNEL_CANDIDATES]
    assert results["classifier"][~linear].tolist() == [f"svm C={C:g}" for C in KERNEL_CS] * KERNEL_CANDIDATES
    kernel_codes = list(zip(results["layer"][~linear], results["pooling"][~linear], strict=True))
    assert kernel_codes == [(results["layer"][row], results["pooling"][row]) for row in top for _ in KERNEL_CS]
    assert results["split2_test_score"].shape == (11,)
    best = search.best_index_
    assert results["mean_test_score"][best] == results["mean_test_score"].max()
    assert search.best_layer_ == results["layer"][best]
    assert search.best_params_["pooling"] == (results["pooling"][best] or "avg")
    assert results["rank_test_score"][search.best_index_] == 1
    network = search.best_estimator_.named_steps["cnnfeaturetransformer"]
    assert network.layers_ == (search.best_layer_,) and network.pooling == search.best_params_["pooling"]
    assert type(search.best_estimator_[-1]) is type(search.best_classifier_)
    assert search.predict(X).shape == (len(X),) and 0 <= search.score(X, y) <= 1
    assert search.predict_proba(X).shape == (len(X), 3)  # whichever classifier won
    summary = search.summary()
    assert "*" in summary and "blocks.3" in summary and "gem" in summary and "svm C=10" in summary
    with counted_forward_passes() as seen:
        again = clone(search).set_params(classifier=GaussianNB()).fit(X, y)
    assert sum(seen) == 0  # a second search runs no network at all
    assert again.cv_results_["layer"].tolist() == results["layer"][linear].tolist()
    assert set(again.cv_results_["classifier"]) == {"GaussianNB"}  # a given classifier alone


def test_kernel_stage_left_out_where_it_cannot_be_scored_or_is_not_asked(textures):
    X, y = textures[0][::3], textures[1][::3]
    params = dict(layers=["blocks.1"], poolings=["avg"], input_sizes=[32], ttas=None, cv=3, refit=False)
    for search in (
        LayerSearchCV(SMALL_NET, classifier="logistic", **params),  # the logistic regression alone (fine-tuning's)
        LayerSearchCV(SMALL_NET, scoring="neg_log_loss", **params),  # scored by probabilities, which the SVM lacks
    ):
        assert search.fit(X, y).cv_results_["classifier"].tolist() == ["logistic"]
        assert search.best_classifier_[-1].C in DEFAULT_CS  # tuned on the search's folds
    assert set(LayerSearchCV(SMALL_NET, **params).fit(X, y).cv_results_["classifier"]) == {
        "logistic", *(f"svm C={C:g}" for C in KERNEL_CS)
    }  # fmt: skip


def test_logistic_path_chooses_the_C_that_logistic_regression_cv_chooses_on_the_same_folds():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    X = rng.normal(size=(120, 30))
    X[:, :3] += 1.5 * np.eye(3)[y]  # three informative codes among 30: some regularisation pays
    folds = list(StratifiedKFold(4, shuffle=True, random_state=0).split(X, y))
    scorer = check_scoring(LogisticRegression(), scoring="accuracy")
    paths = [logistic_path(X, y, train, test, scorer) for train, test in folds]
    scores, losses = np.stack([p[0] for p in paths], axis=1), np.stack([p[1] for p in paths], axis=1)
    assert scores.shape == losses.shape == (len(DEFAULT_CS), len(folds)) and all(p[2] > 0 for p in paths)
    chosen = int(np.argmin(losses.mean(axis=1)))
    assert 0 < chosen < len(DEFAULT_CS) - 1  # neither end of the grid: a real choice
    assert scores[chosen].mean() > 0.5  # well above chance (1/3)
    # The LogisticRegressionCV of default_classifier, its inner folds here the same folds, gives the same C.
    reference = default_classifier(inner_cv=folds).fit(X, y)[-1]
    assert float(np.ravel(reference.C_)[0]) == DEFAULT_CS[chosen]


def test_kernel_classifier_refit_is_calibrated():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = np.where(np.linalg.norm(X[:, :2], axis=1) > 1.2, "far", "near")  # apart by a circle: no line parts them
    svm = kernel_classifier(10.0, calibration_cv=3).fit(X, y)
    proba = svm.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (svm.classes_[proba.argmax(axis=1)] == svm.predict(X)).all()
    assert svm.score(X, y) > default_classifier().fit(X, y).score(X, y)


@pytest.mark.slow
def test_layer_search_default_candidates_and_custom_classifier(textures):
    X, y = textures[0][::4], textures[1][::4]
    search = LayerSearchCV(SMALL_NET, poolings=["avg"], input_sizes=[32], ttas=None, classifier=GaussianNB(), cv=3)
    search.fit(X, y)
    assert search.cv_results_["layer"].tolist() == candidate_layers("efficientnet_lite0", 32)
    assert search.predict_proba(X).shape == (len(X), 3)


@pytest.mark.slow
def test_layer_search_plot_draws_error_bars(tmp_path, textures):
    import matplotlib

    matplotlib.use("Agg")
    X, y = textures[0][::4], textures[1][::4]
    search = LayerSearchCV(SMALL_NET, layers=["blocks.1", "penultimate"], ttas=None, classifier=GaussianNB(), cv=3)
    search.fit(X, y)
    assert search.cv_results_["input"].tolist() == ["32x32"] * 3 + ["48x48, no crop"] * 3  # 48 px patches
    ax = search.plot()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["blocks.1", "penultimate"]
    # One errorbar curve per pooling and input, the penultimate vector on each of its input.
    labels = ["avg, 32x32", "gem, 32x32", "avg, 48x48, no crop", "gem, 48x48, no crop"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == labels
    ax.figure.savefig(tmp_path / "layers.png")
    assert (tmp_path / "layers.png").stat().st_size > 1000


def test_layer_search_bad_parameters(textures):
    X, y = textures[0][::10], textures[1][::10]
    with pytest.raises(ValueError, match="layers must be a non-empty list"):
        LayerSearchCV(SMALL_NET, layers=[]).fit(X, y)
    with pytest.raises(ValueError, match="6 images but y has 5"):
        LayerSearchCV(SMALL_NET).fit(X, y[:5])
    with pytest.raises(ValueError, match="not a tappable layer"):
        LayerSearchCV(SMALL_NET, layers=["blocks.99"]).fit(X, y)


@pytest.mark.slow
def test_search_is_a_meta_estimator_over_every_transformer_parameter(textures):
    X, y = textures[0][::4], textures[1][::4]
    search = LayerSearchCV(
        CNNFeatureTransformer(input_size=64, pooling="max"), layers=["blocks.1", "penultimate"], poolings=["max"]
    )
    params = search.get_params()
    assert params["transformer__pooling"] == "max" and params["transformer__input_size"] == 64
    assert {"transformer__precision", "transformer__on_error", "transformer__cache_layers"} <= set(params)
    search.set_params(transformer__input_size=32, cv=2, classifier=GaussianNB()).fit(X, y)
    assert search.transformer_.input_size_ == (32, 32) and search.transformer_.pooling == "max"
    assert search.best_estimator_[0].pooling == "max" and search.best_estimator_[0].layer == search.best_layer_
    assert search.transformer.layer == "penultimate"  # the given transformer is cloned, never changed
    assert clone(search).get_params()["transformer__pooling"] == "max"


def test_old_keyword_arguments_show_the_new_call():
    with pytest.raises(TypeError, match=r"LayerSearchCV\(CNNFeatureTransformer\(backbone='resnet18', input_size=32\)"):
        LayerSearchCV(backbone="resnet18", input_size=32)
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        LayerSearchCV(no_such_parameter=1)


def test_a_backbone_name_as_transformer_shows_the_call(textures):
    X, y = textures[0][::4], textures[1][::4]
    with pytest.raises(TypeError, match=r"CNNFeatureTransformer\(backbone='resnet18'\)"):
        LayerSearchCV("resnet18").fit(X, y)
    with pytest.raises(ValueError, match="one backbone"):
        LayerSearchCV(CNNFeatureTransformer(backbone=["efficientnet_lite0", "resnet18"])).fit(X, y)


def test_skipped_images_are_left_out_of_the_search(textures, tmp_path):
    X, y = textures[0][::4], textures[1][::4]
    images = [*X, str(tmp_path / "missing.png")]
    labels = [*y, y[0]]
    transformer = CNNFeatureTransformer(input_size=32, on_error="skip")
    search = LayerSearchCV(
        transformer, layers=["blocks.1"], poolings=["avg"], input_sizes=[32], ttas=None, classifier=GaussianNB(), cv=3
    )
    with pytest.warns(BadImagesWarning, match="left out .of the search"):
        search.fit(images, labels)
    assert [failure.index for failure in search.failed_] == [len(X)]
    assert search.cv_results_["mean_test_score"].shape == (1,)
    with pytest.raises(BadImagesError):
        LayerSearchCV(CNNFeatureTransformer(input_size=32), layers=["blocks.1"], cv=3).fit(images, labels)


def test_poolings_of_one_extraction_equal_each_pooling_alone(textures):
    X, y = textures[0][::4], textures[1][::4]
    search = LayerSearchCV(
        SMALL_NET, layers=["blocks.2"], poolings=["avg", "max", "gem"], input_sizes=[32], ttas=None,
        classifier=GaussianNB(), cv=3, refit=False,
    )  # fmt: skip
    with counted_forward_passes() as seen:
        search.fit(X, y)
    assert sum(seen) == len(X)  # three poolings, one forward pass
    assert search.cv_results_["pooling"].tolist() == ["avg", "max", "gem"]
    for row, pooling in enumerate(["avg", "max", "gem"]):
        alone = LayerSearchCV(
            SMALL_NET, layers=["blocks.2"], poolings=[pooling], input_sizes=[32], ttas=None, classifier=GaussianNB(),
            cv=3, refit=False,
        ).fit(X, y)  # fmt: skip
        np.testing.assert_allclose(alone.cv_results_["mean_test_score"][0], search.cv_results_["mean_test_score"][row])


@pytest.mark.slow
def test_native_size_is_searched_for_images_larger_than_the_weights(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths, y = [], []
    for i in range(12):  # 96 x 120 files: shorter side 96, 1.5x a 64 px network input
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (96, 120, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
        y.append(i % 2)
    search = LayerSearchCV(
        CNNFeatureTransformer(input_size=64), layers=["blocks.1"], poolings=["avg"], ttas=None, classifier=GaussianNB(),
        cv=2,
    ).fit(paths, y)  # fmt: skip
    results = search.cv_results_
    assert results["input"].tolist() == ["64x64", "96x96, no crop"]
    assert results["input_size"].tolist() == [64, 96] and results["crop"].tolist() == [True, False]
    best = search.best_estimator_[0]
    assert (best.input_size, best.crop) == (search.best_params_["input_size"], search.best_params_["crop"])
    # An explicit list: the weights' own size (None) and a pair; "native" is left out of images too small.
    small = LayerSearchCV(
        CNNFeatureTransformer(input_size=64),
        layers=["blocks.1"],
        poolings=["avg"],
        input_sizes=[None, (48, 64), "native"],
        ttas=None,
        classifier=GaussianNB(),
        cv=2,
        refit=False,
    ).fit(np.zeros((8, 40, 40, 3), np.uint8), [0, 1] * 4)
    assert small.cv_results_["input"].tolist() == ["224x224", "48x64"]


def test_class_weight_reaches_the_default_classifier(textures):
    X, y = textures[0][::4], textures[1][::4]
    search = LayerSearchCV(
        SMALL_NET, layers=["blocks.1"], poolings=["avg"], input_sizes=[32], class_weight="balanced", cv=3
    )
    search.fit(X, y)
    assert search.best_estimator_[-1][-1].class_weight == "balanced"
    search = LayerSearchCV(
        SMALL_NET, layers=["blocks.1"], poolings=["avg"], input_sizes=[32], scoring="balanced_accuracy", cv=3
    )
    assert 0 <= search.fit(X, y).best_score_ <= 1


@pytest.mark.slow
def test_default_candidates_add_the_last_map_pooled_other_than_by_its_average(textures):
    X, y = textures[0][::4], textures[1][::4]
    transformer = CNNFeatureTransformer(input_size=64)  # bn2 is 2 x 2 (at 32 px, 1 x 1: a vector)
    search = LayerSearchCV(transformer, input_sizes=[64], ttas=None, classifier=GaussianNB(), cv=3, refit=False)
    rows = list(zip(search.fit(X, y).cv_results_["layer"], search.cv_results_["pooling"], strict=True))
    assert ("bn2", "gem") in rows and ("bn2", "avg") not in rows  # bn2 averaged is the penultimate code
    assert rows[-1] == ("penultimate", None) and len(rows) == 2 * 4 + 1 + 1


def test_ttas_are_searched_beside_each_input_size(textures):
    X, y = textures[0][::4], textures[1][::4]
    search = LayerSearchCV(
        SMALL_NET, layers=["blocks.2"], poolings=["avg"], input_sizes=[32], ttas=[None, "flips"], cv=3,
        classifier=GaussianNB(),
    ).fit(X, y)  # fmt: skip
    assert search.cv_results_["input"].tolist() == ["32x32", "32x32, tta flips"]
    assert search.cv_results_["tta"].tolist() == [None, "flips"]
    assert search.best_estimator_[0].tta == search.best_params_["tta"]


def test_ttas_auto_searches_the_views_of_the_symmetries_that_keep_the_class(textures):
    X, y = textures[0][::4], textures[1][::4]  # textures: every flip and rotation keeps the class
    params = dict(layers=["blocks.2"], poolings=["avg"], classifier=GaussianNB(), cv=3, refit=False)
    search = LayerSearchCV(SMALL_NET, input_sizes=[32], **params).fit(X, y)
    assert search.symmetries_ == ["hflip", "rot90", "vflip"]
    assert search.cv_results_["tta"].tolist() == [None, "dihedral"]
    # A rectangle searched beside the square input is not turned: its views are the flips.
    search = LayerSearchCV(SMALL_NET, input_sizes=[32, (32, 40)], **params).fit(X, y)
    assert search.cv_results_["input"].tolist() == ["32x32", "32x32, tta dihedral", "32x40", "32x40, tta flips"]
    # Bright on the left or on the right: a horizontal flip swaps the classes, a turn makes neither.
    sided = np.zeros((24, 32, 32), np.uint8)
    sided[::2, :, :16] = 255
    sided[1::2, :, 16:] = 255
    sided = np.clip(sided + np.random.default_rng(0).integers(0, 40, sided.shape), 0, 255).astype(np.uint8)
    search = LayerSearchCV(SMALL_NET, input_sizes=[32], **params).fit(sided, ["left", "right"] * 12)
    assert "hflip" not in search.symmetries_ and "rot90" not in search.symmetries_
    assert search.cv_results_["tta"].tolist() == [None]  # nothing more extracted


def test_a_tie_goes_to_the_steadier_then_the_deeper_layer():
    from skcnn.frozen.search import best_index

    results = {
        "mean_test_score": np.array([1.0, 1.0, 0.9, 1.0, 1.0]),
        "std_test_score": np.array([0.0, 0.0, 0.0, 0.1, 0.0]),
        "depth": np.array([3, 7, 9, 9, 7]),
    }
    assert best_index(results) == 1  # depth 7 beats 3; row 3 is deeper but less steady; row 4 is a later copy
    assert best_index(results, np.array([True, False, True, True, False])) == 0  # among rows 0, 2, 3
