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
