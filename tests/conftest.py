import os
import shutil
import signal
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

from skcnn.network.onnx_runtime import CACHE_DIR_ENV

# ONNX exports of the whole run go to one temporary folder, shared by the
# tests and by the processes they start (Dask workers, killed children): an
# export is made once per network and taps, as on a user's machine, and none
# is left in the user's cache. Set before any test module is imported, as
# some keep a copy of this environment.
_EXPORTS = tempfile.mkdtemp(prefix="skcnn-test-onnx-")
os.environ[CACHE_DIR_ENV] = _EXPORTS

# A shell starts background jobs with Ctrl-C ignored, and Python then leaves
# it ignored (and so do the processes it starts): the Ctrl-C tests need
# Python's own handler, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
def _exported_graphs_in_a_test_folder():
    """Remove the run's ONNX exports at its end (see the top of this file)."""
    yield
    shutil.rmtree(_EXPORTS, ignore_errors=True)


@pytest.fixture(autouse=True)
def _figures_closed():
    """Each test's matplotlib figures closed after it: pyplot keeps every figure it made until then."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def returned_codes(backbone, batch, plan, inference=None):
    """Codes of one batch as a user gets them: ReLU where it was deferred, layers concatenated."""
    from skcnn.codes.extraction import stored_codes_of_batch

    stored = stored_codes_of_batch(backbone, batch, plan, inference)
    blocks = []
    for layer in plan.layers:
        codes = stored[layer]
        blocks.append(np.maximum(codes, 0, dtype=np.float32) if plan.relu_on_read(layer) else codes)
    return np.concatenate(blocks, axis=1)


@pytest.fixture
def photos_and_arrays(tmp_path):
    """Six images of slightly different sizes: three JPEG files, then three uint8 arrays."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8) for i in range(6)]
    paths = []
    for i, array in enumerate(arrays[:3]):
        paths.append(str(tmp_path / f"photo{i}.jpg"))
        Image.fromarray(array).save(paths[-1], quality=90)
    return [*paths, *arrays[3:]]


@pytest.fixture
def decodes(monkeypatch):
    """How many images were decoded, counted where the loader decodes them."""
    from skcnn.decoding import loading

    calls = []
    real = loading.decode
    monkeypatch.setattr(loading, "decode", lambda image, *a, **k: calls.append(1) or real(image, *a, **k))
    return calls
