"""The codes inspection reads, each image decoded once for all its readers.

A report reads two sets of codes of the same images: the model's (a
pipeline's transformer, or the frozen codes a CNNClassifier's head is fit
on) and those :func:`~skcnn.inspection.find_duplicates` compares. Where
both come from one network at one input size (their cache configurations
differ in the layer and the pooling alone), one transformer taps every
layer they read, pooled every way they read them, and each reader takes
its columns of the codes, as :class:`~skcnn.LayerSearchCV` reads its
candidates: one decode and one forward pass per image. Readers that
cannot share a pass get one each.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from sklearn.base import clone

from ..codes.cache import CodeCache
from ..codes.extraction import layer_names
from ..codes.pooling import n_codes, pooled_widths, pooling_names
from ..decoding import images as image_io
from ..decoding.identity import content_keys
from ..frozen.transformer import CNNFeatureTransformer


class Codes(NamedTuple):
    """Codes of a list of images, NaN rows for those that could not be used, and why."""

    codes: np.ndarray
    failures: list[image_io.ImageFailure]


def transformed(transformer: CNNFeatureTransformer, images: list, fit: bool = True) -> Codes:
    """The codes of ``images`` and the failures, under either ``on_error`` (the work on the other images is kept)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", image_io.BadImagesWarning)
        try:
            codes = transformer.fit_transform(images) if fit else transformer.transform(images)
        except image_io.BadImagesError as error:
            return Codes(np.asarray(error.codes), error.failures)
    return Codes(np.asarray(codes), transformer.failed_)


def read_codes(readers: Mapping[str, CNNFeatureTransformer], images: list) -> dict[str, Codes]:
    """Each reader's codes of ``images``, by name: one pass for every reader that can be tapped
    together with an earlier one (the earliest one's runtime, batches, progress and ``on_error``), one
    pass for each other. The first decode of each image names the bad ones; no check comes first."""
    passes: list[tuple[CNNFeatureTransformer, list[str]]] = []
    for name, reader in readers.items():
        for i, (lead, names) in enumerate(passes):
            joined = tapped_together(lead, reader)
            if joined is not None:
                passes[i] = (joined, [*names, name])
                break
        else:
            passes.append((reader, [name]))
    read = {}
    for transformer, names in passes:
        transformer = clone(transformer)
        result = transformed(transformer, images)
        for name in names:
            codes = result.codes if len(names) == 1 else columns(transformer, result.codes, readers[name])
            read[name] = Codes(codes, result.failures)
    return read


def tapped_together(lead: CNNFeatureTransformer, other: CNNFeatureTransformer) -> CNNFeatureTransformer | None:
    """A transformer whose codes hold ``lead``'s and ``other``'s (see :func:`columns`), or None where
    they differ in more than their layers and poolings (network, weights, input size, precision ...)."""
    if not (isinstance(lead.backbone, str) and lead.backbone == other.backbone and lead.relu == other.relu):
        return None
    layers = list(dict.fromkeys([*layer_names(lead.layer), *layer_names(other.layer)]))
    poolings = list(dict.fromkeys([*pooling_names(lead.pooling), *pooling_names(other.pooling)]))
    # No cache: its codes would be stored under a configuration that neither reader looks up.
    joined = clone(lead).set_params(
        layer=layers, pooling=poolings[0] if len(poolings) == 1 else poolings, cache=None, cache_layers=None
    )
    try:
        as_other = clone(joined).set_params(layer=other.layer, pooling=other.pooling).fit([])
        other = clone(other).set_params(cache=None, cache_layers=None).fit([])
    except ValueError:  # a layer the network lacks, a pooling its layers cannot take
        return None
    # The cache's key holds everything that changes a layer's codes; ReLU, where applied on reading, aside.
    same = all(
        as_other.extractor_.cache_config(layer) == other.extractor_.cache_config(layer) for layer in other.layers_
    )
    return joined if same else None


def columns(joined: CNNFeatureTransformer, codes: np.ndarray, reader: CNNFeatureTransformer) -> np.ndarray:
    """``reader``'s codes out of ``codes``, those of the fitted ``joined`` (:func:`tapped_together`):
    each of its layers, each pooled its ways, in its order."""
    poolings = pooling_names(joined.pooling)
    where: dict[tuple[str, str | None], slice] = {}
    start = 0
    for layer in joined.layers_:
        shape = joined.layer_shapes_[layer]
        names = poolings if len(shape) > 1 else (None,)  # a vector: once, whatever the pooling
        for name, width in zip(names, pooled_widths(shape, poolings), strict=True):
            where[layer, name] = slice(start, start + width)
            start += width
    wanted = [
        where[layer, name]
        for layer in layer_names(reader.layer)
        for name in (pooling_names(reader.pooling) if len(joined.layer_shapes_[layer]) > 1 else (None,))
    ]
    return np.concatenate([codes[:, part] for part in wanted], axis=1)


def store_codes(store: CodeCache, transformer: CNNFeatureTransformer, images: list, codes: np.ndarray) -> None:
    """Write ``codes``, ``transformer``'s of ``images`` (NaN rows left out), into ``store`` under the
    configuration ``transformer`` with that cache looks them up by.

    They are written as ``transform`` returns them: where the cache keeps a
    layer's codes before ReLU, the ReLU a reader applies again changes
    nothing. So ``store`` must be one only such readers read (inspection's
    own temporary file), never a user's cache, where a reader with
    ``relu=False`` would share them.
    """
    fitted = clone(transformer).set_params(cache=None, cache_layers=None).fit([])
    keys = content_keys(images, [])
    rows = [i for i in sorted(keys) if not np.isnan(codes[i]).any()]
    if not rows:
        return
    batch, start = {}, 0
    for layer in fitted.layers_:
        width = n_codes(fitted.layer_shapes_[layer], fitted.pooling)
        config = fitted.extractor_.cache_config(layer)
        batch[layer] = (config, [keys[i] for i in rows], codes[rows, start : start + width])
        start += width
    store.write(batch)
