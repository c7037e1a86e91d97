"""The `skcnn` command."""

import subprocess
import sys
from pathlib import Path

import pytest

from skcnn import cli, demo


def test_layers_lists_names_and_shapes(capsys):
    assert cli.main(["layers", "resnet18", "--max-depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "layer4" in out and "512 x 7 x 7" in out
    assert "penultimate  input of fc" in out
    assert "layer1.0" not in out


def test_layers_input_size(capsys):
    cli.main(["layers", "resnet18", "--input-size", "64", "--max-depth", "1"])
    assert "512 x 2 x 2" in capsys.readouterr().out


def test_unknown_backbone_is_an_error_with_suggestions(capsys):
    assert cli.main(["layers", "resnt18"]) == 2
    err = capsys.readouterr().err
    assert "backbone='resnt18' is not known" in err and "resnet18" in err


@pytest.mark.slow
def test_quick_demo_prints_the_table():
    lines = []
    scores = demo.run(demo.QUICK, print_fn=lines.append)
    table = "\n".join(lines)
    assert "raw pixels" in table and "pretrained efficientnet_lite0, penultimate" in table
    assert set(scores["like ImageNet"]) == set(demo.feature_makers(64))
    assert set(scores["unlike ImageNet"]) == set(demo.unlike_models(32, 1))
    assert all(0.0 <= s <= 1.0 for table in scores.values() for s in table.values())


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "skcnn"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout and "layers" in result.stdout


def write_class_folders(root, n_per_class=4):
    from PIL import Image

    from skcnn.datasets import load_texture_patches

    images, labels = load_texture_patches(n_per_class=n_per_class, patch_size=32)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / label / f"{i}.png")


@pytest.mark.slow
def test_layers_search_prints_the_table_and_saves_the_plot(tmp_path, capsys):
    write_class_folders(tmp_path / "data")
    plot = tmp_path / "search.png"
    argv = [
        "layers",
        "efficientnet_lite0",
        "--search",
        str(tmp_path / "data"),
        "--input-size",
        "32",
        "--layer",
        "blocks.1",
        "--layer",
        "penultimate",
        "--cv",
        "2",
        "--plot",
        str(plot),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "12 images, 3 classes" in out and "blocks.1" in out and "best: layer" in out
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_layers_search_needs_class_folders(tmp_path, capsys):
    (tmp_path / "one").mkdir()
    assert cli.main(["layers", "resnet18", "--search", str(tmp_path)]) == 2
    assert "at least two" in capsys.readouterr().err


def dirty_folder(root, bad_file: str, content: bytes):
    """Class folders of texture patches, and one file that is no image."""
    write_class_folders(root)
    (root / bad_file).write_bytes(content)
    return ["layers", "efficientnet_lite0", "--search", str(root), "--input-size", "32", "--layer", "blocks.1"]


@pytest.mark.slow
def test_layers_search_leaves_bad_files_out_and_names_them(tmp_path, capsys):
    argv = dirty_folder(tmp_path / "data", "brick/broken.png", b"not an image")
    assert cli.main([*argv, "--layer", "penultimate", "--cv", "2", "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "13 images, 3 classes" in out
    assert "left out 1 file(s) that could not be used: " in out and "broken.png" in out
    assert "best: layer" in out


def test_layers_search_on_error_raise_names_the_files_and_the_flag(tmp_path, capsys):
    argv = dirty_folder(tmp_path / "data", "grass/empty.jpg", b"")
    assert cli.main([*argv, "--cv", "2", "--on-error", "raise", "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "empty.jpg" in err and "--on-error skip" in err and "on_error=" not in err


def test_extract_on_error_skip_caches_the_others_and_names_the_bad(tmp_path, capsys):
    write_class_folders(tmp_path / "data", n_per_class=2)
    (tmp_path / "data" / "brick" / "broken.png").write_bytes(b"not an image")
    cache = tmp_path / "codes.h5"
    common = ["extract", str(tmp_path / "data"), "--cache", str(cache), "--input-size", "32", "--pooling", "max"]
    assert cli.main([*common, "--on-error", "skip"]) == 0
    out = capsys.readouterr().out
    assert "7 images: 0 already cached" in out and "left out 1 file(s) that could not be used" in out
    assert "broken.png" in out
    assert cli.main(common) == 0  # skip, the default of every command
    assert cli.main([*common, "--on-error", "raise"]) == 2  # named after the others are read from the cache
    captured = capsys.readouterr()
    assert "6 already cached" in captured.out and "broken.png" in captured.err


def test_extract_and_search_offer_every_transformer_parameter_as_a_flag():
    from skcnn.options import parameter_names

    parser = cli.build_parser()
    extract = vars(parser.parse_args(["extract", "photos", "--cache", "codes.h5"]))
    search = vars(parser.parse_args(["layers", "resnet18", "--search", "photos"]))
    # progress is always shown by a terminal command
    assert set(parameter_names()) - {"progress"} <= set(extract)
    assert set(parameter_names()) - {"progress", "cache_layers"} <= set(search)
    assert extract["on_error"] == search["on_error"] == cli.ON_ERROR == "skip"


@pytest.mark.parametrize(
    "option, text, value",
    [
        ("--crop", "weights", True),
        ("--crop", "none", False),
        ("--crop", "0.875", 0.875),
        ("--weights", "none", None),
        ("--weights", "IMAGENET1K_V1", "IMAGENET1K_V1"),
        ("--max-pixels", "none", None),
        ("--max-pixels", "1000", 1000),
        ("--num-workers", "auto", "auto"),
        ("--num-workers", "0", 0),
        ("--input-size", "64", 64),
    ],
)
def test_options_read_words_and_numbers_as_the_parameters_take_them(option, text, value):
    args = cli.build_parser().parse_args(["extract", "photos", "--cache", "codes.h5", option, text])
    assert cli.transformer_params(args)[option[2:].replace("-", "_")] == value


@pytest.mark.parametrize("option, text", [("--crop", "1.5"), ("--max-pixels", "0"), ("--num-workers", "many")])
def test_a_word_or_number_a_parameter_does_not_take_is_refused_with_what_it_takes(option, text, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["extract", "photos", "--cache", "codes.h5", option, text])
    assert f"argument {option}: expected " in capsys.readouterr().err


def test_finetune_passes_every_option_to_the_classifier(tmp_path, monkeypatch):
    from skcnn import CNNClassifier

    class Fitted(Exception):
        pass

    def fit(self, X, y):
        raise Fitted(self.get_params())

    monkeypatch.setattr(CNNClassifier, "fit", fit)
    write_class_folders(tmp_path / "data", n_per_class=1)
    given = {"--crop": "none", "--batch-size": "4", "--learning-rate": "0.01", "--random-state": "3"}
    given |= {"--memory-limit": "2GB", "--precision": "fp32", "--class-weight": "balanced", "--max-pixels": "none"}
    argv = ["finetune", str(tmp_path / "data"), "--out", str(tmp_path / "m.joblib")]
    with pytest.raises(Fitted) as fitted:
        cli.main([*argv, *(word for pair in given.items() for word in pair)])
    params = fitted.value.args[0]
    assert (params["crop"], params["batch_size"], params["learning_rate"]) == (False, 4, 0.01)
    assert (params["random_state"], params["memory_limit"], params["precision"]) == (3, "2GB", "fp32")
    assert params["class_weight"] == "balanced"
    assert params["max_pixels"] is None and params["progress"] is True and params["on_error"] == cli.ON_ERROR
    # the options not given: the classifier's defaults (its batch size and layer, not the transformer's)
    defaults = CNNClassifier().get_params()
    assert all(params[name] == defaults[name] for name in ("layer", "unfreeze", "max_epochs", "weights", "decode"))
    assert set(cli.FINETUNE_OPTIONS) | set(cli.PREDICTION_OPTIONS) <= set(params)


def test_every_option_of_every_command_says_what_it_does_and_shows_its_default():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps subcommands here
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"skcnn {name} {action.option_strings[0]} has no help line"
        shown = [a for a in command._actions if a.option_strings and a.default not in (None, False, "==SUPPRESS==")]
        assert ("(default:" in command.format_help()) == bool(shown), name


def test_every_command_that_reads_images_takes_the_same_on_error():
    parser = cli.build_parser()
    argv = {
        "extract": ["extract", "photos", "--cache", "codes.h5"],
        "layers": ["layers", "resnet18", "--search", "photos"],
        "finetune": ["finetune", "photos", "--out", "model.joblib"],
        "predict": ["predict", "model.onnx", "photos"],
        "inspect": ["inspect", "model.joblib", "photos", "--out", "report"],
    }
    for name, args in argv.items():
        assert parser.parse_args(args).on_error == cli.ON_ERROR, name
        assert parser.parse_args([*args, "--on-error", "raise"]).on_error == "raise", name


def test_a_missing_input_is_an_error_naming_it(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path / "model.onnx"), str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_model_file_that_is_not_a_classifier_is_refused(tmp_path, capsys):
    import joblib
    from PIL import Image

    from skcnn import CNNFeatureTransformer

    joblib.dump(CNNFeatureTransformer(weights=None), tmp_path / "codes.joblib")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert cli.main(["predict", str(tmp_path / "codes.joblib"), str(tmp_path / "a.png")]) == 2
    assert "not a fitted classifier" in capsys.readouterr().err


def test_every_subcommand_of_cache_says_what_it_does():
    parser = cli.build_parser()
    cache = parser._subparsers._group_actions[0].choices["cache"]
    listing = cache._subparsers._group_actions[0]  # argparse keeps nested subcommands here too
    assert {"info", "prune", "compact", "clear-graphs"} <= set(listing.choices)
    helped = {action.dest: action.help for action in listing._choices_actions}
    for name, command in listing.choices.items():
        assert helped.get(name), f"skcnn cache {name} has no help line"
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"skcnn cache {name} {action.dest} has no help line"


def test_cache_clear_graphs_empties_the_graph_folder_and_says_what_it_freed(monkeypatch, capsys):
    from skcnn.network import onnx_runtime

    cleared = []
    # Not the real folder: the test run shares its exports between tests (conftest.py).
    monkeypatch.setattr(onnx_runtime, "clear_graph_cache", lambda: cleared.append(1) or 356_200_000)
    assert cli.main(["cache", "clear-graphs"]) == 0
    assert cleared == [1]
    assert capsys.readouterr().out.startswith("freed 356.2 MB")


# -- model files: ONNX whatever the case of its extension, and bad files named, without a traceback ----------------

CLASSES = ["brick", "grass", "gravel"]


def onnx_classifier(path, *, fails_when_run=False, metadata=None):
    """A small ONNX classifier as skcnn.export writes them (its metadata, uint8 crops in), without torch:
    the softmax of the mean colour. ``fails_when_run``: a graph ONNX Runtime loads but cannot run."""
    import json

    import numpy as np

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels"], ["means"], axes=[1, 2], keepdims=0),
        helper.make_node("Softmax", ["means"], ["soft"], axis=1),
        helper.make_node("ArgMax", ["soft"], ["best"], axis=1, keepdims=0),
        helper.make_node("Gather", ["classes", "best"], ["label"], axis=0),
    ]
    constants = [numpy_helper.from_array(np.array(CLASSES, dtype=object), "classes")]
    if fails_when_run:  # 3 numbers per image cannot make rows of 7
        constants.append(numpy_helper.from_array(np.array([7, -1], dtype=np.int64), "rows_of_7"))
        nodes.append(helper.make_node("Reshape", ["soft", "rows_of_7"], ["probabilities"]))
    else:
        nodes.append(helper.make_node("Identity", ["soft"], ["probabilities"]))
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 32, 32, 3])],
        [
            helper.make_tensor_value_info("label", TensorProto.STRING, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None),
        ],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    recipe = {"crop_size": [32, 32], "resize_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    meta = {
        "kind": "classifier",
        "outputs": ["label", "probabilities"],
        "classes": CLASSES,
        "input": {"name": "images", "layout": "NHWC uint8 RGB", "size": [32, 32]},
        "preprocessing": {**recipe, "interpolation": "bilinear", "jpeg_dct_margin": 3.0},
    }
    helper.set_model_props(model, {"skcnn": json.dumps(meta) if metadata is None else metadata})
    onnx.save(model, path)
    return path


def red_image(folder):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "red.png")
    return str(folder / "red.png")


def test_an_onnx_file_is_served_whatever_the_case_of_its_extension(tmp_path, capsys):
    import csv
    import io

    image = red_image(tmp_path)
    for name in ("model.ONNX", "model.Onnx"):
        path = onnx_classifier(tmp_path / name)
        assert cli.main(["predict", str(path), image]) == 0, capsys.readouterr().err
        [row] = csv.DictReader(io.StringIO(capsys.readouterr().out))
        assert row["label"] == "brick" and float(row["p(brick)"]) > 0.99  # red: the first channel's class
        # The commands that need the fitted model file say so, rather than unpickling the ONNX file.
        assert cli.main(["inspect", str(path), str(tmp_path), "--out", str(tmp_path / "report")]) == 2
        assert f"{path} is an ONNX file" in capsys.readouterr().err
        assert cli.main(["export", str(path), str(tmp_path / "out.onnx")]) == 2
        assert f"{path} is an ONNX file" in capsys.readouterr().err


def truncated_onnx(path):
    onnx_classifier(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


def not_skcnn_estimator(path):
    import joblib
    from sklearn.linear_model import LogisticRegression

    joblib.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), path)


