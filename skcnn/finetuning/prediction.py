"""The fitted classifier's prediction pass, run as the transformer runs a backbone.

The fine-tuned network is wrapped as a :class:`~skcnn.network.backbones.Backbone`
named by the content hash of its weights, so that
:func:`skcnn.network.arithmetic.inference_for` gives it what it gives a pretrained
backbone: a private copy with batch norm folded, in channels_last layout,
on the runtime and in the precision :func:`skcnn.network.arithmetic.resolve_runtime`
chooses (``"auto"``: ONNX Runtime in fp32 on a CPU, its export kept per
machine under that hash; torch in bf16 where the CPU has it natively and it
pays; fp16 on CUDA), the first batch checked against the torch pass, a
network that fails falling back to torch with one warning. The codes of the
head's layer (ReLU'd, average-pooled, in fp32) then go through the linear
head in fp32, on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..codes.extraction import TapPlan, stored_codes_of_batch
from ..decoding.preprocessing import Preprocessing
from ..network import arithmetic
from ..network.arithmetic import Inference
from ..network.backbones import Backbone, BackboneSpec
from ..network.weights import state_dict_digest
from ..options import DEFAULTS
from .model import TappedClassifier


@dataclass(eq=False)
class Predictor:
    """Batches of normalised images -> logits of a fitted :class:`TappedClassifier`."""

    backbone: Backbone
    plan: TapPlan
    inference: Inference
    #: The head's weights and bias, fp32 numpy on the host.
    weight: np.ndarray
    bias: np.ndarray

    @classmethod
    def build(
        cls,
        model: TappedClassifier,
        spec: BackboneSpec,
        recipe: Preprocessing,
        runtime: str,
        precision: str,
        tta: str | None = None,
    ) -> Predictor:
        """The pass of ``model`` (in eval mode) at ``recipe``'s input size.

        ``runtime``, ``precision`` and ``tta`` are the transformer's
        parameters of the same names (:func:`skcnn.network.arithmetic.resolve_runtime`;
        :mod:`skcnn.decoding.symmetry`); an explicit
        ``runtime="onnxruntime"`` that cannot run raises ``ValueError``. With
        ``tta`` the head's codes are averaged over the views, and as the
        head is linear, so are the logits.
        """
        network = model.network
        device = next(network.parameters()).device
        runtime, precision = arithmetic.resolve_runtime(runtime, precision, device, None, network)
        weights_id = "fine-tuned:sha256:" + state_dict_digest(network.state_dict())
        backbone = Backbone(spec, network, recipe, device, weights_id)
        # shapes=None: ReLU before pooling, as the model's own codes (TappedClassifier.codes).
        plan = TapPlan((model.layer,), model.network_head, DEFAULTS.pooling, DEFAULTS.relu, tta=tta)
        inference = arithmetic.inference_for(
            backbone,
            precision,
            keep=frozenset(plan.layers),
            input_size=recipe.crop_size,
            runtime=runtime,
            # As many as torch's intra-op threads, as the transformer gives it.
            threads=torch.get_num_threads(),
        )
        head = model.head
        weight = head.weight.detach().float().cpu().numpy()
        bias = head.bias.detach().float().cpu().numpy()
        return cls(backbone, plan, inference, weight, bias)

    @property
    def runtime(self) -> str:
        """``"onnxruntime"`` or ``"torch"``, as resolved."""
        return "torch" if self.inference.runner is None else "onnxruntime"

    def logits(self, batch: torch.Tensor) -> np.ndarray:
        """float32 ``(len(batch), n_classes)``: the codes through the head."""
        codes = stored_codes_of_batch(self.backbone, batch, self.plan, self.inference)[self.plan.layers[0]]
        return codes @ self.weight.T + self.bias


__all__ = ["Predictor"]
