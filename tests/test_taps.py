"""Layer listing and tapping: forward order, shapes, in-place ReLU, early stop."""

import numpy as np
import pytest
import torch
from conftest import returned_codes

from skcnn import list_layers
from skcnn.codes.extraction import TapPlan
from skcnn.network.backbones import load_backbone
from skcnn.network.taps import PENULTIMATE, probe, run_taps


def names(layers):
    return [layer.name for layer in layers]


def test_alexnet_layers_in_forward_order_with_shapes():
    layers = list_layers("alexnet")
    listed = names(layers)
    assert listed.index("features.0") < listed.index("features.12") < listed.index("classifier.1")
    shapes = {layer.name: layer.shape for layer in layers}
    assert shapes["features.12"] == (256, 6, 6)
    assert shapes["classifier.4"] == (4096,)
    assert layers[-1].name == PENULTIMATE
    assert layers[-1].shape == (4096,)
    assert layers[-1].kind == "input of classifier.6"


def test_shapes_follow_input_size():
    small = {layer.name: layer.shape for layer in list_layers("resnet18", input_size=64)}
    default = {layer.name: layer.shape for layer in list_layers("resnet18")}
    assert default["layer4"] == (512, 7, 7)
    assert small["layer4"] == (512, 2, 2)
    assert small[PENULTIMATE] == default[PENULTIMATE] == (512,)


def test_modules_called_twice_are_not_listed():
    # A ResNet BasicBlock applies its one ReLU module twice: no single output.
    listed = names(list_layers("resnet18"))
    assert "layer1.0.relu" not in listed
    assert "layer1.0" in listed and "layer1.0.conv2" in listed


@pytest.mark.parametrize(
    "backbone, head",
    [
        ("vgg16", "classifier.6"),
        ("resnet50", "fc"),
        ("squeezenet1_1", "classifier.1"),
        ("mobilenet_v3_large", "classifier.3"),
        ("efficientnet_lite0", "classifier"),
    ],
)
def test_penultimate_is_the_input_of_the_head(backbone, head):
    layers = list_layers(backbone, input_size=64)
    assert layers[-1].kind == f"input of {head}"


def test_in_place_relu_taps_keep_pre_and_post_relu_values():
    backbone = load_backbone("alexnet", None, "cpu")
    batch = torch.randn(3, 3, 224, 224)
    plan = TapPlan(("classifier.1", "classifier.2"), "classifier.6", "avg", relu=False)
    codes = returned_codes(backbone, batch, plan)
    before, after = codes[:, :4096], codes[:, 4096:]
    assert (before < 0).any(), "the Linear output must keep its negative values"
    np.testing.assert_array_equal(after, np.maximum(before, 0))


def test_early_stop_gives_the_same_codes_as_a_full_pass():
    backbone = load_backbone("resnet18", None, "cpu")
    batch = torch.randn(2, 3, 64, 64)
    early = returned_codes(backbone, batch, TapPlan(("layer1",), "fc", "avg", True))
    both = returned_codes(backbone, batch, TapPlan(("layer1", PENULTIMATE), "fc", "avg", True))
    np.testing.assert_array_equal(early, both[:, :64])


def test_early_stop_skips_the_rest_of_the_network():
    backbone = load_backbone("resnet18", None, "cpu")
    ran = []
    handle = backbone.network.layer4.register_forward_hook(lambda *args: ran.append(True))
    try:
        with torch.inference_mode():
            run_taps(backbone.network, torch.randn(1, 3, 64, 64), ["layer1"], "fc", lambda a, name: a)
    finally:
        handle.remove()
    assert ran == []


def test_taps_leave_no_hooks_behind():
    backbone = load_backbone("resnet18", None, "cpu")
    with torch.inference_mode():
        run_taps(backbone.network, torch.randn(1, 3, 64, 64), ["layer2", PENULTIMATE], "fc", lambda a, name: a)
    hooks = [m for m in backbone.network.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooks == []


def test_probe_on_a_real_network_matches_meta_listing():
    backbone = load_backbone("resnet18", None, "cpu")
    real, head = probe(backbone.network, torch.zeros(1, 3, 96, 96))
    meta = list_layers("resnet18", input_size=96)
    assert head == "fc"
    assert [(layer.name, layer.shape) for layer in real] == [(layer.name, layer.shape) for layer in meta]


def test_a_size_the_network_cannot_take_is_a_clear_error():
    with pytest.raises(ValueError, match=r"input_size: backbone 'vit_b_16' cannot run on 96 x 96"):
        list_layers("vit_b_16", input_size=96)
