"""CNNFeatureTransformer against the scikit-learn estimator contract."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks

from skcnn import CNNFeatureTransformer
from skcnn.network import backbones

SMALL = dict(backbone="resnet18", weights=None, input_size=48)


def small(**params):
    return CNNFeatureTransformer(**{**SMALL, **params})


# scikit-learn's own checks. The estimator honestly declares that it takes
# images, not 2-D numeric tables (two_d_array=False), so parametrize_with_checks
# runs no data-based check; the API checks that need no tabular data are run
# one by one, and the data-based ones are rewritten with images below.
API_CHECKS = [
    estimator_checks.check_estimator_cloneable,
    estimator_checks.check_estimator_repr,
    estimator_checks.check_no_attributes_set_in_init,
    estimator_checks.check_parameters_default_constructible,
    estimator_checks.check_get_params_invariance,
    estimator_checks.check_set_params,
    estimator_checks.check_estimators_unfitted,
    estimator_checks.check_estimator_tags_renamed,
    estimator_checks.check_valid_tag_types,
]


@pytest.mark.parametrize("check", API_CHECKS, ids=lambda c: c.__name__)
def test_sklearn_api_checks(check):
    estimator = CNNFeatureTransformer()
    check("CNNFeatureTransformer", estimator)


def test_tags_say_images_not_tables():
    from sklearn.utils import get_tags

    tags = get_tags(CNNFeatureTransformer())
    assert tags.input_tags.two_d_array is False
    assert tags.input_tags.three_d_array is True
    assert tags.requires_fit is True


def test_init_stores_parameters_unchanged():
    layer = ["layer1", "layer2"]
    t = CNNFeatureTransformer(layer=layer, input_size=(64, 80), weights=None)
    assert t.layer is layer and t.input_size == (64, 80) and t.weights is None


def test_fit_returns_self_sets_only_trailing_underscore_attributes(rgb_images):
    t = small()
    before = dict(vars(t))
    assert t.fit(rgb_images) is t
    added = set(vars(t)) - set(before)
    public = {name for name in added if not name.startswith("_")}
    assert public and all(name.endswith("_") for name in public)
    assert {k: vars(t)[k] for k in before} == before  # parameters untouched


def test_fit_does_not_run_the_network_on_the_data(rgb_images):
    t = small()
    t.fit(rgb_images[:1])  # warm the per-process probe of this configuration
    network = backbones.load_backbone("resnet18", None, "cpu").network
    calls = []
    handle = network.register_forward_hook(lambda *args: calls.append(1))
    try:
        small().fit(rgb_images)
    finally:
        handle.remove()
    assert calls == []


def test_transform_output_width_dtype_and_names(rgb_images):
    t = small(layer=["layer2", "penultimate"]).fit(rgb_images)
    codes = t.transform(rgb_images)
    assert codes.dtype == np.float32
    assert codes.shape == (8, 128 + 512) == (8, t.n_features_out_)
    names = t.get_feature_names_out()
    assert len(names) == codes.shape[1]
    assert names[0] == "resnet18__layer2__0" and names[-1] == "resnet18__penultimate__511"
    assert t.layer_shapes_ == {"layer2": (128, 6, 6), "penultimate": (512,)}
    assert t.input_size_ == (48, 48)


@pytest.mark.parametrize("pooling, width", [("avg", 128), ("max", 128), ("flatten", 128 * 6 * 6), ("spp", 128 * 21)])
def test_pooling_widths(rgb_images, pooling, width):
    t = small(layer="layer2", pooling=pooling)
    assert t.fit_transform(rgb_images[:2]).shape == (2, width) == (2, t.n_features_out_)


def test_relu_codes_are_non_negative_and_without_relu_some_are_negative(rgb_images):
    with_relu = small(layer="layer2.0.bn2").fit_transform(rgb_images[:2])
    without = small(layer="layer2.0.bn2", relu=False).fit_transform(rgb_images[:2])
    assert with_relu.min() >= 0
    assert without.min() < 0


def test_set_output_pandas(rgb_images):
    pd = pytest.importorskip("pandas")
    t = small().set_output(transform="pandas")
    frame = t.fit_transform(rgb_images[:3])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(t.get_feature_names_out())
    np.testing.assert_array_equal(frame.to_numpy(), small().fit_transform(rgb_images[:3]))


def test_clone_shares_the_network_without_reloading(rgb_images):
    t = small().fit(rgb_images)
    misses = backbones.REGISTRY.builds
    for _ in range(3):
        clone(t).fit(rgb_images)
    assert backbones.REGISTRY.builds == misses
    assert not hasattr(clone(t), "n_features_out_")


@pytest.mark.slow
def test_pickle_holds_no_weights_and_gives_identical_codes(tmp_path, rgb_images):
    t = small().fit(rgb_images)
    expected = t.transform(rgb_images)
    blob = pickle.dumps(t)
    assert len(blob) < 20_000  # resnet18 weights alone are 45 MB
    assert not any(isinstance(v, torch.nn.Module) for v in vars(pickle.loads(blob)).values())
    (tmp_path / "t.pkl").write_bytes(blob)
    np.save(tmp_path / "X.npy", rgb_images)
    code = (
        "import pickle, numpy as np, sys;"
        f"t = pickle.load(open({str(tmp_path / 't.pkl')!r}, 'rb'));"
        f"np.save({str(tmp_path / 'codes.npy')!r}, t.transform(np.load({str(tmp_path / 'X.npy')!r})))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), expected)


def test_set_params_then_transform_uses_the_new_layer(rgb_images):
    t = small(layer="layer1").fit(rgb_images)
    assert t.transform(rgb_images[:2]).shape == (2, 64)
    t.set_params(layer="layer3")
    assert t.transform(rgb_images[:2]).shape == (2, 256)
    assert t.layers_ == ("layer3",) and t.n_features_out_ == 256
    np.testing.assert_array_equal(t.transform(rgb_images[:2]), small(layer="layer3").fit_transform(rgb_images[:2]))


def test_paths_pil_and_arrays_give_identical_codes(tmp_path, rgb_images):
    paths = []
    for i, image in enumerate(rgb_images[:4]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    t = small().fit(rgb_images)
    from_array = t.transform(rgb_images[:4])
    np.testing.assert_array_equal(t.transform([str(p) for p in paths]), from_array)
    np.testing.assert_array_equal(t.transform(paths), from_array)
    np.testing.assert_array_equal(t.transform([Image.open(p) for p in paths]), from_array)
    np.testing.assert_array_equal(t.transform(list(rgb_images[:4])), from_array)
    # Float pixels are resized in float, uint8 ones in uint8: the same codes up to the rounding of the crop.
    from_float = t.transform(rgb_images[:4] / 255.0)
    drift = np.linalg.norm(from_float - from_array, axis=1) / np.linalg.norm(from_array, axis=1)
    assert drift.max() < 0.05


def test_grayscale_is_replicated_and_rgba_loses_alpha(rgb_images):
    t = small().fit(rgb_images)
    gray = rgb_images[:3, :, :, 0]
    np.testing.assert_allclose(
        t.transform(gray), t.transform(np.repeat(gray[..., None], 3, axis=-1)), rtol=1e-5, atol=1e-6
    )
    rgba = np.concatenate([rgb_images[:3], np.zeros_like(rgb_images[:3, :, :, :1])], axis=-1)
    np.testing.assert_array_equal(t.transform(rgba), t.transform(rgb_images[:3]))


def test_variable_size_images_one_row_each(rgb_images):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(30, 70, 3), (90, 40), (48, 48, 3)]]
    t = small(batch_size=2).fit(images)
    codes = t.transform(images)
    assert codes.shape == (3, 512)
    # Alone in its batch the image meets other kernels: equal to float32 rounding.
    np.testing.assert_allclose(codes[1], t.transform(images[1:2])[0], rtol=1e-4, atol=1e-5)


def test_codes_are_deterministic_and_independent_of_batch_split(rgb_images):
    t = small(batch_size=4).fit(rgb_images)
    first = t.transform(rgb_images)
    np.testing.assert_array_equal(first, t.transform(rgb_images))
    np.testing.assert_allclose(first, small(batch_size=3).fit(rgb_images).transform(rgb_images), rtol=1e-4, atol=1e-5)


def test_empty_input_gives_an_empty_matrix(rgb_images):
    t = small().fit(rgb_images)
    assert t.transform([]).shape == (0, 512)


def test_transform_before_fit_raises(rgb_images):
    with pytest.raises(NotFittedError):
        small().transform(rgb_images)


@pytest.mark.parametrize(
    "params, message",
    [
        (
            dict(layer="layer5"),
            "layer='layer5' is not a tappable layer of 'resnet18'. Closest names: ['layer4', 'layer3'",
        ),
        (dict(layer=[]), "non-empty list"),
        (dict(layer=["layer1", "layer1"]), "more than once"),
        (dict(pooling="mean"), "'pooling' parameter of CNNFeatureTransformer must be a str among"),
        (dict(input_size=(32,)), "input_size must be None, a positive int or a (height, width) pair"),
        (dict(input_size=0), "'input_size' parameter"),
        (dict(batch_size=0), "'batch_size' parameter"),
        (dict(device="gpu0"), "device='gpu0' is not a torch device"),
        pytest.param(
            dict(device="cuda"),
            "no CUDA device available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present"),
        ),
        (dict(backbone="resnt18"), "Closest names: ['resnet18'"),
        (dict(weights="IMAGENET9K"), "Allowed: ['IMAGENET1K_V1'"),
        (dict(weights="no/such/file.pth"), "does not exist"),
        (dict(relu="yes"), "'relu' parameter"),
    ],
)
def test_bad_parameters_name_the_parameter_and_allowed_values(rgb_images, params, message):
    with pytest.raises(ValueError) as info:
        small(**params).fit(rgb_images)
    assert message in str(info.value)


def test_bad_input_names_the_image(tmp_path, rgb_images):
    t = small().fit(rgb_images)
    with pytest.raises(ValueError, match=r"image 1 \('.*missing\.png'\): Image file not found"):
        t.transform([rgb_images[0], str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="not 2-D feature tables"):
        t.transform(np.zeros((4, 10)))


def test_crop_keeps_the_whole_image_or_a_fraction(rgb_images):
    resized = {crop: CNNFeatureTransformer(input_size=64, crop=crop).fit(rgb_images) for crop in (True, False, 0.5)}
    assert resized[True].preprocessing_["resize_size"] == 73  # the weights' 224 of 256
    assert resized[False].preprocessing_["resize_size"] == 64  # the shorter side is the input: nothing cut
    assert resized[0.5].preprocessing_["resize_size"] == 128
    assert all(t.input_size_ == (64, 64) for t in resized.values())
    whole = CNNFeatureTransformer(input_size=64, crop=False, layer="blocks.2", progress=False).fit(rgb_images)
    # A defect in the corner moves the codes only when the image is seen whole.
    marked = np.array(rgb_images, copy=True)
    marked[:, :4, :4] = 255
    cropped = CNNFeatureTransformer(input_size=64, layer="blocks.2", progress=False).fit(rgb_images)
    assert not np.allclose(whole.transform(marked), whole.transform(rgb_images))
    with pytest.raises(ValueError, match="crop"):
        CNNFeatureTransformer(crop=1.5).fit(rgb_images)
    assert cropped.get_params()["crop"] is True


def test_tta_codes_are_the_same_for_every_view_of_an_image():
    # Square, at the input size: no resize (whose uint8 rounding is not exactly symmetric), no crop.
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    tta = CNNFeatureTransformer(input_size=64, crop=False, tta="dihedral", precision="fp32", layer="blocks.4")
    codes = tta.fit(images).transform(images)
    turned = np.ascontiguousarray(np.rot90(images, 1, axes=(1, 2))[:, :, ::-1])
    np.testing.assert_allclose(tta.transform(turned), codes, rtol=1e-4, atol=1e-4)
    plain = CNNFeatureTransformer(input_size=64, crop=False, precision="fp32", layer="blocks.4").fit(images)
    assert not np.allclose(plain.transform(turned), plain.transform(images), atol=1e-3)
    with pytest.raises(ValueError, match="square input_size"):
        CNNFeatureTransformer(input_size=(64, 48), tta="dihedral").fit(images)


def test_several_poolings_in_one_pass_equal_each_alone(rgb_images):
    both = CNNFeatureTransformer(input_size=64, layer="blocks.4", pooling=["avg", "gem"], progress=False)
    codes = both.fit(rgb_images).transform(rgb_images)
    assert codes.shape[1] == 2 * 112 == both.n_features_out_
    for block, pooling in enumerate(["avg", "gem"]):
        alone = CNNFeatureTransformer(input_size=64, layer="blocks.4", pooling=pooling, progress=False)
        np.testing.assert_allclose(
            codes[:, 112 * block : 112 * (block + 1)], alone.fit(rgb_images).transform(rgb_images)
        )
