import numpy as np
import pytest


@pytest.fixture
def rgb_images():
    """Eight small random RGB images (uint8, 40 x 48)."""
    return np.random.default_rng(0).integers(0, 256, (8, 40, 48, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def textures():
    """Real texture patches: (X_train, y_train, X_test, y_test)."""
    from skcnn.datasets import load_texture_patches

    X_train, y_train = load_texture_patches("train", n_per_class=20, patch_size=48)
    X_test, y_test = load_texture_patches("test", n_per_class=20, patch_size=48)
    return X_train, y_train, X_test, y_test
