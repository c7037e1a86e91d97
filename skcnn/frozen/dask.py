"""Scale-out on Dask: codes for millions of images on a cluster, into one cache.

``pip install skcnn[dask]``. The same parameters as
:class:`~skcnn.CNNFeatureTransformer`, run by the workers of a
``dask.distributed.Client``::

    from dask.distributed import Client
    import skcnn.dask

    client = Client("scheduler-host:8786")   # or Client() for a LocalCluster
    codes = skcnn.dask.extract(paths, client=client, cache="/shared/codes.h5",
                               backbone="resnet50", layer="penultimate")

How the work is spread:

- ``paths`` is cut into tasks of ``paths_per_task`` images (a dask bag's or
  dataframe column's partitions are the tasks as they are). A task carries
  paths and parameters, never a network.
- Each worker process builds its transformer on its first task and keeps
  it: the network is loaded once per worker process. ``device="auto"``
  picks the worker's own GPU (dask-cuda gives each worker one). Torch gets
  the worker's ``nthreads`` as intra-op threads, and ``num_workers="auto"``
  one decoding thread per two of them, so a host's workers do not
  oversubscribe its cores. glibc's allocator is told to reuse freed batch
  buffers, which Dask's worker environment prevents (half the speed).
- With ``cache``, each worker process writes its own shard of the cache
  (``CodeCache(cache, shard=...)``), a segment per batch. Before computing,
  a task looks its images up in the main file and in every shard: a task
  that Dask re-runs after its worker was killed recomputes at most the
  batch that was in flight, and a re-run after a total failure skips
  everything already stored.
- When every task is done, one worker merges the shards into the main file
  (:meth:`~skcnn.CodeCache.compact`, a streaming copy), which a
  ``CNNFeatureTransformer(cache=...)`` on any machine then reads as hits.
  Workers run the merge because they see the shared storage, which the
  client may not.

The returned codes are a ``dask.array`` with rows in the order of ``paths``,
one chunk per task, held by the workers.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import operator
import os
import re
import socket
import threading
from dataclasses import dataclass

import joblib
import numpy as np
from tqdm.auto import tqdm

try:
    import dask
    import dask.array as da
    from dask.distributed import Client, as_completed, get_worker
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("skcnn.dask needs dask.distributed: pip install 'skcnn[dask]'") from exc

from ..codes.cache import CodeCache
from ..codes.extraction import CacheStats, Extraction
from ..decoding import images as image_io
from ..network.backbones import MAX_NETWORKS
from ..options import DEFAULTS, PATHS_PER_TASK, show_progress
from .transformer import CNNFeatureTransformer

__all__ = ["ExtractInfo", "extract"]


@dataclass(frozen=True)
class ExtractInfo:
    """What :func:`extract` did, with ``return_info=True``.

    Attributes
    ----------
    cache_info : CacheStats, dict or None
        Hits, misses and images computed, summed over the tasks (a dict by
        backbone for several backbones); ``None`` without a cache.
    failed : list of ImageFailure
        Images that could not be used, with indices into ``paths``.
    n_tasks : int
        Dask tasks run.
    n_features_out : int
        Values per code.
    """

    cache_info: CacheStats | dict | None  # summed over the tasks (by backbone for several); None without a cache
    failed: list[image_io.ImageFailure]  # indices into ``paths``
    n_tasks: int
    n_features_out: int


def extract(
    paths,
    *,
    client: Client,
    cache: str | os.PathLike | None = None,
    paths_per_task: int = PATHS_PER_TASK,
    merge: bool = True,
    return_info: bool = False,
    **params,
):
    """Codes of ``paths`` computed by the workers of ``client``.

    Parameters
    ----------
    paths : list of str or path-like, dask bag, or dask dataframe column
        Image files the workers can read (shared storage). A bag's or a
        dataframe column's partitions become the tasks.
    client : dask.distributed.Client
        The cluster to run on.
    cache : str, path or None, default=None
        The HDF5 code cache, on storage every worker can write. Workers
        write shards beside it, merged into it at the end; images already
        stored are not computed again.
    paths_per_task : int, default=256
        Images per task when ``paths`` is a list.
    merge : bool, default=True
        Merge the workers' shards into the main cache file at the end. The
        merge is one process copying every code (its speed is in
        ``benchmarks/RESULTS.md``); readers see unmerged shards as hits too, so a very
        large run may leave it to ``skcnn cache compact`` later.
    return_info : bool, default=False
        Also return an :class:`ExtractInfo` (cache hits, failures, tasks).
    **params
        Parameters of :class:`~skcnn.CNNFeatureTransformer` (``backbone``,
        ``layer``, ``weights``, ``batch_size``, ``on_error`` ...).

    Returns
    -------
    codes : dask.array.Array of shape (n_paths, n_features_out), float32
        Rows in the order of ``paths``; NaN rows for images that could not
        be used (with ``on_error="skip"``).
    info : ExtractInfo
        Only with ``return_info=True``.

    Raises
    ------
    skcnn.BadImagesError
        With ``on_error="raise"`` (the default), after every other image was
        computed and cached, listing the images that could not be used.

    Examples
    --------
    A cluster of worker threads in this process; on a real cluster, pass
    ``Client("scheduler-host:8786")`` and paths on shared storage.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skimage import data
    >>> from dask.distributed import Client
    >>> import skcnn.dask
    >>> folder = Path(tempfile.mkdtemp())
    >>> paths = []
    >>> for name in ("coffee", "chelsea", "astronaut"):
    ...     Image.fromarray(getattr(data, name)()).save(folder / f"{name}.jpg")
    ...     paths.append(str(folder / f"{name}.jpg"))
    >>> with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
    ...     codes = skcnn.dask.extract(paths, client=client, cache=folder / "codes.h5")
    ...     codes.compute().shape
    (3, 1280)
    """
    if "cache" in params:
        raise TypeError("cache is an argument of extract() itself; it appeared twice.")
    if not isinstance(paths_per_task, int) or paths_per_task < 1:
        raise ValueError(f"paths_per_task must be a positive int; got {paths_per_task!r}.")
    on_error = params.get("on_error", DEFAULTS.on_error)
    cache_path = None if cache is None else os.fspath(cache)
    CNNFeatureTransformer(**params, cache=cache_path).get_params()  # unknown names fail here, not on workers
    width = client.submit(_width_on_worker, params, cache_path, pure=False).result()  # network loaded there
    chunks = _task_inputs(paths, paths_per_task)
    tasks = [dask.delayed(_codes_of_task, pure=False)(chunk, params, cache_path) for chunk in chunks]
    futures = client.compute(tasks)
    summaries = _wait_with_progress(client, futures, chunks, params)
    if cache_path is not None and merge:
        client.submit(_merge_shards, cache_path, pure=False).result()
    offsets = np.cumsum([0] + [n for n, _, _ in summaries])
    failed = [
        image_io.ImageFailure(int(offsets[task] + f.index), f.source, f.reason)
        for task, (_, failures, _) in enumerate(summaries)
        for f in failures
    ]
    codes = _as_dask_array(client, futures, [n for n, _, _ in summaries], width)
    info = ExtractInfo(
        cache_info=_summed([s for _, _, s in summaries]) if cache_path is not None else None,
        failed=failed,
        n_tasks=len(futures),
        n_features_out=width,
    )
    if failed and on_error == "raise":
        raise image_io.BadImagesError(failed, codes)
    image_io.warn_bad_images(failed, int(offsets[-1]), stacklevel=2, where="their rows are NaN")
    return (codes, info) if return_info else codes


def _task_inputs(paths, paths_per_task: int) -> list:
    """Lists of paths, or a dask collection's delayed partitions."""
    if hasattr(paths, "to_delayed") and hasattr(paths, "npartitions"):  # dask bag or dataframe
        if getattr(paths, "ndim", 1) == 2:  # a dataframe (a bag has no ndim, a column has 1)
            if len(paths.columns) != 1:
                raise ValueError(f"a dask dataframe of paths must have one column; got {list(paths.columns)}.")
            paths = paths[paths.columns[0]]
        return list(paths.to_delayed())
    paths = image_io.as_image_list(paths)
    return [paths[i : i + paths_per_task] for i in range(0, len(paths), paths_per_task)]


