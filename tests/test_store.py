"""The decoded-image store of fine-tuning: crops decoded once, in memory or in files, keyed by content."""

import json

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode

from skcnn.decoding import loading
from skcnn.decoding.preprocessing import Preprocessing
from skcnn.finetuning import store

RECIPE = Preprocessing((24, 24), 28, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), InterpolationMode.BILINEAR)


@pytest.fixture(autouse=True)
def empty_registry():
    store.clear_decoded_images()
    yield
    store.clear_decoded_images()


@pytest.fixture
def images(photos_and_arrays):
    return photos_and_arrays


def decoded(images, tmp_path, memory_limit, failures=None):
    return store.decoded_images(
        images, RECIPE, [] if failures is None else failures, decode="auto", max_pixels=None,
        batch_size=4, memory_limit=memory_limit, store_dir=tmp_path / "store",
    )  # fmt: skip


@pytest.mark.parametrize("memory_limit", [10**9, 0])
def test_crops_are_the_decoded_images_in_memory_and_in_files(images, tmp_path, memory_limit):
    crops, kept = decoded(images, tmp_path, memory_limit)
    assert kept == list(range(len(images)))
    expected = torch.stack([loading.decode(image, RECIPE) for image in images])
    assert crops.read(range(len(images))).dtype == torch.uint8
    torch.testing.assert_close(crops.read(range(len(images))), expected, rtol=0, atol=0)
    order = [4, 0, 5, 2, 1, 3]
    batches = list(crops.batches(order, 4))
    assert [len(b) for b in batches] == [4, 2]
    torch.testing.assert_close(torch.cat(batches), expected[order], rtol=0, atol=0)
    on_disk = list((tmp_path / "store").rglob("*.u8"))
    assert bool(on_disk) == (memory_limit == 0)
    assert crops.shelf.memory_bytes() == (0 if memory_limit == 0 else expected.numel())


def test_each_image_is_decoded_once_across_subsets_and_fits(images, tmp_path, decodes):
    decoded(images[:4], tmp_path, 10**9)  # a first fold
    assert len(decodes) == 4
    crops, _ = decoded(images[2:], tmp_path, 10**9)  # another fold: two new images
    assert len(decodes) == 6
    duplicate = [images[0], images[0], images[5]]
    crops, kept = decoded(duplicate, tmp_path, 10**9)
    assert len(decodes) == 6 and kept == [0, 1, 2]
    torch.testing.assert_close(crops.read([0]), crops.read([1]), rtol=0, atol=0)


def test_files_are_found_again_by_a_new_process(images, tmp_path, decodes):
    first, _ = decoded(images, tmp_path, 0)
    expected = first.read(range(len(images)))
    store.clear_decoded_images()  # as a new process starts: nothing in memory
    again, _ = decoded(images, tmp_path, 0)
    assert len(decodes) == len(images)
    torch.testing.assert_close(again.read(range(len(images))), expected, rtol=0, atol=0)
    store.clear_decoded_images()  # within the limit now: the files are not looked at, the images decoded
    decoded(images, tmp_path, 10**9)
    assert len(decodes) == 2 * len(images)


def test_a_killed_fit_keeps_its_finished_segments_and_no_later_fit_reads_a_torn_one(tmp_path, decodes, monkeypatch):
    monkeypatch.setattr(store, "SEGMENT_BYTES", 2 * 3 * 24 * 24)  # two crops per segment
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (30, 30, 3), dtype=np.uint8) for _ in range(12)]
    counted = loading.decode  # counts in ``decodes``

    def dying(image, *args, **kwargs):  # a Ctrl-C once the first batch is written (decoding runs ahead)
        if image is images[11]:
            raise KeyboardInterrupt
        return counted(image, *args, **kwargs)

    monkeypatch.setattr(loading, "decode", dying)
    with pytest.raises(KeyboardInterrupt):
        decoded(images, tmp_path, 0)
    folder = next((tmp_path / "store").iterdir())
    committed = sum(len(json.loads(f.read_text())["keys"]) for f in folder.glob("*.json"))
    assert committed >= 4  # the first batch, at least, is kept
    # Left by a dead fit: a torn segment (its keys claim more crops than its file holds), crops without
    # keys (a kill between the renames), a temporary file.
    keys_file = next(folder.glob("*.json"))
    meta = json.loads(keys_file.read_text())
    torn, keyless = f"seg-999999999-{'a' * 32}", f"seg-999999999-{'b' * 32}"
    (folder / f"{torn}.json").write_text(json.dumps({**meta, "keys": [*meta["keys"], "x" * 32]}))
    (folder / f"{torn}.u8").write_bytes(keys_file.with_suffix(".u8").read_bytes())
    (folder / f"{keyless}.u8").write_bytes(keys_file.with_suffix(".u8").read_bytes())
    (folder / ".seg-dead.u8.999999999-deadbeef.tmp").write_bytes(b"\0" * 10)
    store.clear_decoded_images()
    monkeypatch.setattr(loading, "decode", counted)
    decodes.clear()
    crops, kept = decoded(images, tmp_path, 0)
    assert len(decodes) == 12 - committed and kept == list(range(12))
    assert not [p for p in folder.iterdir() if "999999999" in p.name]  # all removed by the fit that wrote
    expected = torch.stack([counted(image, RECIPE) for image in images])
    torch.testing.assert_close(crops.read(range(12)), expected, rtol=0, atol=0)


def test_bad_images_are_left_out_with_their_duplicates(images, tmp_path):
    failures = []
    bad = str(tmp_path / "missing.png")
    crops, kept = decoded([images[0], bad, images[1], bad], tmp_path, 10**9, failures)
    assert kept == [0, 2] and len(crops) == 2
    assert sorted(failure.index for failure in failures) == [1, 3]
    assert all("missing.png" in failure.source for failure in failures)


def test_shelves_beyond_the_limit_make_room_least_recently_used_first(images, tmp_path):
    row = 3 * 24 * 24
    first, _ = decoded(images[:3], tmp_path, 3 * row)
    other = RECIPE.with_input_size(16)
    store.decoded_images(
        images[3:], other, [], decode="auto", max_pixels=None, batch_size=4, memory_limit=3 * row,
        store_dir=tmp_path / "store",
    )  # fmt: skip
    assert first.shelf.memory_bytes() == 0  # dropped for the newer shelf's crops
    assert store.clear_decoded_images() == 3 * 3 * 16 * 16


@pytest.mark.parametrize(
    "limit, expected",
    [("auto", None), (123, 123), ("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1.5 kb", 1500), ("0", 0)],
)
def test_memory_limit_takes_bytes_sizes_and_auto(limit, expected):
    resolved = store.resolve_memory_limit(limit)
    if expected is None:
        assert 0 < resolved < store.psutil.virtual_memory().total
    else:
        assert resolved == expected


@pytest.mark.parametrize("limit", ["lots", "2 parsecs", "-1GB", ""])
def test_a_bad_memory_limit_is_a_clear_error(limit):
    with pytest.raises(ValueError, match=rf"memory_limit={limit!r} is not a size.*'2GB'"):
        store.resolve_memory_limit(limit)
