"""Stores that trust only their owner, and leave nothing behind: decoded crops, checkpoints, exported graphs.

Another user on the machine may plant files where skcnn reads them (the
system's temporary folder is shared) and a fit may be killed at any moment;
neither may change what a later fit learns, nor leave files that no later
writer removes.
"""

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode

from skcnn.decoding import loading
from skcnn.decoding.preprocessing import Preprocessing
from skcnn.files import TEMPORARY_GLOB
from skcnn.finetuning import store
from skcnn.network import onnx_runtime

RECIPE = Preprocessing((24, 24), 28, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), InterpolationMode.BILINEAR)
ROW = 3 * 24 * 24


@pytest.fixture(autouse=True)
def own_folders(tmp_path, monkeypatch):
    """The default store and the user's cache folder in this test's own folder; no crops kept in memory."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # platformdirs' cache folder on Linux
    store.clear_decoded_images()
    yield
    store.clear_decoded_images()


def decoded(images, memory_limit, store_dir=None):
    return store.decoded_images(
        images, RECIPE, [], decode="auto", max_pixels=None, batch_size=4, memory_limit=memory_limit,
        store_dir=store_dir,
    )  # fmt: skip


def true_crops(images):
    return torch.stack([loading.decode(image, RECIPE) for image in images])


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def plant(images, store_dir) -> Path:
    """A segment in the store's own format, keyed by ``images``, that holds crops of another image.

    Written as a fit writes it, then its crops overwritten: what another
    user would put in a folder this user's fits read. Returns its folder.
    """
    decoded(images, 0, store_dir)
    store.clear_decoded_images()  # as a new process: nothing in memory
    (folder,) = [path for path in Path(store_dir).iterdir() if path.is_dir()]
    wrong = np.asarray(loading.decode(np.zeros((40, 40, 3), np.uint8), RECIPE)).tobytes()
    for crops in folder.glob("seg-*.u8"):
        crops.write_bytes(wrong * (crops.stat().st_size // ROW))
    return folder


def others_own(monkeypatch, planted: Path) -> None:
    """``planted`` seen as another user's: its owner, as ``lstat`` reports it, is not this process's user."""
    real_lstat = os.lstat

    def lstat(path, *args, **kwargs):
        info = real_lstat(path, *args, **kwargs)
        if Path(path) == planted:
            return os.stat_result((*info[:4], os.geteuid() + 1, *info[5:]))
        return info

    monkeypatch.setattr(os, "lstat", lstat)


@pytest.mark.parametrize("how", ["another owner", "group-writable", "symbolic link", "writable files"])
def test_a_segment_planted_in_store_dir_is_not_read(how, photos_and_arrays, tmp_path, decodes, monkeypatch):
    images = photos_and_arrays
    store_dir = tmp_path / "store"
    folder = plant(images, store_dir)
    if how == "another owner":
        others_own(monkeypatch, folder)
    elif how == "group-writable":
        folder.chmod(0o770)
    elif how == "symbolic link":  # the folder of the crops points to one another user wrote
        folder.rename(tmp_path / "elsewhere")
        folder.symlink_to(tmp_path / "elsewhere")
    else:  # a folder of this user's, but files anyone may change
        for path in folder.iterdir():
            path.chmod(0o666)
    planted = sorted(path.name for path in folder.iterdir())
    decodes.clear()
    if how == "writable files":  # the folder itself is fine: written to, without a warning
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            crops, kept = decoded(images, 0, store_dir)
    else:
        with pytest.warns(UserWarning, match=rf"store_dir: '{re.escape(str(folder))}'.*neither read from it"):
            crops, kept = decoded(images, 0, store_dir)
        assert sorted(path.name for path in folder.iterdir()) == planted  # nothing written there either
        assert list((tmp_path / "tmp" / f"skcnn-decoded-{os.geteuid()}" / folder.name).glob("seg-*.json"))
    assert len(decodes) == len(images) and kept == list(range(len(images)))
    torch.testing.assert_close(crops.read(range(len(images))), true_crops(images), rtol=0, atol=0)


@pytest.mark.parametrize("how", ["another owner", "group-writable"])
def test_a_default_folder_taken_by_another_user_is_not_used(how, photos_and_arrays, tmp_path, decodes, monkeypatch):
    images = photos_and_arrays
    default = tmp_path / "tmp" / f"skcnn-decoded-{os.geteuid()}"
    folder = plant(images, default)  # as if another user made the default folder first and filled it
    if how == "another owner":
        others_own(monkeypatch, default)
    else:
        default.chmod(0o777)
    decodes.clear()
    expected = rf"'{re.escape(str(default))}'.*decoded images go to '{re.escape(str(tmp_path / 'cache'))}"
    with pytest.warns(UserWarning, match=expected):
        crops, _ = decoded(images, 0)
    assert len(decodes) == len(images)
    torch.testing.assert_close(crops.read(range(len(images))), true_crops(images), rtol=0, atol=0)
    fallback = tmp_path / "cache" / "skcnn" / "decoded" / folder.name
    assert fallback.stat().st_mode & 0o777 == 0o700 and list(fallback.glob("seg-*.u8"))


def test_the_default_folder_and_its_files_are_the_users_only(photos_and_arrays, tmp_path):
    images = photos_and_arrays
    previous = os.umask(0o022)  # the usual umask: new files 0o644, folders 0o755
    try:
        decoded(images, 0)
    finally:
        os.umask(previous)
    root = tmp_path / "tmp" / f"skcnn-decoded-{os.geteuid()}"
    (shelf,) = root.iterdir()
    assert root.stat().st_mode & 0o777 == 0o700 and shelf.stat().st_mode & 0o777 == 0o700
    segments = list(shelf.iterdir())
    assert {path.suffix for path in segments} == {".u8", ".json"}
    assert {path.stat().st_mode & 0o777 for path in segments} == {0o600}


@pytest.mark.parametrize("given", [True, False], ids=["store_dir", "default"])
def test_a_fit_in_memory_never_looks_at_the_files(given, photos_and_arrays, tmp_path, decodes, monkeypatch):
    images = photos_and_arrays
    store_dir = tmp_path / "store" if given else None
    root = store_dir or tmp_path / "tmp" / f"skcnn-decoded-{os.geteuid()}"
    if given:
        decoded(images, 0, store_dir)  # files another process wrote
        store.clear_decoded_images()
    decodes.clear()
    looked = []
    for name in ("scandir", "listdir", "open", "stat", "lstat", "mkdir"):
        real = getattr(os, name)

        def recording(path=".", *args, _real=real, **kwargs):
            if str(root) in str(path):
                looked.append(path)
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, recording)
    crops, _ = decoded(images, 10**9, store_dir)
    assert looked == [] and len(decodes) == len(images)  # decoded, not read
    assert given or not root.exists()
    torch.testing.assert_close(crops.read(range(len(images))), true_crops(images), rtol=0, atol=0)


KILLED_FIT = """
import os, signal, sys
import numpy as np
from torchvision.transforms import InterpolationMode
from skcnn.finetuning import store
from skcnn.decoding.preprocessing import Preprocessing

