"""compile=...: the tapped pass under torch.compile, its checks and its fallbacks."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone

from skcnn import CNNFeatureTransformer
from skcnn.network import backbones, compiled
from skcnn.network.compiled import tapped_graph
from skcnn.network.taps import probe, run_taps

# fp32: "auto" is bf16 on CPUs with native bf16, where the checks are 64 bf16 eps wide.
# torch: compiled graphs are compared with torch's eager pass.
SMALL = dict(backbone="efficientnet_lite0", input_size=64, batch_size=4, precision="fp32", runtime="torch")
#: aot_eager traces and functionalises like inductor but generates no C++:
#: the mechanics in seconds.
AOT_EAGER = {"backend": "aot_eager"}


@pytest.fixture
def images():
    """Eleven images: two full batches of 4 and a partial one of 3."""
    return np.random.default_rng(0).integers(0, 256, (11, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def fresh_compiled_networks():
    backbones.clear_networks()
    yield
    backbones.clear_networks()


def relative_error(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def recording_backend(shapes):
    """A torch.compile backend that records the image batch shape of each
    graph it gets (its other inputs are the weights) and runs it as traced."""

    def backend(graph, example_inputs):
        shapes.extend(tuple(x.shape) for x in example_inputs if x.shape[1:] == (3, 64, 64))
        return graph.forward

    return backend


@pytest.mark.parametrize("layer", ["penultimate", ["blocks.2", "blocks.4", "penultimate"], ["blocks.1"]])
def test_compiled_codes_equal_the_eager_ones(images, layer):
    eager = CNNFeatureTransformer(layer=layer, **SMALL).fit_transform(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        codes = CNNFeatureTransformer(layer=layer, compile=AOT_EAGER, **SMALL).fit_transform(images)
    assert relative_error(codes, eager) < 1e-4
    (network,) = compiled_networks()
    (graph,) = network.graphs.values()
    assert graph.forward is not None and graph.checked


def test_one_graph_serves_the_whole_run_partial_batches_padded(images):
    shapes = []
    cnn = CNNFeatureTransformer(compile={"backend": recording_backend(shapes)}, **SMALL).fit(images)
    cnn.transform(images)
    cnn.transform(images[:2])
    assert shapes == [(4, 3, 64, 64)]


def test_the_graph_is_cut_after_the_last_tap():
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2)
    ).eval()
    example = torch.rand(2, 3, 8, 8)
    network(example)
    _, head = probe(network, example)
    graph = tapped_graph(network, ("1",), head)
    called = [node.target for node in graph.graph.nodes if node.op == "call_module"]
    assert called == ["0", "1"]
    with torch.inference_mode():
        expected = run_taps(network, example, ["1", "penultimate"], head, lambda a, name: a.clone())
        both = tapped_graph(network, ("1", "penultimate"), head)(example)
    assert torch.equal(both["1"], expected["1"]) and torch.equal(both["penultimate"], expected["penultimate"])


@pytest.mark.slow
def test_inductor_with_freezing_on_a_torchvision_network(images):
    """compile=True: inductor's generated C++ (the default a user gets)."""
    params = dict(
        backbone="resnet18",
        weights=None,
        layer=["layer2", "penultimate"],
        input_size=64,
        batch_size=4,
        precision="fp32",
        runtime="torch",
    )
    eager = CNNFeatureTransformer(**params).fit_transform(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        codes = CNNFeatureTransformer(compile=True, **params).fit_transform(images)
    assert relative_error(codes, eager) < 1e-4


def test_a_network_that_cannot_be_traced_runs_eager_with_a_warning(images, monkeypatch):
    def untraceable(network, layers, head):
        raise torch.fx.proxy.TraceError("symbolically traced variables cannot be used as inputs to control flow")

    monkeypatch.setattr(compiled, "tapped_graph", untraceable)
    eager = CNNFeatureTransformer(**SMALL).fit_transform(images)
    cnn = CNNFeatureTransformer(compile=AOT_EAGER, **SMALL).fit(images)
    with pytest.warns(RuntimeWarning, match="TraceError.*running it uncompiled"):
        codes = cnn.transform(images)
    np.testing.assert_array_equal(codes, eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # told once, then quietly eager
        np.testing.assert_array_equal(cnn.transform(images), eager)


def test_a_compiled_graph_with_wrong_codes_is_dropped_for_the_eager_pass(images):
    def wrong_backend(graph, example_inputs):
        return lambda *args: [output * 1.01 for output in graph.forward(*args)]

    eager = CNNFeatureTransformer(**SMALL).fit_transform(images)
    cnn = CNNFeatureTransformer(compile={"backend": wrong_backend}, **SMALL).fit(images)
    with pytest.warns(RuntimeWarning, match="'penultimate' differ from the eager pass by 1.0e-02"):
        codes = cnn.transform(images)
    np.testing.assert_array_equal(codes, eager)


def test_a_compiler_failing_at_the_first_batch_runs_eager_with_a_warning(images):
    def failing_backend(graph, example_inputs):
        def run(*args):
            raise RuntimeError("C++ compile error: cannot find a compiler")

        return run

    eager = CNNFeatureTransformer(**SMALL).fit_transform(images)
    with pytest.warns(RuntimeWarning, match="cannot find a compiler.*running it uncompiled"):
        codes = CNNFeatureTransformer(compile={"backend": failing_backend}, **SMALL).fit_transform(images)
    np.testing.assert_array_equal(codes, eager)


def test_compiled_codes_are_cache_hits_for_eager_runs(images, tmp_path):
    cache = tmp_path / "codes.h5"
    first = CNNFeatureTransformer(cache=cache, compile=AOT_EAGER, **SMALL).fit(images)
    codes = first.transform(images)
    again = CNNFeatureTransformer(cache=cache, **SMALL).fit(images)
    np.testing.assert_array_equal(again.transform(images), codes)
    assert again.cache_info_.hits == len(images)


@pytest.mark.parametrize(
    "value, message",
    [
        ({"fast": True}, r"\['fast'\] are not torch.compile arguments"),
        ({"backend": "no-such-backend"}, "backend 'no-such-backend' is not one of"),
        ("yes", "The 'compile' parameter"),
    ],
)
def test_bad_compile_values_are_named_at_fit(images, value, message):
    with pytest.raises(ValueError, match=message):
        CNNFeatureTransformer(compile=value, **SMALL).fit(images)


def test_compile_options_survive_clone_and_pickle(images):
    cnn = CNNFeatureTransformer(compile={"mode": "max-autotune"}, **SMALL)
    assert clone(cnn).get_params()["compile"] == {"mode": "max-autotune"}
    assert pickle.loads(pickle.dumps(cnn.fit(images))).compile == {"mode": "max-autotune"}


def test_cli_extract_with_compile_and_arithmetic_flags(images, tmp_path, capsys):
    from PIL import Image

    from skcnn.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    cache = tmp_path / "codes.h5"
    args = [
        "extract",
        str(folder),
        "--cache",
        str(cache),
        "--backbone",
        "resnet18",
        "--weights",
        "none",
        "--input-size",
        "64",
        "--batch-size",
        "4",
        "--layer",
        "layer2",
        "--layer",
        "penultimate",
        "--precision",
        "fp32",
        "--num-workers",
        "2",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert main([*args, "--compile"]) == 0
    assert "11 images: 0 already cached, 11 computed" in capsys.readouterr().out
    assert main(args) == 0  # compiled codes are the uncompiled ones: all hits
    assert "11 images: 11 already cached, 0 computed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--num-workers", "many"])
    assert "expected auto or a whole number >= 0; got 'many'" in capsys.readouterr().err


def test_half_precision_compiled_codes_pass_the_check(images):
    params = dict(SMALL, layer=["blocks.2", "penultimate"], precision="bf16")
    eager = CNNFeatureTransformer(**params).fit_transform(images[:5])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # within 64 bf16 eps of the eager bf16 pass
        codes = CNNFeatureTransformer(compile=AOT_EAGER, **params).fit_transform(images[:5])
    assert np.linalg.norm(codes - eager) / np.linalg.norm(eager) < 64 * torch.finfo(torch.bfloat16).eps


def compiled_networks():
    """The compiled networks of every loaded backbone."""
    return [network for backbone in backbones.REGISTRY for network in backbone.derived.get("compiled", {}).values()]
