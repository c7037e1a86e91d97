"""Files read from outside (exported ONNX models, code caches): damaged or crafted ones are refused by name.

Each crafted kind is a file a user may be given or left with; each is refused
with the library's own error (:class:`~skcnn.serving.ModelFileError`,
:class:`~skcnn.CacheError`) naming the file and what is wrong, before it costs
memory or is served, while a valid file still loads and predicts.
"""

import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from skcnn import CacheError, CNNFeatureTransformer
from skcnn.cache import CacheWarning, CodeCache, fingerprint
from skcnn.cli import main as cli_main
from skcnn.serving import MAX_SIDE, METADATA_KEY, ModelFileError, OnnxImageClassifier

# -- exported ONNX files ------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny exported classifier (an untrained ResNet-18 at 32 px, string classes), its images, the fitted model."""
    from skcnn.export import to_onnx

    folder = tmp_path_factory.mktemp("onnx")
    images = np.random.default_rng(0).integers(0, 256, (6, 40, 48, 3), dtype=np.uint8)
    labels = ["a", "b", "a", "b", "a", "b"]
    transformer = CNNFeatureTransformer(backbone="resnet18", weights=None, input_size=32, progress=False)
    model = make_pipeline(transformer, LogisticRegression()).fit(images, labels)
    return to_onnx(model, folder / "model.onnx"), images, model


def tampered(path, out, change):
    """A copy of the exported file ``path`` at ``out`` whose metadata ``change`` (a function of the dict) edited."""
    import onnx

    graph = onnx.load(path)
    [prop] = [prop for prop in graph.metadata_props if prop.key == METADATA_KEY]
    meta = json.loads(prop.value)
    change(meta)
    prop.value = json.dumps(meta)  # NaN is written as JSON's NaN, as a hand-edited file may hold it
    onnx.save(graph, out)
    return out


def test_a_valid_exported_file_loads_and_predicts(exported, tmp_path):
    path, images, model = exported
    served = OnnxImageClassifier(path)
    assert served.metadata_["format_version"] == 1
    assert (served.predict(images) == model.predict(images)).all()
    # A file of skcnn 0.7 has no format_version: it is format 1, and still read.
    old = OnnxImageClassifier(tampered(path, tmp_path / "old.onnx", lambda meta: meta.pop("format_version")))
    assert (old.predict(images) == model.predict(images)).all()


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(meta):
        for key in keys[:-1]:
            meta = meta[key]
        meta[keys[-1]] = value

    return change


TAMPERED = [
    ("resize-20000px", _set("preprocessing", "resize_size", 20_000), r"'preprocessing\.resize_size' holds 20000"),
    ("kind-missing", lambda meta: meta.pop("kind"), r"'kind' holds nothing \(the field is missing\)"),
    ("kind-unknown", _set("kind", "segmenter"), r"'kind' holds 'segmenter'"),
    ("interpolation-unknown", _set("preprocessing", "interpolation", "hamming"), r"'preprocessing\.interpolation'"),
    ("crop-past-resize", _set("preprocessing", "crop_size", [64, 64]), r"'preprocessing\.crop_size' holds \[64, 64\]"),
    ("crop-zero", _set("preprocessing", "crop_size", [0, 32]), r"'preprocessing\.crop_size' holds \[0, 32\]"),
    ("mean-of-2", _set("preprocessing", "mean", [0.5, 0.5]), r"'preprocessing\.mean' holds \[0\.5, 0\.5\]"),
    ("std-nan", _set("preprocessing", "std", [0.2, float("nan"), 0.2]), r"'preprocessing\.std' holds \[0\.2, nan"),
    ("std-zero", _set("preprocessing", "std", [0.2, 0.0, 0.2]), r"'preprocessing\.std'.*above 0"),
    ("margin-inf", _set("preprocessing", "jpeg_dct_margin", float("inf")), r"'preprocessing\.jpeg_dct_margin'"),
    ("no-classes", _set("classes", []), r"'classes' holds \[\]"),
    ("input-name-number", _set("input", "name", 7), r"'input\.name' holds 7"),
    ("input-not-in-graph", _set("input", "name", "pixels"), r"'input\.name' holds 'pixels'.*graph \['images'\]"),
    ("output-not-in-graph", _set("outputs", ["label", "logits"]), r"'outputs' holds .*outputs of the graph"),
    ("future-format", _set("format_version", 99), r"written by a newer skcnn .*format_version 99.*upgrade skcnn"),
]


