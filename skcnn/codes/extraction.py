"""The engine: resolved parameters -> an :class:`Extractor` -> codes of images.

The path of every image: decode (:mod:`skcnn.decoding.loading`) -> network
(:mod:`skcnn.network.backbones`, run as :mod:`skcnn.network.arithmetic` says) -> taps
(:mod:`skcnn.network.taps`) -> pooling (:mod:`skcnn.codes.pooling`) -> cache
(:mod:`skcnn.cache`) -> codes. Every estimator computes codes through an
:class:`Extractor`: :class:`~skcnn.CNNFeatureTransformer`,
:class:`~skcnn.LayerSearchCV` (through its transformer) and
:mod:`skcnn.dask`'s workers.

There is one batch loop. With a cache, images are looked up by content
first and only the misses go through the network; each computed batch is
stored before the next starts, so an interrupted run keeps every finished
batch. Without a cache every image is a miss. A pass with test-time views
stores the first view's codes (the image as it is) besides their average:
a search of ``tta`` against one view decodes each image once.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from numbers import Integral
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ..decoding import images as image_io
from ..decoding import loading, symmetry
from ..decoding.identity import content_keys
from ..decoding.preprocessing import DECODE_MARGINS, Preprocessing, check_crop
from ..network import arithmetic, backbones, compiled
from ..network.arithmetic import Inference
from ..network.backbones import Backbone
from ..network.layers import check_layer_names, probe_backbone
from ..network.taps import run_taps
from ..options import DEFAULTS, PENULTIMATE
from .cache import FORMAT_VERSION, CodeCache
from .pooling import check_poolable, n_codes, pooling_names, relu_commutes, to_codes


@dataclass(frozen=True)
class TapPlan:
    """What to take from each forward pass: layers (in output order), the
    head they are relative to, how activations become codes, and each
    layer's output shape (``None``: ReLU always before pooling)."""

    layers: tuple[str, ...]
    head: str
    #: One pooling's name, or a tuple of several (their codes side by side).
    pooling: str | tuple[str, ...]
    relu: bool
    shapes: tuple[tuple[int, ...], ...] | None = None
    #: Test-time views whose codes are averaged (:mod:`skcnn.decoding.symmetry`), or None.
    tta: str | None = None

    def relu_deferred(self, layer: str) -> bool:
        """ReLU left until after pooling (it commutes): a view's codes are taken pre-ReLU."""
        if not self.relu or self.shapes is None:
            return False
        return relu_commutes(self.shapes[self.layers.index(layer)], self.pooling)

    def relu_on_read(self, layer: str) -> bool:
        """ReLU applied when stored codes are read: they are pre-ReLU. Never with
        ``tta``: the views' codes are averaged after their ReLU, and stored so."""
        return self.tta is None and self.relu_deferred(layer)

    def relu_on_tap(self, layer: str) -> bool:
        """ReLU applied to the activations before pooling: each view's codes take the form
        one view's stored codes have, whatever ``tta`` (:func:`averaged` ReLUs the others)."""
        return self.relu and not self.relu_deferred(layer)

    def relu_stored(self, layer: str) -> bool:
        """Whether the stored codes are ReLU'd (part of the cache key)."""
        return self.relu and not self.relu_on_read(layer)

    @property
    def widths(self) -> dict[str, int]:
        """Length of each layer's codes of one image."""
        return {layer: n_codes(shape, self.pooling) for layer, shape in zip(self.layers, self.shapes, strict=True)}


@dataclass(frozen=True)
class CacheStats:
    """What the code cache did in one call: ``cache_info_`` of a transformer.

    Attributes
    ----------
    hits : int
        Images whose codes were found in the cache.
    misses : int
        Images not found.
    computed : int
        Images the network ran on for them (fewer than ``misses`` when the
        same image appears twice).
    """

    hits: int
    misses: int
    computed: int


class Crops(NamedTuple):
    """Crops already made for some of the images (as :meth:`Preprocessing.pixels` makes
    them with the extractor's preprocessing and decoding): those are not decoded again."""

    #: The positions of the images that have one.
    positions: Collection[int]
    #: Their uint8 ``(B, 3, h, w)`` crops, for positions in the order given.
    read: Callable[[list[int]], torch.Tensor]


class Extraction(NamedTuple):
    """What :meth:`Extractor.codes` returns."""

    #: float32 ``(n_images, width)``; NaN rows for images that failed.
    codes: np.ndarray
    #: The images that could not be used, by index.
    failures: list[image_io.ImageFailure]
    #: Without a cache: None. With several backbones: a dict by backbone.
    cache_stats: CacheStats | dict[str, CacheStats] | None


