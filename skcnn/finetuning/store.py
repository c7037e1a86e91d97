"""Decoded training images: each image's uint8 crop, decoded once, in memory or in files.

Fine-tuning reads every training image once per epoch, so
:class:`~skcnn.CNNClassifier` decodes each one once, to the uint8 crop the
network sees, and reads the crops back in every epoch. Crops are keyed by
the image's content (:func:`skcnn.decoding.identity.image_key`) on a *shelf* for one
way of decoding (crop and resize sizes, interpolation, DCT margin): clones
in a grid search (each fold a subset of the same images), a second fit and
a fit resumed after a kill find the crops already there and decode only the
images they have not seen.

- **Within** ``memory_limit`` the crops are numpy arrays in this process,
  kept between fits; the least recently used shelves are dropped whenever a
  fit needs their room (:func:`clear_decoded_images` drops them all).
  A fit within the limit neither lists nor opens the files below: it
  decodes what this process does not hold yet.
- **Beyond it** they go to segment files in a folder (``store_dir``; by
  default ``skcnn-decoded-<user id>`` in the system's temporary folder,
  created ``0o700``): a raw uint8 file of crops, and a JSON file of their
  keys (both ``0o600``), each written under a temporary name, flushed to
  disk and renamed, the keys last. A segment counts only once its keys are
  in place and its size matches them, so a killed fit loses only the
  segment it was writing (at most :data:`SEGMENT_BYTES`), and no later fit
  reads a torn one; the next fit that writes into the folder removes what
  killed fits left (their names carry their process ids).

Crops decide what a model learns, so they are read only from a folder
that no one but this user may write, and only from files of this user
(:func:`skcnn.files.owned_privately`): the system's temporary folder is
shared, and another user could plant crops under the keys of this user's
images. Where the default folder is taken (another owner, a symbolic link,
writable by others), the crops go to ``decoded`` in this user's cache
folder instead (``~/.cache/skcnn/decoded`` on Linux); where a folder in
``store_dir`` fails the check, its files are neither read nor written and
the default folder serves instead; each with one warning naming the folder.

Epochs read shuffled batches from either through a few threads, a couple
of batches ahead of training (``os.preadv`` releases the GIL). Reading a
file goes through the operating system's page cache, not through this
process's memory: what ``fit`` holds is the network's training state and
a few batches, whatever the number of images.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import uuid
import warnings
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import psutil
import torch

from ..decoding import loading
from ..decoding.identity import content_keys
from ..decoding.images import ImageFailure
from ..decoding.preprocessing import DECODE_MARGINS, Preprocessing
from ..files import AtomicFile, atomic_write, owned_privately, private_folder, remove_dead_temporaries, writer_running

#: A file segment is committed every this many bytes of crops: what a kill
#: can lose, and few enough files for 10^5 images at 224 px (about 60).
SEGMENT_BYTES = 256 * 2**20
#: Share of the memory available when ``fit`` starts that
#: ``memory_limit="auto"`` lets the crops take: the rest is for the
#: network's training state (a fit of EfficientNet-Lite0 at 224 px, batch
#: 16, peaked 1.8 GB above its start: benchmarks/RESULTS.md) and for
#: everything else on the machine.
AUTO_MEMORY_SHARE = 0.25
#: Batches read ahead of the one training consumes.
READ_AHEAD = 2
#: Shelves (ways of decoding) this process keeps at most, in memory or open files.
MAX_SHELVES = 8
#: Bumped when the layout of the files changes: older files are then ignored.
FORMAT = 1
#: The default folder of crop files, in the system's temporary folder, with
#: ``-<user id>`` appended: one per user, as no one may read another's.
#: Crops are scratch data (gigabytes, made again by decoding): a temporary
#: folder is on a local disk, emptied by the system, and outside a home
#: folder's quota and backups, unlike the per-user cache folder, which
#: serves only where this one is taken (:data:`FALLBACK_FOLDER`).
DEFAULT_FOLDER = "skcnn-decoded"
#: The folder of crop files, in this user's cache folder, where someone
#: else holds the default one (it cannot be removed by this user).
FALLBACK_FOLDER = "decoded"
#: A segment's name (without suffix): the writer's process id, then a random part.
_SEGMENT_NAME = re.compile(r"seg-(?P<pid>\d+)-[0-9a-f]{32}")
_UNITS = {
    "": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_LOCK = threading.RLock()
_SHELVES: OrderedDict[str, Shelf] = OrderedDict()
_WARNED: set[str] = set()  # folders already warned about in this process


def resolve_memory_limit(memory_limit: int | str) -> int:
    """``memory_limit`` in bytes: an int, a size such as ``"2GB"`` or ``"512MiB"``, or ``"auto"``."""
    if isinstance(memory_limit, str) and memory_limit == "auto":
        return int(AUTO_MEMORY_SHARE * psutil.virtual_memory().available)
    if not isinstance(memory_limit, str):
        return int(memory_limit)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", memory_limit)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if unit is None:
        raise ValueError(
            f"memory_limit={memory_limit!r} is not a size: give bytes (an int), a string such as '2GB' or "
            f"'512MiB' (units {sorted(u for u in _UNITS if u)}), or 'auto'."
        )
    return int(float(match.group(1)) * unit)


class Shelf:
    """The crops of one way of decoding: where each content key's crop is.

    ``name`` names the way of decoding (its files' folder, in ``root``:
    ``store_dir``, or None for the default).
    """

    def __init__(self, shape: tuple[int, int, int], name: str, root: Path | None):
        self.shape, self.name, self.root = shape, name, root
        self.row_bytes = int(np.prod(shape))
        self.where: dict[str, tuple[int, int]] = {}  # key -> (segment, row)
        self.segments: list[_MemorySegment | _FileSegment] = []
        self._files_seen: set[Path] = set()

    def add(self, segment: _MemorySegment | _FileSegment, keys: Sequence[str]) -> None:
        with _LOCK:
            number = len(self.segments)
            self.segments.append(segment)
            for row, key in enumerate(keys):
                self.where.setdefault(key, (number, row))

    def memory_bytes(self) -> int:
        return sum(segment.array.nbytes for segment in self.segments if isinstance(segment, _MemorySegment))

    def drop_memory(self) -> None:
        """Forget the crops held in memory (those in files stay)."""
        with _LOCK:
            dropped = {i for i, segment in enumerate(self.segments) if isinstance(segment, _MemorySegment)}
            self.where = {key: place for key, place in self.where.items() if place[0] not in dropped}
            for i in dropped:
                self.segments[i] = _MemorySegment(np.empty((0, *self.shape), np.uint8))

    def scan(self) -> Path:
        """The folder of this shelf's files (:func:`_files_folder`), with the
        complete segments other fits wrote there since the last scan added."""
        folder = _files_folder(self.root, self.name)
        for keys_file in sorted(folder.glob("seg-*.json")):
            if keys_file in self._files_seen:
                continue
            segment, keys = _FileSegment.opened(keys_file, self.row_bytes)
            self._files_seen.add(keys_file)
            if segment is not None:
                self.add(segment, keys)
        return folder

    def close(self) -> None:
        for segment in self.segments:
            if isinstance(segment, _FileSegment):
                segment.close()


class _MemorySegment:
    def __init__(self, array: np.ndarray):
        self.array = array

    def read_into(self, rows: np.ndarray, out: np.ndarray, places: np.ndarray) -> None:
        out[places] = self.array[rows]


class _FileSegment:
    def __init__(self, path: Path, row_bytes: int, fd: int | None = None):
        self.path, self.row_bytes = path, row_bytes
        self._fd = _open_own(path) if fd is None else fd

    @classmethod
    def opened(cls, keys_file: Path, row_bytes: int) -> tuple[_FileSegment | None, list[str]]:
        """The segment of a keys file, or None where it is not complete, of another format, or not this user's.

        Both files are checked through their open descriptors: what is
        checked is what is read.
        """
        try:
            with os.fdopen(_open_own(keys_file), "rb") as f:
                meta = json.load(f)
            fd = _open_own(keys_file.with_suffix(".u8"))
        except (OSError, ValueError):
            return None, []
        try:
            if meta["format"] == FORMAT and os.fstat(fd).st_size == len(meta["keys"]) * row_bytes:
                return cls(keys_file.with_suffix(".u8"), row_bytes, fd), list(meta["keys"])
        except (KeyError, TypeError):
            pass
        os.close(fd)
        return None, []

    def read_into(self, rows: np.ndarray, out: np.ndarray, places: np.ndarray) -> None:
        for row, place in zip(rows.tolist(), places.tolist(), strict=True):
            view = memoryview(out[place]).cast("B")
            if os.preadv(self._fd, [view], row * self.row_bytes) != self.row_bytes:
                raise OSError(f"{os.fspath(self.path)!r} is shorter than its keys say: delete its folder.")

    def close(self) -> None:
        os.close(self._fd)


def _open_own(path: Path) -> int:
    """A descriptor of ``path`` for reading, where it is a file of this user that no one else may write."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0))
    if not owned_privately(fd):
        os.close(fd)
        raise PermissionError(f"{os.fspath(path)!r} is not this user's own file")
    return fd


