"""Which layers a network has, and tapping several of them in one forward pass.

Layers are named by their module path (``"features.29"``, ``"layer3"``,
``"classifier.1"``), the names torchvision's ``get_graph_node_names`` and
timm use for module outputs, plus ``"penultimate"``: the input of the
classifier head, the codes the literature calls *CNN codes*.

A tap is a forward hook that turns the layer's output into codes at once
(``on_tap``), so a later in-place layer cannot overwrite it and only the
pooled codes are kept. The pass stops as soon as the last wanted tap has
fired: tapping an early layer costs only the layers before it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..options import PENULTIMATE


@dataclass(frozen=True)
class Layer:
    """A tappable layer, as :func:`skcnn.list_layers` lists it.

    Attributes
    ----------
    name : str
        The module path, accepted by ``layer=`` (or ``"penultimate"``).
    kind : str
        The module's type (``"Conv2d"``, ``"Sequential"``, ...).
    shape : tuple of int
        Its output shape for one image (no batch dimension).
    """

    name: str
    kind: str
    shape: tuple[int, ...]


def probe(network: nn.Module, example: torch.Tensor) -> tuple[list[Layer], str]:
    """Run ``example`` once and list the tappable layers in forward order.

    Returns the layers (``"penultimate"`` last) and the name of the
    classifier head. A module called more than once per pass (a ReLU shared
    inside a ResNet block) has no single output and is not listed: tap the
    enclosing block instead.
    """
    calls: collections.Counter[str] = collections.Counter()
    order: list[str] = []
    outputs: dict[str, tuple[int, ...] | None] = {}
    inputs: dict[str, tuple[int, ...] | None] = {}

    def record(name: str):
        def hook(module, args, output):
            calls[name] += 1
            if calls[name] == 1:
                order.append(name)
                outputs[name] = _shape(output)
                inputs[name] = _shape(args[0]) if args else None

        return hook

    modules = dict(network.named_modules())
    handles = [m.register_forward_hook(record(n)) for n, m in modules.items() if n]
    try:
        with torch.inference_mode():
            network(example)
    finally:
        for handle in handles:
            handle.remove()
    once = [n for n in order if calls[n] == 1]
    head = find_head(network, once)
    layers = [Layer(n, type(modules[n]).__name__, outputs[n]) for n in once if outputs[n]]
    layers.append(Layer(PENULTIMATE, f"input of {head}", inputs[head]))
    return layers, head


def _shape(value: object) -> tuple[int, ...] | None:
    return tuple(value.shape[1:]) if isinstance(value, torch.Tensor) else None


def find_head(network: nn.Module, executed: list[str]) -> str:
    """Name of the classifier head: timm's ``get_classifier()``, else the
    last executed leaf ``Linear`` (or ``Conv2d``, as in SqueezeNet)."""
    modules = dict(network.named_modules())
    if hasattr(network, "get_classifier"):
        classifier = network.get_classifier()
        for name in executed:
            if modules[name] is classifier:
                return name
    for name in reversed(executed):
        module = modules[name]
        if isinstance(module, (nn.Linear, nn.Conv2d)) and not list(module.children()):
            return name
    raise ValueError(f"Cannot find the classifier head of {type(network).__name__}.")


class _StopForward(Exception):
    """Raised by the last tap to end the forward pass early."""


def run_taps(
    network: nn.Module,
    batch: torch.Tensor,
    names: Iterable[str],
    head: str,
    on_tap: Callable[[torch.Tensor, str], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """One forward pass of ``batch``; ``on_tap(activation, name)`` for each named layer.

    On a shared network the caller holds its lock (and, for codes, the
    inference mode); fine-tuning runs it with autograd on a private copy.
    """
    wanted = list(dict.fromkeys(names))
    modules = dict(network.named_modules())
    taken: dict[str, torch.Tensor] = {}

    def take(name: str, activation: torch.Tensor) -> None:
        taken[name] = on_tap(activation, name)
        if len(taken) == len(wanted):
            raise _StopForward

    handles = []
    for name in wanted:
        if name == PENULTIMATE:
            hook = lambda module, args: take(PENULTIMATE, args[0])  # noqa: E731
            handles.append(modules[head].register_forward_pre_hook(hook))
        else:
            hook = lambda module, args, output, name=name: take(name, output)  # noqa: E731
            handles.append(modules[name].register_forward_hook(hook))
    try:
        network(batch)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in wanted if n not in taken]
    if missing:
        raise RuntimeError(f"Layers {missing} produced no output during the forward pass.")
    return taken
