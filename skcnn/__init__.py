"""skcnn: frozen pretrained CNN codes as scikit-learn transformers.

The path an image takes, one module each: ``images`` (decode) ->
``preprocessing`` (resize, crop, normalise) -> ``backbones`` / ``weights``
(the frozen network) -> ``taps`` (layers read in one forward pass) ->
``pooling`` (ReLU and pooling into codes) -> ``transformer`` (the
scikit-learn estimator).
"""

from importlib.metadata import PackageNotFoundError, version

from .layers import Layer, list_layers
from .transformer import CNNFeatureTransformer

try:
    __version__ = version("skcnn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["CNNFeatureTransformer", "Layer", "list_layers", "__version__"]