@dataclass(frozen=True)
class Extractor:
    """One backbone's codes, from parameters resolved and checked once.

    Build it with :meth:`from_params` (the parameters of
    :class:`~skcnn.CNNFeatureTransformer`); it holds no network, only what
    to load, so it pickles small and a process loads the network on its
    first :meth:`codes`. It owns the cache key (:meth:`cache_config`).
    """

    backbone: str
    weights: object
    device: str
    plan: TapPlan
    #: ``plan`` and the further ``cache_layers``, computed and stored together.
    stored_plan: TapPlan
    input_size: tuple[int, int]
    #: ``crop`` as given: True, False or a fraction (:meth:`Preprocessing.with_input_size`).
    crop: bool | float
    precision: str
    #: ``"torch"`` or ``"onnxruntime"``, resolved from ``runtime="auto"``.
    runtime: str
    decode: str
    compile_options: dict | None
    batch_size: int
    num_workers: int
    max_pixels: int | None
    cache: CodeCache | None

    @classmethod
    def from_params(cls, params: Mapping) -> Extractor:
        """Check the parameters of one backbone against its network and resolve them.

        ``params`` holds :class:`~skcnn.CNNFeatureTransformer`'s parameters
        (those missing take their defaults). Raises ``ValueError`` naming the
        parameter and what is allowed.
        """
        p = {**asdict(DEFAULTS), **params}
        names = layer_names(p["layer"])
        stored_names = cache_layer_names(names, p["cache_layers"], p["cache"])
        input_size = checked_input_size(p["input_size"])
        compile_options = compiled.check_compile_options(p["compile"])
        backbone = backbones.load_backbone(p["backbone"], p["weights"], p["device"])
        crop = check_crop(p["crop"])
        recipe = backbone.preprocessing.with_input_size(input_size, crop)
        layers, head = probe_backbone(backbone, recipe.crop_size)
        check_layer_names(stored_names, layers, p["backbone"])
        shapes = {layer.name: layer.shape for layer in layers}
        pooling = p["pooling"] if isinstance(p["pooling"], str) else pooling_names(p["pooling"])
        for name in stored_names:
            try:
                check_poolable(shapes[name], pooling)
            except ValueError as exc:
                param = "layer" if name in names else "cache_layers"
                raise ValueError(f"{param}={name!r}: {exc}") from None
        tta = check_tta(p["tta"], recipe.crop_size)
        plan = TapPlan(tuple(names), head, pooling, p["relu"], tuple(shapes[name] for name in names), tta)
        stored_plan = TapPlan(
            tuple(stored_names), head, pooling, p["relu"], tuple(shapes[name] for name in stored_names), tta
        )
        cache = p["cache"]
        runtime, precision = arithmetic.resolve_runtime(
            p["runtime"], p["precision"], backbone.device, compile_options, backbone.network
        )
        return cls(
            backbone=p["backbone"],
            weights=p["weights"],
            device=str(backbone.device),
            plan=plan,
            stored_plan=stored_plan,
            input_size=recipe.crop_size,
            crop=crop,
            precision=precision,
            runtime=runtime,
            decode=p["decode"],
            compile_options=compile_options,
            batch_size=p["batch_size"],
            num_workers=loading.resolve_workers(p["num_workers"]),
            max_pixels=p["max_pixels"],
            cache=None if cache is None else cache if isinstance(cache, CodeCache) else CodeCache(cache),
        )

    @property
    def layers(self) -> tuple[str, ...]:
        return self.plan.layers

    @property
    def width(self) -> int:
        """Length of the code of one image, the tapped layers concatenated."""
        return sum(self.plan.widths.values())

    def load(self) -> Backbone:
        """The network, from this process's registry (loaded on first use)."""
        return backbones.load_backbone(self.backbone, self.weights, self.device)

    def preprocessing(self, backbone: Backbone | None = None) -> Preprocessing:
        """The weights' own preprocessing at this input size."""
        return (backbone or self.load()).preprocessing.with_input_size(self.input_size, self.crop)

    def feature_names(self) -> list[str]:
        """``"<backbone>__<layer>__<index>"`` for every code."""
        widths = self.plan.widths
        return [f"{self.backbone}__{layer}__{i}" for layer in self.layers for i in range(widths[layer])]

    def cache_config(self, layer: str, backbone: Backbone | None = None) -> dict:
        """Everything that changes a layer's stored codes: the cache key.

        ReLU is part of it only where it must come before pooling (average
        and pyramid pooling of maps); elsewhere codes are stored before ReLU
        and thresholded when read, so ``relu=True`` and ``False`` share them.
        Precision and DCT-scaled decoding change codes beyond rounding:
        fp32 and bf16 codes, and codes of JPEGs decoded at different DCT
        margins (``"exact"``, ``"auto"``, ``"draft"``), are never mixed.
        Precision enters the key only when it is not fp32, as since the
        option existed. ``"resize": "uint8"`` marks the resize in uint8 of
        skcnn 0.3 (codes of the float resize of 0.1 and 0.2 differ by
        rounding): caches written before stay readable, and their codes are
        never mixed with these. How the network is run (layout, folded
        batch norm, compiled graphs) moves codes by float rounding only,
        and is not part of it.
        """
        backbone = backbone or self.load()
        shape = self.stored_plan.shapes[self.stored_plan.layers.index(layer)]
        approximations = {
            **({"precision": self.precision} if self.precision != "fp32" else {}),
            "resize": "uint8",
            "jpeg_dct_margin": DECODE_MARGINS[self.decode],
            **({"tta": self.plan.tta} if self.plan.tta is not None else {}),
        }
        return {
            "format_version": FORMAT_VERSION,
            "backbone": self.backbone,
            "weights": backbone.weights_id,
            "layer": layer,
            "layer_shape": list(shape),
            "pooling": self.plan.pooling if isinstance(self.plan.pooling, str) else list(self.plan.pooling),
            "relu_before_pooling": self.stored_plan.relu_stored(layer),
            "preprocessing": self.preprocessing(backbone).as_dict(),
            **approximations,
            "width": self.stored_plan.widths[layer],
        }

    def codes(self, images: Sequence, *, progress: bool = False, crops: Crops | None = None) -> Extraction:
        """Codes of ``images`` (a list of paths, PIL images or arrays).

        An image that cannot be used gets a NaN row and an entry in the
        failures; every other image is computed (and cached) all the same.
        The images ``crops`` holds are read from it, not decoded.
        """
        if not len(images):
            return Extraction(np.empty((0, self.width), dtype=np.float32), [], None)
        backbone = self.load()
        failures: list[image_io.ImageFailure] = []
        found = _Found.nothing(self, len(images)) if self.cache is None else self._look_up(backbone, images, failures)
        single, single_have = self._single_view(backbone, found)
        inference = arithmetic.inference_for(
            backbone,
            self.precision,
            keep=frozenset(self.stored_plan.layers),
            input_size=self.input_size,
            compile_options=self.compile_options,
            batch_size=self.batch_size,
            runtime=self.runtime,
            # As many as torch's intra-op threads: what the user (or a Dask worker) gave the network.
            threads=torch.get_num_threads(),
        )
        recipe = self.preprocessing(backbone)
        cropped = set() if crops is None else set(crops.positions).intersection(found.todo)
        batches = loading.iter_batches(
            images,
            [i for i in found.todo if i not in cropped],
            recipe,
            self.batch_size,
            failures,
            max_pixels=self.max_pixels,
            num_workers=self.num_workers,
            decode=self.decode,
        )
        if cropped:
            batches = _read_first(crops.read, sorted(cropped), recipe, self.batch_size, batches)
        with (
            tqdm(total=len(found.todo), unit="img", disable=not progress, desc="skcnn") as bar,
            contextlib.closing(batches),  # stops the decoding workers at once on an error
        ):
            for positions, batch in batches:
                views = view_codes_of_batch(backbone, batch, self.stored_plan, inference)
                codes = averaged(views, self.stored_plan)
                if self.cache is not None:
                    self.cache.write(found.unstored(positions, codes, found.configs))
                if single and (first := _unstored(single_have, found.keys, positions, views[0], single)):
                    self.cache.write(first)
                for layer in self.layers:
                    found.stored[layer][positions] = codes[layer]
                bar.update(len(positions))
        failures = found.share_repeats(images, failures, self.layers)
        if self.cache is None:
            return Extraction(found.finished(self.plan), failures, None)
        if self.cache.should_compact():  # also after a run killed before its compaction
            self.cache.compact()
        return Extraction(found.finished(self.plan), failures, found.stats())

    def _single_view(self, backbone: Backbone, found: _Found) -> tuple[dict[str, dict], dict[str, set[int]]]:
        """With views and a cache: the cache keys of the first view's codes (those of the same extractor
        without ``tta``), and the images the cache holds of each."""
        if self.cache is None or self.plan.tta is None:
            return {}, {}
        one = replace(self, plan=replace(self.plan, tta=None), stored_plan=replace(self.stored_plan, tta=None))
        configs = {layer: one.cache_config(layer, backbone) for layer in self.stored_plan.layers}
        readable = np.asarray(sorted(found.keys), dtype=np.intp)
        held = self.cache.lookup(configs, [found.keys[i] for i in readable])
        return configs, {layer: set(readable[mask].tolist()) for layer, (mask, _) in held.items()}

    def _look_up(self, backbone: Backbone, images: Sequence, failures: list) -> _Found:
        configs = {layer: self.cache_config(layer, backbone) for layer in self.stored_plan.layers}
        keys = content_keys(images, failures)
        readable = np.asarray(sorted(keys), dtype=np.intp)
        found = self.cache.lookup(configs, [keys[i] for i in readable])
        have = {layer: set(readable[mask].tolist()) for layer, (mask, _) in found.items()}
        codes, stored = _allocated(self.plan, len(images))
        for layer in self.layers:
            mask, hits = found[layer]
            if mask.any():
                stored[layer][readable[mask]] = hits
        missing = [i for i in readable.tolist() if not all(i in have[layer] for layer in self.layers)]
        first_of_key = {keys[i]: i for i in reversed(missing)}  # one forward pass per distinct image
        todo = sorted(first_of_key.values())
        return _Found(codes, stored, have, keys, missing, first_of_key, todo, len(readable), configs)


