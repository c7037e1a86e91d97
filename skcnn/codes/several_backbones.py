"""Several networks' codes side by side (AlexNet + VGG): ``backbone=[...]``.

Each backbone gets its own parameters (:func:`split_params`) and its own
:class:`~skcnn.codes.extraction.Extractor`; :class:`ConcatenatedExtractor` puts
their codes next to each other, in the order of the list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .extraction import Extraction, Extractor

#: Parameters that may differ between the backbones of a list.
PER_BACKBONE = ("weights", "layer", "input_size", "cache_layers")


def backbone_names(backbone) -> list[str]:
    """``backbone=[...]`` as a checked list of distinct names."""
    names = list(backbone)
    if not names or not all(isinstance(name, str) for name in names):
        raise ValueError(f"backbone must be a name or a non-empty list of names; got {backbone!r}.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"backbone lists {repeated} more than once; each backbone's codes are taken once.")
    return names


def split_params(params: Mapping) -> list[dict]:
    """One backbone's parameters per entry of ``params["backbone"]``, in order."""
    names = backbone_names(params["backbone"])
    per_backbone = {param: _per_backbone(params[param], names, param) for param in PER_BACKBONE if param in params}
    return [
        {**params, "backbone": name, **{param: values[name] for param, values in per_backbone.items()}}
        for name in names
    ]


def check_one_value_each(params: Mapping) -> None:
    """With one backbone, per-backbone forms (a dict; a list of weights) are refused."""
    for param in PER_BACKBONE:
        value = params.get(param)
        if isinstance(value, dict) or (param == "weights" and isinstance(value, (list, tuple))):
            raise ValueError(
                f"{param}={value!r} is per backbone, for several backbones "
                f"(backbone=[...]); backbone is {params['backbone']!r}: give one value."
            )


def _per_backbone(value, names: list[str], param: str) -> dict:
    """``{backbone: value}`` from a dict, a list with one entry per backbone,
    or one value for all (always one value for ``input_size``, whose pairs
    are a height and a width)."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        missing = [name for name in names if name not in value]
        if unknown or missing:
            raise ValueError(
                f"{param} must have one entry per backbone of {names}; unknown: {unknown}, missing: {missing}."
            )
        return dict(value)
    if not isinstance(value, (list, tuple)) or param == "input_size":
        return dict.fromkeys(names, value)
    if len(value) != len(names):
        raise ValueError(
            f"{param}={value!r}: with several backbones {names}, a list gives one entry per backbone "
            f"({len(names)}, not {len(value)}); give one value for all, or a dict "
            f"{{backbone: value}} (e.g. {{{names[0]!r}: ['blocks.2', 'penultimate']}})."
        )
    return dict(zip(names, value, strict=True))


@dataclass(frozen=True)
class ConcatenatedExtractor:
    """The codes of several :class:`~skcnn.codes.extraction.Extractor`, side by side.

    A row fails if any backbone failed it; cache statistics are a dict by
    backbone.
    """

    parts: tuple[Extractor, ...]

    @property
    def width(self) -> int:
        return sum(part.width for part in self.parts)

    def feature_names(self) -> list[str]:
        return [name for part in self.parts for name in part.feature_names()]

    def codes(self, images: Sequence, *, progress: bool = False) -> Extraction:
        if not len(images):
            return Extraction(np.empty((0, self.width), dtype=np.float32), [], None)
        blocks, failed, cache_stats = [], {}, {}
        for part in self.parts:
            codes, part_failed, cache_stats[part.backbone] = part.codes(images, progress=progress)
            blocks.append(codes)
            for failure in part_failed:
                failed.setdefault(failure.index, failure)
        codes = np.concatenate(blocks, axis=1)
        codes[sorted(failed)] = np.nan
        return Extraction(codes, [failed[i] for i in sorted(failed)], cache_stats)


__all__ = ["PER_BACKBONE", "ConcatenatedExtractor", "backbone_names", "check_one_value_each", "split_params"]
