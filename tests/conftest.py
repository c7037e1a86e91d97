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


@pytest.fixture(autouse=True, scope="session")
def _exported_graphs_in_a_test_folder(tmp_path_factory):
    """ONNX exports of the whole run go to one temporary folder, shared by
    the tests (an export is made once per network and taps, as on a user's
    machine) and not left in the user's cache."""
    import os

    from skcnn.onnx_runtime import CACHE_DIR_ENV

    previous = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("onnx"))
    yield
    if previous is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = previous
