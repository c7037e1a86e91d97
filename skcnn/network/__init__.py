"""The frozen network and how it runs: where weights come from, the backbones,
tapping layers in one forward pass, which layers there are, and the arithmetic
(precision, folded batch norm, ``torch.compile``, ONNX Runtime).

The public path of the layer listing is :mod:`skcnn.layers` (the module ``layers`` here).
"""
