"""The network that trains: the pretrained one, tapped at a layer, with a new linear head.

The head reads exactly the codes :class:`~skcnn.CNNFeatureTransformer`
gives for that layer by default (ReLU'd, average-pooled), so a linear probe
fit on those frozen codes starts it where frozen codes end (LP-FT). The
pass stops at the tapped layer: layers after it never run and never train.
The pretrained network is kept whole, its own ImageNet head included, so
its weights load into the transformer as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from ..codes.pooling import to_codes
from ..network.taps import run_taps
from ..options import DEFAULTS

#: The module names ``unfreeze`` takes besides layer names.
WHOLE, HEAD = "all", "head"


class TappedClassifier(nn.Module):
    """``network`` up to ``layer``, its codes pooled, then ``head``.

    Parameters
    ----------
    network : nn.Module
        The pretrained network (trained in place).
    layer : str
        A layer name of ``network`` or ``"penultimate"``.
    network_head : str
        The name of ``network``'s own classifier head (whose input is ``"penultimate"``).
    head : nn.Linear or None
        The new head, from the codes of ``layer`` to the classes (None: set
        later, from a probe of :meth:`codes`).
    channels_last : bool, default=False
        Convolution weights and batches in NHWC layout, which oneDNN and
        cuDNN train and run faster on (EfficientNet-Lite0 on a 2-core CPU:
        1.5x the training images per second, ``benchmarks/RESULTS.md``,
        "Training speed"). Batches are laid out so on entry.
    """

    def __init__(
        self, network: nn.Module, layer: str, network_head: str, head: nn.Linear | None, channels_last: bool = False
    ):
        super().__init__()
        self.network, self.head = network, head
        self.layer, self.network_head = layer, network_head
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.network.to(memory_format=torch.channels_last)

    def codes(self, images: torch.Tensor) -> torch.Tensor:
        """What the head reads: the codes of ``layer`` (ReLU'd, average-pooled)."""
        images = images.contiguous(memory_format=self.layout)
        return run_taps(self.network, images, [self.layer], self.network_head, _codes)[self.layer]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.codes(images))

    @staticmethod
    def module_name(unfreeze: str) -> str:
        """The module where training starts, ``unfreeze`` being ``"all"``, ``"head"`` or a layer name."""
        return unfreeze if unfreeze in (WHOLE, HEAD) else f"network.{unfreeze}"


def _codes(activation: torch.Tensor, layer: str) -> torch.Tensor:
    return to_codes(activation, DEFAULTS.pooling, DEFAULTS.relu)


def set_mode(network: nn.Module, training: bool, batchnorm: str) -> None:
    """``train()`` / ``eval()``, batch norm kept in eval mode unless it trains."""
    network.train(training)
    if batchnorm != "train":
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def network_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pretrained network's weights in a :class:`TappedClassifier`'s state dict, named as its own
    architecture names them (the file a transformer's ``weights=`` reads)."""
    prefix = "network."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def linear_head(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """A ``Linear`` layer holding these weights (those of a fitted linear probe)."""
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head


__all__ = ["HEAD", "WHOLE", "TappedClassifier", "linear_head", "network_weights", "set_mode"]
