"""Tests of skcnn.network.backbones (names, devices, registry) and of the
preprocessing each backbone's weights prescribe (skcnn.decoding.preprocessing)."""

from __future__ import annotations

import gc
import math
import os
import pathlib
import warnings
from urllib.parse import urlparse

import numpy as np
import pytest
import skimage.data
import timm
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode

from skcnn import CNNFeatureTransformer, clear_networks
from skcnn.decoding.preprocessing import Preprocessing
from skcnn.images import load_image
from skcnn.network import backbones
from skcnn.network.backbones import BackboneSpec, load_backbone, parse_backbone, resolve_device

IMAGENET_CATEGORIES = torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"]


# ---------------------------------------------------------------------------
# parse_backbone
# ---------------------------------------------------------------------------


def test_parse_torchvision_name():
    assert parse_backbone("alexnet") == BackboneSpec("alexnet", "torchvision", "alexnet")
    assert parse_backbone("resnet50").family == "torchvision"


def test_parse_timm_name():
    spec = parse_backbone("timm/resnet18")
    assert spec == BackboneSpec("timm/resnet18", "timm", "resnet18")


def test_parse_packaged_name():
    spec = parse_backbone("efficientnet_lite0")
    assert spec.family == "packaged"
    assert spec.architecture == "tf_efficientnet_lite0"
    assert timm.is_model(spec.architecture)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_every_packaged_backbone_parses(k):
    assert parse_backbone(f"efficientnet_lite{k}").architecture == f"tf_efficientnet_lite{k}"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="resnt50") as info:
        parse_backbone("resnt50")
    message = str(info.value)
    assert "'resnet50'" in message
    assert "timm/" in message  # says how to reach any timm model


def test_unknown_packaged_like_name_suggests_packaged():
    with pytest.raises(ValueError) as info:
        parse_backbone("efficientnet_lit0")
    assert "'efficientnet_lite0'" in str(info.value)


def test_unknown_timm_name_suggests_timm_names():
    with pytest.raises(ValueError, match="resnet5O") as info:
        parse_backbone("timm/resnet5O")
    assert "'timm/resnet50'" in str(info.value)


def test_parse_rejects_non_string():
    with pytest.raises(TypeError, match="str"):
        parse_backbone(50)


# ---------------------------------------------------------------------------
# resolve_device
# ---------------------------------------------------------------------------


def test_resolve_auto_device_on_this_machine():
    if torch.cuda.is_available():
        expected = torch.device("cuda")
    elif torch.backends.mps.is_available():
        expected = torch.device("mps")
    else:
        expected = torch.device("cpu")
    assert resolve_device("auto") == expected


def test_resolve_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_resolve_explicit_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_absent_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device available"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("bad", ["bogus", "cuda:x"])
def test_resolve_bad_device_names_it(bad):
    with pytest.raises(ValueError, match="device") as info:
        resolve_device(bad)
    assert repr(bad) in str(info.value)
    assert "'auto'" in str(info.value)


# ---------------------------------------------------------------------------
# Preprocessing comes from the weights' metadata
# ---------------------------------------------------------------------------


def test_packaged_preprocessing_from_timm_pretrained_cfg():
    backbone = load_backbone("efficientnet_lite0", "DEFAULT", "cpu")
    recipe = backbone.preprocessing
    cfg = backbone.network.pretrained_cfg
    assert recipe.mean == tuple(cfg["mean"]) == (0.5, 0.5, 0.5)
    assert recipe.std == tuple(cfg["std"]) == (0.5, 0.5, 0.5)
    assert recipe.interpolation == InterpolationMode(cfg["interpolation"]) == InterpolationMode.BICUBIC
    assert recipe.crop_size == tuple(cfg["input_size"][1:]) == (224, 224)
    assert cfg["crop_pct"] == 0.875
    assert recipe.resize_size == math.floor(224 / cfg["crop_pct"]) == 256


