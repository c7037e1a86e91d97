"""Any file name: names that are not UTF-8 are read, and shown escaped in every table, report and message.

On Linux a file name is any bytes; Python gives one that is not UTF-8 as a
str with surrogate escapes (``os.fsdecode``). The file must still be read,
and where its name is written (a CSV, a pandas column, a line on stderr)
it is shown with the bytes escaped, ``caf\\xe9.png``.
"""

import csv
import io
import os
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from skcnn import BadImagesWarning, CNNFeatureTransformer, cli
from skcnn.datasets import load_image_folder, load_texture_patches, shown_path

#: A Latin-1 file name (a camera or an old Windows share wrote it): not UTF-8.
ODD = b"caf\xe9.png"
#: How it is shown.
SHOWN = r"caf\xe9.png"
#: A file with such a name that is no image.
ODD_BROKEN = b"bro\xffken.png"
#: A class folder with such a name.
ODD_CLASS = b"gr\xfcn"


def odd(folder: Path, name: bytes) -> str:
    """The path Python gives for the file ``name`` in ``folder``."""
    return os.fsdecode(os.fsencode(folder) + b"/" + name)


@pytest.fixture
def photos(tmp_path):
    """Class folders of texture patches: a copy of the first brick named ``ODD``, a broken
    ``ODD_BROKEN``, and the grass class in the folder ``ODD_CLASS``; the images and labels."""
    X, y = load_texture_patches(n_per_class=2, patch_size=32)
    folders = {}
    for label in np.unique(y):
        folders[label] = odd(tmp_path / "photos", ODD_CLASS) if label == "grass" else str(tmp_path / "photos" / label)
        os.makedirs(folders[label])
    for i, (image, label) in enumerate(zip(X, y, strict=True)):
        Image.fromarray(image).save(os.path.join(folders[label], f"{i}.png"))
    Image.fromarray(X[0]).save(odd(Path(folders["brick"]), ODD), format="PNG")
    Path(odd(Path(folders["gravel"]), ODD_BROKEN)).write_bytes(b"not an image")
    return tmp_path / "photos", X, y


@pytest.fixture
def model_file(tmp_path, photos):
    """A fitted pipeline on the patches (random weights: this is about names), as joblib writes it."""
    _, X, y = photos
    y = np.where(y == "grass", os.fsdecode(ODD_CLASS), y)  # the class as the folder names it
    path = tmp_path / "model.joblib"
    joblib.dump(make_pipeline(frozen_codes(), LogisticRegression(max_iter=500)).fit(X, y), path)
    return path


def test_shown_path_escapes_only_the_bytes_that_are_not_utf8():
    assert shown_path(os.fsdecode(b"/data/" + ODD)) == "/data/" + SHOWN
    assert shown_path("/data/café.png") == "/data/café.png"  # UTF-8 names as they are
    assert shown_path(Path(os.fsdecode(ODD))) == SHOWN
    assert shown_path(os.fsdecode(ODD)).encode("utf-8")  # no surrogates left


def frozen_codes() -> CNNFeatureTransformer:
    """Random weights, torch: this is about names, not about codes."""
    return CNNFeatureTransformer(weights=None, input_size=32, runtime="torch", progress=False)


