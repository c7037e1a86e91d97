"""The ``skcnn`` command: ``skcnn demo`` and ``skcnn layers BACKBONE``."""

from __future__ import annotations

import argparse
import sys

from . import demo
from .layers import list_layers


def _demo(args: argparse.Namespace) -> int:
    demo.run(demo.QUICK if args.quick else demo.DemoSettings())
    return 0


def _layers(args: argparse.Namespace) -> int:
    layers = list_layers(args.backbone, args.input_size)
    if args.max_depth is not None:
        layers = [l for l in layers if l.name.count(".") < args.max_depth or l.name == "penultimate"]
    width = max(len(layer.name) for layer in layers)
    print(f"{'layer':<{width}}  {'module':<22} output shape (one image)")
    for layer in layers:
        shape = " x ".join(str(s) for s in layer.shape)
        print(f"{layer.name:<{width}}  {layer.kind:<22} {shape}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skcnn", description="Frozen pretrained CNN codes for scikit-learn."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser(
        "demo", help="transfer learning on texture photos: raw pixels vs random vs pretrained codes"
    )
    demo_parser.add_argument("--quick", action="store_true", help="a few seconds, tiny data")
    demo_parser.set_defaults(run=_demo)

    layers_parser = commands.add_parser(
        "layers", help="list the tappable layers of a backbone with their output shapes"
    )
    layers_parser.add_argument("backbone", help="e.g. resnet50, vgg16, efficientnet_lite0, timm/convnext_tiny")
    layers_parser.add_argument("--input-size", type=int, default=None, help="input side in pixels")
    layers_parser.add_argument(
        "--max-depth", type=int, default=None,
        help="only layers at most this deep in the module tree (1: top-level blocks)",
    )
    layers_parser.set_defaults(run=_layers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, ImportError) as exc:
        print(f"skcnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