@dataclass
class _Found:
    """An extraction's bookkeeping: what the cache holds and what to compute."""

    codes: np.ndarray  # the returned codes, NaN until known
    stored: dict[str, np.ndarray]  # each requested layer's columns of them, in stored form
    have: dict[str, set[int]]  # images the cache holds, by stored layer
    keys: dict[int, str] | None  # content keys of readable images (None: no cache)
    missing: list[int]
    first_of_key: dict[str, int]
    todo: list[int]  # the images to run through the network, in order
    n_readable: int
    configs: dict[str, dict]

    @classmethod
    def nothing(cls, extractor: Extractor, n_images: int) -> _Found:
        """No cache: every image is computed, each on its own."""
        codes, stored = _allocated(extractor.plan, n_images)
        return cls(codes, stored, {}, None, [], {}, list(range(n_images)), n_images, {})

    def finished(self, plan: TapPlan) -> np.ndarray:
        """The codes as returned: ReLU applied where it was deferred, in place."""
        for layer in plan.layers:
            if plan.relu_on_read(layer):
                np.maximum(self.stored[layer], 0, out=self.stored[layer])
        return self.codes

    def unstored(self, positions: list[int], codes: Mapping[str, np.ndarray], configs: Mapping[str, dict]) -> dict:
        """``{layer: (config, keys, codes)}`` of the batch's rows the cache lacks."""
        return _unstored(self.have, self.keys, positions, codes, configs)

    def share_repeats(self, images: Sequence, failures: list, layers: tuple[str, ...]) -> list:
        """Repeated images take the codes (or the failure) of their first occurrence."""
        failed_first = {f.index: f for f in failures}
        for i in self.missing:
            first = self.first_of_key[self.keys[i]]
            if i != first and first in failed_first:
                reason = failed_first[first].reason
                failures.append(image_io.ImageFailure(i, image_io.describe(images[i], i), reason))
            for layer in layers:
                self.stored[layer][i] = self.stored[layer][first]
        return sorted(failures, key=lambda f: f.index)

    def stats(self) -> CacheStats:
        return CacheStats(hits=self.n_readable - len(self.missing), misses=len(self.missing), computed=len(self.todo))


