"""Module paths that name code living in a part folder: users' imports and older pickles.

Until 0.8 the package was flat (``skcnn.cache``, ``skcnn.transformer``, ...).
The code now sits in folders named for the parts of the flow, but those paths
keep working: :data:`MOVED` maps each to its module, and :func:`install`
puts a finder on :data:`sys.meta_path` that answers an import of the old
name with that module itself (one object, so ``skcnn.cache.CodeCache is
skcnn.codes.cache.CodeCache``, and a pickle that names
``skcnn.transformer.CNNFeatureTransformer`` loads). Six of them are the
documented public paths: :mod:`skcnn.images`, :mod:`skcnn.layers`,
:mod:`skcnn.cache`, :mod:`skcnn.dask`, :mod:`skcnn.export`,
:mod:`skcnn.serving`. Nothing is imported until a name is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: Each path a module had before 0.8 -> where it is now.
MOVED = {
    # reading images: files -> pixels -> network input
    "skcnn.images": "skcnn.decoding.images",
    "skcnn.jpeg": "skcnn.decoding.jpeg",
    "skcnn.identity": "skcnn.decoding.identity",
    "skcnn.preprocessing": "skcnn.decoding.preprocessing",
    "skcnn.loading": "skcnn.decoding.loading",
    "skcnn.symmetry": "skcnn.decoding.symmetry",
    # the network and how it runs
    "skcnn.weights": "skcnn.network.weights",
    "skcnn.backbones": "skcnn.network.backbones",
    "skcnn.taps": "skcnn.network.taps",
    "skcnn.layers": "skcnn.network.layers",
    "skcnn.arithmetic": "skcnn.network.arithmetic",
    "skcnn.compiled": "skcnn.network.compiled",
    "skcnn.onnx_runtime": "skcnn.network.onnx_runtime",
    # codes and their cache
    "skcnn.pooling": "skcnn.codes.pooling",
    "skcnn.extraction": "skcnn.codes.extraction",
    "skcnn.several_backbones": "skcnn.codes.several_backbones",
    "skcnn.cache": "skcnn.codes.cache",
    # the first strategy's estimators, and their scale-out
    "skcnn.dask": "skcnn.frozen.dask",
    "skcnn.transformer": "skcnn.frozen.transformer",
    "skcnn.search": "skcnn.frozen.search",
    "skcnn.advice": "skcnn.frozen.advice",
    # shipping
    "skcnn.export": "skcnn.deployment.export",
    "skcnn.serving": "skcnn.deployment.serving",
    "skcnn.resampling": "skcnn.deployment.resampling",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of a :data:`MOVED` path, answered with the module it names."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        # The module under its own name: the import system binds the old name to
        # it as well, and sets its __spec__ to this one, put back by exec_module.
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # imported already, by create_module


def install() -> None:
    """Put the finder on :data:`sys.meta_path` once per process."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())


__all__ = ["MOVED", "MovedModules", "install"]