def clear_decoded_images() -> int:
    """Drop the decoded training images this process keeps in memory.

    :class:`~skcnn.CNNClassifier` keeps the uint8 crops of the images it
    was fit on (within its ``memory_limit``), so that clones in a grid
    search and later fits on the same images do not decode them again.
    Crops written to files (beyond ``memory_limit``) stay on disk: delete
    the folder (``store_dir``; by default ``skcnn-decoded-<user id>`` in
    the system's temporary folder) to free that space.

    Returns
    -------
    n_bytes : int
        The memory the crops took.

    Examples
    --------
    >>> from skcnn.finetuning.store import clear_decoded_images
    >>> _ = clear_decoded_images()  # whatever earlier fits kept
    >>> clear_decoded_images()  # nothing is left to free
    0
    """
    with _LOCK:
        freed = sum(shelf.memory_bytes() for shelf in _SHELVES.values())
        for shelf in _SHELVES.values():
            shelf.close()
        _SHELVES.clear()
    return freed


class DecodedImages:
    """The crops of one fit's images, in their order: what the training loop reads.

    ``batches(order, batch_size)`` yields uint8 ``(B, 3, h, w)`` tensors of
    the images in ``order``, read ahead by a few threads.
    """

    def __init__(self, shelf: Shelf, keys: Sequence[str], places: np.ndarray | None = None):
        self.shelf, self.keys = shelf, list(keys)
        if places is None:
            places = np.array([shelf.where[key] for key in keys], dtype=np.int64).reshape(-1, 2)
        self._places = places

    def __len__(self) -> int:
        return len(self._places)

    def subset(self, rows: Sequence[int] | torch.Tensor) -> DecodedImages:
        rows = np.asarray(rows, dtype=np.int64)
        return DecodedImages(self.shelf, [self.keys[i] for i in rows], self._places[rows])

    def read(self, rows: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The crops of ``rows`` (positions in this set), stacked."""
        places = self._places[np.asarray(rows, dtype=np.int64)]
        out = np.empty((len(places), *self.shelf.shape), dtype=np.uint8)
        for segment in np.unique(places[:, 0]).tolist():
            mine = np.flatnonzero(places[:, 0] == segment)
            self.shelf.segments[segment].read_into(places[mine, 1], out, mine)
        return torch.from_numpy(out)

    def batches(self, order: Sequence[int] | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """The crops of ``order``, ``batch_size`` at a time, :data:`READ_AHEAD` batches read ahead."""
        order = np.asarray(order, dtype=np.int64)
        starts = iter(range(0, len(order), batch_size))
        with ThreadPoolExecutor(loading.resolve_workers("auto"), thread_name_prefix="skcnn-read") as pool:
            pending: deque = deque()
            try:
                for start in starts:
                    pending.append(pool.submit(self.read, order[start : start + batch_size]))
                    if len(pending) > READ_AHEAD:
                        break
                while pending:
                    batch = pending.popleft().result()
                    start = next(starts, None)
                    if start is not None:
                        pending.append(pool.submit(self.read, order[start : start + batch_size]))
                    yield batch
            finally:
                for future in pending:
                    future.cancel()


def decoded_images(
    images: Sequence,
    recipe: Preprocessing,
    failures: list[ImageFailure],
    *,
    decode: str,
    max_pixels: int | None,
    batch_size: int,
    memory_limit: int,
    store_dir: str | os.PathLike | None = None,
) -> tuple[DecodedImages, list[int]]:
    """Every image's crop from the shelf, the missing ones decoded first; the positions kept.

    Images that cannot be used (read, keyed or decoded) are appended to
    ``failures`` and left out.
    The crops go to memory when all of this fit's crops fit within
    ``memory_limit`` bytes (older shelves are dropped to make room),
    otherwise to files in ``store_dir``. A fit in memory does not look at
    the files at all: it reads what this process holds and decodes the rest.
    """
    keys = content_keys(images, failures)
    shelf = _shelf(recipe, decode, store_dir)
    firsts = {key: i for i, key in reversed(keys.items())}
    in_memory = len(firsts) * shelf.row_bytes <= memory_limit
    folder = None if in_memory else shelf.scan()
    missing = sorted(i for key, i in firsts.items() if key not in shelf.where)
    if in_memory:
        _make_room(len(missing) * shelf.row_bytes, memory_limit, shelf)
    writer = _MemoryWriter(shelf, len(missing)) if folder is None else _FileWriter(shelf, folder)
    try:  # what was decoded before a Ctrl-C or an error is kept
        for done, batch in loading.iter_batches(
            images, missing, recipe, batch_size, failures, max_pixels=max_pixels,
            num_workers=loading.resolve_workers("auto"), decode=decode, normalize=False,
        ):  # fmt: skip
            writer.write([keys[i] for i in done], batch.numpy())
    finally:
        writer.close()
    _note_duplicates_of_failures(keys, failures)
    kept = [i for i, key in keys.items() if key in shelf.where]
    return DecodedImages(shelf, [keys[i] for i in kept]), kept


def _note_duplicates_of_failures(keys: dict[int, str], failures: list[ImageFailure]) -> None:
    """An image that failed fails wherever else it appears in the list (decoded once, as the rest)."""
    failed = {keys[failure.index]: failure for failure in failures if failure.index in keys}
    noted = {failure.index for failure in failures}
    for i, key in keys.items():
        if key in failed and i not in noted:
            failures.append(ImageFailure(i, failed[key].source, failed[key].reason))


def _shelf(recipe: Preprocessing, decode: str, store_dir) -> Shelf:
    config = {"format": FORMAT, **recipe.as_dict(), "jpeg_dct_margin": DECODE_MARGINS[decode]}
    for normalisation in ("mean", "std"):  # applied after the crop: crops of any are shared
        config.pop(normalisation, None)
    name = joblib.hash(config)
    root = Path(store_dir) if store_dir is not None else None
    key = f"{name}@{os.path.abspath(root if root is not None else _default_path())}"
    with _LOCK:
        if key not in _SHELVES:
            _SHELVES[key] = Shelf((3, *recipe.crop_size), name, root)
            while len(_SHELVES) > MAX_SHELVES:
                _SHELVES.popitem(last=False)[1].close()
        _SHELVES.move_to_end(key)
        return _SHELVES[key]


def _default_path() -> Path:
    """Where the default folder of crop files is (created by :func:`_default_root`)."""
    return Path(tempfile.gettempdir()) / f"{DEFAULT_FOLDER}-{os.geteuid()}"


def _default_root() -> Path:
    """The default folder of crop files, created ``0o700``, or checked to be this user's only.

    Another user can take the name first in the shared temporary folder
    (and this user cannot remove it): the fit then goes on in
    :data:`FALLBACK_FOLDER` of this user's cache folder rather than fail,
    with one warning.
    """
    shared = _default_path()
    try:
        return private_folder(shared)
    except PermissionError as exc:
        import platformdirs

        fallback = Path(platformdirs.user_cache_dir("skcnn", appauthor=False)) / FALLBACK_FOLDER
        _warn_once(shared, f"{exc}: decoded images go to {os.fspath(fallback)!r} instead.")
        fallback.parent.mkdir(parents=True, exist_ok=True)
        return private_folder(fallback)


def _files_folder(root: Path | None, name: str) -> Path:
    """The folder of a shelf's files, created ``0o700``: ``root/name``, else in the default folder.

    A folder of ``store_dir`` that another user owns or may write may hold
    crops they planted: it is neither read nor written (crops written there
    could be replaced), and the default folder serves, with one warning.
    """
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        try:
            return private_folder(root / name)
        except PermissionError as exc:
            _warn_once(
                root / name,
                f"store_dir: {exc}, so decoded images are neither read from it (someone else may have written "
                f"them) nor written to it; they go to the default folder. Make it yours alone "
                f"(chmod go-w) or delete it.",
            )
    return private_folder(_default_root() / name)


def _warn_once(folder: Path, message: str) -> None:
    with _LOCK:
        if os.fspath(folder) in _WARNED:
            return
        _WARNED.add(os.fspath(folder))
    warnings.warn(message, UserWarning, stacklevel=2)


def _make_room(needed: int, limit: int, keep: Shelf) -> None:
    """Drop other shelves' crops from memory, least recently used first, until ``needed`` more fit."""
    with _LOCK:
        for shelf in list(_SHELVES.values()):
            if sum(s.memory_bytes() for s in _SHELVES.values()) + needed <= limit:
                return
            if shelf is not keep:
                shelf.drop_memory()


class _MemoryWriter:
    def __init__(self, shelf: Shelf, n_rows: int):
        self.shelf, self.keys = shelf, []
        self.array = np.empty((n_rows, *shelf.shape), dtype=np.uint8)

    def write(self, keys: list[str], crops: np.ndarray) -> None:
        self.array[len(self.keys) : len(self.keys) + len(keys)] = crops
        self.keys += keys

    def close(self) -> None:
        if self.keys:
            self.shelf.add(_MemorySegment(self.array[: len(self.keys)]), self.keys)


class _FileWriter:
    """Crops appended to a temporary file in ``folder``, committed as a segment every :data:`SEGMENT_BYTES`.

    Before its first segment it removes what killed fits left in the folder.
    """

    def __init__(self, shelf: Shelf, folder: Path):
        self.shelf, self.folder, self.keys = shelf, folder, []
        self.data: AtomicFile | None = None
        self.per_segment = max(1, SEGMENT_BYTES // shelf.row_bytes)
        self.tidied = False

    def write(self, keys: list[str], crops: np.ndarray) -> None:
        while keys:
            if self.data is None:
                if not self.tidied:
                    _remove_orphans(self.folder, self.shelf.row_bytes)
                    self.tidied = True
                self.name = f"seg-{os.getpid()}-{uuid.uuid4().hex}"
                self.data = AtomicFile(self.folder / f"{self.name}.u8", private=True)  # put in place by _commit
            room = self.per_segment - len(self.keys)
            self.data.file.write(np.ascontiguousarray(crops[:room]).data)
            self.keys += keys[:room]
            keys, crops = keys[room:], crops[room:]
            if len(self.keys) == self.per_segment:
                self._commit()

    def close(self) -> None:
        if self.data is not None:
            self._commit()

    def _commit(self) -> None:
        # Called by close() after a Ctrl-C or an error too: the crops written so far are kept.
        data, self.data = self.data, None
        if not self.keys:
            data.discard()
            return
        data.commit()
        keys_file = self.folder / f"{self.name}.json"
        with atomic_write(keys_file, "w", private=True) as f:  # the keys last: a segment counts once they are in place
            json.dump({"format": FORMAT, "shape": list(self.shelf.shape), "keys": self.keys}, f)
        self.shelf._files_seen.add(keys_file)
        self.shelf.add(_FileSegment(data.path, self.shelf.row_bytes), self.keys)
        self.keys = []


def _remove_orphans(folder: Path, row_bytes: int) -> None:
    """What fits that no longer run (killed while writing) left in ``folder``.

    Their temporary files, crops whose keys never came (a kill between the
    two renames) and torn segments (sizes that do not match their keys).
    Told apart by the writer's process id in the names rather than by age,
    as the code cache does: a live fit may write one segment for minutes,
    and be for an instant between its two renames.
    """
    remove_dead_temporaries(folder)
    for stem in sorted({path.stem for path in folder.glob("seg-*.u8")} | {p.stem for p in folder.glob("seg-*.json")}):
        match = _SEGMENT_NAME.fullmatch(stem)
        if match is None or writer_running(int(match["pid"])):
            continue
        segment, _ = _FileSegment.opened(folder / f"{stem}.json", row_bytes)
        if segment is not None:
            segment.close()
            continue
        for suffix in (".json", ".u8"):  # the keys first: a segment counts only while they are there
            (folder / f"{stem}{suffix}").unlink(missing_ok=True)


__all__ = ["DecodedImages", "clear_decoded_images", "decoded_images", "resolve_memory_limit"]
