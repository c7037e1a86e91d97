"""How the network computes: precision, channels_last, folded batch norm."""

import numpy as np
import pytest
import torch
from conftest import returned_codes
from torch import nn

from skcnn import CNNFeatureTransformer
from skcnn.cache import CodeCache
from skcnn.codes.extraction import TapPlan
from skcnn.decoding.preprocessing import AUTO_DECODE_MARGIN
from skcnn.network import arithmetic, backbones

SMALL = dict(backbone="efficientnet_lite0", input_size=64, batch_size=4)


@pytest.fixture(scope="module")
def resnet():
    """ResNet-18 with non-trivial batch-norm statistics (random init has mean 0, var 1)."""
    backbone = backbones.load_backbone("resnet18", None)
    generator = torch.Generator().manual_seed(0)
    network = backbone.network
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    yield backbone
    backbones.clear_networks()  # the next user gets the untouched network


def relative_error(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_auto_precision_follows_the_device_and_cpu_flags(monkeypatch):
    monkeypatch.setattr(arithmetic, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert arithmetic.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(arithmetic, "_cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert arithmetic.resolve_precision("auto", torch.device("cpu")) == "bf16"
    assert arithmetic.resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert arithmetic.resolve_precision("auto", torch.device("mps")) == "fp32"
    assert arithmetic.resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_folding_keeps_the_function_and_leaves_the_shared_network_alone(resnet):
    example = torch.rand(3, 3, 64, 64)
    inference = arithmetic.inference_for(resnet, "fp32", channels_last=True, fold_batchnorm=True, input_size=(64, 64))
    assert inference.network is not resnet.network
    assert not any(isinstance(m, nn.BatchNorm2d) for m in inference.network.modules())  # all 20 folded
    assert sum(isinstance(m, nn.BatchNorm2d) for m in resnet.network.modules()) == 20
    plan = TapPlan(("layer2", "penultimate"), "fc", "avg", True, ((128, 8, 8), (512,)))
    reference = returned_codes(resnet, example, plan)
    fast = returned_codes(resnet, example, plan, inference)
    assert relative_error(fast, reference) < 1e-4


def test_a_tapped_convolution_is_not_folded(resnet):
    inference = arithmetic.inference_for(
        resnet, "fp32", fold_batchnorm=True, channels_last=False, keep=frozenset({"conv1"}), input_size=(64, 64)
    )
    modules = dict(inference.network.named_modules())
    assert isinstance(modules["bn1"], nn.BatchNorm2d)  # conv1's output is tapped: bn1 stays
    assert not isinstance(modules["layer1.0.bn1"], nn.BatchNorm2d)
    torch.testing.assert_close(modules["conv1"].weight, resnet.network.conv1.weight, rtol=0, atol=0)
    example = torch.rand(2, 3, 64, 64)
    plan = TapPlan(("conv1", "bn1"), "fc", "max", False, ((64, 32, 32), (64, 32, 32)))
    np.testing.assert_allclose(
        returned_codes(resnet, example, plan, inference), returned_codes(resnet, example, plan), rtol=1e-5, atol=1e-6
    )


def test_timm_batchnorm_with_activation_keeps_its_activation():
    backbone = backbones.load_backbone("efficientnet_lite0", "DEFAULT")
    inference = arithmetic.inference_for(
        backbone, "fp32", fold_batchnorm=True, channels_last=False, input_size=(64, 64)
    )
    folded = dict(inference.network.named_modules())["bn1"]
    assert isinstance(folded, nn.Sequential) and isinstance(folded[1], nn.ReLU6)
    example = torch.rand(2, 3, 64, 64)
    plan = TapPlan(("bn1", "blocks.3", "penultimate"), "classifier", "avg", True, ((32, 32, 32), (80, 4, 4), (1280,)))
    assert (
        relative_error(returned_codes(backbone, example, plan, inference), returned_codes(backbone, example, plan))
        < 1e-4
    )


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_runs_on_the_cpu_close_to_fp32(rgb_images, precision):
    images = rgb_images[:4]
    fp32 = CNNFeatureTransformer(**SMALL, precision="fp32").fit(images).transform(images)
    half = CNNFeatureTransformer(**SMALL, precision=precision).fit(images).transform(images)
    assert half.dtype == np.float32
    assert not np.array_equal(half, fp32)  # it really ran in half precision
    error = np.linalg.norm(half - fp32, axis=1) / np.linalg.norm(fp32, axis=1)
    assert error.max() < 0.1


@pytest.mark.slow
def test_precision_and_decoding_are_in_the_cache_key(tmp_path, rgb_images):
    path = str(tmp_path / "codes.h5")
    fp32 = CNNFeatureTransformer(**SMALL, precision="fp32", cache=path).fit(rgb_images)
    first = fp32.transform(rgb_images)
    bf16 = CNNFeatureTransformer(**SMALL, precision="bf16", cache=path).fit(rgb_images)
    half = bf16.transform(rgb_images)
    assert bf16.cache_info_.hits == 0  # fp32 codes are never served for bf16
    assert not np.array_equal(half, first)
    drafted = CNNFeatureTransformer(**SMALL, precision="fp32", decode="draft", cache=path).fit(rgb_images)
    drafted.transform(rgb_images)
    assert drafted.cache_info_.hits == 0
    # Arrays are never DCT-scaled, yet the margin is part of the key: it is a property of the configuration.
    stored = {(c.attrs.get("precision", "fp32"), c.attrs["jpeg_dct_margin"]) for c in CodeCache(path).configs()}
    assert stored == {("fp32", AUTO_DECODE_MARGIN), ("bf16", AUTO_DECODE_MARGIN), ("fp32", 1.0)}
    again = CNNFeatureTransformer(**SMALL, precision="fp32", cache=path).fit(rgb_images)
    np.testing.assert_array_equal(again.transform(rgb_images), first)
    assert again.cache_info_.hits == len(rgb_images)


@pytest.mark.parametrize("runtime", ["torch", "auto"])
def test_auto_precision_is_stored_resolved(tmp_path, rgb_images, runtime):
    path = str(tmp_path / "codes.h5")
    CNNFeatureTransformer(**SMALL, cache=path, runtime=runtime).fit(rgb_images).transform(rgb_images)
    # torch: bf16 where the CPU has it natively, else fp32. auto: EfficientNet (depthwise
    # convolutions) runs ONNX Runtime in fp32 on every CPU (arithmetic.bf16_pays).
    expected = "bf16" if arithmetic.cpu_has_native_bf16() and runtime == "torch" else "fp32"
    # fp32 is left out of the key (caches from before the option stay valid)
    assert [c.attrs.get("precision", "fp32") for c in CodeCache(path).configs()] == [expected]


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_codes_are_equal_within_tolerance_whatever_the_batch_size(rgb_images, batch_size):
    reference = CNNFeatureTransformer(**SMALL, precision="fp32").fit(rgb_images).transform(rgb_images)
    codes = (
        CNNFeatureTransformer(**{**SMALL, "batch_size": batch_size}, precision="fp32")
        .fit(rgb_images)
        .transform(rgb_images)
    )
    np.testing.assert_allclose(codes, reference, rtol=1e-4, atol=1e-4)


def test_fp32_exact_key_is_unchanged_so_older_caches_stay_valid(tmp_path, rgb_images):
    path = str(tmp_path / "codes.h5")
    CNNFeatureTransformer(**SMALL, precision="fp32", cache=path).fit(rgb_images).transform(rgb_images)
    (config,) = CodeCache(path).configs()
    assert "precision" not in config.attrs and "decode" not in config.attrs
