"""What the HDF5 code cache (``CNNFeatureTransformer(cache=...)``) saves, and what it costs.

Three measurements, each side by side in one run (timings on shared machines
move by ~10% from run to run; the ratios are what to compare):

1. Re-run vs first run. ``--n-rerun`` real photographs (random crops, 300-700
   px, with flips, of scikit-image's CC0 sample images) are written as JPEG
   files (quality 90). The first ``transform`` of their paths computes and
   stores every code; a fresh transformer then transforms the same paths
   again (all cache hits). Printed: both times, images/s, their ratio, and
   the parts of the re-run: hashing the files alone
   (``skcnn.decoding.identity.image_key``) and reading the codes from the cache alone
   (``CodeCache.lookup``). The files sit in the OS page cache (just written):
   this is a warm re-run; from a cold disk, reading the files adds to the
   hashing time.
2. Incremental run. ``--n-incremental`` files go into an empty cache; a fresh
   transformer then transforms the folder grown by ``--grow`` (e.g. 400 ->
   440 files): its time as a fraction of the first run's, with
   ``cache_info_``.
3. Peak memory while filling a cache. ``--memory-sizes`` small random uint8
   arrays (``--memory-input-size`` px, distinct) given as a list are
   transformed into an empty cache, each run in its own process, and the
   same without a cache for reference (``--memory-repeats`` runs each,
   median). A background thread samples ``VmRSS`` from ``/proc/self/status``
   (and the kernel's ``VmHWM`` peak, reset before the run, is read too; the
   larger counts). The peak above the baseline (taken after loading the
   network, one warm-up run and building the inputs) is printed next to the
   size of the codes matrix ``transform`` returns and the RSS still held when
   it returns. A narrow layer (``blocks.1``: 24 codes) keeps that matrix
   small, so any growth of the cache's own memory with N shows.

Run from the repository root (about 4 minutes on a 2-core CPU VM; part 1 ~35 s,
part 2 ~25 s, part 3 ~3 min, mostly starting its 18 processes)::

    python benchmarks/bench_cache.py                   # all three parts
    python benchmarks/bench_cache.py --parts 1 --n-rerun 256
    python benchmarks/bench_cache.py --parts 3 --memory-sizes 2500,5000,10000,20000

Linux only for part 3 (``/proc``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from reporting import load_average, machine_line, table

# -- reporting ----------------------------------------------------------------


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


# -- test images ----------------------------------------------------------------

SOURCES = (
    "coffee",
    "chelsea",
    "astronaut",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "brick",
    "grass",
    "gravel",
)


def make_jpegs(folder: Path, n: int, seed: int) -> list[str]:
    """``n`` distinct JPEG files cut from scikit-image's sample photos."""
    import skimage.data
    from PIL import Image

    from skcnn.decoding.identity import image_key

    sources = [getattr(skimage.data, name)() for name in SOURCES]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, keys = [], set()
    while len(paths) < n:
        i = len(paths)
        source = sources[i % len(sources)]
        h = min(int(rng.integers(300, 701)), source.shape[0])
        w = min(int(rng.integers(300, 701)), source.shape[1])
        top = int(rng.integers(0, source.shape[0] - h + 1))
        left = int(rng.integers(0, source.shape[1] - w + 1))
        crop = source[top : top + h, left : left + w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.25:
            crop = crop[::-1]
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(np.ascontiguousarray(crop)).save(path, quality=90)
        key = image_key(path)
        if key not in keys:  # equal crops: draw again
            keys.add(key)
            paths.append(str(path))
    return paths


# -- parts 1 and 2 ----------------------------------------------------------------


def new_transformer(args, cache, fit_on):
    from skcnn import CNNFeatureTransformer

    return CNNFeatureTransformer(backbone=args.backbone, cache=cache, batch_size=args.batch_size, progress=False).fit(
        fit_on
    )


def warm_up(args) -> None:
    """Load the network and run it once, so no first-call cost lands in a timing."""
    from skcnn import CNNFeatureTransformer

    images = np.random.default_rng(1).integers(0, 256, (4, 240, 320, 3), dtype=np.uint8)
    CNNFeatureTransformer(backbone=args.backbone, batch_size=args.batch_size, progress=False).fit_transform(images)


def stored_config(cache_path: Path) -> dict:
    """The one configuration a cache file holds, as stored (documented layout)."""
    import h5py

    with h5py.File(cache_path, "r") as f:
        (group,) = f["configs"].values()
        return json.loads(group.attrs["config"])


def part_rerun(args, paths: list[str], work: Path) -> None:
    from skcnn.cache import CodeCache
    from skcnn.decoding.identity import image_key

    n = len(paths)
    cache_path = work / "rerun.h5"
    first_t = new_transformer(args, cache_path, paths[:1])
    first, codes_first = timed(first_t.transform, paths)
    info_first = first_t.cache_info_

    reruns, fits = [], []
    for _ in range(args.repeats):  # a fresh instance each time, as in a new session
        fit, rerun_t = timed(new_transformer, args, cache_path, paths[:1])
        seconds, codes_again = timed(rerun_t.transform, paths)
        fits.append(fit)
        reruns.append(seconds)
        assert rerun_t.cache_info_.hits == n and rerun_t.cache_info_.computed == 0, rerun_t.cache_info_
        assert np.array_equal(codes_first, codes_again), "re-run codes differ from the first run's"
    rerun = statistics.median(reruns)

    hashing = statistics.median(timed(lambda: [image_key(p) for p in paths])[0] for _ in range(args.repeats))
    keys = [image_key(p) for p in paths]
    config = stored_config(cache_path)
    cache = CodeCache(cache_path)
    lookups = []
    for _ in range(args.repeats):
        seconds, found = timed(cache.lookup, {"layer": config}, keys)
        lookups.append(seconds)
    assert found["layer"][0].all()
    lookup = statistics.median(lookups)
    mb = sum(os.path.getsize(p) for p in paths) / 2**20

    print(
        f"\n[1] Re-run vs first run: {n} JPEG files ({mb:.0f} MiB, {args.backbone}, "
        f"{first_t.input_size_[0]} px, batch {args.batch_size}); re-run: median of {args.repeats}, "
        "fresh transformer each"
    )
    table(
        ["run", "seconds", "images/s", "cache_info_"],
        [
            ["first (compute + store)", f"{first:.2f}", f"{n / first:.1f}", fmt_info(info_first)],
            ["re-run (all hits)", f"{rerun:.3f}", f"{n / rerun:.0f}", fmt_info(rerun_t.cache_info_)],
        ],
    )
    print(
        f"  speed-up re-run / first: {first / rerun:.0f}x   (goal >= 50x: "
        f"{'met' if first / rerun >= 50 else 'NOT met'})"
    )
    print(f"  codes/s served from the cache (whole re-run): {n / rerun:.0f}")
    print(
        f"  re-run parts: hashing the {n} files alone {hashing:.3f} s ({mb / hashing:.0f} MiB/s, "
        f"{hashing / rerun:.0%} of the re-run); reading the codes alone (CodeCache.lookup) "
        f"{lookup:.3f} s ({n / lookup:.0f} codes/s, {lookup / rerun:.0%}); the rest "
        f"{max(0.0, rerun - hashing - lookup):.3f} s"
    )
    print(
        f"  (fit of a fresh transformer, not in the times above: median {1000 * statistics.median(fits):.1f} ms; "
        f"cache on disk {mib(dir_size(cache_path))})"
    )


def part_incremental(args, paths: list[str], work: Path) -> None:
    n_old = args.n_incremental
    n_new = round(args.n_incremental * args.grow)
    old, grown = paths[:n_old], paths[: n_old + n_new]
    cache_path = work / "incremental.h5"
    t_first = new_transformer(args, cache_path, old[:1])
    first, _ = timed(t_first.transform, old)
    t_second = new_transformer(args, cache_path, grown[:1])
    second, _ = timed(t_second.transform, grown)
    ideal = n_new / n_old

    print(
        f"\n[2] Incremental run: {n_old} files into an empty cache, then the folder grown by "
        f"{args.grow:.0%} ({n_old + n_new} files) with a fresh transformer"
    )
    table(
        ["run", "images", "seconds", "of first run", "cache_info_"],
        [
            ["first (empty cache)", n_old, f"{first:.2f}", "1.00", fmt_info(t_first.cache_info_)],
            [
                f"grown folder (+{n_new})",
                n_old + n_new,
                f"{second:.2f}",
                f"{second / first:.3f}",
                fmt_info(t_second.cache_info_),
            ],
        ],
    )
    print(f"  second run / first run: {second / first:.3f} (goal about {ideal:.2f}, the share of new images)")


def fmt_info(info) -> str:
    return f"hits={info.hits} misses={info.misses} computed={info.computed}"


def dir_size(cache_path: Path) -> int:
    total = cache_path.stat().st_size if cache_path.exists() else 0
    segments = cache_path.with_name(cache_path.name + ".segments")
    if segments.is_dir():
        total += sum(p.stat().st_size for p in segments.iterdir())
    return total


# -- part 3: memory -------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakRSS:
    """Peak resident memory above the baseline while the block runs (bytes):
    ``sampled`` by a thread reading VmRSS every ``interval`` s, and ``hwm``
    from the kernel's VmHWM (None where it cannot be reset)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        self.baseline = _status_kib("VmRSS") * 1024
        self._peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _status_kib("VmRSS") * 1024)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _status_kib("VmRSS") * 1024)
        self.sampled = self._peak - self.baseline
        self.hwm = _status_kib("VmHWM") * 1024 - self.baseline if self._hwm_reset else None
        return False


def memory_child(args) -> None:
    """One size of part 3, in its own process; prints one JSON line."""
    from skcnn import CNNFeatureTransformer

    n = args._memory_child
    work = Path(args._work)
    tag = f"{n}-{'nocache' if args._no_cache else 'cache'}-{args._repeat}"
    rng = np.random.default_rng([args.seed, n, args._repeat])
    size = args.memory_input_size

    def transformer(cache):
        return CNNFeatureTransformer(
            backbone=args.backbone,
            layer=args.memory_layer,
            input_size=size,
            batch_size=args.memory_batch_size,
            cache=None if args._no_cache else cache,
            progress=False,
        )

    # Warm-up: every code path (compute, store, compact, look up) once, on other images.
    warm = list(rng.integers(0, 256, (4 * args.memory_batch_size, size, size, 3), dtype=np.uint8))
    for _ in range(2):
        transformer(work / f"warm-{tag}.h5").fit_transform(warm)
    del warm
    # Distinct random images as a list (views of one block, built before the baseline).
    block = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    images = list(block)
    cache_path = work / f"memory-{tag}.h5"
    cnn = transformer(cache_path).fit(images[:1])
    gc.collect()
    with PeakRSS() as peak:
        start = time.perf_counter()
        codes = cnn.transform(images)
        seconds = time.perf_counter() - start
        held = _status_kib("VmRSS") * 1024 - peak.baseline  # codes and all else still alive
    print(
        json.dumps(
            {
                "n": n,
                "cache": not args._no_cache,
                "seconds": seconds,
                "baseline": peak.baseline,
                "peak": max(peak.sampled, peak.hwm or 0),
                "sampled": peak.sampled,
                "hwm": peak.hwm,
                "held": held,
                "codes_bytes": codes.nbytes,
                "width": codes.shape[1],
                "inputs_bytes": block.nbytes,
                "computed": cnn.cache_info_.computed if not args._no_cache else n,
                "cache_bytes": dir_size(cache_path),
            }
        )
    )
    for stale in work.glob(f"*-{tag}.h5*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def part_memory(args, work: Path) -> None:
    results: dict[tuple[int, bool], list[dict]] = {}
    for repeat in range(args.memory_repeats):  # interleaved, so drifts in load hit every size alike
        for n in args.memory_sizes:
            for no_cache in (False, True):
                command = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--_memory-child",
                    str(n),
                    "--_work",
                    str(work),
                    "--_repeat",
                    str(repeat),
                    "--backbone",
                    args.backbone,
                    "--memory-layer",
                    args.memory_layer,
                    "--memory-input-size",
                    str(args.memory_input_size),
                    "--memory-batch-size",
                    str(args.memory_batch_size),
                    "--seed",
                    str(args.seed),
                ] + ["--_no-cache"] * no_cache
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"part 3 child for N={n} failed:\n{done.stderr}")
                results.setdefault((n, not no_cache), []).append(json.loads(done.stdout.strip().splitlines()[-1]))

    def spread(runs, field):
        values = sorted(r[field] for r in runs)
        return f"{mib(statistics.median(values))} ({values[0] / 2**20:.1f}..{values[-1] / 2**20:.1f})"

    print(
        f"\n[3] Peak memory filling an empty cache: N random {args.memory_input_size}x"
        f"{args.memory_input_size} uint8 arrays as a list, layer={args.memory_layer!r}, "
        f"batch {args.memory_batch_size}; one process per run, median (min-max) of {args.memory_repeats} "
        "runs; RSS above the baseline taken after warm-up and after building the inputs"
    )
    rows = []
    for n in args.memory_sizes:
        cached, plain = results[(n, True)], results[(n, False)]
        r = cached[0]
        rows.append(
            [
                n,
                f"{statistics.median(x['seconds'] for x in cached):.1f}",
                mib(statistics.median(x["baseline"] for x in cached)),
                spread(cached, "peak"),
                spread(plain, "peak"),
                spread(cached, "held"),
                f"{mib(r['codes_bytes'])} (x{r['width']})",
                mib(r["inputs_bytes"]),
                mib(r["cache_bytes"]),
            ]
        )
    table(
        [
            "N",
            "seconds",
            "baseline RSS",
            "peak above, cache",
            "peak above, no cache",
            "held at return, cache",
            "codes matrix",
            "inputs",
            "cache file",
        ],
        rows,
    )
    first, last = args.memory_sizes[0], args.memory_sizes[-1]
    median_peak = {key: statistics.median(x["peak"] for x in runs) for key, runs in results.items()}
    growth = median_peak[(last, True)] - median_peak[(first, True)]
    growth_plain = median_peak[(last, False)] - median_peak[(first, False)]
    codes_growth = results[(last, True)][0]["codes_bytes"] - results[(first, True)][0]["codes_bytes"]
    extra = max(1, last - first)
    print(
        f"  from N={first} to N={last}: median peak with the cache grows by {mib(growth)} "
        f"({growth / extra:.0f} bytes per extra image), without it by {mib(growth_plain)}; "
        f"the returned codes grow by {mib(codes_growth)} ({codes_growth / extra:.0f} bytes per image)"
    )


# -- main ------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("--parts", type=int_list, default=[1, 2, 3], help="parts to run, e.g. 1,3 (default 1,2,3)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32, help="parts 1 and 2 (default 32)")
    parser.add_argument("--n-rerun", type=int, default=512, help="JPEG files in part 1 (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the re-run timings, median (default 3)")
    parser.add_argument("--n-incremental", type=int, default=400, help="files in part 2's first run (default 400)")
    parser.add_argument("--grow", type=float, default=0.1, help="part 2's growth of the folder (default 0.1)")
    parser.add_argument(
        "--memory-sizes",
        type=int_list,
        default=[2500, 5000, 10000],
        help="part 3's numbers of images (default 2500,5000,10000)",
    )
    parser.add_argument("--memory-layer", default="blocks.1", help="part 3's layer (default blocks.1: 24 codes)")
    parser.add_argument("--memory-input-size", type=int, default=32, help="part 3's image and input size (default 32)")
    parser.add_argument("--memory-batch-size", type=int, default=64, help="part 3's batch size (default 64)")
    parser.add_argument(
        "--memory-repeats", type=int, default=3, help="part 3's runs per size, each in a fresh process (default 3)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="folder for images and caches (default: a temporary one, removed after)")
    parser.add_argument("--_memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_work", help=argparse.SUPPRESS)
    parser.add_argument("--_repeat", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--_no-cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child is not None:
        return memory_child(args)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="skcnn-bench-cache-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        import h5py

        print(machine_line(h5py))
        print(f"skcnn cache benchmark, backbone {args.backbone}, work folder {work}")
        needed = max(
            [args.n_rerun] * (1 in args.parts)
            + [args.n_incremental + round(args.n_incremental * args.grow)] * (2 in args.parts)
            + [0]
        )
        if needed:
            seconds, paths = timed(make_jpegs, work / "images", needed, args.seed)
            print(f"wrote {needed} distinct JPEG files in {seconds:.1f} s")
            warm_up(args)
        if 1 in args.parts:
            part_rerun(args, paths[: args.n_rerun], work)
        if 2 in args.parts:
            part_incremental(args, paths, work)
        if 3 in args.parts:
            part_memory(args, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s (load average at the end {load_average()})")


if __name__ == "__main__":
    main()