def _unstored(
    have: Mapping[str, set[int]],
    keys: Mapping[int, str],
    positions: list[int],
    codes: Mapping[str, np.ndarray],
    configs: Mapping[str, dict],
) -> dict:
    """``{layer: (config, keys, codes)}`` of the rows of a batch at ``positions`` that ``have`` lacks."""
    batch = {}
    for layer, config in configs.items():
        rows = [row for row, i in enumerate(positions) if i not in have[layer]]
        if rows:
            batch[layer] = (config, [keys[positions[row]] for row in rows], codes[layer][rows])
    return batch


def _read_first(
    read: Callable[[list[int]], torch.Tensor],
    positions: list[int],
    recipe: Preprocessing,
    batch_size: int,
    rest: Iterator,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """The batches of the crops ``read`` gives for ``positions``, normalised, then those of ``rest``."""
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        yield chunk, recipe.normalize(read(chunk))
    yield from rest  # closing this closes ``rest``


def _allocated(plan: TapPlan, n_images: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The codes of ``n_images`` (NaN) and each layer's columns of them (views:
    filling them fills the codes, with no copy of the whole at the end)."""
    widths = plan.widths
    codes = np.full((n_images, sum(widths.values())), np.nan, np.float32)
    ends = np.cumsum([widths[layer] for layer in plan.layers])
    return codes, {layer: codes[:, end - widths[layer] : end] for layer, end in zip(plan.layers, ends, strict=True)}


def stored_codes_of_batch(
    backbone: Backbone, batch: torch.Tensor, plan: TapPlan, inference: Inference | None = None
) -> dict[str, np.ndarray]:
    """One batch through the network: each layer's codes in stored form, on the host (averaged
    over the views of ``plan.tta``).

    Pooling runs on the device, in fp32; only the pooled codes come back.
    """
    return averaged(view_codes_of_batch(backbone, batch, plan, inference), plan)


def averaged(views: list[dict[str, np.ndarray]], plan: TapPlan) -> dict[str, np.ndarray]:
    """Test-time augmentation: each layer's codes averaged over the views, each view's ReLU'd
    first where its ReLU was deferred (one view: its codes as they are, in stored form)."""
    if plan.tta is None:
        return views[0]

    def relu(codes: np.ndarray, layer: str) -> np.ndarray:
        return np.maximum(codes, 0) if plan.relu_deferred(layer) else codes

    return {
        layer: np.mean([relu(codes[layer], layer) for codes in views], axis=0, dtype=np.float32) for layer in views[0]
    }


def view_codes_of_batch(
    backbone: Backbone, batch: torch.Tensor, plan: TapPlan, inference: Inference | None = None
) -> list[dict[str, np.ndarray]]:
    """One batch through the network under each view of ``plan.tta`` (the image as it is first):
    each layer's codes in stored form, on the host, by view."""

    def on_tap_for(layer: str):
        relu = plan.relu_on_tap(layer)
        return lambda activation: to_codes(activation, plan.pooling, relu)

    on_tap = {layer: on_tap_for(layer) for layer in plan.layers}
    if inference is None:
        inference = Inference(backbone.network, backbone.device)
    tapped = inference.runner or functools.partial(run_taps, inference.network)
    views = symmetry.views(plan.tta)
    with backbone.lock, torch.inference_mode(), inference.autocast():
        taken = [
            tapped(
                inference.prepare(view(batch)),
                plan.layers,
                plan.head,
                on_tap=lambda activation, layer: on_tap[layer](activation.float()),
            )
            for view in views
        ]
    return [{layer: codes[layer].float().cpu().numpy() for layer in plan.layers} for codes in taken]