def test_inspection_tables_hold_paths_and_class_names_escaped(photos):
    from skcnn.inspection import find_duplicates, out_of_fold_losses

    root, _, _ = photos
    paths, labels = load_image_folder(root, return_X_y=True)
    model = make_pipeline(frozen_codes(), LogisticRegression(max_iter=500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImagesWarning)
        losses, issues = out_of_fold_losses(model, paths, labels, cv=2)
        pairs = find_duplicates(paths, transformer=frozen_codes())
    odd_file = shown_path(odd(root / "brick", ODD))
    assert odd_file in set(losses["path"]) and odd_file.endswith("/brick/" + SHOWN)
    assert set(losses["label"]) == {"brick", r"gr\xfcn", "gravel"} and "label_quality" in issues
    assert (str(root / "brick" / "0.png"), odd_file) in set(zip(pairs["path"], pairs["other_path"], strict=True))
    for table in (losses, issues, pairs):
        assert table.to_csv(index=False).encode("utf-8")  # no surrogates left to fail a UTF-8 file
    [failure] = losses.attrs["failed"]
    assert paths[failure.index] == odd(root / "gravel", ODD_BROKEN)


def test_predict_reads_the_file_and_writes_its_name_escaped(photos, model_file, tmp_path, capsys):
    root, _, _ = photos
    out = tmp_path / "predictions.csv"
    assert cli.main(["predict", str(model_file), str(root), "--out", str(out)]) == 0
    rows = {row["path"]: row for row in csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8")))}
    odd_row = rows[shown_path(odd(root / "brick", ODD))]
    assert odd_row["error"] == "" and odd_row["label"]  # read and predicted, by its own name
    assert float(odd_row["p(brick)"]) > 0 and r"p(gr\xfcn)" in odd_row
    grass = [row for path, row in rows.items() if r"/gr\xfcn/" in path]
    assert len(grass) == 2 and all(row["error"] == "" for row in grass)
    broken = rows[shown_path(odd(root / "gravel", ODD_BROKEN))]
    assert broken["label"] == "" and broken["error"]
    err = capsys.readouterr().err
    assert "7 of 8 images predicted" in err and "bro" in err and "ken.png" in err


def test_extract_names_the_broken_file_and_the_cache_escaped(photos, tmp_path, capsys):
    root, _, _ = photos
    cache = odd(tmp_path, b"c\xf3des.h5")
    argv = ["extract", str(root), "--cache", cache, "--weights", "none", "--input-size", "32", "--runtime", "torch"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "8 images: 0 already cached, 7 computed" in out and r"c\xf3des.h5" in out
    assert "left out 1 file(s)" in out and "ken.png" in err
    assert Path(cache).is_file()


def test_errors_name_the_file_escaped(tmp_path, capsys):
    model = odd(tmp_path, b"mod\xe8le.onnx")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert cli.main(["predict", model, str(tmp_path / "a.png")]) == 2
    assert r"mod\xe8le.onnx" in capsys.readouterr().err


def test_inspect_writes_the_report_with_the_names_escaped(photos, model_file, tmp_path, capsys):
    root, _, _ = photos
    test = tmp_path / "test"
    test.mkdir()
    Image.open(odd(root / "brick", ODD)).save(odd(test, ODD))  # a leak, loose: for the leak check only
    report = tmp_path / "report"
    argv = ["inspect", str(model_file), str(root), "--out", str(report), "--test", str(test), "--cv", "2"]
    assert cli.main([*argv, "--top", "4"]) == 0
    out = capsys.readouterr().out
    assert "7 of 8 images scored (1 left out)" in out and "left out 1 file(s)" in out
    tables = {}
    for name in ("top_losses", "label_issues", "duplicates", "leakage", "failed"):
        text = (report / f"{name}.csv").read_bytes().decode("utf-8")  # valid UTF-8, every one
        tables[name] = list(csv.DictReader(io.StringIO(text)))
    odd_file = shown_path(odd(root / "brick", ODD))
    assert odd_file.endswith("/brick/" + SHOWN)
    assert odd_file in {row["path"] for row in tables["top_losses"]}
    assert {row["label"] for row in tables["top_losses"]} == {"brick", r"gr\xfcn", "gravel"}
    copies = {(row["path"], row["other_path"]) for row in tables["duplicates"] if row["exact"] == "True"}
    assert (str(root / "brick" / "0.png"), odd_file) in copies
    assert {(row["path"], row["other_path"]) for row in tables["leakage"]} >= {(odd_file, str(test) + "/" + SHOWN)}
    assert [("bro" in row["path"], "ken.png" in row["path"]) for row in tables["failed"]] == [(True, True)]
    for name in ("top_losses.png", "confusion.png"):
        assert (report / name).read_bytes()[:4] == b"\x89PNG"
