"""What users do: pipelines, grid searches, cross-validation, real transfer."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from skcnn import CNNFeatureTransformer
from skcnn.network import backbones


def linear():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))


@pytest.mark.slow
def test_transfer_learning_is_real(textures):
    """Pretrained codes beat the same architecture with random weights by a wide margin."""
    X_train, y_train, X_test, y_test = textures
    scores = {}
    for weights in ("DEFAULT", None):
        model = make_pipeline(
            CNNFeatureTransformer(backbone="efficientnet_lite0", weights=weights, input_size=96),
            StandardScaler(),
            LogisticRegression(C=0.1, max_iter=5000),
        )
        scores[weights] = model.fit(X_train, y_train).score(X_test, y_test)
    assert scores["DEFAULT"] >= 0.9
    assert scores["DEFAULT"] - scores[None] >= 0.15, scores


def test_readme_pipeline_with_linear_svc(textures):
    X_train, y_train, X_test, y_test = textures
    model = make_pipeline(
        CNNFeatureTransformer(backbone="efficientnet_lite0", layer="penultimate", input_size=64),
        LinearSVC(),
    )
    assert model.fit(X_train, y_train).score(X_test, y_test) > 0.8


def test_grid_search_over_layer_and_pooling_loads_the_network_once(textures):
    X_train, y_train, _, _ = textures
    pipe = make_pipeline(CNNFeatureTransformer(backbone="efficientnet_lite0", input_size=64), linear())
    grid = GridSearchCV(
        pipe,
        {"cnnfeaturetransformer__layer": ["blocks.2", "penultimate"], "cnnfeaturetransformer__pooling": ["avg", "max"]},
        cv=2,
    )
    backbones.load_backbone("efficientnet_lite0", "DEFAULT", "auto")
    misses = backbones.REGISTRY.builds
    grid.fit(X_train, y_train)
    assert backbones.REGISTRY.builds == misses
    results = grid.cv_results_
    assert len(results["params"]) == 4 and np.all(np.isfinite(results["mean_test_score"]))
    assert grid.best_params_["cnnfeaturetransformer__layer"] in ("blocks.2", "penultimate")
    best = grid.best_estimator_.named_steps["cnnfeaturetransformer"]
    assert best.layers_ == (grid.best_params_["cnnfeaturetransformer__layer"],)


def test_cross_val_score(textures):
    X_train, y_train, _, _ = textures
    pipe = make_pipeline(CNNFeatureTransformer(input_size=64, layer="blocks.3"), linear())
    scores = cross_val_score(pipe, X_train, y_train, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8


def test_feature_union_concatenates_two_networks(textures):
    X_train = textures[0][:6]
    union = FeatureUnion(
        [
            ("lite0", CNNFeatureTransformer(backbone="efficientnet_lite0", input_size=64)),
            ("resnet", CNNFeatureTransformer(backbone="resnet18", weights=None, input_size=64)),
        ]
    )
    codes = union.fit_transform(X_train)
    assert codes.shape == (6, 1280 + 512)
    names = union.get_feature_names_out()
    assert names[0] == "lite0__efficientnet_lite0__penultimate__0"
    assert names[-1] == "resnet__resnet18__penultimate__511"


@pytest.mark.parametrize(
    "backbone, layer, width",
    [
        ("alexnet", "features.10", 256),
        ("vgg16", "features.29", 512),
        ("resnet50", "layer3", 1024),
    ],
)
def test_torchvision_backbones_tap_listed_layers(backbone, layer, width):
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    t = CNNFeatureTransformer(backbone=backbone, weights=None, layer=[layer, "penultimate"], input_size=64)
    codes = t.fit_transform(images)
    assert codes.shape[1] == t.n_features_out_ and t.layer_shapes_[layer][0] == width
    assert np.isfinite(codes).all()


def test_timm_backbone(textures):
    t = CNNFeatureTransformer(backbone="timm/resnet18", weights=None, layer=["layer2", "penultimate"], input_size=64)
    assert t.fit_transform(textures[0][:2]).shape == (2, 128 + 512)
