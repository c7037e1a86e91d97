"""Dirty folders and faults: every odd file has a defined outcome, nothing computed is lost."""

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from skcnn import CNNFeatureTransformer, check_images
from skcnn.cache import CodeCache
from skcnn.images import BadImagesError, BadImagesWarning, ImageError, load_image

SMALL = dict(backbone="efficientnet_lite0", input_size=32, batch_size=4)
RNG = np.random.default_rng(0)


def photo(height=40, width=56):
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def jpeg_bytes(array, **params):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", **params)
    return buffer.getvalue()


def make_odd_folder(folder):
    """Every kind of file a real folder holds, with the outcome each must have:
    ("ok", expected (H, W, C) after decoding) or ("bad", words of the reason)."""
    folder.mkdir()
    kinds = {}

    def add(name, outcome, write):
        write(folder / name)
        kinds[name] = outcome

    rgb = photo()
    add("good.jpg", ("ok", (40, 56, 3)), lambda p: p.write_bytes(jpeg_bytes(rgb)))
    add("truncated.jpg", ("bad", "truncated"), lambda p: p.write_bytes(jpeg_bytes(photo(200, 200))[:900]))
    add("empty.jpg", ("bad", "not an image"), lambda p: p.write_bytes(b""))
    add("text.jpg", ("bad", "not an image"), lambda p: p.write_text("<html>404 not found</html>"))
    add(".DS_Store", ("bad", "not an image"), lambda p: p.write_bytes(b"\0\0\0\1Bud1" + bytes(100)))
    add("Thumbs.db", ("bad", "not an image"), lambda p: p.write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504)))
    add("cmyk.jpg", ("ok", (40, 56, 3)), lambda p: Image.fromarray(rgb).convert("CMYK").save(p))
    add(
        "gray16.png",
        ("ok", (30, 20, 1)),
        lambda p: Image.fromarray(RNG.integers(0, 65536, (30, 20), dtype=np.uint16)).save(p),
    )
    add("gray_alpha.png", ("ok", (16, 16, 1)), lambda p: Image.new("LA", (16, 16), (90, 10)).save(p))

    def palette_with_transparency(p):
        image = Image.fromarray(RNG.integers(0, 8, (12, 10), dtype=np.uint8), mode="P")
        image.putpalette(list(RNG.integers(0, 256, 768)))
        image.info["transparency"] = 3
        image.save(p, transparency=3)

    add("palette.png", ("ok", (12, 10, 3)), palette_with_transparency)
    add(
        "rgba.png",
        ("ok", (20, 24, 3)),
        lambda p: Image.fromarray(RNG.integers(0, 256, (20, 24, 4), dtype=np.uint8)).save(p),
    )

    def rotated(p):
        exif = Image.Exif()
        exif[0x0112] = 6  # shown rotated by 90 degrees
        Image.fromarray(photo(20, 36)).save(p, exif=exif)

    add("phone.jpg", ("ok", (36, 20, 3)), rotated)

    def animated(p):
        frames = [Image.fromarray(photo(16, 16)) for _ in range(3)]
        frames[0].save(p, save_all=True, append_images=frames[1:], duration=50)

    add("animated.gif", ("ok", (16, 16, 3)), animated)
    add("bomb.png", ("bad", "above the limit"), lambda p: Image.new("1", (10_500, 10_000)).save(p))
    return kinds


@pytest.fixture
def odd_folder(tmp_path):
    folder = tmp_path / "dirty"
    return folder, make_odd_folder(folder)


def test_each_kind_of_file_has_its_outcome(odd_folder):
    folder, kinds = odd_folder
    for name, (outcome, expected) in kinds.items():
        if outcome == "ok":
            array = load_image(folder / name)
            assert array.shape == expected, name
            if name == "gray16.png":  # 16-bit: float in [0, 1]; 8-bit sources stay uint8
                assert array.dtype == np.float32 and 0 <= array.min() and array.max() <= 1, name
            else:
                assert array.dtype == np.uint8, name
        else:
            with pytest.raises(ImageError, match=expected) as info:
                load_image(folder / name)
            assert str(folder / name) in str(info.value), name


def test_sixteen_bit_keeps_its_range(tmp_path):
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g.png")
    np.testing.assert_allclose(load_image(tmp_path / "g.png")[..., 0], values / 65535, rtol=1e-6)


def test_pixel_limit_is_configurable(tmp_path):
    Image.fromarray(photo(100, 100)).save(tmp_path / "p.png")
    with pytest.raises(ImageError, match="10,000 pixels, above the limit of 5,000"):
        load_image(tmp_path / "p.png", max_pixels=5_000)
    assert load_image(tmp_path / "p.png", max_pixels=None).shape == (100, 100, 3)


def test_raise_lists_every_bad_file_after_computing_and_caching_the_good(odd_folder, tmp_path):
    folder, kinds = odd_folder
    paths = [*sorted(folder.iterdir()), folder / "vanished.jpg"]
    bad = {name for name, (outcome, _) in kinds.items() if outcome == "bad"} | {"vanished.jpg"}
    cache = tmp_path / "c.h5"
    t = CNNFeatureTransformer(**SMALL, cache=str(cache)).fit(paths)
    with pytest.raises(BadImagesError) as info:
        t.transform(paths)
    error = info.value
    assert {os.path.basename(f.source.split("'")[1]) for f in error.failures} == bad
    for name in bad:
        assert name in str(error)
    good = [i for i, p in enumerate(paths) if p.name not in bad]
    assert np.isnan(error.codes[[i for i in range(len(paths)) if i not in good]]).all()
    clean = CNNFeatureTransformer(**SMALL).fit(paths).transform([paths[i] for i in good])
    # Without the bad images the batches are cut differently: float32 rounding.
    np.testing.assert_allclose(error.codes[good], clean, rtol=1e-4, atol=1e-4)
    # The good images were cached before the error: a re-run computes nothing.
    t.transform([paths[i] for i in good])
    assert t.cache_info_.hits == len(good) and t.cache_info_.computed == 0


