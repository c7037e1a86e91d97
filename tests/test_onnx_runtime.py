"""runtime="onnxruntime": the tapped network exported to ONNX and run by ONNX Runtime."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from skcnn import CacheStats, CNNFeatureTransformer, clear_networks
from skcnn.network import arithmetic, onnx_runtime

FP32 = dict(input_size=64, batch_size=4, precision="fp32")


@pytest.fixture
def images():
    return np.random.default_rng(5).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)


def relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.slow
@pytest.mark.parametrize(
    "params",
    [
        dict(backbone="efficientnet_lite0"),  # packaged weights
        dict(backbone="efficientnet_lite0", layer=["blocks.1", "blocks.4", "penultimate"], pooling="spp"),
        dict(backbone="resnet18", weights=None, layer=["layer2", "penultimate"], pooling="max"),  # torchvision
        dict(backbone="timm/resnet18", weights=None, layer="layer3", relu=False),  # timm
        dict(backbone="alexnet", weights=None, input_size=224, layer=["features.4", "classifier.2"]),
    ],
    ids=["packaged", "packaged-layer-list", "torchvision", "timm", "fully-connected"],
)
def test_codes_equal_torchs(images, params):
    params = {**FP32, **params}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to torch
        onnx = CNNFeatureTransformer(runtime="onnxruntime", **params).fit(images)
        codes = onnx.transform(images)
    torch_codes = CNNFeatureTransformer(runtime="torch", **params).fit_transform(images)
    assert onnx.extractor_.runtime == "onnxruntime"
    assert relative_error(codes, torch_codes) < 1e-4
    np.testing.assert_allclose(codes, torch_codes, rtol=1e-4, atol=1e-4 * np.abs(torch_codes).max())


def test_auto_is_onnxruntime_on_a_cpu_in_fp32_and_torch_otherwise():
    def resolved(**params):
        extractor = CNNFeatureTransformer(input_size=64, **params).fit([]).extractor_
        return extractor.runtime, extractor.precision

    native_bf16 = arithmetic.cpu_has_native_bf16()
    # EfficientNet (depthwise convolutions) runs ONNX Runtime in fp32 even where bf16 is native ...
    assert resolved() == ("onnxruntime", "fp32")
    # ... a network of dense convolutions runs torch's bf16 there.
    dense = ("torch", "bf16") if native_bf16 else ("onnxruntime", "fp32")
    assert resolved(backbone="resnet18", weights=None) == dense
    assert resolved(runtime="torch") == (("torch", "bf16") if native_bf16 else ("torch", "fp32"))
    assert resolved(precision="fp32") == ("onnxruntime", "fp32")
    assert resolved(precision="bf16") == ("torch", "bf16")
    assert resolved(precision="fp32", compile=True) == ("torch", "fp32")
    assert resolved(runtime="onnxruntime") == ("onnxruntime", "fp32")
    assert resolved(runtime="torch", precision="fp32") == ("torch", "fp32")
    with pytest.raises(ValueError, match=r"runtime='onnxruntime': it computes in fp32, not precision='bf16'"):
        CNNFeatureTransformer(runtime="onnxruntime", precision="bf16").fit([])
    with pytest.raises(ValueError, match="compile applies to runtime='torch'"):
        CNNFeatureTransformer(runtime="onnxruntime", compile=True).fit([])
    with pytest.raises(ValueError, match="runtime"):
        CNNFeatureTransformer(runtime="tensorrt").fit([])


def test_a_native_bf16_cpu_keeps_bf16_for_dense_networks_only(monkeypatch):
    import torchvision

    monkeypatch.setattr(arithmetic, "cpu_has_native_bf16", lambda: True)
    cpu = torch.device("cpu")
    depthwise, dense = torchvision.models.mobilenet_v3_small(), torchvision.models.resnet18()
    assert not arithmetic.bf16_pays(depthwise) and arithmetic.bf16_pays(dense)
    assert arithmetic.resolve_runtime("auto", "auto", cpu, None, depthwise) == ("onnxruntime", "fp32")
    assert arithmetic.resolve_runtime("auto", "auto", cpu, None, dense) == ("torch", "bf16")
    assert arithmetic.resolve_runtime("auto", "bf16", cpu, None, depthwise) == ("torch", "bf16")  # as asked
    assert arithmetic.resolve_runtime("auto", "auto", cpu, {}, depthwise) == ("torch", "bf16")  # compile: torch
    monkeypatch.setattr(onnx_runtime, "missing", lambda: "onnxruntime is not installed")
    assert arithmetic.resolve_runtime("auto", "auto", cpu, None, depthwise) == ("torch", "bf16")


def test_without_the_packages_auto_runs_torch_and_says_how_to_get_them(monkeypatch, images):
    monkeypatch.setattr(onnx_runtime, "missing", lambda: "onnxruntime is not installed (pip install onnxruntime)")
    with pytest.warns(RuntimeWarning, match="runtime='auto' runs torch: .*pip install onnxruntime"):
        transformer = CNNFeatureTransformer(input_size=64, precision="fp32").fit(images)
    assert transformer.extractor_.runtime == "torch"
    with pytest.raises(ValueError, match="pip install onnxruntime"):
        CNNFeatureTransformer(runtime="onnxruntime").fit(images)


@pytest.mark.slow
def test_codes_cached_by_either_runtime_are_hits_for_the_other(images, tmp_path):
    cache = tmp_path / "codes.h5"
    params = dict(FP32, layer=["blocks.2", "penultimate"], cache=cache)
    first = CNNFeatureTransformer(runtime="torch", **params).fit(images)
    stored = first.transform(images)
    onnx = CNNFeatureTransformer(runtime="onnxruntime", **params).fit(images)
    np.testing.assert_array_equal(onnx.transform(images), stored)
    assert onnx.cache_info_ == CacheStats(hits=9, misses=0, computed=0)
    other = np.random.default_rng(6).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    computed = onnx.transform(other)
    torch_run = CNNFeatureTransformer(runtime="torch", **params).fit(other)
    np.testing.assert_array_equal(torch_run.transform(other), computed)
    assert torch_run.cache_info_ == CacheStats(hits=5, misses=0, computed=0)


@pytest.mark.slow
def test_the_export_is_kept_and_a_damaged_file_exported_again(images, monkeypatch, tmp_path):
    monkeypatch.setenv(onnx_runtime.CACHE_DIR_ENV, str(tmp_path / "exports"))
    params = dict(FP32, layer="blocks.3")
    exports = []
    real_export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    clear_networks()
    reference = CNNFeatureTransformer(runtime="onnxruntime", **params).fit_transform(images)
    (kept,) = (tmp_path / "exports").glob("*.onnx")
    assert len(exports) == 1 and not list((tmp_path / "exports").glob(".*.tmp"))
    assert kept.stat().st_mode & 0o777 == 0o600  # copies of the user's weights: the owner's only
    clear_networks()  # as a new process: the network and its sessions are gone, the file stays
    np.testing.assert_array_equal(
        CNNFeatureTransformer(runtime="onnxruntime", **params).fit_transform(images), reference
    )
    assert len(exports) == 1
    kept.write_bytes(kept.read_bytes()[:1000])  # a file cut short (a full disk, a killed copy)
    clear_networks()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        codes = CNNFeatureTransformer(runtime="onnxruntime", **params).fit_transform(images)
    assert len(exports) == 2
    np.testing.assert_array_equal(codes, reference)


def test_a_network_that_does_not_export_runs_on_torch_with_one_warning(images, monkeypatch, tmp_path):
    def unsupported(*args, **kwargs):
        raise RuntimeError("Unsupported operator: aten::my_custom_op")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    monkeypatch.setenv(onnx_runtime.CACHE_DIR_ENV, str(tmp_path))  # no export kept from an earlier test
    clear_networks()
    params = dict(FP32, layer="blocks.5")
    transformer = CNNFeatureTransformer(runtime="onnxruntime", **params).fit(images)
    with pytest.warns(RuntimeWarning, match="my_custom_op.*running it on torch"):
        codes = transformer.transform(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # said once
        again = transformer.transform(images)
    clear_networks()
    expected = CNNFeatureTransformer(runtime="torch", **params).fit_transform(images)
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(again, expected)


@pytest.mark.slow
def test_the_export_is_shared_by_processes(images, tmp_path):
    """A second process (another Dask worker, a later session) reads the file."""
    env = dict(os.environ, **{onnx_runtime.CACHE_DIR_ENV: str(tmp_path)})
    script = (
        "import numpy as np, torch; from skcnn import CNNFeatureTransformer\n"
        "calls = []; real = torch.onnx.export\n"
        "torch.onnx.export = lambda *a, **k: calls.append(1) or real(*a, **k)\n"
        "x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)\n"
        "CNNFeatureTransformer(input_size=64, layer='blocks.0', precision='fp32').fit_transform(x)\n"
        "print('exports', len(calls))\n"
    )
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True) for _ in range(2)]
    assert [run.stdout.split()[-1] for run in runs] == ["1", "0"], [run.stderr[-2000:] for run in runs]


@pytest.mark.slow
def test_layer_search_runs_its_transformers_runtime(textures):
    from sklearn.naive_bayes import GaussianNB

    from skcnn import LayerSearchCV

    X, y = textures[0][::4], textures[1][::4]
    search = LayerSearchCV(CNNFeatureTransformer(input_size=32, precision="fp32"), layers=["blocks.1", "penultimate"])
    search.set_params(cv=2, classifier=GaussianNB()).fit(X, y)
    assert search.transformer_.extractor_.runtime == "onnxruntime"
    assert search.best_estimator_[0].extractor_.runtime == "onnxruntime"


@pytest.mark.slow
def test_an_export_keeps_the_folder_within_its_bound_and_clear_graph_cache_empties_it(images, monkeypatch, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    stale = folder / "resnet18-0123.onnx"  # a graph no one used for long
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (1, 1))
    monkeypatch.setenv(onnx_runtime.CACHE_DIR_ENV, str(folder))
    monkeypatch.setenv(onnx_runtime.CACHE_MAX_BYTES_ENV, "0")  # only the graph just written stays
    clear_networks()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the new graph runs: not evicted before it loads
        transformer = CNNFeatureTransformer(runtime="onnxruntime", **FP32, layer="blocks.1").fit(images)
        transformer.transform(images)
    (kept,) = folder.glob("*.onnx")
    assert kept.name.startswith("efficientnet_lite0-") and not stale.exists()
    size = kept.stat().st_size
    assert onnx_runtime.clear_graph_cache() == size and list(folder.iterdir()) == []