# -- checking the parameters of one backbone --------------------------------


def layer_names(layer) -> list[str]:
    """``layer`` as a list of distinct names."""
    names = [layer] if isinstance(layer, str) else list(layer)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"layer must be a layer name or a non-empty list of names; got {layer!r}. "
            f"Use {PENULTIMATE!r} or names from skcnn.list_layers(backbone)."
        )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"layer lists {duplicated} more than once.")
    return names


def cache_layer_names(names: list[str], cache_layers, cache) -> list[str]:
    """The tapped layers, then the further ``cache_layers`` (in order, once)."""
    if cache_layers is None:
        return names
    extra = [cache_layers] if isinstance(cache_layers, str) else list(cache_layers)
    if not all(isinstance(name, str) for name in extra):
        raise ValueError(f"cache_layers must be a list of layer names or None; got {cache_layers!r}.")
    if cache is None:
        raise ValueError(
            "cache_layers needs a cache: set cache='codes.h5' (the extra layers are stored there), "
            "or leave cache_layers=None."
        )
    return list(dict.fromkeys([*names, *extra]))


def check_tta(tta, crop_size: tuple[int, int]) -> str | None:
    """``tta``: None, or a policy of :mod:`skcnn.decoding.symmetry` that fits the input size."""
    if tta is None:
        return None
    if not isinstance(tta, str) or tta not in symmetry.POLICIES:
        raise ValueError(f"tta must be None or one of {sorted(symmetry.POLICIES)}; got {tta!r}.")
    symmetry.check_fits(tta, crop_size, "tta")
    return tta


def checked_input_size(size) -> tuple[int, int] | None:
    """``input_size`` as a (height, width) pair, or None."""
    if size is None:
        return None
    if isinstance(size, Integral) and size >= 1:
        return (int(size), int(size))
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, Integral) and s >= 1 for s in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(
        f"input_size must be None, a positive int or a (height, width) pair of positive ints; got {size!r}."
    )