BAD_MODEL_FILES = {
    "text.onnx": lambda path: path.write_text("a text file named like a model"),
    "truncated.onnx": truncated_onnx,
    "foreign.onnx": lambda path: onnx_classifier(path, metadata="{}"),
    "tampered.onnx": lambda path: onnx_classifier(path, metadata='{"kind": "classifier", "classes": '),
    "fails_when_run.onnx": lambda path: onnx_classifier(path, fails_when_run=True),
    "text.joblib": lambda path: path.write_text("a text file named like a model"),
    "table.joblib": not_skcnn_estimator,
}


@pytest.mark.parametrize("name", BAD_MODEL_FILES)
def test_a_bad_model_file_is_an_error_naming_it_not_a_traceback(name, tmp_path, capsys):
    path = tmp_path / name
    BAD_MODEL_FILES[name](path)
    assert cli.main(["predict", str(path), red_image(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"skcnn predict: error: {path}"), err
    assert "Traceback" not in err


def test_onnx_runtimes_own_exceptions_are_errors_naming_the_file(tmp_path, capsys, monkeypatch):
    onnxruntime = pytest.importorskip("onnxruntime")
    from onnxruntime.capi import onnxruntime_pybind11_state as runtime_errors

    path = onnx_classifier(tmp_path / "model.onnx")

    def fails(*args, **kwargs):
        raise runtime_errors.EPFail("the execution provider failed")  # an Exception, not a ValueError

    monkeypatch.setattr(onnxruntime, "InferenceSession", fails)
    assert cli.main(["predict", str(path), red_image(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"skcnn predict: error: {path}" in err and "the execution provider failed" in err
