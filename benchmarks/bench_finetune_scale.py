"""Fine-tuning at scale: peak memory of ``CNNClassifier.fit`` against the number of images.

    python benchmarks/bench_finetune_scale.py                       # the table of benchmarks/RESULTS.md
    python benchmarks/bench_finetune_scale.py --runs 1000:128:files 5000:128:memory

Writes ``--n`` JPEG files (crops of ten of scikit-image's photos, 160 px,
one class per photo) once, then fits ``CNNClassifier(unfreeze="all",
max_epochs=1, batch_size=16)`` on paths to the first N of them, each run in
a fresh process. A run is ``N:INPUT_SIZE:STORE[:EPOCHS]``: ``memory`` keeps
the decoded crops in memory (``memory_limit="auto"``), ``files`` writes them
to files (``memory_limit=0``) and reads every batch back; ``EPOCHS``
(default 1; none stops early) trains a small set for as many steps as a
large one, which tells growth with N from growth with training time. Per run: the peak
resident memory of ``fit`` above the process's before it (the kernel's
``VmHWM``, reset just before ``fit``), per image, and the epoch's training
images per second. Ratios are of runs in this one invocation.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from reporting import cpu_name

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "brick", "grass", "gravel", "moon")
SIDE = 160
DEFAULT_RUNS = [
    "1000:128:files",
    "5000:128:files",
    "20000:128:files",
    "5000:128:memory",
    "1000:224:files",
    "5000:224:files",
    "1000:128:files:20",
]


def make_jpegs(folder: Path, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` 160 px JPEG crops of the photos (with a random flip), and each one's photo as its label."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        photos.append(photo[..., :3] if photo.ndim == 3 else np.stack([photo] * 3, axis=2))
    paths, labels = [], []
    for i in range(n):
        label = i % len(PHOTOS)
        photo = photos[label]
        y, x = rng.integers(0, photo.shape[0] - SIDE + 1), rng.integers(0, photo.shape[1] - SIDE + 1)
        crop = photo[y : y + SIDE, x : x + SIDE]
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            Image.fromarray(crop[:, ::-1] if rng.random() < 0.5 else crop).save(path, quality=90)
        paths.append(str(path))
        labels.append(PHOTOS[label])
    return paths, labels


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1]) / 1024


def child(folder: str, n: int, input_size: int, store: str, epochs: int, store_dir: str) -> dict:
    """One fit in this process: peak memory above the start and the epoch's speed."""
    import gc

    from skcnn import CNNClassifier

    paths, labels = make_jpegs(Path(folder), n)
    model = CNNClassifier(
        input_size=input_size, unfreeze="all", max_epochs=epochs, batch_size=16, random_state=0, progress=False,
        n_iter_no_change=epochs + 1,  # every epoch runs
        memory_limit="auto" if store == "memory" else 0, store_dir=store_dir,
    )  # fmt: skip
    gc.collect()
    before = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark reset to the resident size now
    model.fit(paths, labels)
    peak = _status_mib("VmHWM") - before
    epoch = model.history_[1]  # the first epoch (0 is the probe it started from)
    n_train = round(n * (1 - model.validation_fraction))
    return {
        "n": n,
        "input_size": input_size,
        "store": store,
        "epochs": epochs,
        "peak_mib": peak,
        "crops_mib": n * 3 * input_size**2 / 2**20,
        "train_img_per_s": n_train / epoch["seconds"],
        "validation_score": epoch["validation_score"],
    }


def run(spec: str, folder: Path) -> dict:
    n, input_size, store, epochs = (spec + ":1").split(":")[:4]
    with tempfile.TemporaryDirectory(prefix="skcnn-bench-store-") as store_dir:
        command = [sys.executable, __file__, "--child", str(folder), n, input_size, store, epochs, store_dir]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="N:INPUT_SIZE:memory|files[:EPOCHS]")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "skcnn-bench-jpegs")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, n, input_size, store, epochs, store_dir = args.child
        print(json.dumps(child(folder, int(n), int(input_size), store, int(epochs), store_dir)))
        return
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores\ndate: {datetime.date.today()}")
    args.folder.mkdir(parents=True, exist_ok=True)
    make_jpegs(args.folder, max(int(spec.split(":")[0]) for spec in args.runs))
    results = []
    print("| images | input | crops | epochs | crops MiB | peak of fit MiB | peak per image kB | train img/s |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for spec in args.runs:
        r = run(spec, args.folder)
        results.append(r)
        print(
            f"| {r['n']:,} | {r['input_size']} | {r['store']} | {r['epochs']} | {r['crops_mib']:.0f} | "
            f"{r['peak_mib']:.0f} | {r['peak_mib'] * 1024 / r['n']:.1f} | {r['train_img_per_s']:.1f} |",
            flush=True,
        )
    by = {(r["n"], r["input_size"], r["store"]): r for r in results if r["epochs"] == 1}
    for size in sorted({r["input_size"] for r in results}):
        files = [r for r in results if r["input_size"] == size and r["store"] == "files" and r["epochs"] == 1]
        files = sorted(files, key=lambda r: r["n"])
        if len(files) > 1:
            first, last = files[0], files[-1]
            print(
                f"{size} px, files: peak at {last['n']:,} / at {first['n']:,} images = "
                f"{last['peak_mib'] / first['peak_mib']:.3f}; growth per image "
                f"{(last['peak_mib'] - first['peak_mib']) * 1024 / (last['n'] - first['n']):.2f} kB "
                f"(crop {3 * size * size / 1024:.0f} kB)"
            )
        for (n, s, store), r in by.items():
            if s == size and store == "memory" and (n, s, "files") in by:
                ratio = by[(n, s, "files")]["train_img_per_s"] / r["train_img_per_s"]
                print(f"{size} px, {n:,} images: train img/s from files / in memory = {ratio:.3f}")
    for long in (r for r in results if r["epochs"] > 1):
        for r in results:
            if r["epochs"] == 1 and r["n"] == long["n"] * long["epochs"] and r["input_size"] == long["input_size"]:
                print(
                    f"{r['n']:,} images x 1 epoch / {long['n']:,} x {long['epochs']} epochs (as many steps): "
                    f"peak {r['peak_mib'] / long['peak_mib']:.3f}"
                )


if __name__ == "__main__":
    main()
