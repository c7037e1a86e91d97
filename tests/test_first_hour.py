"""A user's first hour from the shell, on a dirty folder: every command, in the order the guide gives them.

One folder of class subfolders with a truncated JPEG and a text file named
``.jpg``; each step's output is read back as a user would read it, and the
exported model is served in a process where torch, timm and h5py cannot be
imported.
"""

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image

from skcnn import cli
from skcnn.datasets import load_image_folder, load_texture_patches

#: Every command in turn, on real weights: `make test-slow`.
pytestmark = pytest.mark.slow

BAD_FILES = {"brick/truncated.jpg", "grass/notes.jpg"}
#: A process where only numpy, Pillow and onnxruntime can be imported of skcnn's dependencies: what
#: `pip install numpy pillow onnxruntime` and `pip install --no-deps skcnn` give.
TORCH_FREE = """
import json, sys
ABSENT = ("torch", "torchvision", "timm", "h5py", "sklearn", "scipy", "joblib", "tqdm", "pandas")
for name in ABSENT:
    sys.modules[name] = None  # any import of them fails
from skcnn import cli
status = cli.main(sys.argv[1:])
loaded = sorted({m.split(".")[0] for m, module in sys.modules.items() if module is not None} & set(ABSENT))
print(json.dumps({"status": status, "loaded": loaded}), file=sys.stderr)
"""


def write_folder(root: Path, split: str, n_per_class: int) -> None:
    images, labels = load_texture_patches(split, n_per_class=n_per_class, patch_size=48)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / label / f"{split}{i}.jpg", quality=90)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("first_hour")
    write_folder(root / "photos", "train", 6)
    whole = (root / "photos" / "brick" / "train0.jpg").read_bytes()
    (root / "photos" / "brick" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "photos" / "grass" / "notes.jpg").write_text("a text file named like a photo")
    write_folder(root / "test", "test", 3)
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def rows_of(text: str) -> dict[str, dict]:
    """``skcnn predict``'s CSV, by path relative to the folder."""
    return {
        Path(row["path"]).parent.name + "/" + Path(row["path"]).name: row for row in csv.DictReader(io.StringIO(text))
    }