def test_torchvision_preprocessing_from_weights_transforms():
    _, recipe = backbones.build_on_meta("alexnet")
    reference = torchvision.models.AlexNet_Weights.DEFAULT.transforms()
    assert recipe.mean == tuple(reference.mean)
    assert recipe.mean == pytest.approx((0.485, 0.456, 0.406))
    assert recipe.std == tuple(reference.std)
    assert recipe.interpolation == reference.interpolation == InterpolationMode.BILINEAR
    assert recipe.crop_size == (reference.crop_size[0], reference.crop_size[0]) == (224, 224)
    assert recipe.resize_size == reference.resize_size[0] == 256


def test_timm_preprocessing_from_pretrained_cfg():
    backbone = load_backbone("timm/resnet18", None, "cpu")
    cfg = timm.data.resolve_data_config({}, model=backbone.network)
    recipe = backbone.preprocessing
    assert recipe.crop_size == tuple(cfg["input_size"][1:])
    assert recipe.resize_size == math.floor(max(cfg["input_size"][1:]) / cfg["crop_pct"])
    assert recipe.mean == pytest.approx(tuple(cfg["mean"]))
    assert recipe.interpolation.value == cfg["interpolation"]


@pytest.fixture
def regnet_in_hub_cache(tmp_path, monkeypatch):
    """Both weight versions of regnet_y_400mf, in a torch hub cache in tmp_path."""
    backbones.clear_networks()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        state = torchvision.models.regnet_y_400mf(weights=None).state_dict()
    for member in torchvision.models.RegNet_Y_400MF_Weights:
        torch.save(state, checkpoints / os.path.basename(urlparse(member.url).path))
    yield state
    backbones.clear_networks()


@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT"])
def test_torchvision_preprocessing_follows_chosen_weights(regnet_in_hub_cache, weights):
    enum = torchvision.models.RegNet_Y_400MF_Weights
    member = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    reference = member.transforms()
    backbone = load_backbone("regnet_y_400mf", weights, "cpu")
    assert backbone.preprocessing.resize_size == reference.resize_size[0]
    assert backbone.preprocessing.crop_size == (reference.crop_size[0],) * 2
    assert backbone.preprocessing.interpolation == reference.interpolation
    # the two versions really differ, so the check above is meaningful
    assert enum.IMAGENET1K_V1.transforms().resize_size != enum.IMAGENET1K_V2.transforms().resize_size
    torch.testing.assert_close(backbone.network.state_dict()["stem.0.weight"], regnet_in_hub_cache["stem.0.weight"])


def _alexnet_recipe() -> Preprocessing:
    return backbones.build_on_meta("alexnet")[1]


@pytest.mark.parametrize("size", [128, 64, 96])
def test_with_input_size_keeps_crop_fraction(size):
    recipe = _alexnet_recipe()
    smaller = recipe.with_input_size(size)
    assert smaller.crop_size == (size, size)
    assert smaller.resize_size == math.floor(size / recipe.crop_fraction)
    assert abs(smaller.crop_fraction - recipe.crop_fraction) < 1 / smaller.resize_size
    assert (smaller.mean, smaller.std, smaller.interpolation) == (
        recipe.mean,
        recipe.std,
        recipe.interpolation,
    )
    assert recipe.crop_size == (224, 224)  # the original is unchanged (frozen dataclass)


def test_with_input_size_128_values():
    smaller = _alexnet_recipe().with_input_size(128)
    assert smaller.crop_size == (128, 128)
    assert smaller.resize_size == 146  # floor(128 / 0.875)


def test_with_input_size_rectangular():
    smaller = _alexnet_recipe().with_input_size((96, 128))
    assert smaller.crop_size == (96, 128)
    assert smaller.resize_size == math.floor(128 / 0.875)


@pytest.mark.parametrize("name", ["alexnet", "efficientnet_lite1", "resnet50"])
def test_with_input_size_of_own_size_is_identity(name):
    _, recipe = backbones.build_on_meta(name)
    assert recipe.with_input_size(recipe.crop_size) == recipe


