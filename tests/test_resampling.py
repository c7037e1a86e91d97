"""skcnn.deployment.resampling: torch's antialiased uint8 resize, value for value, in numpy."""

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from skcnn.deployment.resampling import resize


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_the_resize_is_torchs_value_for_value(interpolation):
    rng = np.random.default_rng(0)
    for _ in range(40):
        (h, w), (out_h, out_w) = rng.integers(3, 120, size=2), rng.integers(2, 300, size=2)
        pixels = rng.integers(0, 256, size=(h, w, int(rng.choice([1, 3]))), dtype=np.uint8)
        expected = F.resize(torch.from_numpy(pixels).permute(2, 0, 1), [int(out_h), int(out_w)],
                            interpolation=InterpolationMode(interpolation), antialias=True)  # fmt: skip
        np.testing.assert_array_equal(resize(pixels, (out_h, out_w), interpolation), expected.permute(1, 2, 0).numpy())


def test_a_filter_torch_computes_otherwise_is_refused():
    with pytest.raises(ValueError, match="interpolation must be one of"):
        resize(np.zeros((4, 4, 3), np.uint8), (8, 8), "lanczos")