@pytest.fixture(scope="module")
def fitted(folders):
    """``skcnn finetune`` once for the steps that need a model file (its own output is checked below)."""
    model = folders / "model.joblib"
    argv = ["finetune", folders / "photos", "--out", model, "--input-size", "64", "--max-epochs", "1"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main([str(arg) for arg in [*argv, "--random-state", "0"]]) == 0
    return model, printed.getvalue()


def test_the_folder_reader_finds_every_file_and_leaves_decoding_to_the_estimators(folders):
    data = load_image_folder(folders / "photos")
    assert data.target_names.tolist() == ["brick", "grass", "gravel"]
    assert len(data.filenames) == len(data.target) == 20  # the two bad files included: not decoded here
    assert {f"{Path(f).parent.name}/{Path(f).name}" for f in data.filenames} >= BAD_FILES


def test_layers_search_names_the_bad_files_and_writes_no_plot_unasked(folders, capsys, monkeypatch):
    monkeypatch.chdir(folders)
    argv = ["layers", "efficientnet_lite0", "--search", folders / "photos", "--input-size", "64"]
    status, out, err = run(capsys, *argv, "--layer", "blocks.3", "--layer", "penultimate", "--cv", "2")
    assert status == 0
    assert "20 images, 3 classes" in out and "left out 2 file(s)" in out and "best: layer" in out
    assert all(name in err for name in ("truncated.jpg", "notes.jpg"))
    assert not list(folders.glob("*.png"))


def test_extract_caches_the_good_images_and_exits_by_on_error(folders, capsys):
    argv = ["extract", folders / "photos", "--cache", folders / "codes.h5", "--input-size", "64"]
    status, out, err = run(capsys, *argv)
    assert status == 0 and "left out 2 file(s)" in out and "truncated.jpg" in err
    status, out, err = run(capsys, *argv, "--on-error", "raise")
    assert status == 2 and "18 already cached" in out and "notes.jpg" in err


def test_finetune_writes_a_joblib_model_file(fitted):
    path, printed = fitted
    assert "20 images, 3 classes" in printed and "left out 2 file(s)" in printed
    assert f"model: {path}" in printed
    model = joblib.load(path)
    assert model.classes_.tolist() == ["brick", "grass", "gravel"]
    assert sorted(name for failure in model.failed_ for name in ("truncated", "notes") if name in failure.source) == [
        "notes",
        "truncated",
    ]


def test_predict_writes_a_csv_row_per_file_with_the_bad_ones_named(folders, fitted, capsys):
    fitted, _ = fitted
    status, out, err = run(capsys, "predict", fitted, folders / "photos")
    assert status == 0
    rows = rows_of(out)
    assert len(rows) == 20
    for name, row in rows.items():
        if name in BAD_FILES:
            assert row["label"] == "" and row["error"] and name.split("/")[1] in err
        else:
            assert row["error"] == "" and row["label"] in ("brick", "grass", "gravel")
            proba = [float(row[f"p({label})"]) for label in ("brick", "grass", "gravel")]
            assert abs(sum(proba) - 1) < 1e-4 and row["label"] == ["brick", "grass", "gravel"][int(np.argmax(proba))]
    accuracy = np.mean([row["label"] == name.split("/")[0] for name, row in rows.items() if name not in BAD_FILES])
    assert accuracy > 0.8  # its own training images


def test_predict_on_error_raise_writes_the_good_rows_then_exits_2(folders, fitted, capsys):
    fitted, _ = fitted
    out = folders / "predictions.csv"
    status, _, err = run(capsys, "predict", fitted, folders / "photos", "--out", out, "--on-error", "raise")
    assert status == 2 and "18 of 20 images predicted" in err
    rows = rows_of(out.read_text())
    assert sum(row["label"] != "" for row in rows.values()) == 18


def test_inspect_reports_held_out_evidence(folders, fitted, capsys):
    fitted, _ = fitted
    argv = ["inspect", fitted, folders / "photos", "--out", folders / "report", "--test", folders / "test"]
    status, out, _ = run(capsys, *argv, "--cv", "2", "--top", "4")
    assert status == 0
    assert "9 of 9 images scored (0 left out)" in out and "held out" in out
    assert "left out 2 file(s)" in out
    report = folders / "report"
    assert {"top_losses.csv", "confusion.png", "label_issues.csv", "failed.csv"} <= {p.name for p in report.iterdir()}
    losses = list(csv.DictReader((report / "top_losses.csv").open()))
    assert len(losses) == 9 and all("test" in Path(row["path"]).name for row in losses)


def test_export_then_predict_without_torch_gives_the_same_rows(folders, fitted, capsys):
    fitted, _ = fitted
    onnx_file = folders / "model.onnx"
    status, out, _ = run(capsys, "export", fitted, onnx_file)
    assert status == 0 and (" kB;" in out or " MB;" in out)
    status, expected, _ = run(capsys, "predict", fitted, folders / "photos")
    served = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, "predict", str(onnx_file), str(folders / "photos")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    report = json.loads(served.stderr.strip().splitlines()[-1])
    assert report == {"status": 0, "loaded": []}, served.stderr
    torch_rows, onnx_rows = rows_of(expected), rows_of(served.stdout)
    assert torch_rows.keys() == onnx_rows.keys()
    for name, row in torch_rows.items():
        assert onnx_rows[name]["label"] == row["label"]
        assert bool(onnx_rows[name]["error"]) == (name in BAD_FILES)
        for column in (c for c in row if c.startswith("p(") and row[c]):
            assert abs(float(onnx_rows[name][column]) - float(row[column])) < 1e-3, (name, column)
