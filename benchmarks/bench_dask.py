"""Scale-out on Dask: workers, scheduling overhead, shard merge and lookups.

    python benchmarks/bench_dask.py            # all sections, about 6 minutes on 2 cores
    python benchmarks/bench_dask.py --n 1024   # more images per run

1. Throughput, files to codes, side by side in one run: the transformer in
   this process, then ``skcnn.dask.extract`` on a LocalCluster of one worker
   with two threads and of two single-thread workers (the same two cores).
2. Scheduling overhead: the same extraction at several ``paths_per_task``
   against the in-process run, and the cost of one empty Dask task.
3. The merge step and lookups at scale, on synthetic shards: eight shards
   of ``--shard-rows`` codes of width 1280 (two thirds zeros, like ReLU'd
   penultimate codes) merged into one main file (seconds, MB/s, peak
   memory of the merging process), and the lookups a task runs before
   computing: a new task's (misses) and a re-run task's (hits).

The images are the JPEGs of ``bench_throughput.py`` (500-1000 px); the
network is the packaged pretrained EfficientNet-Lite0 at 224, fp32, batch 8.
Each run is timed after the workers have loaded the network.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import distributed
import numpy as np
from bench_throughput import make_jpegs
from reporting import machine_line, table

import skcnn.dask
from skcnn import CNNFeatureTransformer
from skcnn.cache import CodeCache

PARAMS = dict(backbone="efficientnet_lite0", batch_size=8)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def cluster(n_workers: int, threads: int) -> distributed.Client:
    local = distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads,
        processes=True,
        dashboard_address=None,
        silence_logs=50,
    )
    client = distributed.Client(local)
    for worker in client.scheduler_info()["workers"]:  # every worker loads the network now, in a task
        client.submit(skcnn.dask._width_on_worker, PARAMS, None, workers=[worker], pure=False).result()
    return client


def throughput(paths: list[str], rounds: int, task_sizes: list[int]) -> None:
    local = CNNFeatureTransformer(**PARAMS).fit(paths)
    local.transform(paths[:16])
    runs: dict[str, list[float]] = {}
    clients = {"1 worker x 2 threads": cluster(1, 2), "2 workers x 1 thread": cluster(2, 1)}
    for _ in range(rounds):  # interleaved: the machine's load drifts
        runs.setdefault("in this process (transform)", []).append(timed(lambda: local.transform(paths)))
        for name, client in clients.items():
            runs.setdefault(f"dask, {name}, 64 per task", []).append(
                timed(lambda client=client: skcnn.dask.extract(paths, client=client, paths_per_task=64, **PARAMS))
            )
    one_worker = clients["1 worker x 2 threads"]
    for size in task_sizes:
        runs[f"dask, 1 worker x 2 threads, {size} per task"] = [
            timed(lambda size=size: skcnn.dask.extract(paths, client=one_worker, paths_per_task=size, **PARAMS))
        ]
    base = min(runs["in this process (transform)"])
    print(f"\n1-2. {len(paths)} JPEGs to codes (best of {rounds} interleaved rounds for the first three rows)")
    table(
        ["run", "s", "img/s", "time / in-process"],
        [[name, f"{min(t):.1f}", f"{len(paths) / min(t):.1f}", f"{min(t) / base:.3f}"] for name, t in runs.items()],
    )
    tasks = 2000
    empty = min(timed(lambda: one_worker.gather(one_worker.map(int, range(tasks), pure=False))) for _ in range(3))
    per_task = empty / tasks
    per_image = base / len(paths)
    print(
        f"\n   one empty Dask task: {1e3 * per_task:.2f} ms (best of 3 x {tasks} tasks)"
        f"; one image here: {1e3 * per_image:.1f} ms of compute"
    )
    print("   scheduling share at 256 images per task = task cost / (task cost + 256 x image cost):")
    for label, image_ms in (("this CPU", 1e3 * per_image), ("a GPU worker at 2,000 img/s", 0.5)):
        share = 1e3 * per_task / (1e3 * per_task + 256 * image_ms)
        print(f"     {label}: {100 * share:.3f} %")
    for client in clients.values():
        cluster_ = client.cluster
        client.close()
        cluster_.close()


def synthetic_shards(cache: Path, shards: int, rows: int, width: int = 1280) -> int:
    """``shards`` shards of ``rows`` distinct codes each; returns their bytes on disk."""
    rng = np.random.default_rng(0)
    config = {"format_version": 1, "backbone": "synthetic", "layer": "penultimate", "width": width}
    for s in range(shards):
        writer = CodeCache(cache, shard=f"worker-{s}")
        for start in range(0, rows, 4096):  # a segment per 4096 rows, compacted as workers do
            n = min(4096, rows - start)
            codes = np.maximum(rng.standard_normal((n, width), dtype=np.float32) - 0.43, 0)
            keys = [f"{s:04d}{start + i:028d}" for i in range(n)]
            writer.write({"layer": (config, keys, codes)})
            if writer.should_compact():
                writer.compact()
        writer.compact()
    return sum(p.stat().st_size for p in (cache.parent / (cache.name + ".shards")).glob("*.h5"))


MERGE = """
import re, sys, time
from skcnn.cache import CodeCache
def high_water_mib():  # this process's peak resident memory (ru_maxrss would include the parent's)
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
base = high_water_mib()
start = time.perf_counter()
CodeCache(sys.argv[1]).compact(remove_shards=True)
print(time.perf_counter() - start, base, high_water_mib())
"""


def merge_and_lookup(shards: int, rows: int) -> None:
    width = 1280
    config = {"format_version": 1, "backbone": "synthetic", "layer": "penultimate", "width": width}
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "codes.h5"
        stored = synthetic_shards(cache, shards, rows)
        reader = CodeCache(cache)
        new_task = [f"{'x' * 32}"[: 32 - 6] + f"{i:06d}" for i in range(256)]  # stored nowhere
        rerun_task = [f"{3:04d}{i:028d}" for i in range(1000, 1256)]  # one shard, stored together
        first = timed(lambda: reader.lookup({"layer": config}, new_task))
        again = timed(lambda: reader.lookup({"layer": config}, new_task))
        hits = timed(lambda: reader.lookup({"layer": config}, rerun_task))
        out = subprocess.run([sys.executable, "-c", MERGE, str(cache)], capture_output=True, text=True, check=True)
        merge, rss_base, rss_peak = map(float, out.stdout.split())
        merged = timed(lambda: reader.lookup({"layer": config}, rerun_task))
        raw = shards * rows * width * 4
        print(
            f"\n3. {shards} shards x {rows} codes of width {width}: {raw / 2**20:.0f} MiB of float32, "
            f"{stored / 2**20:.0f} MiB on disk (lzf)"
        )
        table(
            ["step", "s", "note"],
            [
                ["a new task's lookup (256 misses), first", f"{first:.3f}", "reads every shard's keys"],
                ["the next task's lookup (256 misses)", f"{again:.4f}", "keys indexed in this process"],
                ["a re-run task's lookup (256 hits)", f"{hits:.3f}", "reads the rows"],
                [
                    "merge into one main file (a new process)",
                    f"{merge:.1f}",
                    f"{raw / 2**20 / merge:.0f} MiB/s of codes; peak RSS {rss_base:.0f} -> {rss_peak:.0f} MiB",
                ],
                ["a re-run task's lookup after the merge", f"{merged:.3f}", "first read of the merged keys"],
            ],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=384, help="JPEG files per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--task-sizes", type=int, nargs="+", default=[8, 32, 128, 384])
    parser.add_argument("--shard-rows", type=int, default=25_000)
    parser.add_argument("--sections", nargs="+", choices=["throughput", "merge"], default=["throughput", "merge"])
    args = parser.parse_args()
    print(machine_line(dask, distributed))
    if "throughput" in args.sections:
        with tempfile.TemporaryDirectory() as folder:
            paths = make_jpegs(Path(folder), args.n)
            size = np.mean([Path(p).stat().st_size for p in paths])
            print(f"{len(paths)} JPEG files, {size / 1024:.0f} KiB on average")
            throughput(paths, args.rounds, args.task_sizes)
    if "merge" in args.sections:
        merge_and_lookup(8, args.shard_rows)


if __name__ == "__main__":
    main()