@pytest.mark.parametrize(
    "crop, resize",
    [
        (224, 256),  # torchvision's usual recipe
        (224, 232),  # torchvision's V2 recipes
        (299, 342),  # inception_v3
        (224, 235),  # timm crop_pct 0.95
        (512, 445),  # timm volo_d5_512 (crop_pct 1.15)
    ],
)
def test_with_input_size_of_own_size_keeps_resize(crop, resize):
    # Asking for the size the recipe already has must not change it; the
    # resize side is an integer, so float round-off must not floor it to
    # resize - 1.
    recipe = Preprocessing(
        crop_size=(crop, crop),
        resize_size=resize,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation=InterpolationMode.BILINEAR,
    )
    assert recipe.with_input_size(crop).resize_size == resize
    assert recipe.with_input_size(crop) == recipe


def test_as_dict_is_plain_data():
    recipe = _alexnet_recipe()
    assert recipe.as_dict() == {
        "crop_size": [224, 224],
        "resize_size": 256,
        "mean": list(recipe.mean),
        "std": list(recipe.std),
        "interpolation": "bilinear",
    }


# ---------------------------------------------------------------------------
# Preprocessing.__call__
# ---------------------------------------------------------------------------


def test_call_output_shape_on_non_square_image():
    recipe = _alexnet_recipe().with_input_size(32)
    image = np.random.default_rng(0).random((40, 80, 3)).astype(np.float32)
    out = recipe(image)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (3, 32, 32)
    assert out.dtype == torch.float32


def test_call_normalises_with_mean_and_std():
    recipe = _alexnet_recipe().with_input_size(32)
    out = recipe(np.full((48, 48, 3), 0.5, np.float32))
    for c in range(3):
        expected = (0.5 - recipe.mean[c]) / recipe.std[c]
        torch.testing.assert_close(out[c], torch.full((32, 32), expected), atol=1e-5, rtol=0)


def test_call_gray_gives_three_identical_channels():
    recipe = Preprocessing(
        crop_size=(32, 32),
        resize_size=36,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation=InterpolationMode.BICUBIC,
    )
    gray = np.random.default_rng(0).random((40, 50, 1)).astype(np.float32)
    out = recipe(gray)
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
    torch.testing.assert_close(out[0], out[2], rtol=0, atol=0)
    assert out.std() > 0.1  # not a constant image


def test_call_gray_equals_replicated_rgb():
    recipe = _alexnet_recipe().with_input_size(32)
    gray = np.random.default_rng(1).random((40, 50, 1)).astype(np.float32)
    torch.testing.assert_close(recipe(gray), recipe(np.repeat(gray, 3, axis=2)), rtol=0, atol=1e-6)


