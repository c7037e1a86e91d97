"""The decoding pipeline: worker threads, order, bounded prefetch, failures, shutdown."""

import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image

from skcnn import CNNFeatureTransformer, backbones, extraction, loading
from skcnn.images import ImageFailure, load_image

SMALL = dict(backbone="efficientnet_lite0", input_size=64, batch_size=4)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """Twelve JPEG files of different sizes, from a real photo."""
    from skimage.data import chelsea

    folder = tmp_path_factory.mktemp("jpegs")
    photo = Image.fromarray(chelsea())
    paths = []
    for i in range(12):
        path = folder / f"{i:02d}.jpg"
        photo.resize((160 + 20 * i, 120 + 15 * i)).save(path, quality=90)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def recipe():
    return backbones.load_backbone("efficientnet_lite0", "DEFAULT").preprocessing.with_input_size(64)


def decode_threads():
    return [t for t in threading.enumerate() if t.name.startswith("skcnn-decode")]


@pytest.mark.parametrize("num_workers", [1, 3])
def test_codes_are_identical_whatever_the_worker_count(jpegs, num_workers):
    images = [*jpegs, np.asarray(Image.open(jpegs[0]))]
    reference = CNNFeatureTransformer(**SMALL, num_workers=0, precision="fp32").fit(images).transform(images)
    codes = CNNFeatureTransformer(**SMALL, num_workers=num_workers, precision="fp32").fit(images).transform(images)
    np.testing.assert_array_equal(codes, reference)


def test_batches_come_in_order_and_failures_are_the_same_as_without_workers(jpegs, recipe):
    images = list(jpegs)
    images[2] = "no/such/file.jpg"
    images[7] = np.full((8, 8, 3), 2.0)  # float outside [0, 1]
    outcomes = []
    for num_workers in (0, 2):
        failures = []
        batches = list(loading.iter_batches(images, range(len(images)), recipe, 4, failures, num_workers=num_workers))
        outcomes.append(([p for p, _ in batches], [b for _, b in batches], failures))
    (positions, tensors, failures), (positions_2, tensors_2, failures_2) = outcomes
    assert positions == positions_2 == [[0, 1, 3, 4], [5, 6, 8, 9], [10, 11]]
    assert failures == failures_2
    assert [f.index for f in failures] == [2, 7]
    assert "no/such/file.jpg" in failures[0].source and "not found" in failures[0].reason
    for a, b in zip(tensors, tensors_2, strict=True):
        assert torch_equal(a, b)
    assert not decode_threads()


def torch_equal(a, b):
    return a.shape == b.shape and bool((a == b).all())


class CountingImages:
    """A sequence of images that records how far decoding has read."""

    def __init__(self, n):
        self.n, self.read = n, 0
        self.image = np.zeros((16, 16, 3), np.uint8)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.read = max(self.read, i + 1)
        return self.image


def test_prefetch_is_bounded_whatever_the_number_of_images(recipe):
    images = CountingImages(10_000)
    batches = loading.iter_batches(images, range(len(images)), recipe, 8, [], num_workers=2)
    consumed = 0
    for positions, _ in batches:
        consumed += len(positions)
        time.sleep(0.01)  # a slow network: decoding runs ahead as far as it may
        assert images.read <= consumed + 2 * 8
        if consumed >= 64:
            break
    batches.close()
    assert images.read < 100
    assert not decode_threads()


def test_an_unexpected_worker_error_surfaces_naming_the_image(jpegs, recipe, monkeypatch):
    real = loading.decode

    def failing(image, *args):
        if image == jpegs[5]:
            raise RuntimeError("disk controller on fire")
        return real(image, *args)

    monkeypatch.setattr(loading, "decode", failing)
    outcome = {}

    def run():
        try:
            list(loading.iter_batches(jpegs, range(len(jpegs)), recipe, 4, [], num_workers=2))
        except RuntimeError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the pipeline hung on a worker error"
    error = outcome["error"]
    assert "disk controller on fire" in str(error)
    if hasattr(error, "__notes__"):
        assert any(jpegs[5] in note for note in error.__notes__)
    assert not decode_threads()


