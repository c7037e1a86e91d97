"""skcnn.dask on a LocalCluster of two worker processes, with the packaged
pretrained EfficientNet-Lite0 and small image files."""

import os
import signal
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

distributed = pytest.importorskip("dask.distributed")
import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402

import skcnn.dask  # noqa: E402
from skcnn import CNNFeatureTransformer  # noqa: E402
from skcnn.cache import CodeCache  # noqa: E402
from skcnn.images import BadImagesError, BadImagesWarning  # noqa: E402
from skcnn.network import onnx_runtime  # noqa: E402

PARAMS = dict(backbone="efficientnet_lite0", input_size=64, batch_size=4)
N = 60
# Workers run torch with one thread, this process with two: sums are
# reduced in another order, so codes agree to float32 rounding, not bitwise.
TOLERANCE = dict(rtol=1e-4, atol=1e-4)


ENVIRONMENT = dict(os.environ)


@pytest.fixture(autouse=True)
def environment_kept():
    """A LocalCluster's nannies run in this process and set OMP_NUM_THREADS=1
    (and more) in its environment whenever they start a worker: subprocesses
    of later tests would then run torch on one thread."""
    yield
    for name in [name for name in os.environ if name not in ENVIRONMENT and not name.startswith("PYTEST_")]:
        del os.environ[name]
    os.environ.update(ENVIRONMENT)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=50,
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    found = []
    for i in range(N):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (24 + i % 17, 32, 3), dtype=np.uint8)).save(path)
        found.append(str(path))
    return found


@pytest.fixture(scope="module")
def reference(paths):
    return CNNFeatureTransformer(**PARAMS).fit(paths).transform(paths)


def stored_keys(path):
    """Every key row of the main file, duplicates included."""
    with h5py.File(path, "r") as f:
        return [key for group in f["configs"].values() for key in group["keys"][: group.attrs["n_rows"]]]


@pytest.mark.slow
def test_codes_equal_the_single_process_transform_and_merge_into_one_cache(client, paths, reference, tmp_path):
    cache = tmp_path / "codes.h5"
    codes, info = skcnn.dask.extract(paths, client=client, cache=cache, paths_per_task=8, return_info=True, **PARAMS)
    assert isinstance(codes, da.Array) and codes.shape == reference.shape and codes.dtype == np.float32
    np.testing.assert_allclose(codes.compute(), reference, **TOLERANCE)  # rows in the order of paths
    assert info.n_tasks == 8 and info.failed == [] and info.cache_info.computed == N
    # One main file holding each image once; no shard left behind.
    keys = stored_keys(cache)
    assert len(keys) == len(set(keys)) == N
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.h5", "codes.h5.lock"]
    # Any machine reads it as hits.
    t = CNNFeatureTransformer(**PARAMS, cache=str(cache)).fit(paths)
    np.testing.assert_allclose(t.transform(paths), reference, **TOLERANCE)
    assert t.cache_info_.hits == N and t.cache_info_.computed == 0


def loads():
    from skcnn.network import backbones

    return backbones.REGISTRY.builds, len(skcnn.dask._transformers), skcnn.dask._configured


@pytest.mark.slow
def test_the_network_is_loaded_once_per_worker_process(client, paths):
    before = client.run(loads)
    skcnn.dask.extract(paths, client=client, paths_per_task=4, **PARAMS)  # 15 tasks
    skcnn.dask.extract(paths, client=client, paths_per_task=4, **PARAMS)
    for worker, (misses, transformers, configured) in client.run(loads).items():
        assert misses == 1  # one network load per worker process, whatever the tasks
        assert transformers <= before[worker][1] + 1  # one transformer per parameter set
        assert configured  # torch threads and allocator set for extraction


@pytest.mark.slow  # 8-10 s on 2 cores: two runs on the cluster
def test_rerun_after_a_total_failure_computes_only_what_no_shard_holds(client, paths, reference, tmp_path):
    cache = tmp_path / "codes.h5"
    # What a crashed run leaves: two workers' shards holding some images,
    # never merged, and a half-written segment.
    for shard, part in (("node1-11", paths[:20]), ("node2-12", paths[30:45])):
        CNNFeatureTransformer(**PARAMS, cache=CodeCache(cache, shard=shard)).fit(part).transform(part)
    (cache.parent / "codes.h5.shards" / "node1-11.h5.segments" / ".1-2-3.tmp").write_bytes(b"half a batch")
    assert sorted(CodeCache(cache).shard_names()) == ["node1-11", "node2-12"] and not cache.exists()

    codes, info = skcnn.dask.extract(paths, client=client, cache=cache, paths_per_task=10, return_info=True, **PARAMS)
    assert info.cache_info.hits == 35 and info.cache_info.computed == N - 35
    np.testing.assert_allclose(codes.compute(), reference, **TOLERANCE)
    keys = stored_keys(cache)
    assert len(keys) == len(set(keys)) == N and CodeCache(cache).shard_names() == []

    _, info = skcnn.dask.extract(paths, client=client, cache=cache, return_info=True, **PARAMS)
    assert info.cache_info.hits == N and info.cache_info.computed == 0


@pytest.mark.slow
def test_without_merge_the_shards_stay_and_are_read_as_hits(client, paths, tmp_path):
    cache = tmp_path / "codes.h5"
    skcnn.dask.extract(paths[:30], client=client, cache=cache, merge=False, **PARAMS)
    assert not cache.exists() and len(CodeCache(cache).shard_names()) >= 1
    t = CNNFeatureTransformer(**PARAMS, cache=str(cache)).fit(paths)
    t.transform(paths)
    assert t.cache_info_.hits == 30 and t.cache_info_.computed == N - 30