def test_call_gray_from_pil_and_array_agree():
    recipe = _alexnet_recipe().with_input_size(32)
    gray = np.random.default_rng(2).integers(0, 256, (40, 44), dtype=np.uint8)
    torch.testing.assert_close(recipe(load_image(Image.fromarray(gray))), recipe(load_image(gray)), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# The packaged backbones are really trained on ImageNet
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_packaged_backbone_classifies_coffee_as_espresso(name):
    backbone = load_backbone(name, "DEFAULT", "cpu")
    batch = backbone.preprocessing(load_image(skimage.data.coffee()))[None]
    assert batch.shape[-2:] == backbone.preprocessing.crop_size
    with torch.inference_mode():
        logits = backbone.network(batch)
    assert logits.shape == (1, 1000)
    assert IMAGENET_CATEGORIES[int(logits.argmax())] == "espresso"


def test_random_init_does_not_classify_coffee_as_espresso_confidently():
    # The counterpart of the test above: without the packaged weights the
    # same network is untrained, so the espresso test depends on them.
    backbone = load_backbone("efficientnet_lite0", None, "cpu")
    batch = backbone.preprocessing(load_image(skimage.data.coffee()))[None]
    with torch.inference_mode():
        probabilities = backbone.network(batch).softmax(1)
    espresso = IMAGENET_CATEGORIES.index("espresso")
    assert float(probabilities[0, espresso]) < 0.2


# ---------------------------------------------------------------------------
# The per-process registry
# ---------------------------------------------------------------------------


def test_load_backbone_returns_same_object_and_builds_once():
    first = load_backbone("efficientnet_lite0", "DEFAULT", "cpu")
    misses = backbones.REGISTRY.builds
    second = load_backbone("efficientnet_lite0", "DEFAULT", "cpu")
    again = load_backbone("efficientnet_lite0", "DEFAULT", resolve_device("cpu"))
    assert second is first and again is first
    assert backbones.REGISTRY.builds - misses <= 1


def test_load_backbone_cold_registry_builds_exactly_once():
    backbones.clear_networks()
    try:
        before = backbones.REGISTRY.builds
        first = load_backbone("mobilenet_v3_small", None, "cpu")
        second = load_backbone("mobilenet_v3_small", None, "cpu")
        assert first is second
        assert backbones.REGISTRY.builds - before == 1
    finally:
        backbones.clear_networks()


def test_load_backbone_auto_device_shares_entry_with_resolved_device():
    first = load_backbone("mobilenet_v3_small", None, "auto")
    assert load_backbone("mobilenet_v3_small", None, resolve_device("auto")) is first
    assert first.device == resolve_device("auto")


def test_load_backbone_path_forms_share_entry(tmp_path):
    path = tmp_path / "net.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    first = load_backbone("mobilenet_v3_small", path, "cpu")
    assert load_backbone("mobilenet_v3_small", str(path), "cpu") is first
    assert load_backbone("mobilenet_v3_small", pathlib.Path(str(path)), "cpu") is first


def test_loaded_backbone_is_frozen_in_eval_mode():
    backbone = load_backbone("mobilenet_v3_small", None, "cpu")
    assert not backbone.network.training
    assert all(not m.training for m in backbone.network.modules())
    assert not any(p.requires_grad for p in backbone.network.parameters())
    assert backbone.spec == parse_backbone("mobilenet_v3_small")


def test_load_backbone_bad_name_raises_before_building():
    with pytest.raises(ValueError, match="resnet50"):
        load_backbone("resnt50", None, "cpu")


def test_build_on_meta_allocates_no_weights():
    network, recipe = backbones.build_on_meta("resnet50")
    assert all(p.device.type == "meta" for p in network.parameters())
    assert recipe.crop_size == (224, 224)


def _whole_networks() -> list[nn.Module]:
    """Modules alive in this process that are no other module's child."""
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated module aliases warns
        warnings.simplefilter("ignore", FutureWarning)
        modules = [o for o in gc.get_objects() if isinstance(o, nn.Module)]
    children = {id(child) for module in modules for child in module.children()}
    return [module for module in modules if id(module) not in children]


TEN_BACKBONES = [
    "resnet18",
    "mobilenet_v3_small",
    "squeezenet1_0",
    "shufflenet_v2_x0_5",
    "mnasnet0_5",
    "mobilenet_v2",
    "regnet_x_400mf",
    "resnet34",
    "efficientnet_b0",
    "alexnet",
]


@pytest.mark.slow
def test_many_backbones_one_after_another_leave_a_bounded_number_of_networks():
    clear_networks()
    before = len(_whole_networks())
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    fitted = []  # a notebook keeps its transformers: they must not keep networks
    for name in TEN_BACKBONES:
        transformer = CNNFeatureTransformer(backbone=name, weights=None, input_size=64)
        transformer.fit(images).transform(images)
        fitted.append(transformer)
    alive = len(_whole_networks()) - before
    # Each kept backbone: the network and its private folded copy.
    assert len(backbones.REGISTRY) == backbones.MAX_NETWORKS
    assert alive <= 2 * backbones.MAX_NETWORKS, alive
    assert clear_networks() == backbones.MAX_NETWORKS
    assert len(_whole_networks()) - before <= 0
    assert fitted[0].transform(images).shape == (2, 512)  # and a fitted transformer loads its network again
