"""Training in channels_last layout against NCHW: ``CNNClassifier`` epochs side by side.

    python benchmarks/bench_train_layout.py --images 256 --sizes 224 300 --rounds 2

The shipped surface-defect images (300 px, :func:`skcnn.datasets.make_surface_defects`),
every layer of the packaged EfficientNet-Lite0 training (``unfreeze="all"``),
batch norm frozen, fp32, one epoch, no early stopping; each input size
without a centre crop. The NCHW rows run with the layout switched off as
it is on devices outside ``skcnn.network.arithmetic.FAST_LAYOUT_DEVICES``.
Rounds interleaved, the best kept; printed: training images per second of
each layout and their ratio.
"""

from __future__ import annotations

import argparse

from reporting import machine_line, table

import skcnn
from skcnn import CNNClassifier
from skcnn.datasets import make_surface_defects
from skcnn.network import arithmetic

LAYOUTS = {"NCHW": (), "channels_last": arithmetic.FAST_LAYOUT_DEVICES}


def images_per_second(X, y, size: int, layout: str) -> float:
    """Training images per second of one epoch in ``layout``."""
    arithmetic.FAST_LAYOUT_DEVICES = LAYOUTS[layout]
    model = CNNClassifier(
        input_size=size, crop=False, unfreeze="all", layer="penultimate", augment="dihedral", tta=None,
        max_epochs=1, batch_size=32, precision="fp32", early_stopping=False, random_state=0, progress=False,
    ).fit(X, y)  # fmt: skip
    return len(y) / model.history_[1]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 300])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(machine_line(skcnn))
    X, y = make_surface_defects(args.images, random_state=0)
    X = list(X)
    rows = []
    for size in args.sizes:
        best = dict.fromkeys(LAYOUTS, 0.0)
        for _ in range(args.rounds):
            for layout in LAYOUTS:
                best[layout] = max(best[layout], images_per_second(X, y, size, layout))
        rows.append(
            [f"{size} px", f"{best['NCHW']:.1f}", f"{best['channels_last']:.1f}",
             f"{best['channels_last'] / best['NCHW']:.2f}"]
        )  # fmt: skip
    table(["input", "NCHW img/s", "channels_last img/s", "ratio"], rows)


if __name__ == "__main__":
    main()
