"""HDF5 store of codes, keyed by image content and by configuration.

One cache is a file ``codes.h5`` plus, while work is in flight, a folder
``codes.h5.segments/`` beside it:

- Each configuration (backbone, weights, layer, pooling, ReLU, preprocessing:
  everything that changes the codes) has a group ``/configs/<fingerprint>``
  holding ``keys`` (the images' content keys, fixed-length ASCII) and
  ``codes`` (float32 rows in the same order), with the configuration as
  readable attributes. ``h5py`` or ``h5dump`` shows what each dataset is.
- Every computed batch is written to a new segment file (same layout) under
  a temporary name and renamed into place once complete and synced. A
  process killed at any moment leaves only whole segments, and at worst a
  temporary file that readers ignore: a half-written batch is never read.
- Compaction merges the main file and the segments into a new main file,
  written aside and swapped in with an atomic rename, then removes the merged
  segments. No HDF5 file is ever modified in place, so no crash can damage
  codes already stored. A crash between the swap and the removal leaves
  duplicates, which readers and the next compaction drop.

Shards: a writer given ``shard="name"`` (one per Dask worker process, see
:mod:`skcnn.dask`) writes its segments under ``codes.h5.shards/`` and
compacts them into its own ``codes.h5.shards/name.h5``, so workers never
wait for each other. Every reader sees the main file and all shards: a run
cut short is already usable, and a re-run skips what any shard holds.
``compact()`` on the main cache merges the segments and every shard into
the main file (``skcnn cache compact``), streaming the codes in blocks.

Files from outside: every structural surprise (a ``configs`` that is not a
group, keys or codes of another type or width, rows declared beyond what the
file really stores) is refused with :class:`~skcnn.CacheError` naming the file, so
memory is bounded by a file's real size, never by what it declares. Codes
that are not finite numbers are never served: a
lookup takes them for misses (the images are computed again, with a
:class:`CacheWarning` counting them) and a compaction drops them.

Concurrency: segment writers never conflict (unique names). Readers hold a
shared lock on ``codes.h5.lock`` (and on each shard's lock) while reading;
compaction holds the locks of what it merges exclusively, waiting up to
``lock_timeout`` seconds with a clear error after.

This module needs only h5py and numpy: codes can be read back on a machine
without torch::

    from skcnn.cache import CodeCache
    cache = CodeCache("codes.h5")
    for config in cache.configs(): print(config.fingerprint, config.attrs["layer"], config.n_codes)
    keys, codes = cache.read(fingerprint)
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..decoding.identity import KEY_LENGTH
from ..files import atomic_path, writer_pid

#: The ``format`` attribute of every cache file: an HDF5 file without it is
#: refused (see :func:`_open`) rather than read or overwritten as a cache.
FORMAT = "skcnn code cache"
#: Bumped whenever the meaning of stored codes changes: old entries then miss.
FORMAT_VERSION = 1
#: lzf halves ReLU'd penultimate codes (about 2/3 zeros) at ~100 MB/s: 0.51 of
#: the raw size, against gzip's 0.49 at three times lzf's write time; on dense
#: codes it saves nothing (1.02 of the raw size, gzip 0.85). Figures: the
#: user guide's cache chapter. Fast writes and reads, for a somewhat larger file.
COMPRESSION = "lzf"
#: Keys as fixed-length ASCII of exactly a key's length: readable with
#: h5py/h5dump, comparable and sortable as numpy bytes without decoding.
_KEY_DTYPE = f"S{KEY_LENGTH}"
#: Target size of one chunk of a ``codes`` dataset (rows x width x 4 bytes).
#: A chunk is the unit HDF5 compresses and reads, so a lookup of a few rows
#: decompresses whole chunks: smaller chunks waste less on sparse lookups,
#: larger ones compress better and mean fewer chunks to index per file. The
#: user guide states "chunks of about 1 MB"; no benchmark compares other sizes.
_CHUNK_BYTES = 1 << 20
#: Rows in one chunk of a ``keys`` dataset (4096 keys x 32 bytes = 128 KiB,
#: uncompressed). Keys are always read whole (a lookup indexes all of a
#: store's keys, a merge reads them all), so this only sets how many chunks
#: a read walks, and how much a tiny segment allocates (a batch smaller than
#: this gets one chunk of its own size). Not measured against other sizes.
_KEY_CHUNK_ROWS = 4096
#: Bytes of codes a compaction reads at a time (see :func:`_blocks`). The merge
#: then holds the keys plus one window of codes, never all codes: memory stays
#: bounded (281 MiB peak for 977 MiB of codes, 199 MiB for 244 MiB, at about
#: 55 MiB/s; benchmarks/RESULTS.md, "Scale-out on Dask"), while each window is
#: large enough for few HDF5 reads. Larger windows cost memory, smaller ones
#: more reads.
_COPY_BYTES = 64 << 20
#: Suffix of segment and shard files, so that ``.tmp`` temporaries (written
#: before the rename) and other files in the folders are never taken as stores.
_SEGMENT_SUFFIX = ".h5"
#: Age after which a leftover segment ``.tmp`` file is taken as a killed
#: writer's and removed at the next compaction. A segment writer takes no lock
#: and may run on another machine sharing the storage (Dask workers), where
#: its process id says nothing here: only age tells. Its temporary exists only
#: while one batch is written, far shorter than an hour, so no live writer
#: loses its file; the price is that a killed writer's leftovers stay on disk
#: up to an hour. A compaction's own temporaries need no age: see
#: :meth:`CodeCache._remove_stale_temporaries`.
_STALE_TEMP_SECONDS = 3600
#: Default ``lock_timeout``: seconds a reader or a compaction waits for another
#: process's lock before :class:`CacheError` (the user guide's 10 minutes). A
#: compaction holds its lock while it copies every code (a 24 GiB merge is
#: estimated at ~7.5 min in benchmarks/RESULTS.md), and a waiting reader should
#: outlast it rather than fail; a dead holder's ``flock`` is released by the
#: kernel, so the limit only turns a hung live holder into a clear error instead
#: of an endless wait.
_LOCK_TIMEOUT = 600.0
#: Seconds between tries of a non-blocking ``flock`` (polled so that the wait
#: can end at ``lock_timeout``): a freed lock is taken at most this late, for
#: a negligible cost of wake-ups while waiting.
_LOCK_POLL_SECONDS = 0.05
#: :meth:`CodeCache.should_compact`'s default: compact once a writer has this
#: many segments, even if small next to its file. Every segment is one more
#: HDF5 file that each lookup opens, locks and indexes; compacting more often
#: rewrites the whole file more often. No measurement behind the value.
_COMPACT_MAX_SEGMENTS = 64
#: :meth:`CodeCache.should_compact`'s default: compact once a writer's segments
#: reach this fraction of its file's size. A compaction rewrites the whole
#: file, so a fixed fraction keeps the total rewriting to about 1/growth times
#: the final size (hence a Dask worker re-reads about 10x the final key volume
#: over a run, benchmarks/RESULTS.md); a smaller fraction rewrites more, a
#: larger one leaves more segments for every lookup to open.
_COMPACT_GROWTH = 0.1
#: Entries of the per-process key index (one per store file version and
#: configuration, each holding that store's sorted keys). A Dask worker looks
#: up the main file and every shard's file and segments before each task;
#: indexed, such a lookup took 0.0019 s against 0.027 s re-reading 8 shards'
#: keys (benchmarks/RESULTS.md). 1024 covers the main file plus the files and
#: segments of a few dozen shards (raised from 256 with the Dask benchmark);
#: more entries would hold more keys in memory, and stale versions of
#: compacted files age out of the LRU.
_KEY_INDEX_ENTRIES = 1024
#: A lookup reads the whole ``codes`` dataset instead of picking rows once it
#: wants more than 1/_WHOLE_READ_DIVISOR of them: picking rows pays h5py's
#: per-row selection cost (and needs them sorted), a whole read costs one
#: decompression of every chunk. A quarter is the value the cache was written
#: with; no measured crossover is recorded.
_WHOLE_READ_DIVISOR = 4
#: The most a codes dataset may declare, in bytes of codes per byte it really
#: stores: lzf's longest back-reference (264 bytes) takes 3 bytes, so lzf
#: expands at most ~88 times (all-zero codes, measured 88.0). Uncompressed
#: data expands 1 time. A file declaring more rows than this is crafted or
#: damaged, and refused: reading it would cost memory far beyond its size.
_LZF_MAX_EXPANSION = 96
#: The filters a dataset of a cache may use, and the expansion each allows:
#: none (keys) or lzf (codes), what skcnn writes. Other filters (gzip
#: expands up to ~1000 times, plugins unknown) are refused.
_EXPANSION = {h5py.h5z.FILTER_LZF: _LZF_MAX_EXPANSION}
#: HDF5 layouts whose data is in the file itself (not virtual, not external).
_LAYOUTS = (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED)


class CacheError(ValueError):
    """A cache file cannot be used: not an skcnn cache, corrupt, or locked."""


class CacheWarning(UserWarning):
    """Codes of a cache file were not used (not finite numbers): their images are computed again."""


def fingerprint(config: Mapping) -> str:
    """Stable 16-hex-digit name of a configuration.

    Parameters
    ----------
    config : mapping
        A JSON-able description of everything that changes codes.

    Returns
    -------
    fingerprint : str
        The first 16 hex digits of the SHA-256 of its canonical JSON.

    Examples
    --------
    >>> from skcnn.cache import fingerprint
    >>> fingerprint({"b": 1, "a": 2}) == fingerprint({"a": 2, "b": 1})
    True
    """
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ConfigInfo:
    """What the cache holds for one configuration (:meth:`skcnn.CodeCache.configs`).

    Attributes
    ----------
    fingerprint : str
        The configuration's name in the file.
    attrs : dict
        The configuration itself (backbone, layer, pooling, ...).
    n_codes : int
        Distinct images stored.
    width : int
        Values per code.
    stored_bytes : int
        Bytes of codes on disk, compressed.
    """

    fingerprint: str
    attrs: dict
    n_codes: int  # distinct images
    width: int
    stored_bytes: int


class CodeCache:
    """Codes on disk, looked up by (configuration, image key).

    Parameters
    ----------
    path : str or path-like
        The main HDF5 file; created on first write.
    lock_timeout : float, default=600
        Seconds to wait for another process's compaction before failing.
    shard : str or None, default=None
        Write into this shard, ``<path>.shards/<shard>.h5``, instead of the
        main file: one per Dask worker process (see :mod:`skcnn.dask`), so
        that workers never wait for each other. Letters, digits, ``.``,
        ``_`` and ``-``. Reading always sees the main file and every shard.
    """

    def __init__(self, path: str | os.PathLike, lock_timeout: float = _LOCK_TIMEOUT, shard: str | None = None):
        self.path = Path(path)
        self.shards = self.path.with_name(self.path.name + ".shards")
        self.lock_timeout = lock_timeout
        self.shard = shard

    def __repr__(self) -> str:
        shard = f", shard={self.shard!r}" if self.shard is not None else ""
        return f"CodeCache({os.fspath(self.path)!r}{shard})"

    def __eq__(self, other) -> bool:  # parameters compare equal after clone and pickling
        return isinstance(other, CodeCache) and (self.path, self.shard) == (other.path, other.shard)

    def __hash__(self) -> int:
        return hash((self.path, self.shard))

    # -- reading ---------------------------------------------------------

    def lookup(self, configs: Mapping[str, Mapping], keys: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """For each named configuration: (found mask, codes of the found keys in order).

        Parameters
        ----------
        configs : mapping of str to mapping
            A caller's name (a layer) to its configuration.
        keys : list of str
            Content keys of the images.

        Returns
        -------
        found : dict of str to (ndarray of bool, ndarray)
            By name: which keys were found, and their codes in order.
        """
        wanted = {name: fingerprint(config) for name, config in configs.items()}
        with self._reading() as stores:
            looked_up = {name: _lookup_one(stores, fp, configs[name], keys) for name, fp in wanted.items()}
        unusable = {name: bad for name, (_, _, bad) in looked_up.items() if bad}
        if unusable:
            warnings.warn(
                f"cache {os.fspath(self.path)!r}: stored codes that are not finite numbers (NaN or infinity) were "
                f"taken as misses, and their images computed again: {unusable} (rows by configuration name).",
                CacheWarning,
                stacklevel=2,
            )
        return {name: (found, codes) for name, (found, codes, _) in looked_up.items()}

    def read(self, config_fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
        """All ``(keys, codes)`` stored for one configuration, duplicates dropped.

        Parameters
        ----------
        config_fingerprint : str
            The configuration, as :meth:`configs` names it.

        Returns
        -------
        keys : ndarray of str
            Content keys of the images.
        codes : ndarray of shape (n_keys, width)
            Their codes: each image's first stored copy of finite numbers
            (codes that are not are left out, as a lookup takes them for misses).
        """
        with self._reading() as stores:
            keys, codes, width = [], [], None
            for store in stores:
                with _open(store) as f:
                    group = _group(f, config_fingerprint, store)
                    if group is not None:
                        n, width = _checked(group, store, width)
                        keys.append(group["keys"][:n])
                        codes.append(group["codes"][:n])
        if not keys:
            raise KeyError(f"{self.path} holds no configuration {config_fingerprint!r}.")
        all_keys, all_codes = np.concatenate(keys), np.concatenate(codes)
        usable = np.flatnonzero(np.isfinite(all_codes).all(axis=1))
        _, first = np.unique(all_keys[usable], return_index=True)
        rows = np.sort(usable[first])
        return all_keys[rows].astype(str), all_codes[rows]

    def configs(self) -> list[ConfigInfo]:
        """The configurations stored, with counts and sizes."""
        found: dict[str, dict] = {}
        with self._reading() as stores:
            for store in stores:
                with _open(store) as f:
                    for fp, group in _groups(f, store):
                        entry = found.setdefault(fp, {"attrs": _attrs(group), "keys": [], "bytes": 0, "width": None})
                        n, entry["width"] = _checked(group, store, entry["width"])
                        entry["keys"].append(group["keys"][:n])  # arrays: a set of bytes objects is ~4x larger
                        entry["bytes"] += group["codes"].id.get_storage_size() + group["keys"].id.get_storage_size()
        return [
            ConfigInfo(fp, e["attrs"], len(np.unique(np.concatenate(e["keys"]))), e["width"], e["bytes"])
            for fp, e in sorted(found.items(), key=lambda item: str(item[1]["attrs"].get("layer", "")))
        ]

    def shard_names(self) -> list[str]:
        """The shards holding codes not merged into the main file yet (see :meth:`compact`)."""
        return [name for name in self._all_shard_names() if self._shard_area(name).stores()]

    # -- writing ---------------------------------------------------------

    def write(self, batch: Mapping[str, tuple[Mapping, list[str], np.ndarray]]) -> Path:
        """Store one computed batch atomically as a new segment (of the shard, if any).

        Parameters
        ----------
        batch : mapping of str to (mapping, list of str, ndarray)
            A name (a layer) to (configuration, keys, codes).

        Returns
        -------
        path : Path
            The segment written.
        """
        segments = self._own_area().segments
        segments.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        final = segments / f"{name}{_SEGMENT_SUFFIX}"
        with atomic_path(final) as temporary, h5py.File(temporary, "w", libver="latest") as f:
            _mark_as_cache(f)
            for config, keys, codes in batch.values():
                _write_group(f, config, np.asarray(keys, dtype=_KEY_DTYPE), codes)
        return final

    def compact(self, remove_shards: bool = False) -> int:
        """Merge what is pending into one file; return the number of files merged.

        Without ``shard``: the segments and every shard go into the main
        file, each image once per configuration (a Dask run's merge step).
        With ``shard``: the shard's own segments go into the shard's file.
        Codes are copied in blocks, so memory stays bounded by the keys.

        Parameters
        ----------
        remove_shards : bool, default=False
            The shards' lock files and folders stay, for workers still
            writing; ``True`` removes them too: only once no process writes
            into a shard any more (:func:`skcnn.dask.extract` does, at its end).

        Returns
        -------
        int
            Files merged.
        """
        if self.shard is not None:
            areas = [self._own_area()]
        else:
            areas = [self._main_area()] + [self._shard_area(name) for name in self._all_shard_names()]
        with contextlib.ExitStack() as locks:
            for area in areas:
                locks.enter_context(area.locked(shared=False, timeout=self.lock_timeout))
            self._remove_stale_temporaries(areas[:1])
            # A shard's temporaries are stale once its writer is known to be done.
            self._remove_stale_temporaries(areas[1:], 0 if remove_shards else _STALE_TEMP_SECONDS)
            target, pending = areas[0].file, [store for area in areas for store in area.stores()]
            merged = [store for store in pending if store != target]
            if merged or not target.exists():
                _replace(target, ([target] if target.exists() else []) + merged)
            for store in merged:
                store.unlink(missing_ok=True)
            if remove_shards and self.shard is None:
                for area in areas[1:]:
                    with contextlib.suppress(OSError):  # not empty: a segment written since
                        area.segments.rmdir()
                    area.lock_path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.shards.rmdir()
            return len(merged)

    def prune(self, keep: list[str]) -> list[str]:
        """Drop every configuration whose fingerprint is not in ``keep``; return those dropped.

        Parameters
        ----------
        keep : list of str
            Fingerprints to keep.

        Returns
        -------
        dropped : list of str
            Fingerprints removed.
        """
        self.compact()
        main = self._main_area()
        with main.locked(shared=False, timeout=self.lock_timeout):
            if not self.path.exists():
                return []
            with _open(self.path) as f:
                stored = {fp for fp, _ in _groups(f, self.path)}
            _replace(self.path, [self.path], keep=set(keep))
            return sorted(stored - set(keep))

    def should_compact(self, max_segments: int = _COMPACT_MAX_SEGMENTS, growth: float = _COMPACT_GROWTH) -> bool:
        """Whether this writer's segments are many, or large next to its file.

        Parameters
        ----------
        max_segments : int
            Segment files from which to compact.
        growth : float
            Segments' bytes, as a fraction of the file's, from which to compact.

        Returns
        -------
        bool
        """
        area = self._own_area()
        segments = area.segment_files()
        if not segments:
            return False
        if len(segments) >= max_segments or not area.file.exists():
            return True
        pending = sum(s.stat().st_size for s in segments)
        return pending >= growth * area.file.stat().st_size

    # -- internals -------------------------------------------------------

    def _all_shard_names(self) -> list[str]:
        """Every shard with a file, a segments folder or a lock, even empty."""
        if not self.shards.is_dir():
            return []
        names = {_shard_name(p) for p in self.shards.iterdir() if not p.name.startswith(".")}
        return sorted(name for name in names if name)

    def _main_area(self) -> _Area:
        return _Area(self.path)

    def _shard_area(self, name: str) -> _Area:
        return _Area(self.shards / f"{name}{_SEGMENT_SUFFIX}")

    def _own_area(self) -> _Area:
        if self.shard is None:
            return self._main_area()
        if not _SHARD_NAME.fullmatch(self.shard):
            raise ValueError(f"shard={self.shard!r}: use letters, digits, '.', '_' and '-', not starting with '.'.")
        return self._shard_area(self.shard)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[list[Path]]:
        """Shared locks on the main file and every shard; their files, main first."""
        areas = [self._main_area()] + [self._shard_area(name) for name in self.shard_names()]
        with contextlib.ExitStack() as locks:
            for area in areas:
                locks.enter_context(area.locked(shared=True, timeout=self.lock_timeout))
            yield [store for area in areas for store in area.stores()]

    @staticmethod
    def _remove_stale_temporaries(areas: list[_Area], age: float = _STALE_TEMP_SECONDS) -> None:
        """Temporaries of killed writers, in ``areas`` whose exclusive locks the caller holds.

        A compaction's temporary beside its file (``.codes.h5.<pid>-<random>.tmp``)
        is written only under that exclusive lock, and removed by its writer on
        any error: held by us now, any one left is a killed compaction's, removed
        at once (a process id would say less: the writer may have run on another
        machine sharing the storage). Segments' temporaries, and names of
        another form, go by ``age`` (see :data:`_STALE_TEMP_SECONDS`).
        """
        now = time.time()
        for area in areas:
            folders = ((area.segments, ".*.tmp"), (area.file.parent, f".{area.file.name}.*.tmp"))
            for folder, pattern in folders:
                if not folder.is_dir():
                    continue
                for temporary in folder.glob(pattern):
                    with contextlib.suppress(FileNotFoundError):
                        if _compaction_temporary(temporary, area) or now - temporary.stat().st_mtime >= age:
                            temporary.unlink()


#: A shard's name: letters, digits, ``.``, ``_``, ``-`` (no path separator, so
#: a shard stays inside ``<path>.shards/``), not starting with ``.``: names
#: starting with ``.`` (temporaries, hidden files) are skipped as non-shards.
_SHARD_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _compaction_temporary(temporary: Path, area: _Area) -> bool:
    """Whether ``temporary`` is the atomic-write temporary of ``area``'s file: ``.<file name>.<pid>-<random>.tmp``."""
    pid = writer_pid(temporary)
    return pid is not None and temporary.name.startswith(f".{area.file.name}.{pid}-")


def _shard_name(path: Path) -> str | None:
    """``name`` for ``<name>.h5``, ``<name>.h5.segments`` or ``<name>.h5.lock``."""
    for suffix in (_SEGMENT_SUFFIX, _SEGMENT_SUFFIX + ".segments", _SEGMENT_SUFFIX + ".lock"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


@dataclass(frozen=True)
class _Area:
    """One writer's file, its segments folder and its lock."""

    file: Path

    @property
    def segments(self) -> Path:
        return self.file.with_name(self.file.name + ".segments")

    @property
    def lock_path(self) -> Path:
        return self.file.with_name(self.file.name + ".lock")

    def segment_files(self) -> list[Path]:
        if not self.segments.is_dir():
            return []
        return sorted(p for p in self.segments.iterdir() if p.suffix == _SEGMENT_SUFFIX and not p.name.startswith("."))

    def stores(self) -> list[Path]:
        return ([self.file] if self.file.exists() else []) + self.segment_files()

    @contextlib.contextmanager
    def locked(self, shared: bool, timeout: float) -> Iterator[None]:
        if not shared:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(self.lock_path, "a")
        except OSError:
            if not shared:
                raise CacheError(f"cannot create the lock file {os.fspath(self.lock_path)!r}.") from None
            handle = None  # a cache on read-only storage: nobody can be compacting it
        if handle is None:
            yield
            return
        with handle:
            mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, mode)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise CacheError(
                            f"cache {os.fspath(self.file)!r} stayed locked by another process for "
                            f"{timeout:g} s (lock file {os.fspath(self.lock_path)!r})."
                        ) from None
                    time.sleep(_LOCK_POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _lookup_one(stores: list[Path], fp: str, config: Mapping, keys: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Which ``keys`` one configuration's stores hold, their codes in order, and the count of stored
    rows not used as their codes are not finite (misses: a later store's copy, or the network, gives them)."""
    wanted = np.asarray(keys, dtype=_KEY_DTYPE)
    found = np.zeros(len(keys), dtype=bool)
    codes, unusable = None, 0
    for store in stores:
        index = _key_index(store, fp)
        if index is None:
            continue
        rows, targets = _matches(index, wanted, found)
        if not len(rows):
            continue
        with _open(store) as f:
            group = f[f"configs/{fp}"]  # its kinds, types and sizes checked by _key_index
            _check_config(group, config, store)
            width = group["codes"].shape[1]
            if codes is None:
                codes = np.empty((len(keys), width), dtype=np.float32)
            elif width != codes.shape[1]:
                raise CacheError(
                    _message(store, group, f"codes of width {width}, where another file has {codes.shape[1]}")
                )
            read = _read_rows(group["codes"], rows)
        usable = np.isfinite(read).all(axis=1)
        codes[targets[usable]] = read[usable]
        found[targets[usable]] = True
        unusable += len(np.unique(rows[~usable]))
    if codes is None:
        return found, np.empty((0, 0), np.float32), unusable
    return found, codes[found], unusable


def _key_index(store: Path, fp: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The keys one store holds for a configuration, sorted, with their rows.

    Stores are never modified in place (a compaction writes a new file), so
    an index is kept per process for each file version (inode, times, size): a Dask worker
    looking up every shard before each task reads each shard's keys once.
    """
    stat = store.stat()
    return _key_index_of(os.fspath(store), (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size), fp)


@functools.lru_cache(maxsize=_KEY_INDEX_ENTRIES)
def _key_index_of(store: str, version: tuple, fp: str) -> tuple[np.ndarray, np.ndarray] | None:
    with _open(Path(store)) as f:
        group = _group(f, fp, Path(store))
        if group is None:
            return None
        n, _ = _checked(group, Path(store))
        keys = group["keys"][:n]
    order = np.argsort(keys, kind="stable")  # stable: the first stored copy wins
    return keys[order], order


def _open(store: Path) -> h5py.File:
    try:
        f = h5py.File(store, "r")
    except FileNotFoundError:
        raise  # missing, not corrupt: the callers decide
    except OSError as exc:
        raise CacheError(
            f"cache file {os.fspath(store)!r} cannot be read as HDF5 (truncated, corrupt or "
            f"not HDF5): {exc}. Move it away to start a new cache."
        ) from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise CacheError(
            f"{os.fspath(store)!r} is an HDF5 file but not an skcnn code cache "
            f"(no format={FORMAT!r} attribute); choose another cache path."
        )
    return f


def _mark_as_cache(f: h5py.File) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION


def _write_group(f: h5py.File, config: Mapping, keys: np.ndarray, codes: np.ndarray) -> None:
    group = _create_group(f, config)
    _create_codes(group, len(keys), codes.shape[1])[:] = codes.astype(np.float32, copy=False)
    _create_keys(group, keys)
    group.attrs["n_rows"] = len(keys)


def _create_group(f: h5py.File, config: Mapping) -> h5py.Group:
    """A configuration's group, the configuration in its attributes.

    ``n_rows`` is set by the caller once the codes and keys are written.
    """
    group = f.create_group(f"configs/{fingerprint(config)}")
    for name, value in config.items():  # readable with h5dump
        group.attrs[name] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    group.attrs["config"] = json.dumps(dict(config), sort_keys=True)
    return group


def _create_keys(group: h5py.Group, keys: np.ndarray) -> None:
    chunk = max(1, min(len(keys), _KEY_CHUNK_ROWS))
    group.create_dataset("keys", data=keys.astype(_KEY_DTYPE), maxshape=(None,), chunks=(chunk,))


def _create_codes(group: h5py.Group, rows: int, width: int) -> h5py.Dataset:
    """The (unfilled) codes dataset of ``rows`` rows, resizable to fewer or more."""
    rows_per_chunk = max(1, min(rows, _CHUNK_BYTES // max(1, 4 * width)))
    return group.create_dataset(
        "codes",
        shape=(rows, width),
        dtype=np.float32,
        maxshape=(None, width),
        chunks=(rows_per_chunk, width),
        compression=COMPRESSION,
    )


def _replace(target: Path, stores: list[Path], keep: set[str] | None = None) -> None:
    """Write the union of ``stores`` as ``target``: aside, synced, then renamed over it.

    ``keep``: the configurations to keep (default all).
    """
    with atomic_path(target) as temporary, h5py.File(temporary, "w", libver="latest") as f:
        _mark_as_cache(f)
        _merge_into(f, stores, keep)


def _merge_into(out: h5py.File, stores: list[Path], keep: set[str] | None) -> None:
    """Each configuration of ``stores`` into ``out``, each image once (its first stored copy of finite codes).

    All keys are read first to find the rows to keep; codes are then copied
    a block at a time, so memory holds the keys but never all the codes.
    """
    parts: dict[str, tuple[dict, int, list[tuple[Path, int]], list[np.ndarray]]] = {}
    for store in stores:
        with _open(store) as f:
            for fp, group in _groups(f, store):
                if keep is not None and fp not in keep:
                    continue
                n, width = _checked(group, store, parts[fp][1] if fp in parts else None)
                entry = parts.setdefault(fp, (_stored_config(group, store), width, [], []))
                entry[2].append((store, n))
                entry[3].append(group["keys"][:n])
    for fp, (config, width, sources, keys) in parts.items():
        _merge_config(_create_group(out, config), fp, width, sources, np.concatenate(keys))


def _merge_config(group: h5py.Group, fp: str, width: int, sources: list[tuple[Path, int]], keys: np.ndarray) -> None:
    """One configuration's codes into ``group``: each image's first stored copy of finite codes.

    ``keys`` are those of ``sources`` (store, committed rows) end to end.
    Each round copies every image's next copy not yet tried, dropping
    copies that are not finite numbers (a lookup takes them for misses);
    the images those leave get their next copy in the next round. A cache
    without such codes takes one round, in the order images were first stored.
    """
    distinct, image = np.unique(keys, return_inverse=True)
    done, tried = np.zeros(len(distinct), dtype=bool), np.zeros(len(keys), dtype=bool)
    codes_out, kept = _create_codes(group, len(distinct), width), []
    while True:
        untried = np.flatnonzero(~tried & ~done[image])
        if not len(untried):
            break
        _, first = np.unique(image[untried], return_index=True)
        chosen = np.sort(untried[first])
        tried[chosen] = True
        copied = _copy_finite(codes_out, sum(map(len, kept)), fp, sources, chosen)
        done[image[copied]] = True
        kept.append(copied)
    rows = np.concatenate(kept) if kept else np.empty(0, np.intp)
    codes_out.resize((len(rows), width))
    _create_keys(group, keys[rows])
    group.attrs["n_rows"] = len(rows)


def _copy_finite(
    codes_out: h5py.Dataset, written: int, fp: str, sources: list[tuple[Path, int]], chosen: np.ndarray
) -> np.ndarray:
    """Rows ``chosen`` (increasing, numbered across ``sources``) of finite codes appended to ``codes_out``
    from row ``written`` on; returns those copied."""
    copied, start = [], 0
    for store, n in sources:
        rows = chosen[(chosen >= start) & (chosen < start + n)] - start
        if len(rows):
            with _open(store) as f:
                for taken, block in _blocks(f[f"configs/{fp}/codes"], rows):
                    finite = np.isfinite(block).all(axis=1)
                    codes_out[written : written + int(finite.sum())] = block[finite]
                    written += int(finite.sum())
                    copied.append(taken[finite] + start)
        start += n
    return np.concatenate(copied) if copied else np.empty(0, np.intp)


def _blocks(dataset: h5py.Dataset, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(rows in the window, dataset[those rows])`` for increasing ``rows``, in windows of about ``_COPY_BYTES``."""
    step = max(1, _COPY_BYTES // max(1, 4 * dataset.shape[1]))
    for lo in range(0, int(rows[-1]) + 1 if len(rows) else 0, step):
        chosen = rows[(rows >= lo) & (rows < lo + step)]
        if len(chosen):
            yield chosen, dataset[lo : min(lo + step, int(chosen[-1]) + 1)][chosen - lo]


def _groups(f: h5py.File, store: Path) -> Iterator[tuple[str, h5py.Group]]:
    """``(fingerprint, group)`` of each configuration the file holds (its kinds checked, not its datasets)."""
    configs = _configs(f, store)
    for fp in configs if configs is not None else ():
        yield fp, _group(f, fp, store)


def _group(f: h5py.File, fp: str, store: Path) -> h5py.Group | None:
    """The group of configuration ``fp``, None where the file has none, CacheError where it is not a group."""
    configs = _configs(f, store)
    group = configs.get(fp) if configs is not None else None
    if group is not None and not isinstance(group, h5py.Group):
        raise CacheError(_message(store, group, "a dataset, where a cache has a group (keys and codes)"))
    return group


def _configs(f: h5py.File, store: Path) -> h5py.Group | None:
    configs = f.get("configs")
    if configs is not None and not isinstance(configs, h5py.Group):
        raise CacheError(_message(store, configs, "a dataset, where a cache has a group of configurations"))
    return configs


def _checked(group: h5py.Group, store: Path, width: int | None = None) -> tuple[int, int]:
    """The committed rows and the width of a configuration's codes, once its structure is checked.

    What a file says of itself is checked against what it is, before
    anything is read: ``keys`` and ``codes`` datasets of skcnn's types
    (:func:`_check_types`), ``n_rows`` an integer within both, and storage
    in the file itself holding the rows it declares (:func:`_check_storage`).
    Memory is then bounded by the file's real size, never by what it declares.
    """
    keys, codes = (_dataset(group, name, store) for name in ("keys", "codes"))
    config_width = _stored_config(group, store).get("width")
    _check_types(keys, codes, width if width is not None else config_width, store)
    n = group.attrs.get("n_rows")
    integer = np.ndim(n) == 0 and np.issubdtype(np.asarray(n).dtype, np.integer)
    if not (integer and 0 <= n <= min(len(keys), len(codes))):
        raise CacheError(_message(store, group, f"n_rows={n!r}, for {len(keys)} keys and {len(codes)} codes"))
    for dataset in (keys, codes):
        _check_storage(dataset, int(n), store)
    return int(n), codes.shape[1]


def _dataset(group: h5py.Group, name: str, store: Path) -> h5py.Dataset:
    dataset = group.get(name)
    if not isinstance(dataset, h5py.Dataset):
        found = "nothing" if dataset is None else "a group"
        raise CacheError(_message(store, group, f"{found} under '{name}', where a cache has a dataset"))
    return dataset


def _check_types(keys: h5py.Dataset, codes: h5py.Dataset, width, store: Path) -> None:
    """Fixed-length keys; float32 codes of ``width`` (the configuration's, or another file's) where it is an int."""
    if keys.ndim != 1 or keys.dtype != np.dtype(_KEY_DTYPE):
        raise CacheError(_message(store, keys, f"{keys.dtype} keys of shape {keys.shape}, not ({_KEY_DTYPE},)"))
    wrong_width = isinstance(width, int) and codes.ndim == 2 and codes.shape[1] != width
    if codes.ndim != 2 or codes.dtype != np.float32 or wrong_width:
        expected = f"float32 of width {width}" if isinstance(width, int) else "float32 rows"
        raise CacheError(_message(store, codes, f"{codes.dtype} codes of shape {codes.shape}, not {expected}"))


def _stored_config(group: h5py.Group, store: Path) -> dict:
    text = group.attrs.get("config")
    try:
        config = json.loads(text.decode() if isinstance(text, bytes) else text)
    except (TypeError, ValueError):
        config = None
    if not isinstance(config, dict):
        raise CacheError(_message(store, group, "no configuration (a JSON object in its 'config' attribute)"))
    return config


def _check_storage(dataset: h5py.Dataset, rows: int, store: Path) -> None:
    """``rows`` of ``dataset`` held in the file: data in the file itself, filters skcnn writes, and stored
    bytes that, expanded by at most what their filter allows (:data:`_EXPANSION`), hold the declared rows."""
    plist = dataset.id.get_create_plist()
    if plist.get_layout() not in _LAYOUTS or plist.get_external_count():
        raise CacheError(_message(store, dataset, "data outside the file (a virtual or external dataset)"))
    expansion = 1
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in _EXPANSION:
            raise CacheError(_message(store, dataset, f"HDF5 filter {code}, where a cache uses lzf or none"))
        expansion = max(expansion, _EXPANSION[code])
    declared = rows * int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if declared > expansion * stored:
        what = f"{rows} rows declared ({declared} bytes) in {stored} bytes stored: the rows are not in the file"
        raise CacheError(_message(store, dataset, what))


def _message(store: Path, node, what: str) -> str:
    return (
        f"cache file {os.fspath(store)!r} is damaged or not written by skcnn: {node.name} holds {what}. "
        "Move it away to start a new cache."
    )


def _check_config(group: h5py.Group, config: Mapping, store: Path) -> None:
    if _stored_config(group, store) != json.loads(json.dumps(dict(config), sort_keys=True)):
        raise CacheError(
            f"cache file {os.fspath(store)!r}: group {group.name} holds another configuration "
            "under the same fingerprint."
        )


def _attrs(group: h5py.Group) -> dict:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in group.attrs.items() if k != "config"}


def _matches(
    index: tuple[np.ndarray, np.ndarray], wanted: np.ndarray, found: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a store (``index`` from :func:`_key_index`) holding the keys
    ``wanted[i]`` not yet ``found``, and those ``i``."""
    ordered, order = index
    at = np.searchsorted(ordered, wanted)
    inside = at < len(ordered)
    hit = np.zeros(len(wanted), dtype=bool)
    hit[inside] = ordered[at[inside]] == wanted[inside]
    targets = np.flatnonzero(hit & ~found)
    return order[at[targets]], targets


def _read_rows(dataset: h5py.Dataset, rows: list[int]) -> np.ndarray:
    # Whole-dataset reads are fastest when most rows are wanted; h5py's
    # fancy indexing needs strictly increasing indices, and the same image
    # given twice asks for one row twice.
    if len(rows) > dataset.shape[0] // _WHOLE_READ_DIVISOR:
        return dataset[:][rows]
    unique, inverse = np.unique(rows, return_inverse=True)
    return dataset[unique][inverse]


__all__ = ["CacheError", "CacheWarning", "CodeCache", "ConfigInfo", "fingerprint"]