@pytest.mark.parametrize("change, message", [pytest.param(c, m, id=name) for name, c, m in TAMPERED])
def test_tampered_metadata_is_refused_naming_the_field(exported, tmp_path, change, message):
    path = tampered(exported[0], tmp_path / "tampered.onnx", change)
    with pytest.raises(ModelFileError, match=message) as caught:
        OnnxImageClassifier(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)  # the CLI's error handler prints it as it is


def test_a_graph_whose_input_disagrees_with_the_crop_size_is_refused(exported, tmp_path):
    def smaller_crop(meta):  # consistent metadata (crop within resize, input size), but the graph takes 32 px
        meta["preprocessing"]["crop_size"] = meta["input"]["size"] = [16, 16]

    path = tampered(exported[0], tmp_path / "t.onnx", smaller_crop)
    with pytest.raises(ModelFileError, match=r"graph's input 'images' is tensor\(uint8\) of shape \['batch', 32, 32"):
        OnnxImageClassifier(path)


def test_files_that_are_not_skcnn_models_are_refused_by_name(exported, tmp_path):
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelFileError, match=r"garbage\.onnx is not an ONNX model ONNX Runtime can load"):
        OnnxImageClassifier(tmp_path / "garbage.onnx")
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        OnnxImageClassifier(tmp_path / "missing.onnx")
    import onnx

    graph = onnx.load(exported[0])
    graph.metadata_props[0].value = "{not json"
    onnx.save(graph, tmp_path / "json.onnx")
    with pytest.raises(ModelFileError, match=r"json\.onnx: its 'skcnn' metadata is not valid JSON"):
        OnnxImageClassifier(tmp_path / "json.onnx")


