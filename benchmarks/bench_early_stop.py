"""What a tap costs by depth: the forward pass stops at the last tapped layer.

Times codes of one batch for taps at several depths of a backbone and prints
each as a fraction of the full pass (penultimate), measured side by side in
one run.

    python benchmarks/bench_early_stop.py [--backbone efficientnet_lite0] [--size 224]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from skcnn import list_layers
from skcnn.codes.extraction import TapPlan, stored_codes_of_batch
from skcnn.layers import probe_backbone
from skcnn.network.backbones import load_backbone
from skcnn.network.taps import PENULTIMATE


def seconds_per_image(backbone, batch, plan, repeats: int) -> float:
    stored_codes_of_batch(backbone, batch, plan)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        stored_codes_of_batch(backbone, batch, plan)
        best = min(best, time.perf_counter() - start)
    return best / len(batch)


def is_stage(name: str) -> bool:
    """The stages worth timing: ResNet's layerN, and the numbered children
    of the feature trunk of VGG, AlexNet and EfficientNet."""
    parts = name.split(".")
    if parts[0] in ("blocks", "features"):
        return len(parts) == 2
    return len(parts) == 1 and parts[0].startswith("layer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    backbone = load_backbone(args.backbone, "DEFAULT" if args.backbone.startswith("efficientnet_lite") else None, "cpu")
    _, head = probe_backbone(backbone, (args.size, args.size))
    top_level = [layer.name for layer in list_layers(args.backbone, args.size) if is_stage(layer.name)]
    batch = torch.randn(args.batch_size, 3, args.size, args.size)
    full = seconds_per_image(backbone, batch, TapPlan((PENULTIMATE,), head, "avg", True), args.repeats)
    print(
        f"{args.backbone} at {args.size} px, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"{'tapped layer':<16} {'ms/image':>9} {'of full pass':>13}")
    for name in [*top_level, PENULTIMATE]:
        t = seconds_per_image(backbone, batch, TapPlan((name,), head, "avg", True), args.repeats)
        print(f"{name:<16} {1000 * t:>9.1f} {t / full:>13.2f}")


if __name__ == "__main__":
    main()