@pytest.mark.slow
def test_dask_bag_and_dataframe_column_of_paths(client, paths, reference):
    bag_codes = skcnn.dask.extract(db.from_sequence(paths, npartitions=3), client=client, **PARAMS)
    np.testing.assert_allclose(bag_codes.compute(), reference, **TOLERANCE)
    pandas = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    frame = dd.from_pandas(pandas.DataFrame({"path": paths}), npartitions=4)
    np.testing.assert_allclose(
        skcnn.dask.extract(frame["path"], client=client, **PARAMS).compute(), reference, **TOLERANCE
    )


@pytest.mark.slow  # 7-8 s: a local cluster's bad-image rows
def test_bad_images_fail_their_rows_naming_the_file(client, paths, reference, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    mixed = [*paths[:10], str(broken), *paths[10:20]]
    with pytest.raises(BadImagesError, match=r"broken.jpg") as error:
        skcnn.dask.extract(mixed, client=client, paths_per_task=4, **PARAMS)
    assert [f.index for f in error.value.failures] == [10]  # an index into the paths, not into a task
    with pytest.warns(BadImagesWarning, match="1 of 21 images could not be used"):
        codes = skcnn.dask.extract(mixed, client=client, paths_per_task=4, on_error="skip", **PARAMS).compute()
    assert np.isnan(codes[10]).all()
    np.testing.assert_allclose(np.delete(codes, 10, axis=0), reference[:20], **TOLERANCE)


def test_bad_parameters_are_clear_errors(client, paths):
    with pytest.raises(TypeError, match="unexpected keyword argument 'layers'"):
        skcnn.dask.extract(paths, client=client, layers="penultimate")
    with pytest.raises(ValueError, match="paths_per_task"):
        skcnn.dask.extract(paths, client=client, paths_per_task=0)
    with pytest.raises(ValueError, match="not_a_layer"):
        skcnn.dask.extract(paths, client=client, layer="not_a_layer", **{k: v for k, v in PARAMS.items()})


@pytest.mark.slow  # 6 s: the CLI against a local cluster
def test_cli_extract_on_a_dask_scheduler(client, paths, tmp_path, capsys):
    from skcnn.cli import main

    folder = os.path.dirname(paths[0])
    cache = tmp_path / "codes.h5"
    args = [
        "extract",
        folder,
        "--cache",
        str(cache),
        "--input-size",
        "64",
        "--batch-size",
        "4",
        "--dask-scheduler",
        client.scheduler.address,
        "--paths-per-task",
        "16",
    ]
    assert main(args) == 0
    assert f"{N} images: 0 already cached, {N} computed by 2 Dask worker(s) in 4 tasks" in capsys.readouterr().out
    assert main(args) == 0
    assert f"{N} images: {N} already cached, 0 computed" in capsys.readouterr().out


SLOW_BATCHES = 0.3  # seconds per batch on the workers: a kill lands mid-task even on a loaded machine


@pytest.mark.slow
def test_a_killed_worker_loses_at_most_its_batch_in_flight(client, paths, reference, tmp_path):
    def slow_down(seconds):
        from skcnn.codes import extraction

        real = extraction.view_codes_of_batch

        def slow(*args, **kwargs):
            time.sleep(seconds)
            return real(*args, **kwargs)

        extraction.view_codes_of_batch = slow

    client.run(slow_down, SLOW_BATCHES)
    pids = set(client.run(os.getpid).values())
    cache = tmp_path / "codes.h5"
    shards = tmp_path / "codes.h5.shards"
    result = {}

    def run():
        result["codes"], result["info"] = skcnn.dask.extract(
            paths, client=client, cache=cache, paths_per_task=20, return_info=True, **PARAMS
        )  # 5 batches per task: after the first one, over a second before the task ends

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(shards.glob("*.segments/*.h5")):
        time.sleep(0.02)
    victim = next(iter(shards.glob("*.segments/*.h5"))).parent.name.removesuffix(".h5.segments")
    pid = int(victim.rsplit("-", 1)[1])  # shards are named host-pid
    assert pid in pids
    os.kill(pid, signal.SIGKILL)  # after its first batch of its first task
    runner.join(timeout=300)
    assert not runner.is_alive()

    info = result["info"]
    print(f"killed worker {victim}: {info.cache_info}")
    np.testing.assert_allclose(result["codes"].compute(), reference, **TOLERANCE)
    keys = stored_keys(cache)
    assert len(keys) == len(set(keys)) == N  # every image exactly once
    assert info.cache_info.hits > 0  # the re-run task found the killed worker's finished batches
    assert info.cache_info.hits + info.cache_info.computed == N
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the worker


@pytest.mark.slow
def test_workers_run_onnxruntime_and_export_once_per_machine(client, paths, tmp_path):
    """The workers' exports go to the folder this process names (they inherit
    its environment); two workers starting together export one file."""
    params = dict(PARAMS, precision="fp32", layer="blocks.1")  # fp32 on a CPU: ONNX Runtime under auto
    exports = Path(os.environ[onnx_runtime.CACHE_DIR_ENV])
    before = set(exports.glob("*.onnx"))
    codes = skcnn.dask.extract(paths, client=client, paths_per_task=15, **params).compute()
    new = set(exports.glob("*.onnx")) - before
    assert len(new) == 1 and next(iter(new)).name.startswith("efficientnet_lite0-")
    runtimes = client.run(lambda: sorted({t.extractor_.runtime for t in skcnn.dask._transformers.values()}))
    assert all("onnxruntime" in found for found in runtimes.values())
    reference = CNNFeatureTransformer(runtime="torch", **params).fit_transform(paths)
    np.testing.assert_allclose(codes, reference, **TOLERANCE)