def _wait_with_progress(client: Client, futures: list, chunks: list, params: dict) -> list[tuple]:
    """Each task's (n_images, failures, cache stats), in task order, as they finish."""
    summaries = client.map(_summary, futures, pure=False)
    # The number of images is known for lists, not for a bag's partitions.
    total = sum(len(chunk) for chunk in chunks) if all(isinstance(c, list) for c in chunks) else None
    batch_size = params.get("batch_size", DEFAULTS.batch_size)
    position = {future.key: i for i, future in enumerate(summaries)}
    done: list = [None] * len(summaries)
    show = show_progress(params.get("progress", DEFAULTS.progress), total or 0, batch_size) if total else False
    with tqdm(total=total, unit="img", disable=not show, desc="skcnn.dask") as bar:
        # Batches of finished futures, each gathered at once (with_results=True
        # can hang: dask/distributed#7331).
        for finished in as_completed(summaries).batches():
            for future, summary in zip(finished, client.gather(finished), strict=True):
                done[position[future.key]] = summary
                bar.update(summary[0])
    return done


def _summed(stats: list):
    """The tasks' cache statistics added up (a dict by backbone for several)."""
    stats = [s for s in stats if s is not None]  # None: a task without images
    if stats and isinstance(stats[0], dict):
        return {name: _summed([s[name] for s in stats]) for name in stats[0]}
    return CacheStats(*(sum(getattr(s, field) for s in stats) for field in ("hits", "misses", "computed")))