RECIPE = Preprocessing((24, 24), 28, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), InterpolationMode.BILINEAR)
store.SEGMENT_BYTES = 2 * 3 * 24 * 24
def killed(*args, **kwargs):  # between the renames of the first segment's crops and its keys
    os.kill(os.getpid(), signal.SIGKILL)
store.atomic_write = killed
images = list(np.load(sys.argv[1]))
store.decoded_images(images, RECIPE, [], decode="auto", max_pixels=None, batch_size=4, memory_limit=0,
                     store_dir=sys.argv[2])
"""


def test_what_killed_fits_leave_is_removed_by_the_next_fit_that_writes(tmp_path, decodes):
    images = list(np.random.default_rng(1).integers(0, 256, (8, 30, 30, 3), dtype=np.uint8))
    np.save(tmp_path / "images.npy", np.stack(images))
    store_dir = tmp_path / "store"
    command = [sys.executable, "-c", KILLED_FIT, str(tmp_path / "images.npy"), str(store_dir)]
    killed = subprocess.run(command, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (folder,) = store_dir.iterdir()
    (orphan,) = folder.glob("seg-*.u8")  # crops whose keys never came
    assert not list(folder.glob("seg-*.json"))
    # More of the same from dead writers: a torn segment and a temporary file; and from a live fit, crops
    # between their two renames, which must stay.
    dead, live = dead_pid(), subprocess.Popen(["sleep", "60"])
    try:
        torn = folder / f"seg-{dead}-{'a' * 32}"
        (folder / f"{torn.name}.u8").write_bytes(orphan.read_bytes()[:-1])
        (folder / f"{torn.name}.json").write_text(json.dumps({"format": store.FORMAT, "keys": ["k0", "k1"]}))
        (folder / f".seg-{dead}-{'b' * 32}.u8.{dead}-deadbeef.tmp").write_bytes(b"\0" * 10)
        between = folder / f"seg-{live.pid}-{'c' * 32}.u8"
        between.write_bytes(orphan.read_bytes())
        crops, kept = decoded(images, 0, store_dir)
    finally:
        live.kill()
        live.wait()
    assert len(decodes) == len(images) and kept == list(range(len(images)))
    torch.testing.assert_close(crops.read(range(len(images))), true_crops(images), rtol=0, atol=0)
    assert not list(folder.glob(TEMPORARY_GLOB))
    left = {path.stem for path in folder.glob("seg-*.u8")} - {between.stem}
    assert left and left == {path.stem for path in folder.glob("seg-*.json")}  # every segment whole
    assert between.exists()


KILLED_SAVE = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("files", sys.argv[2])  # the standard library only: quick to start
files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(files)
with files.atomic_path(sys.argv[1]) as temporary:
    temporary.write_bytes(b"half a checkpoint")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_checkpoints_temporaries_of_killed_runs_are_removed_by_the_next_save(tmp_path):
    import skcnn.files
    from skcnn import CNNClassifier

    checkpoint = tmp_path / "ft.pt"
    command = [sys.executable, "-c", KILLED_SAVE, str(checkpoint), skcnn.files.__file__]
    killed = subprocess.run(command, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (left,) = tmp_path.glob(TEMPORARY_GLOB)
    assert left.name.startswith(".ft.pt.") and not checkpoint.exists()
    other = tmp_path / f".other.pt.{dead_pid()}-deadbeef.tmp"  # another target's: not this writer's to remove
    other.write_bytes(b"")
    X = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    params = dict(input_size=32, batch_size=8, max_epochs=1, unfreeze="blocks.6", early_stopping=False)
    CNNClassifier(**params, random_state=0, checkpoint=checkpoint).fit(X, np.array([0, 1] * 8))
    assert checkpoint.is_file() and list(tmp_path.glob(TEMPORARY_GLOB)) == [other]


@pytest.fixture
def graphs(tmp_path, monkeypatch):
    """A folder of exported graphs of its own, exports that write ``size`` bytes of dummy graph."""
    folder = tmp_path / "onnx"
    monkeypatch.setenv(onnx_runtime.CACHE_DIR_ENV, str(folder))
    monkeypatch.setattr(onnx_runtime, "tapped_graph", lambda *args: None)
    monkeypatch.setattr(onnx_runtime, "_export", lambda graph, layers, size, path: path.write_bytes(b"g" * 1000))
    monkeypatch.setattr(onnx_runtime, "_loads", lambda path: path.stat().st_size == 1000)
    return folder


def network(name: str) -> onnx_runtime.OnnxNetwork:
    return onnx_runtime.OnnxNetwork(torch.nn.Identity(), torch.float32, identity={"backbone": name})


def exported(name: str) -> Path:
    with network(name).exported(("layer",), "head") as path:
        return path


def test_the_graph_cache_keeps_its_bound_evicting_the_least_recently_used(graphs, monkeypatch):
    monkeypatch.setenv(onnx_runtime.CACHE_MAX_BYTES_ENV, "4000")
    paths = {name: exported(name) for name in "abce"}  # 1000 bytes each: within the bound
    assert sorted(graphs.glob("*.onnx")) == sorted(paths.values())
    for age, name in enumerate("abce"):
        os.utime(paths[name], (1000 + age, 1000 + age))  # a used first, ... e last
    assert exported("a") == paths["a"]  # used again: now the most recent
    monkeypatch.setenv(onnx_runtime.CACHE_MAX_BYTES_ENV, "3000")
    with open(paths["b"].with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # b is being loaded by another process
        new = exported("d")
    assert sorted(graphs.glob("*.onnx")) == sorted([paths["a"], paths["b"], new])  # c and e went
    assert not paths["c"].with_suffix(".lock").exists()
    monkeypatch.setenv(onnx_runtime.CACHE_MAX_BYTES_ENV, "0")
    assert exported("f").exists() and [path.stem for path in graphs.glob("*.onnx")] == [exported("f").stem]


def test_clear_graph_cache_empties_the_folder_but_for_graphs_in_use(graphs):
    paths = [exported(name) for name in "abc"]
    (graphs / f".x.onnx.{dead_pid()}-deadbeef.tmp").write_bytes(b"t" * 10)  # an export killed midway
    assert onnx_runtime.clear_graph_cache() == 3 * 1000 + 10
    assert list(graphs.iterdir()) == []
    paths = [exported(name) for name in "abc"]
    with open(paths[1].with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # being exported by another process
        assert onnx_runtime.clear_graph_cache() == 2 * 1000
    assert sorted(graphs.iterdir()) == sorted([paths[1], paths[1].with_suffix(".lock")])
    assert onnx_runtime.clear_graph_cache() == 1000 and onnx_runtime.clear_graph_cache() == 0


@pytest.mark.parametrize("value", ["lots", "-1", "1.5GB"])
def test_a_bad_graph_cache_bound_is_a_clear_error(value, monkeypatch):
    monkeypatch.setenv(onnx_runtime.CACHE_MAX_BYTES_ENV, value)
    with pytest.raises(ValueError, match=rf"SKCNN_ONNX_CACHE_MAX_BYTES={value!r}: give a number of bytes"):
        onnx_runtime.max_cache_bytes()
