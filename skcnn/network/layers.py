"""Which layers of a backbone can be tapped, and checking the user's choice."""

from __future__ import annotations

import difflib
import functools

import torch

from ..options import PENULTIMATE
from . import backbones
from .backbones import Backbone
from .taps import Layer, probe


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
    layers, _ = _list_layers(backbone, _size_key(input_size))
    return list(layers)


@functools.lru_cache(maxsize=32)
def _list_layers(backbone: str, input_size: tuple[int, int] | None) -> tuple[tuple[Layer, ...], str]:
    """Layers and head name, probed on the meta device."""
    network, recipe = backbones.build_on_meta(backbone)
    size = input_size or recipe.crop_size
    layers, head = _probe_at_size(network, torch.zeros(1, 3, *size, device="meta"), backbone)
    return tuple(layers), head


#: Input sizes whose probed layers a loaded backbone keeps (a few bytes each).
MAX_PROBES = 32


def probe_backbone(backbone: Backbone, input_size: tuple[int, int]) -> tuple[list[Layer], str]:
    """Layers and head of a loaded backbone at ``input_size`` (one zero image)."""
    size = tuple(input_size)

    def probe_once() -> tuple[list[Layer], str]:
        example = torch.zeros(1, 3, *size, device=backbone.device)
        return _probe_at_size(backbone.network, example, backbone.spec.name)

    return backbone.derive("probe", size, probe_once, MAX_PROBES)


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


#: Module types whose output is a hidden fully connected layer's code (after
#: its non-linearity), worth a candidate of its own.
_ACTIVATIONS = frozenset({"ReLU", "ReLU6", "GELU", "SiLU", "Hardswish", "Tanh", "ELU", "LeakyReLU"})


def candidate_layers(backbone: str, input_size: int | tuple[int, int] | None = None) -> list[str]:
    """A spread of layers from early to penultimate, one per stage.

    A stage is a run of layers at one spatial resolution; its candidate is
    the block that ends it, before the next downsampling (blocks are the
    shallowest modules in the module tree that still show every
    resolution). Hidden fully connected layers (AlexNet's and VGG's fc6 and
    fc7) follow, and ``"penultimate"`` ends the list. Global 1x1 pools, and a
    last map that only pooling separates from the head (ResNet's
    ``layer4``), are left out: their average is the penultimate code.
    Networks of tokens (vision transformers) get four evenly spaced blocks.

    Parameters
    ----------
    backbone : str
        A backbone name as accepted by :class:`~skcnn.CNNFeatureTransformer`.
    input_size : int or (int, int), default=None
        Input height and width; ``None`` uses the weights' own size.

    Returns
    -------
    names : list of str
        Layer names in forward order, accepted by ``layer=``.

    Examples
    --------
    >>> from skcnn import candidate_layers
    >>> candidate_layers("resnet18")
    ['relu', 'layer1', 'layer2', 'layer3', 'penultimate']
    >>> candidate_layers("alexnet")
    ['features.1', 'features.4', 'features.11', 'avgpool', 'classifier.2', 'penultimate']
    """
    layers, head = _list_layers(backbone, _size_key(input_size))
    return list(_candidates(layers, head))


def last_map(backbone: str, input_size: int | tuple[int, int] | None = None) -> str | None:
    """The map whose global average is the penultimate code (ResNet's
    ``layer4``, EfficientNet's last conv), left out of :func:`candidate_layers`:
    pooled another way (max, GeM) it gives other codes. None when there is
    none (networks whose head reads fully connected layers or tokens)."""
    layers, head = _list_layers(backbone, _size_key(input_size))
    names = _map_stage_ends(layers)
    return names[-1] if names and _pools_into_penultimate(layers, names[-1], head) else None


def _map_stage_ends(layers: tuple[Layer, ...]) -> list[str]:
    body = layers[:-1]  # without "penultimate"
    maps = [layer for layer in body if len(layer.shape) == 3 and layer.shape[1:] != (1, 1)]
    tokens = [layer for layer in body if len(layer.shape) == 2]
    return (_stage_ends(maps) if maps else []) + (_spaced_blocks(tokens, 4) if tokens else [])


def _candidates(layers: tuple[Layer, ...], head: str) -> tuple[str, ...]:
    body = layers[:-1]  # without "penultimate"
    names = _map_stage_ends(layers)
    if names and _pools_into_penultimate(layers, names[-1], head):
        names.pop()  # its average-pooled codes are the penultimate codes
    vectors = [layer for layer in body if len(layer.shape) == 1 and layer.name != head]
    for position, layer in enumerate(vectors):
        # A hidden layer's code, unless nothing but dropout lies between it and
        # the head (then it is the penultimate code itself).
        another_linear_follows = any(v.kind == "Linear" for v in vectors[position + 1 :])
        if layer.kind in _ACTIVATIONS and another_linear_follows:
            names.append(layer.name)
    order = {layer.name: i for i, layer in enumerate(layers)}
    return (*sorted(set(names), key=order.__getitem__), PENULTIMATE)


#: Modules that pass a map on to the head without changing its values
#: beyond pooling: a map followed only by these is the penultimate layer unpooled.
_PASS_THROUGH = frozenset(
    {
        "AdaptiveAvgPool2d",
        "SelectAdaptivePool2d",
        "Flatten",
        "Dropout",
        "Identity",
        "Sequential",
    }
)


def _pools_into_penultimate(layers: tuple[Layer, ...], name: str, head: str) -> bool:
    """Whether ``name`` is a map whose global average is the penultimate code
    (ResNet's ``layer4``, EfficientNet's last conv): only pooling, flattening
    and dropout lie between it and the head."""
    names = [layer.name for layer in layers]
    start, end = names.index(name), names.index(head)
    same_width = layers[start].shape[0] == layers[-1].shape[0]
    return same_width and all(layer.kind in _PASS_THROUGH for layer in layers[start + 1 : end])


def _depth(layer: Layer) -> int:
    return layer.name.count(".")


def _shallowest_covering(layers: list[Layer], key) -> list[Layer]:
    """The layers at most d deep in the module tree, for the smallest d whose
    next depth shows no new value of ``key`` (deeper layers would only add
    the insides of blocks)."""
    deepest = max(map(_depth, layers))
    for depth in range(deepest + 1):
        shallow = [layer for layer in layers if _depth(layer) <= depth]
        deeper = {key(layer) for layer in layers if _depth(layer) == depth + 1}
        if deeper <= {key(layer) for layer in shallow}:
            return shallow
    return layers


def _stage_ends(maps: list[Layer]) -> list[str]:
    blocks = _shallowest_covering(maps, key=lambda layer: layer.shape[1:])
    last_at_resolution = {layer.shape[1:]: layer.name for layer in blocks}  # later layers win
    return list(last_at_resolution.values())


def _spaced_blocks(tokens: list[Layer], n: int) -> list[str]:
    """``n`` evenly spaced blocks of the longest run of sibling layers (a
    transformer's ``blocks.0`` ... ``blocks.11``)."""
    siblings: dict[str, list[Layer]] = {}
    for layer in tokens:
        siblings.setdefault(layer.name.rpartition(".")[0], []).append(layer)
    blocks = max(siblings.values(), key=len)  # the first (shallowest) on ties
    picks = sorted({round(i * (len(blocks) - 1) / (n - 1)) for i in range(n)})
    return [blocks[i].name for i in picks]


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


__all__ = ["PENULTIMATE", "Layer", "candidate_layers", "list_layers"]
