"""The decoding pipeline: worker threads, order, bounded prefetch, failures, shutdown."""

import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from skcnn import CNNFeatureTransformer
from skcnn.codes import extraction
from skcnn.decoding import loading
from skcnn.images import BadImagesWarning, ImageFailure, load_image
from skcnn.network import backbones

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
    with pytest.warns(BadImagesWarning, match="1 of 4"):
        codes = t.transform(images)
    assert t.failed_ == [ImageFailure(3, "image 3 ('missing.jpg')", "Image file not found: 'missing.jpg'.")]
    assert np.isnan(codes[3]).all() and np.isfinite(codes[:3]).all()


def test_an_interrupted_transform_stops_its_decoding_threads(jpegs, monkeypatch):
    real = extraction.view_codes_of_batch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(extraction, "view_codes_of_batch", interrupted)
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

    real = extraction.view_codes_of_batch
    calls = []

    def swallowed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            RaisesOnDelete()  # freed at once: the interrupt is lost in its finaliser
        return real(*args, **kwargs)

    monkeypatch.setattr(extraction, "view_codes_of_batch", swallowed)
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


@pytest.mark.slow
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
    draft = load_image(str(path), min_side=256)
    assert full.shape == (1000, 1000, 3) and draft.shape == (500, 500, 3)  # 1/2 scale keeps >= 256
    images = [str(path), np.asarray(Image.open(path))]
    exact = CNNFeatureTransformer(**SMALL, decode="exact").fit(images).transform(images)
    np.testing.assert_array_equal(exact[0], exact[1])  # under "exact" a path and its array agree
    approx = CNNFeatureTransformer(**SMALL, decode="draft").fit(images).transform(images)
    np.testing.assert_array_equal(approx[1], exact[1])  # arrays are never drafted
    assert not np.array_equal(approx[0], exact[0])
    cosine = approx[0] @ exact[0] / np.linalg.norm(approx[0]) / np.linalg.norm(exact[0])
    assert cosine > 0.95


@pytest.fixture(scope="module")
def phone_photo(tmp_path_factory):
    """A 12 MP JPEG (4032 x 3024, quality 90, with grain) as phones write them."""
    from skimage.data import chelsea

    rng = np.random.default_rng(0)
    small = np.asarray(Image.fromarray(chelsea()).resize((1008, 756), Image.BICUBIC))
    grain = rng.normal(0, 4, (756, 1008, 3))
    big = Image.fromarray(np.clip(small + grain, 0, 255).astype(np.uint8)).resize((4032, 3024), Image.BILINEAR)
    path = tmp_path_factory.mktemp("phone") / "IMG_0001.jpg"
    big.save(path, quality=90)
    return path


@pytest.mark.parametrize(
    "decode, shape",
    [("exact", (3024, 4032, 3)), ("auto", (1512, 2016, 3)), ("draft", (378, 504, 3))],
)
def test_decode_modes_scale_a_phone_photo_as_documented(phone_photo, decode, shape):
    recipe = backbones.load_backbone("efficientnet_lite0", "DEFAULT").preprocessing  # resize 256, crop 224
    assert load_image(phone_photo, min_side=recipe.min_decoded_side(decode)).shape == shape
    crop = loading.decode(phone_photo, recipe, decode=decode)
    assert crop.shape == (3, 224, 224) and crop.dtype == torch.uint8


@pytest.mark.slow
def test_auto_decoding_of_a_phone_photo_stays_close_to_exact(phone_photo):
    images = [str(phone_photo)]
    params = dict(backbone="efficientnet_lite0", precision="fp32", num_workers=0)
    exact = CNNFeatureTransformer(**params, decode="exact").fit(images).transform(images)[0]
    auto = CNNFeatureTransformer(**params).fit(images).transform(images)[0]
    drift = np.linalg.norm(auto - exact) / np.linalg.norm(exact)
    assert 0 < drift < 0.02  # the figure "auto" is documented with


@pytest.mark.parametrize("decode", ["exact", "auto"])
def test_a_phone_photo_never_becomes_a_full_size_float_array(phone_photo, decode):
    """tracemalloc sees numpy's allocations (the decoded pixels), not torch's:
    a full-size float32 copy would be 146 MB, its uint8 pixels are 37 MB."""
    import tracemalloc

    recipe = backbones.load_backbone("efficientnet_lite0", "DEFAULT").preprocessing
    loading.decode(phone_photo, recipe, decode=decode)  # warm: imports, kernels
    tracemalloc.start()
    try:
        loading.decode(phone_photo, recipe, decode=decode)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pixels = 4032 * 3024 * 3
    assert peak < (1.2 * pixels if decode == "exact" else 0.4 * pixels)  # auto: 1/2 scale, a quarter of them