def test_raise_without_cache_keeps_the_codes_in_the_error(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    X = [photo(), str(tmp_path / "missing.png"), str(tmp_path / "a.png")]
    with pytest.raises(BadImagesError, match=r"1 image\(s\) could not be used") as info:
        CNNFeatureTransformer(**SMALL).fit(X).transform(X)
    codes = info.value.codes
    assert np.isfinite(codes[[0, 2]]).all() and np.isnan(codes[1]).all()


def test_skip_gives_nan_rows_a_warning_and_failed_(odd_folder):
    folder, kinds = odd_folder
    paths = sorted(folder.iterdir())
    t = CNNFeatureTransformer(**SMALL, on_error="skip").fit(paths)
    with pytest.warns(BadImagesWarning, match="could not be used and are left out .their rows are NaN"):
        codes = t.transform(paths)
    bad = [i for i, p in enumerate(paths) if kinds[p.name][0] == "bad"]
    assert [f.index for f in t.failed_] == bad
    assert np.isnan(codes[bad]).all()
    assert np.isfinite(np.delete(codes, bad, axis=0)).all()


def test_check_images_cleans_a_training_set(odd_folder):
    folder, kinds = odd_folder
    paths = np.asarray(sorted(folder.iterdir()), dtype=object)
    ok, failures = check_images(paths)
    assert [p.name for p in paths[ok]] == sorted(n for n, (o, _) in kinds.items() if o == "ok")
    assert len(failures) == (~ok).sum()
    codes = CNNFeatureTransformer(**SMALL).fit(paths[ok]).transform(paths[ok])
    assert np.isfinite(codes).all()


FILL = """
import sys, numpy as np
from skcnn import CNNFeatureTransformer
images = np.random.default_rng(int(sys.argv[3])).integers(0, 256, (int(sys.argv[2]), 24, 24, 3), dtype=np.uint8)
t = CNNFeatureTransformer(backbone="efficientnet_lite0", input_size=32, batch_size=4, cache=sys.argv[1]).fit(images)
print("ready", flush=True)
t.transform(images)
"""


def filler_images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 24, 24, 3), dtype=np.uint8)


def start_filler(path, n, seed=5):
    child = subprocess.Popen(
        [sys.executable, "-c", FILL, str(path), str(n), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    return child


CTRL_C_IMAGES = 1000  # enough that the run is still going when Ctrl-C comes, a batch after the first


@pytest.mark.slow
def test_ctrl_c_stops_promptly_and_a_rerun_continues(tmp_path):
    path = tmp_path / "c.h5"
    child = start_filler(path, CTRL_C_IMAGES)
    segments = path.parent / (path.name + ".segments")
    deadline = time.monotonic() + 60
    while not list(segments.glob("*.h5")) and time.monotonic() < deadline:  # a batch is stored
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    start = time.monotonic()
    child.wait(timeout=60)
    assert time.monotonic() - start < 30  # prompt (about 1 s when the machine is not loaded), no hang
    assert child.returncode != 0 and "KeyboardInterrupt" in child.stderr.read()
    images = filler_images(CTRL_C_IMAGES, 5)
    t = CNNFeatureTransformer(**SMALL, cache=str(path)).fit(images)
    codes = t.transform(images)
    assert 0 < t.cache_info_.hits < CTRL_C_IMAGES
    np.testing.assert_array_equal(codes, CNNFeatureTransformer(**SMALL).fit(images).transform(images))


KILLS = 8


@pytest.mark.slow
def test_sigkill_at_random_points_never_loses_finished_batches(tmp_path):
    """Fault injection: KILLS extractions of new images into one cache, each
    killed with SIGKILL at a random moment."""
    n = 60
    path = tmp_path / "c.h5"
    rng = np.random.default_rng(11)
    previous = 0
    for seed in range(KILLS):
        child = start_filler(path, n, seed)
        time.sleep(rng.uniform(0.0, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        configs = CodeCache(path).configs()  # the file opens after every kill
        stored = configs[0].n_codes if configs else 0
        assert stored >= previous  # nothing stored before is ever lost
        print(f"kill {seed + 1}: {stored - previous} of {n} new images stored, {stored} in all")
        previous = stored
    images = np.concatenate([filler_images(n, seed) for seed in range(KILLS)])
    t = CNNFeatureTransformer(**SMALL, cache=str(path)).fit(images)
    np.testing.assert_array_equal(t.transform(images), CNNFeatureTransformer(**SMALL).fit(images).transform(images))
    assert t.cache_info_.hits == previous and t.cache_info_.computed == len(images) - previous


def test_bad_images_warn_with_a_class_of_their_own_that_holds_them():
    import warnings

    from skcnn import BadImagesWarning, CNNFeatureTransformer

    images = [np.zeros((16, 16, 3), np.uint8), "no/such/file.png"]
    transformer = CNNFeatureTransformer(weights=None, input_size=32, on_error="skip", progress=False).fit(images)
    with pytest.warns(BadImagesWarning) as record:
        transformer.transform(images)
    warning = record[0].message
    assert issubclass(BadImagesWarning, UserWarning) and warning.n_images == 2
    assert [failure.index for failure in warning.failures] == [1] and "file.png" in str(warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BadImagesWarning)  # a caller that wants them as errors, by class
        with pytest.raises(BadImagesWarning):
            transformer.transform(images)