def _as_dask_array(client: Client, futures: list, lengths: list[int], width: int):
    codes = client.map(operator.itemgetter(0), futures, pure=False)
    if not codes:
        return da.zeros((0, width), dtype=np.float32)
    return da.concatenate(
        [da.from_delayed(future, shape=(n, width), dtype=np.float32) for future, n in zip(codes, lengths, strict=True)]
    )


# -- on the workers ------------------------------------------------------

#: This worker process's fitted transformers, one per parameter set, at most
#: as many as the networks a process keeps loaded (the oldest dropped first).
_transformers: collections.OrderedDict[str, CNNFeatureTransformer] = collections.OrderedDict()
_transformers_lock = threading.Lock()
_configured = False  # this worker process's threads and allocator


def _worker_transformer(params: dict, cache_path: str | None) -> CNNFeatureTransformer:
    """This worker process's fitted transformer for ``params``: built once."""
    key = joblib.hash((params, cache_path))
    with _transformers_lock:
        nthreads = _worker_threads()
        _configure_worker_process(nthreads)
        if key not in _transformers:
            settings = dict(params, progress=False)
            if settings.get("num_workers", DEFAULTS.num_workers) == "auto":
                settings["num_workers"] = nthreads // 2  # decoding threads; 0 decodes in the task's thread
            if cache_path is not None:
                settings["cache"] = CodeCache(cache_path, shard=_shard_name())
            _transformers[key] = CNNFeatureTransformer(**settings).fit([])
        _transformers.move_to_end(key)
        while len(_transformers) > MAX_NETWORKS:
            _transformers.popitem(last=False)
        return _transformers[key]


def _worker_threads() -> int:
    try:
        return max(1, int(get_worker().state.nthreads))
    except ValueError:  # not on a worker (a synchronous scheduler)
        return max(1, os.cpu_count() or 1)


def _configure_worker_process(nthreads: int) -> None:
    """Torch threads and memory allocation for extraction, once per worker process.

    Only in a worker process started by a nanny (``dask worker``,
    ``LocalCluster(processes=True)``): workers in threads of another process
    (``processes=False``) leave that process as it is. Dask starts such a
    process with one thread per numeric library and with
    ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap
    threshold: every batch's large buffers are then mapped and unmapped
    again, and extraction measured half as fast (benchmarks/RESULTS.md).
    """
    global _configured
    try:
        own_process = get_worker().nanny is not None
    except ValueError:  # not in a task (client.run), or no worker at all
        return
    if _configured or not own_process:
        return
    import torch

    torch.set_num_threads(nthreads)
    _keep_freed_memory_for_reuse()
    _configured = True


#: glibc mallopt parameters and the values set in worker processes: buffers
#: up to 32 MiB come from the heap, and up to 128 MiB of free heap is kept.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD, _MMAP_THRESHOLD = 128 << 20, 32 << 20


def _keep_freed_memory_for_reuse() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to undo
        pass


def _shard_name() -> str:
    """One shard per worker process: host and process id."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{socket.gethostname()}-{os.getpid()}").lstrip(".")


def _width_on_worker(params: dict, cache_path: str | None) -> int:
    return _worker_transformer(params, cache_path).n_features_out_


def _codes_of_task(paths, params: dict, cache_path: str | None) -> Extraction:
    """Codes, failures with indices into this task's paths, cache stats."""
    images = image_io.as_image_list(paths)
    return _worker_transformer(params, cache_path).extractor_.codes(images)


def _summary(result) -> tuple[int, list, object]:
    codes, failures, stats = result
    return len(codes), failures, stats


def _merge_shards(cache_path: str) -> int:
    return CodeCache(cache_path).compact(remove_shards=True)  # every task is done
