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

Concurrency: segment writers never conflict (unique names). Readers hold a
shared lock on ``codes.h5.lock`` while reading; compaction holds it
exclusively, waiting up to ``lock_timeout`` seconds with a clear error after.

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
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .identity import KEY_LENGTH

FORMAT = "skcnn code cache"
#: Bumped whenever the meaning of stored codes changes: old entries then miss.
FORMAT_VERSION = 1
#: lzf halves ReLU'd penultimate codes (about 2/3 zeros) at ~100 MB/s and
#: costs nothing on dense ones (see the README's cache section for figures).
COMPRESSION = "lzf"
_KEY_DTYPE = f"S{KEY_LENGTH}"
_CHUNK_BYTES = 1 << 20
_SEGMENT_SUFFIX = ".h5"
_STALE_TEMP_SECONDS = 3600


class CacheError(ValueError):
    """A cache file cannot be used: not an skcnn cache, corrupt, or locked."""


def fingerprint(config: Mapping) -> str:
    """Stable 16-hex-digit name of a configuration (a JSON-able mapping)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ConfigInfo:
    """What the cache holds for one configuration."""

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
    """

    def __init__(self, path: str | os.PathLike, lock_timeout: float = 600.0):
        self.path = Path(path)
        self.segments = self.path.with_name(self.path.name + ".segments")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout

    # -- reading ---------------------------------------------------------

    def lookup(self, configs: Mapping[str, Mapping], keys: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """For each named configuration: (found mask, codes of the found keys in order).

        ``configs`` maps a caller's name (a layer) to its configuration.
        """
        wanted = {name: fingerprint(config) for name, config in configs.items()}
        with self._locked(shared=True):
            stores = self._stores()
            return {
                name: self._lookup_one(stores, fp, configs[name], keys)
                for name, fp in wanted.items()
            }

    def read(self, config_fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
        """All ``(keys, codes)`` stored for one configuration, duplicates dropped."""
        with self._locked(shared=True):
            keys, codes = [], []
            for store in self._stores():
                with _open(store) as f:
                    group = f.get(f"configs/{config_fingerprint}")
                    if group is not None:
                        n = _committed(group, store)
                        keys.append(group["keys"][:n])
                        codes.append(group["codes"][:n])
        if not keys:
            raise KeyError(f"{self.path} holds no configuration {config_fingerprint!r}.")
        all_keys = np.concatenate(keys)
        _, first = np.unique(all_keys, return_index=True)
        first.sort()
        return all_keys[first].astype(str), np.concatenate(codes)[first]

    def configs(self) -> list[ConfigInfo]:
        """The configurations stored, with counts and sizes."""
        found: dict[str, dict] = {}
        with self._locked(shared=True):
            for store in self._stores():
                with _open(store) as f:
                    for fp, group in f.get("configs", {}).items():
                        entry = found.setdefault(fp, {"attrs": _attrs(group), "keys": set(), "bytes": 0, "width": group["codes"].shape[1]})
                        n = _committed(group, store)
                        entry["keys"].update(group["keys"][:n].tolist())
                        entry["bytes"] += group["codes"].id.get_storage_size() + group["keys"].id.get_storage_size()
        return [
            ConfigInfo(fp, e["attrs"], len(e["keys"]), e["width"], e["bytes"])
            for fp, e in sorted(found.items(), key=lambda item: item[1]["attrs"].get("layer", ""))
        ]

    def _lookup_one(self, stores, fp, config, keys):
        wanted = np.asarray(keys, dtype=_KEY_DTYPE)
        found = np.zeros(len(keys), dtype=bool)
        codes = None
        for store in stores:
            with _open(store) as f:
                group = f.get(f"configs/{fp}")
                if group is None:
                    continue
                _check_config(group, config, store)
                rows, targets = _matches(group["keys"][:_committed(group, store)], wanted, found)
                if not len(rows):
                    continue
                if codes is None:
                    codes = np.empty((len(keys), group["codes"].shape[1]), dtype=np.float32)
                codes[targets] = _read_rows(group["codes"], rows)
                found[targets] = True
        if codes is None:
            return found, np.empty((0, 0), np.float32)
        return found, codes[found]

    # -- writing ---------------------------------------------------------

    def write(self, batch: Mapping[str, tuple[Mapping, list[str], np.ndarray]]) -> Path:
        """Store one computed batch atomically as a new segment.

        ``batch`` maps a name (a layer) to (configuration, keys, codes).
        Returns the segment's path.
        """
        self.segments.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temporary = self.segments / f".{name}.tmp"
        final = self.segments / f"{name}{_SEGMENT_SUFFIX}"
        with h5py.File(temporary, "w", libver="latest") as f:
            _mark_as_cache(f)
            for config, keys, codes in batch.values():
                _write_group(f, config, np.asarray(keys, dtype=_KEY_DTYPE), codes)
        _fsync(temporary)
        os.replace(temporary, final)
        _fsync(self.segments)
        return final

    def compact(self) -> int:
        """Merge the segments into the main file; return the number merged."""
        with self._locked(shared=False):
            segments = self._segment_files()
            self._remove_stale_temporaries()
            if not segments and self.path.exists():
                return 0
            self._replace_main(self._merge(([self.path] if self.path.exists() else []) + segments))
            for segment in segments:
                segment.unlink(missing_ok=True)
            return len(segments)

    def prune(self, keep: list[str]) -> list[str]:
        """Drop every configuration whose fingerprint is not in ``keep``; return those dropped."""
        self.compact()
        with self._locked(shared=False):
            if not self.path.exists():
                return []
            merged = self._merge([self.path])
            self._replace_main({fp: entry for fp, entry in merged.items() if fp in keep})
            return sorted(set(merged) - set(keep))

    def _replace_main(self, merged: Mapping[str, tuple[dict, np.ndarray, np.ndarray]]) -> None:
        """Write ``merged`` as the new main file: aside, synced, then renamed over it."""
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with h5py.File(temporary, "w", libver="latest") as f:
                _mark_as_cache(f)
                for config, keys, codes in merged.values():
                    _write_group(f, config, keys, codes)
            _fsync(temporary)
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)
        _fsync(self.path.parent)

    def should_compact(self, max_segments: int = 64, growth: float = 0.1) -> bool:
        """Whether the segments are many, or large next to the main file."""
        segments = self._segment_files()
        if not segments:
            return False
        if len(segments) >= max_segments or not self.path.exists():
            return True
        pending = sum(s.stat().st_size for s in segments)
        return pending >= growth * self.path.stat().st_size

    # -- internals -------------------------------------------------------

    def _stores(self) -> list[Path]:
        return ([self.path] if self.path.exists() else []) + self._segment_files()

    def _segment_files(self) -> list[Path]:
        if not self.segments.is_dir():
            return []
        return sorted(p for p in self.segments.iterdir() if p.suffix == _SEGMENT_SUFFIX and not p.name.startswith("."))

    def _remove_stale_temporaries(self) -> None:
        # Temporaries of killed writers; a live writer's is younger than this.
        now = time.time()
        for folder, pattern in ((self.segments, ".*.tmp"), (self.path.parent, f".{self.path.name}.*.tmp")):
            if folder.is_dir():
                for temporary in folder.glob(pattern):
                    with contextlib.suppress(FileNotFoundError):
                        if now - temporary.stat().st_mtime > _STALE_TEMP_SECONDS:
                            temporary.unlink()

    def _merge(self, stores: list[Path]) -> dict[str, tuple[dict, np.ndarray, np.ndarray]]:
        parts: dict[str, tuple[dict, list, list]] = {}
        for store in stores:
            with _open(store) as f:
                for fp, group in f.get("configs", {}).items():
                    n = _committed(group, store)
                    config = json.loads(group.attrs["config"])
                    entry = parts.setdefault(fp, (config, [], []))
                    entry[1].append(group["keys"][:n])
                    entry[2].append(group["codes"][:n])
        merged = {}
        for fp, (config, keys, codes) in parts.items():
            keys, codes = np.concatenate(keys), np.concatenate(codes)
            _, first = np.unique(keys, return_index=True)
            first.sort()  # keep the order in which images were first stored
            merged[fp] = (config, keys[first], codes[first])
        return merged

    @contextlib.contextmanager
    def _locked(self, shared: bool) -> Iterator[None]:
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
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(handle, mode)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise CacheError(
                            f"cache {os.fspath(self.path)!r} stayed locked by another process for "
                            f"{self.lock_timeout:g} s (lock file {os.fspath(self.lock_path)!r})."
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


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
    group = f.create_group(f"configs/{fingerprint(config)}")
    for name, value in config.items():  # readable with h5dump
        group.attrs[name] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    group.attrs["config"] = json.dumps(dict(config), sort_keys=True)
    rows_per_chunk = max(1, min(len(keys), _CHUNK_BYTES // max(1, 4 * codes.shape[1])))
    group.create_dataset("keys", data=keys.astype(_KEY_DTYPE), maxshape=(None,), chunks=(max(1, min(len(keys), 4096)),))
    group.create_dataset(
        "codes", data=codes.astype(np.float32, copy=False), maxshape=(None, codes.shape[1]),
        chunks=(rows_per_chunk, codes.shape[1]), compression=COMPRESSION,
    )
    group.attrs["n_rows"] = len(keys)


def _committed(group: h5py.Group, store: Path) -> int:
    n = int(group.attrs.get("n_rows", -1))
    if n < 0 or n > len(group["keys"]) or n > len(group["codes"]):
        raise CacheError(f"cache file {os.fspath(store)!r} is inconsistent in group {group.name}.")
    return n


def _check_config(group: h5py.Group, config: Mapping, store: Path) -> None:
    if json.loads(group.attrs["config"]) != json.loads(json.dumps(dict(config), sort_keys=True)):
        raise CacheError(
            f"cache file {os.fspath(store)!r}: group {group.name} holds another configuration "
            "under the same fingerprint."
        )


def _attrs(group: h5py.Group) -> dict:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in group.attrs.items() if k != "config"}


def _matches(stored: np.ndarray, wanted: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``stored`` holding the keys ``wanted[i]`` not yet ``found``, and those ``i``."""
    order = np.argsort(stored, kind="stable")  # stable: the first stored copy wins
    ordered = stored[order]
    at = np.searchsorted(ordered, wanted)
    inside = at < len(ordered)
    hit = np.zeros(len(wanted), dtype=bool)
    hit[inside] = ordered[at[inside]] == wanted[inside]
    targets = np.flatnonzero(hit & ~found)
    return order[at[targets]], targets


def _read_rows(dataset: h5py.Dataset, rows: list[int]) -> np.ndarray:
    # Whole-dataset reads are fastest when most rows are wanted; h5py's
    # fancy indexing needs increasing indices.
    if len(rows) > dataset.shape[0] // 4:
        return dataset[:][rows]
    order = np.argsort(rows)
    picked = dataset[np.asarray(rows)[order]]
    out = np.empty_like(picked)
    out[order] = picked
    return out


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