def test_cli_predict_names_the_field_without_a_traceback(exported, tmp_path, capsys):
    path = tampered(exported[0], tmp_path / "big.onnx", _set("preprocessing", "resize_size", 20_000))
    Image.fromarray(exported[1][0]).save(tmp_path / "image.png")
    assert cli_main(["predict", str(path), str(tmp_path / "image.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skcnn predict: error: ") and "preprocessing.resize_size" in err
    assert f"an integer from 1 to {MAX_SIDE}" in err and "Traceback" not in err


# -- code caches --------------------------------------------------------------

CONFIG = {"format_version": 1, "backbone": "synthetic", "layer": "x", "width": 3}
FP = fingerprint(CONFIG)


def keys_of(*numbers):
    return [f"{k:032d}" for k in numbers]


def batch(numbers, codes):
    return {"x": (CONFIG, keys_of(*numbers), np.asarray(codes, np.float32).reshape(len(numbers), 3))}


@pytest.fixture
def cache_file(tmp_path):
    """A compacted cache of images 1-4 under CONFIG (codes k, k, k for image k)."""
    path = tmp_path / "c.h5"
    CodeCache(path).write(batch([1, 2, 3, 4], np.repeat(np.arange(1.0, 5.0), 3)))
    CodeCache(path).compact()
    return path


def replaced(path, name, data=None, **create):
    """``configs/<FP>/<name>`` of the file replaced by ``data`` (or a dataset made with ``create``)."""
    with h5py.File(path, "r+") as f:
        group = f[f"configs/{FP}"]
        del group[name]
        group.create_dataset(name, data=data, **create)


def crafted_configs_dataset(path):
    with h5py.File(path, "r+") as f:
        del f["configs"]
        f["configs"] = np.arange(3)


def crafted_group_as_dataset(path):
    with h5py.File(path, "r+") as f:
        del f[f"configs/{FP}"]
        f[f"configs/{FP}"] = np.arange(3)


CRAFTED = {
    "wider-codes": (lambda path: replaced(path, "codes", np.zeros((4, 5), np.float32)), r"shape \(4, 5\).*width 3"),
    "configs-as-dataset": (crafted_configs_dataset, "/configs holds a dataset, where a cache has a group"),
    "config-as-dataset": (crafted_group_as_dataset, f"/configs/{FP} holds a dataset, where a cache has a group"),
    "int-keys": (lambda path: replaced(path, "keys", np.arange(4)), "int64 keys"),
    "float64-codes": (lambda path: replaced(path, "codes", np.zeros((4, 3))), "float64 codes"),
    "no-codes": (lambda path: _delete(path, "codes"), "nothing under 'codes'"),
    "gzip-codes": (
        lambda path: replaced(path, "codes", np.ones((4, 3), np.float32), compression="gzip"),
        "HDF5 filter 1, where a cache uses lzf or none",
    ),
}


def _delete(path, name):
    with h5py.File(path, "r+") as f:
        del f[f"configs/{FP}/{name}"]


@pytest.mark.parametrize("kind", list(CRAFTED))
@pytest.mark.parametrize("operation", ["lookup", "read", "configs", "compact"])
def test_crafted_cache_files_are_refused_by_name(cache_file, kind, operation):
    craft, message = CRAFTED[kind]
    craft(cache_file)
    CodeCache(cache_file).write(batch([5], [5, 5, 5]))  # a segment: compact has something to merge
    run = {
        "lookup": lambda cache: cache.lookup({"x": CONFIG}, keys_of(1, 5)),
        "read": lambda cache: cache.read(FP),
        "configs": lambda cache: cache.configs(),
        "compact": lambda cache: cache.compact(),
    }[operation]
    with pytest.raises(CacheError, match=message) as caught:
        run(CodeCache(cache_file))
    assert str(cache_file) in str(caught.value)


def test_cli_cache_info_names_a_crafted_file(cache_file, capsys):
    crafted_configs_dataset(cache_file)
    assert cli_main(["cache", "info", str(cache_file)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and str(cache_file) in err and "Traceback" not in err


ROWS_SCRIPT = """
import resource, sys
import numpy as np
from skcnn.cache import CacheError, CodeCache
config = {"format_version": 1, "backbone": "synthetic", "layer": "x", "width": 64}
cache = CodeCache(sys.argv[1])
calls = {"lookup": lambda: cache.lookup({"x": config}, ["0" * 32]), "configs": cache.configs,
         "read": lambda: cache.read(sys.argv[2])}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
# Without the checks a call takes GBs: bounded here, so that it fails as MemoryError rather than swap.
address_space = resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, address_space))
for name, call in calls.items():
    try:
        call()
        print(name, "served")
    except CacheError as error:
        print(name, "refused", "not in the file" in str(error))
    except MemoryError:
        print(name, "MemoryError")
print("grown_mb", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_a_tiny_file_declaring_20_million_rows_costs_no_memory(tmp_path):
    # ~20 kB on disk, declaring 20,000,000 keys (640 MB) and codes of 64 floats (5 GB), in chunks never written.
    path, rows, config = tmp_path / "c.h5", 20_000_000, {**CONFIG, "width": 64}
    with h5py.File(path, "w") as f:
        f.attrs["format"], f.attrs["format_version"] = "skcnn code cache", 1
        group = f.create_group(f"configs/{fingerprint(config)}")
        group.attrs["config"], group.attrs["layer"], group.attrs["n_rows"] = json.dumps(config), "x", rows
        keys = group.create_dataset("keys", shape=(rows,), dtype="S32", chunks=(4096,), maxshape=(None,))
        keys[:4096] = np.asarray(keys_of(*range(4096)), "S32")
        codes = group.create_dataset(
            "codes", shape=(rows, 64), dtype=np.float32, chunks=(4096, 64), maxshape=(None, 64), compression="lzf"
        )
        codes[:4096] = 1.0
    assert path.stat().st_size < 200_000
    result = subprocess.run(
        [sys.executable, "-c", ROWS_SCRIPT, str(path), fingerprint(config)], capture_output=True, text=True, check=True
    )
    lines = result.stdout.split("\n")
    assert lines[:3] == ["lookup refused True", "configs refused True", "read refused True"], result.stdout
    assert float(lines[3].split()[1]) < 200  # MB of peak memory the three calls added


@pytest.mark.parametrize("first_copy", ["main-file", "segment"])
def test_non_finite_codes_are_misses_and_compaction_keeps_a_finite_copy(tmp_path, first_copy):
    path = tmp_path / "c.h5"
    cache = CodeCache(path)
    store = cache.write(batch([1, 2, 3], np.repeat([1.0, 2.0, 3.0], 3)))
    if first_copy == "main-file":
        cache.compact()
        store = path
    with h5py.File(store, "r+") as f:  # images 2 and 3 damaged on disk
        f[f"configs/{FP}/codes"][1:3, 1] = [np.nan, np.inf]
    with pytest.warns(CacheWarning, match=r"not finite numbers.*\{'x': 2\}"):
        found, codes = cache.lookup({"x": CONFIG}, keys_of(1, 2, 3))["x"]
    assert found.tolist() == [True, False, False] and codes.tolist() == [[1, 1, 1]]
    cache.write(batch([2], [2, 2, 2]))  # image 2 computed again: a later copy, finite
    with pytest.warns(CacheWarning, match=r"\{'x': 2\}"):  # image 2's first copy, image 3's
        found, codes = cache.lookup({"x": CONFIG}, keys_of(1, 2, 3))["x"]
    assert found.tolist() == [True, True, False] and codes.tolist() == [[1, 1, 1], [2, 2, 2]]
    keys, read = cache.read(FP)
    assert keys.tolist() == keys_of(1, 2) and read.tolist() == [[1, 1, 1], [2, 2, 2]]
    cache.compact()  # each image's first finite copy; image 3 has none, and is left out
    with h5py.File(path) as f:
        assert [int(k) for k in f[f"configs/{FP}/keys"][:]] == [1, 2]
        assert f[f"configs/{FP}/codes"][:].tolist() == [[1, 1, 1], [2, 2, 2]]
        assert f[f"configs/{FP}"].attrs["n_rows"] == 2
    found, _ = cache.lookup({"x": CONFIG}, keys_of(1, 2, 3))["x"]  # no warning: pytest's settings make none fail
    assert found.tolist() == [True, True, False]


def test_a_nan_cached_code_is_computed_again_not_served(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    path = tmp_path / "c.h5"
    params = dict(backbone="resnet18", weights=None, input_size=32, cache=str(path), progress=False)
    expected = CNNFeatureTransformer(**params).fit(images).transform(images)
    CodeCache(path).compact()
    with h5py.File(path, "r+") as f:
        [group] = f["configs"].values()
        group["codes"][2, 5] = np.nan  # one value of one image's stored codes
    transformer = CNNFeatureTransformer(**params).fit(images)
    with pytest.warns(CacheWarning, match="computed again"):
        codes = transformer.transform(images)
    assert (transformer.cache_info_.hits, transformer.cache_info_.computed) == (5, 1)
    np.testing.assert_array_equal(codes, expected)


def test_a_killed_compactions_temporary_is_removed_at_once(tmp_path):
    path = tmp_path / "c.h5"
    cache = CodeCache(path)
    cache.write(batch([1], [1, 1, 1]))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".c.h5.{dead.pid}-0badf00d.tmp"  # a compaction killed while writing the new file
    leftover.write_bytes(b"\x89HDF half a file")
    segments = tmp_path / "c.h5.segments"
    in_flight = segments / f".{time.time_ns():020d}-1-abcdef01.h5.{dead.pid}-12345678.tmp"
    old = segments / f".{time.time_ns():020d}-1-abcdef02.h5.{dead.pid}-87654321.tmp"
    for temporary in (in_flight, old):
        temporary.write_bytes(b"\x89HDF half a batch")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert cache.compact() == 1
    assert not leftover.exists()  # written only under the lock this compaction holds: a dead writer's
    assert not old.exists()
    # A segment's writer holds no lock and may run on another machine sharing the storage: only age tells.
    assert in_flight.exists()
