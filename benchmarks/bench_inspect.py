"""``skcnn inspect`` on a pipeline against one extraction of the same images.

    python benchmarks/bench_inspect.py        # 280 and 1,120 small JPEGs, 56 and 112 phone photos, 3 rounds
    python benchmarks/bench_inspect.py --n-small 140 --n-photos 35 --rounds 2

``make_pipeline(CNNFeatureTransformer(), LogisticRegression())`` (packaged
EfficientNet-Lite0 with its pip weights, penultimate codes, 224 px,
defaults otherwise), fitted on the files of a folder, saved with joblib.
Then, in this one process, in ``--rounds`` interleaved rounds, no code
cache: the whole report of ``skcnn inspect MODEL FOLDER --out REPORT``
(``cli.main``: out-of-fold losses over 5 folds, or as many as the smallest
class holds, label issues, confusion
matrix, duplicates, the top-losses grid of 16 images with their maps), and
``transform`` of the same files by the fitted pipeline's transformer (one
decode and one forward pass per image). The best round of each is printed,
and the ratio inspect / transform (goal <= 1.5). Each contender runs once
before the rounds (the report's pass taps the duplicates' layer too: a
graph of its own to export to ONNX, once per machine), timed apart as
"first call". The first round also counts the report's decodes per image
(calls of ``skcnn.images.load_image``), the images the grid shows apart:
they are read again to be shown.

One folder per count, one subfolder per class (the bundled photo each file
was cut from, :data:`bench_throughput.PHOTOS`): ``--n-small`` JPEGs of
64-300 px (crops of scikit-image's photos, quality 90) and ``--n-photos``
12 MP phone photos (4032 x 3024, :func:`bench_throughput.make_phone_jpegs`).
What the report adds to the pass (figures, the folds' fits) costs about
the same whatever the count: the ratio falls as the count grows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from bench_throughput import PHOTOS, make_jpegs, make_phone_jpegs
from reporting import machine_line, table
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from skcnn import CNNFeatureTransformer, cli
from skcnn import images as image_io
from skcnn.network import arithmetic

#: Rows of top_losses.png (``skcnn inspect --top``'s default).
SHOWN = 16


def class_folders(paths: list[str], folder: Path) -> list[str]:
    """The files moved into ``folder/<photo>/``, the photo ``paths[i]`` was cut from (``i % len(PHOTOS)``)."""
    moved = []
    for i, path in enumerate(paths):
        (folder / PHOTOS[i % len(PHOTOS)]).mkdir(parents=True, exist_ok=True)
        moved.append(shutil.move(path, folder / PHOTOS[i % len(PHOTOS)] / Path(path).name))
    return sorted(str(path) for path in moved)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


@contextlib.contextmanager
def counted_decodes():
    """Calls of :func:`skcnn.images.load_image` within, by image."""
    decoded = Counter()
    load_image = image_io.load_image

    def counted(image, *args, **kwargs):
        decoded[str(image)] += 1
        return load_image(image, *args, **kwargs)

    image_io.load_image = counted
    try:
        yield decoded
    finally:
        image_io.load_image = load_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-small", type=int, nargs="+", default=[280, 1120])
    parser.add_argument("--n-photos", type=int, nargs="+", default=[56, 112])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime

    print(machine_line(onnxruntime))
    print(f"native bf16: {arithmetic.cpu_has_native_bf16()}")
    sets = [(f"{n} JPEGs, 64-300 px", n, small_jpegs) for n in args.n_small]
    sets += [(f"{n} phone photos, 12 MP", n, make_phone_jpegs) for n in args.n_photos]
    rows = []
    for name, n, make in sets:
        with tempfile.TemporaryDirectory(prefix="skcnn-bench-inspect-") as folder:
            folder = Path(folder)
            (folder / "made").mkdir()
            paths = class_folders(make(folder / "made", n), folder / "images")
            rows += compare(name, paths, folder, args.rounds)
    print()
    table(["images", "run", "first call s", "best s", "img/s", "inspect s / transform s"], rows)


def small_jpegs(folder: Path, n: int) -> list[str]:
    return make_jpegs(folder, n, seed=1, sides=(64, 300), min_fraction=0.5)


def compare(name: str, paths: list[str], folder: Path, rounds: int) -> list[list]:
    """The report and the transform of ``paths`` (in ``folder/images/<class>/``), timed: the table's rows."""
    labels = np.asarray([Path(path).parent.name for path in paths])
    model = make_pipeline(CNNFeatureTransformer(progress=False), LogisticRegression(max_iter=1000))
    joblib.dump(model.fit(paths, labels), folder / "model.joblib")
    folds = min(5, *Counter(labels).values())  # each class in every fold
    argv = ["inspect", str(folder / "model.joblib"), str(folder / "images"), "--out", str(folder / "report")]
    argv += ["--cv", str(folds)]
    contenders = {
        "skcnn inspect": lambda: checked(quiet(lambda: cli.main(argv))),
        "transform": lambda: model[0].transform(paths),
    }
    first = {contender: timed(run) for contender, run in contenders.items()}
    best = dict.fromkeys(contenders, np.inf)
    for round_ in range(rounds):
        for contender, run in contenders.items():
            if round_ == 0 and contender == "skcnn inspect":
                with counted_decodes() as decoded:
                    seconds = timed(run)
            else:
                seconds = timed(run)
            best[contender] = min(best[contender], seconds)
    shown = set(pd.read_csv(folder / "report" / "top_losses.csv")["path"].head(SHOWN))
    report = Counter(decoded[path] for path in paths if path not in shown)
    grid = Counter(decoded[path] for path in paths if path in shown)
    print(
        f"{name}, {len(set(labels))} classes, {folds} folds: decodes per image of the report "
        f"{dict(report)}, of the {len(shown)} images the grid shows {dict(grid)}"
    )
    ratios = {"skcnn inspect": f"{best['skcnn inspect'] / best['transform']:.2f}", "transform": ""}
    return [
        [name, run, f"{first[run]:.2f}", f"{best[run]:.2f}", f"{len(paths) / best[run]:.1f}", ratios[run]]
        for run in contenders
    ]


def checked(status: int) -> None:
    if status != 0:
        raise RuntimeError(f"skcnn inspect exited with status {status}")


def quiet(function):
    """``function()`` with its printed summary and progress bars swallowed."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return function()


if __name__ == "__main__":
    main()
