"""advise_layer: the size x similarity rule with similarity measured by the network."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from skcnn import CNNFeatureTransformer, advise_layer, list_layers
from skcnn.datasets import load_texture_patches
from skcnn.frozen.advice import earlier_layer


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.images * 255 / 16).astype(np.uint8), data.target


@pytest.fixture(scope="module")
def texture_patches():
    return load_texture_patches(n_per_class=10, patch_size=64)


@pytest.fixture(scope="module")
def advice_for(digits, texture_patches):
    return {
        "digits": advise_layer(*digits, max_images=24),
        "textures": advise_layer(*texture_patches, max_images=24),
    }


def test_digits_get_an_earlier_layer_than_natural_textures(advice_for):
    digits, textures = advice_for["digits"], advice_for["textures"]
    order = [layer.name for layer in list_layers("efficientnet_lite0")]
    assert order.index(digits.layer) < order.index(textures.layer)
    assert textures.layer == "penultimate" and textures.similar and textures.strategy == "penultimate codes"
    assert not digits.similar and digits.strategy == "earlier-layer codes"
    assert digits.similarity < 0.45 and textures.similarity > 0.5
    assert digits.n_measured == textures.n_measured == 24


def test_advice_explains_itself_in_plain_words(advice_for):
    text = str(advice_for["digits"])
    assert "180 images per class (1797 images, 10 classes): small" in text
    assert "unlike ImageNet" in text and "earlier layer" in text
    assert f"layer={advice_for['digits'].layer!r}" in text
    assert "Fine-tuning is not advised" in text and "LayerSearchCV" in text


@pytest.mark.slow
def test_recommended_layer_is_accepted_by_the_transformer(advice_for, digits):
    codes = CNNFeatureTransformer(layer=advice_for["digits"].layer, input_size=32).fit_transform(digits[0][:3])
    assert codes.shape == (3, 112)


def test_large_data_is_advised_to_fine_tune(texture_patches):
    advice = advise_layer(*texture_patches, large_per_class=5, max_images=8)
    assert advice.strategy == "fine-tuning" and not advice.small
    assert "fine-tuning the network" in str(advice)


def test_without_labels_all_images_count_as_one_class(texture_patches):
    advice = advise_layer(texture_patches[0], max_images=8)
    assert advice.n_classes is None and "no labels given" in str(advice)


def test_other_backbones_get_their_own_layer_names(digits):
    assert earlier_layer("resnet18", ["relu", "layer1", "layer2", "layer3", "layer4", "penultimate"]) == "layer3"
    advice = advise_layer(*digits, backbone="resnet50", max_images=8)
    assert advice.layer == "layer3" and advice.candidates[-1] == "penultimate"


def test_bad_inputs_are_named(tmp_path, digits):
    with pytest.raises(ValueError, match="1797 images but y has 3 labels"):
        advise_layer(digits[0], digits[1][:3])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"bad.png"):
        advise_layer([bad])
