"""Which layers of a backbone can be tapped, and checking the user's choice."""

from __future__ import annotations

import difflib
import functools

import torch

from . import backbones
from .backbones import Backbone
from .taps import PENULTIMATE, Layer, probe


def list_layers(backbone: str, input_size: int | tuple[int, int] | None = None) -> list[Layer]:
    """List the layers of ``backbone`` that can be tapped, in forward order.

    Parameters
    ----------
    backbone : str
        A backbone name as accepted by :class:`~skcnn.CNNFeatureTransformer`.
    input_size : int or (int, int), default=None
        Input height and width; ``None`` uses the size of the backbone's
        default weights (e.g. 224).

    Returns
    -------
    layers : list of Layer
        ``Layer(name, kind, shape)`` per tappable module, ``shape`` being the
        output shape of one image (``(C, H, W)`` for conv maps, ``(D,)`` for
        vectors); the last entry is ``"penultimate"``, the input of the
        classifier head. Earlier layers hold generic features (edges,
        colour blobs, textures), later ones features specific to the source
        classes.

    Notes
    -----
    Shapes are computed on PyTorch's meta device: no weights are loaded or
    downloaded and no arithmetic is done.

    Examples
    --------
    >>> from skcnn import list_layers
    >>> layers = list_layers("alexnet")
    >>> [(layer.name, layer.shape) for layer in layers][-3:]
    [('classifier.6', (1000,)), ('classifier', (1000,)), ('penultimate', (4096,))]
    >>> [layer.shape for layer in list_layers("resnet18", input_size=64) if layer.name == "layer4"]
    [(512, 2, 2)]
    """
    return list(_list_layers(backbone, _size_key(input_size)))


@functools.lru_cache(maxsize=32)
def _list_layers(backbone: str, input_size: tuple[int, int] | None) -> tuple[Layer, ...]:
    network, recipe = backbones.build_on_meta(backbone)
    size = input_size or recipe.crop_size
    layers, _ = _probe_at_size(network, torch.zeros(1, 3, *size, device="meta"), backbone)
    return tuple(layers)


def probe_backbone(backbone: Backbone, input_size: tuple[int, int]) -> tuple[list[Layer], str]:
    """Layers and head of a loaded backbone at ``input_size`` (one zero image)."""
    return _probe_backbone(backbone, tuple(input_size))


@functools.lru_cache(maxsize=32)
def _probe_backbone(backbone: Backbone, input_size: tuple[int, int]) -> tuple[list[Layer], str]:
    example = torch.zeros(1, 3, *input_size, device=backbone.device)
    with backbone.lock:
        return _probe_at_size(backbone.network, example, backbone.spec.name)


def _probe_at_size(network, example: torch.Tensor, name: str) -> tuple[list[Layer], str]:
    try:
        return probe(network, example)
    except (AssertionError, RuntimeError, ValueError) as exc:
        # Fully connected or attention layers built for one input size.
        height, width = example.shape[-2:]
        raise ValueError(
            f"input_size: backbone {name!r} cannot run on {height} x {width} inputs ({exc}). "
            "Use input_size=None (the size its weights were trained at) or a size it accepts."
        ) from None


def _size_key(input_size) -> tuple[int, int] | None:
    if input_size is None:
        return None
    if isinstance(input_size, int):
        return (input_size, input_size)
    return tuple(input_size)


def check_layer_names(names: list[str], layers: list[Layer], backbone: str) -> None:
    """Raise a ValueError naming the closest valid layers for any unknown name."""
    valid = [layer.name for layer in layers]
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=5, cutoff=0.4)
            raise ValueError(
                f"layer={name!r} is not a tappable layer of {backbone!r}. Closest names: "
                f"{close}. Use 'penultimate' or a name from skcnn.list_layers({backbone!r}) "
                f"(or the shell: skcnn layers {backbone})."
            )


__all__ = ["PENULTIMATE", "Layer", "list_layers", "probe_backbone", "check_layer_names"]
