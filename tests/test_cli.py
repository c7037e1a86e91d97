"""The `skcnn` command."""

import subprocess
import sys
from pathlib import Path

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


def test_quick_demo_prints_the_table():
    lines = []
    scores = demo.run(demo.QUICK, print_fn=lines.append)
    table = "\n".join(lines)
    assert "raw pixels" in table and "pretrained efficientnet_lite0, penultimate" in table
    assert set(scores) == set(demo.feature_makers(64))
    assert all(0.0 <= s <= 1.0 for s in scores.values())


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
    assert "12 images, 3 classes" in out and "blocks.1" in out and "best layer:" in out
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_layers_search_needs_class_folders(tmp_path, capsys):
    (tmp_path / "one").mkdir()
    assert cli.main(["layers", "resnet18", "--search", str(tmp_path)]) == 2
    assert "at least two" in capsys.readouterr().err
