"""Decoding in parallel: images -> preprocessed batches, in order, memory bounded.

Decoding a JPEG and resizing it costs about as much per image as a small
network's forward pass on a CPU (a 12 MP photo several times more), so it
runs in worker threads while the calling thread runs the network on the
batch before, and the calling thread decodes too when the workers fall
behind. libjpeg-turbo (through simplejpeg and PIL) and torch's resize
kernels release the GIL, so threads decode in parallel
without the start-up, pickling and shared-memory copies of worker
processes (``benchmarks/bench_throughput.py`` measured both; see
``benchmarks/RESULTS.md``).

At most ``prefetch`` images are decoded ahead of the batch being consumed,
whatever the number of images, and batches come out in the order of
``positions``. An image that cannot be used becomes an
:class:`~skcnn.images.ImageFailure`, as without workers; any other error
in a worker is raised in the calling thread, naming the image. An
interrupted iteration (Ctrl-C, an error, a consumer that stops early)
cancels what is queued and waits for the few images being decoded.
A Ctrl-C that Python swallows (see :func:`interrupts_kept`) is raised at
the next batch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from ..options import DEFAULTS
from . import images as image_io
from .preprocessing import Preprocessing


def decode(
    image: image_io.ImageLike,
    recipe: Preprocessing,
    max_pixels: int | None = image_io.MAX_PIXELS,
    decode: str = DEFAULTS.decode,
) -> torch.Tensor:
    """One image -> its resized, centre-cropped ``(C, h, w)`` pixels (uint8 for 8-bit sources).

    ``decode`` says how far a JPEG file may be DCT-scaled while decoding
    (:meth:`~skcnn.decoding.preprocessing.Preprocessing.min_decoded_side`); other
    inputs are decoded exactly whatever it says. Peak memory for a 12 MP
    photo: its file, its uint8 pixels at the decoded scale, and their
    resized copy (``tests/test_loading.py`` bounds it).
    """
    return recipe.crop(image_io.load_image(image, max_pixels, recipe.min_decoded_side(decode)))


def iter_batches(
    images: Sequence,
    positions: Sequence[int],
    recipe: Preprocessing,
    batch_size: int,
    failures: list[image_io.ImageFailure],
    *,
    max_pixels: int | None = image_io.MAX_PIXELS,
    num_workers: int = 0,
    decode: str = DEFAULTS.decode,
    prefetch: int | None = None,
    normalize: bool = True,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Decode and preprocess ``images[i]`` for ``i`` in ``positions``; yield the
    positions decoded and their stacked ``(B, 3, h, w)`` tensor, in order.

    The tensor is the normalised network input, or with ``normalize=False``
    the uint8 pixels of the crops (what fine-tuning keeps). Images that fail
    are appended to ``failures`` and left out. With ``num_workers=0`` images
    are decoded in the calling thread, one batch at a time; otherwise by
    ``num_workers`` threads, at most ``prefetch`` images (default: two
    batches) ahead of the consumer, and by the calling thread too whenever
    it would otherwise wait for them: on large photos decoding costs more
    than the network, and the calling thread's cores would sit idle.
    """
    stack = recipe.batch if normalize else recipe.pixels
    with interrupts_kept() as raise_if_interrupted:
        batches = _decoded_batches(
            images, positions, recipe, batch_size, failures, max_pixels, num_workers, decode, prefetch, stack
        )
        with contextlib.closing(batches):  # stops the decoding workers at once
            for batch in batches:
                raise_if_interrupted()
                yield batch
        raise_if_interrupted()


def _decoded_batches(images, positions, recipe, batch_size, failures, max_pixels, num_workers, decode, prefetch, stack):
    def work(i: int):
        return _decode_or_failure(images[i], i, recipe, max_pixels, decode)

    if num_workers == 0:
        yield from _batched(map(work, positions), batch_size, failures, stack)
        return
    window = prefetch if prefetch is not None else 2 * batch_size
    with ThreadPoolExecutor(num_workers, thread_name_prefix="skcnn-decode") as pool:
        pending: deque[tuple[int, Future]] = deque()
        try:
            yield from _batched(_in_order(pool, pending, work, positions, window), batch_size, failures, stack)
        finally:
            for _, future in pending:  # queued images; those being decoded finish on their own
                future.cancel()


@contextlib.contextmanager
def interrupts_kept() -> Iterator[Callable[[], None]]:
    """Make sure a Ctrl-C stops the run; yield a check to call between batches.

    Python raises ``KeyboardInterrupt`` wherever the main thread happens to
    be. When that is a finaliser (a weak reference's callback, an object
    being freed), the exception is printed as "ignored" and the run goes on:
    about one Ctrl-C in ten was lost that way during a cached extraction.
    Here the signal is also recorded, and the check raises it. Only in the
    main thread, and only while Python's own handler is installed.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is not signal.default_int_handler:
        yield lambda: None
        return
    received: list[int] = []

    def record_and_raise(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    def raise_if_interrupted() -> None:
        if received:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, record_and_raise)
    try:
        yield raise_if_interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _in_order(pool, pending, work, positions, window):
    todo = iter(positions)
    for i in todo:
        pending.append((i, pool.submit(work, i)))
        if len(pending) >= max(window, 1):
            break
    while pending:
        _help(pending, work)
        result = pending.popleft()[1].result()  # re-raises a worker's unexpected error here
        i = next(todo, None)
        if i is not None:
            pending.append((i, pool.submit(work, i)))
        yield result


def _help(pending: deque, work) -> None:
    """Decode queued images in this thread until the first pending one is done.

    Takes only images no worker has started (``cancel`` succeeds), first
    in first out, and puts each result back in its place, so the order and
    the window stay as they were.
    """
    for place, (i, future) in enumerate(list(pending)):
        if pending[0][1].done():
            return
        if future.cancel():
            done: Future = Future()
            done.set_result(work(i))
            pending[place] = (i, done)


def _decode_or_failure(image, index, recipe, max_pixels, how):
    """``(index, tensor)`` or ``(index, ImageFailure)``; errors other than a bad
    image propagate with a note naming the image."""
    try:
        return index, decode(image, recipe, max_pixels, how)
    except image_io.ImageError as exc:
        return index, image_io.failure(image, index, exc)
    except Exception as exc:
        if hasattr(exc, "add_note"):  # Python >= 3.11
            exc.add_note(f"skcnn: while decoding {image_io.describe(image, index)}")
        raise


def _batched(results, batch_size, failures, stack):
    done, crops = [], []
    for index, result in results:
        if isinstance(result, image_io.ImageFailure):
            failures.append(result)
            continue
        done.append(index)
        crops.append(result)
        if len(done) == batch_size:
            yield done, stack(crops)
            done, crops = [], []
    if done:
        yield done, stack(crops)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: Most decoding threads ``num_workers="auto"`` starts.
MAX_AUTO_WORKERS = 4


def resolve_workers(num_workers: int | str) -> int:
    """``"auto"``: one decoding thread per two usable cores (at least one, at
    most :data:`MAX_AUTO_WORKERS`).

    Decoding and resizing a camera-sized JPEG costs a third to a half of a
    small network's forward pass per image, so half the cores decoding keep
    up; more threads only compete with the network's own intra-op threads
    (the measurements are in ``benchmarks/RESULTS.md``).
    """
    if num_workers == "auto":
        return max(1, min(usable_cores() // 2, MAX_AUTO_WORKERS))
    return int(num_workers)