PEAK = """
import sys
from skcnn.network import backbones
from skcnn.decoding import loading

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

recipe = backbones.load_backbone("efficientnet_lite0", "DEFAULT").preprocessing
loading.decode(sys.argv[2], recipe, decode=sys.argv[3])  # warm: imports, kernels
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the high-water mark to the current resident size (Linux >= 4.0)
before = status("VmRSS")
loading.decode(sys.argv[1], recipe, decode=sys.argv[3])
print(status("VmHWM") - before)
"""


def decoding_peak(photo, small, decode: str, env=None) -> int:
    """Growth of the resident set (every allocator, torch's too) while decoding ``photo``."""
    command = [sys.executable, "-c", PEAK, str(photo), str(small), decode]
    return int(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_of_decoding_a_phone_photo_is_bounded(phone_photo):
    """A 12 MP photo decoded exactly holds its file and uint8 pixels (40 MB),
    never one full-size float copy (146 MB); DCT-scaled, a sixteenth of that."""
    small = phone_photo.parent / "small.jpg"
    Image.new("RGB", (640, 480)).save(small)
    exact, auto = decoding_peak(phone_photo, small, "exact"), decoding_peak(phone_photo, small, "auto")
    assert 30 * 2**20 < exact < 80 * 2**20, f"{exact / 2**20:.0f} MiB"
    assert auto < 15 * 2**20, f"{auto / 2**20:.0f} MiB"


def test_the_calling_thread_decodes_when_the_workers_fall_behind(jpegs, recipe, monkeypatch):
    decoded_by = []
    real = loading.decode

    def slow_decode(*args, **kwargs):
        decoded_by.append(threading.current_thread().name)
        time.sleep(0.02)
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "decode", slow_decode)
    images = jpegs * 2
    failures = []
    helped = list(loading.iter_batches(images, range(len(images)), recipe, 4, failures, num_workers=1))
    assert "MainThread" in decoded_by and any(name.startswith("skcnn-decode") for name in decoded_by)
    assert len(decoded_by) == len(images)  # each image decoded once
    alone = list(loading.iter_batches(images, range(len(images)), recipe, 4, [], num_workers=0))
    assert [p for p, _ in helped] == [p for p, _ in alone] == [list(range(i, i + 4)) for i in range(0, 24, 4)]
    for (_, a), (_, b) in zip(helped, alone, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_uint8_and_float_pixels_give_the_same_input_within_rounding(recipe):
    from skimage.data import coffee

    pixels = coffee()
    from_uint8 = recipe(pixels)
    from_float = recipe(pixels.astype(np.float32) / 255)
    assert from_uint8.shape == from_float.shape == (3, 64, 64)
    # Bicubic overshoots; uint8 pixels are clamped to 0-255 (after each pass, as in Pillow), floats are not.
    mean, std = torch.tensor(recipe.mean).reshape(3, 1, 1), torch.tensor(recipe.std).reshape(3, 1, 1)
    from_float = torch.maximum(torch.minimum(from_float, (1 - mean) / std), -mean / std)
    steps = (from_uint8 - from_float).abs() * std * 255  # in uint8 steps
    assert steps.mean() < 0.5 and steps.max() < 8


def test_batches_normalise_each_crop_in_one_pass_and_keep_uint8_crops_on_request(recipe):
    from torchvision.transforms.v2 import functional as F

    rgb = np.random.default_rng(1).integers(0, 256, (70, 80, 3), dtype=np.uint8)
    gray = np.random.default_rng(2).integers(0, 256, (70, 80), dtype=np.uint8)
    crops = [recipe.crop(load_image(rgb)), recipe.crop(load_image(gray))]
    assert [tuple(c.shape) for c in crops] == [(3, 64, 64), (1, 64, 64)]
    batch = recipe.batch(crops)
    expected = F.normalize(torch.stack([c.expand(3, -1, -1) for c in crops]).float() / 255, recipe.mean, recipe.std)
    torch.testing.assert_close(batch, expected, rtol=0, atol=1e-6)
    pixels = recipe.pixels(crops)
    assert pixels.dtype == torch.uint8 and pixels.shape == (2, 3, 64, 64)
    torch.testing.assert_close(recipe.normalize(pixels), batch, rtol=0, atol=0)


def test_auto_workers_never_exceed_half_the_cores_or_four(monkeypatch):
    for cores, expected in [(1, 1), (2, 1), (4, 2), (16, 4)]:
        monkeypatch.setattr(loading, "usable_cores", lambda cores=cores: cores)
        assert loading.resolve_workers("auto") == expected
    assert loading.resolve_workers(0) == 0