def test_bad_images_still_become_failures_with_workers(jpegs):
    images = [*jpegs[:3], "missing.jpg"]
    t = CNNFeatureTransformer(**SMALL, num_workers=2, on_error="skip").fit(images)
    with pytest.warns(UserWarning, match="1 of 4"):
        codes = t.transform(images)
    assert t.failed_ == [ImageFailure(3, "image 3 ('missing.jpg')", "Image file not found: 'missing.jpg'.")]
    assert np.isnan(codes[3]).all() and np.isfinite(codes[:3]).all()


def test_an_interrupted_transform_stops_its_decoding_threads(jpegs, monkeypatch):
    real = extraction.stored_codes_of_batch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(extraction, "stored_codes_of_batch", interrupted)
    t = CNNFeatureTransformer(**SMALL, num_workers=2).fit(jpegs)
    with pytest.raises(KeyboardInterrupt):
        t.transform(jpegs * 20)
    assert not decode_threads()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed interrupt
def test_a_ctrl_c_swallowed_by_a_finaliser_still_stops_the_run(jpegs, monkeypatch):
    # Python prints a KeyboardInterrupt raised inside __del__ as "ignored" and
    # goes on; it happened about once in ten Ctrl-C during a cached run.
    class RaisesOnDelete:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)

    real = extraction.stored_codes_of_batch
    calls = []

    def swallowed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            RaisesOnDelete()  # freed at once: the interrupt is lost in its finaliser
        return real(*args, **kwargs)

    monkeypatch.setattr(extraction, "stored_codes_of_batch", swallowed)
    t = CNNFeatureTransformer(**{**SMALL, "batch_size": 2}).fit(jpegs)
    with pytest.raises(KeyboardInterrupt):
        t.transform(jpegs * 10)
    assert len(calls) == 2  # stopped at the next batch
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


CTRL_C = """
import multiprocessing, sys, threading, numpy as np
from skcnn import CNNFeatureTransformer
paths = sys.argv[1:]
t = CNNFeatureTransformer(backbone="efficientnet_lite0", input_size=64, batch_size=4, num_workers=2).fit(paths)
print("ready", flush=True)
try:
    t.transform(paths * 500)
except KeyboardInterrupt:
    alive = [th.name for th in threading.enumerate() if th.name.startswith("skcnn-decode")]
    print("threads", alive, "children", multiprocessing.active_children(), flush=True)
    raise
"""


def test_ctrl_c_shuts_the_pipeline_down_cleanly(jpegs):
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CTRL_C), *jpegs],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    child.send_signal(signal.SIGINT)
    start = time.monotonic()
    out, err = child.communicate(timeout=60)
    assert time.monotonic() - start < 30  # no hang (about 1 s on an idle machine)
    assert child.returncode != 0 and "KeyboardInterrupt" in err
    assert "threads [] children []" in out  # no decoding thread or process left behind


def test_draft_decoding_is_opt_in_smaller_and_close(jpegs, tmp_path):
    from skimage.data import astronaut

    path = tmp_path / "big.jpg"
    Image.fromarray(astronaut()).resize((1000, 1000)).save(path, quality=92)
    full = load_image(str(path))
    draft = load_image(str(path), draft_size=256)
    assert full.shape == (1000, 1000, 3) and draft.shape == (500, 500, 3)  # 1/2 scale keeps >= 256
    images = [str(path), np.asarray(Image.open(path))]
    exact = CNNFeatureTransformer(**SMALL).fit(images).transform(images)
    np.testing.assert_array_equal(exact[0], exact[1])  # by default a path and its array agree
    approx = CNNFeatureTransformer(**SMALL, decode="draft").fit(images).transform(images)
    np.testing.assert_array_equal(approx[1], exact[1])  # arrays are never drafted
    assert not np.array_equal(approx[0], exact[0])
    cosine = approx[0] @ exact[0] / np.linalg.norm(approx[0]) / np.linalg.norm(exact[0])
    assert cosine > 0.95


def test_auto_workers_never_exceed_half_the_cores_or_four(monkeypatch):
    for cores, expected in [(1, 1), (2, 1), (4, 2), (16, 4)]:
        monkeypatch.setattr(loading, "usable_cores", lambda cores=cores: cores)
        assert loading.resolve_workers("auto") == expected
    assert loading.resolve_workers(0) == 0
