"""Decoding in parallel: images -> preprocessed batches, in order, memory bounded.

Decoding a JPEG and resizing it costs about as much per image as a small
network's forward pass on a CPU, so it runs in worker threads while the
calling thread runs the network on the batch before. PIL's decoders and
torch's resize kernels release the GIL, so threads decode in parallel
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

from . import images as image_io
from .preprocessing import Preprocessing


def decode(
    image: image_io.ImageLike,
    recipe: Preprocessing,
    max_pixels: int | None = image_io.MAX_PIXELS,
    decode: str = "exact",
) -> torch.Tensor:
    """One image -> its normalised ``(3, h, w)`` network input.

    ``decode="draft"`` lets PIL decode a JPEG file at a reduced scale (1/2,
    1/4 or 1/8, DCT scaling) that stays at least as large as the resize
    target: much faster on camera-sized files, slightly different pixels.
    Other inputs are decoded exactly either way.
    """
    draft_size = recipe.resize_size if decode == "draft" else None
    return recipe(image_io.load_image(image, max_pixels, draft_size))


def iter_batches(
    images: Sequence,
    positions: Sequence[int],
    recipe: Preprocessing,
    batch_size: int,
    failures: list[image_io.ImageFailure],
    *,
    max_pixels: int | None = image_io.MAX_PIXELS,
    num_workers: int = 0,
    decode: str = "exact",
    prefetch: int | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Decode and preprocess ``images[i]`` for ``i`` in ``positions``; yield the
    positions decoded and their stacked ``(B, 3, h, w)`` tensor, in order.

    Images that fail are appended to ``failures`` and left out. With
    ``num_workers=0`` images are decoded in the calling thread, one batch
    at a time; otherwise by ``num_workers`` threads, at most ``prefetch``
    images (default: two batches) ahead of the consumer.
    """
    with interrupts_kept() as raise_if_interrupted:
        batches = _decoded_batches(
            images, positions, recipe, batch_size, failures, max_pixels, num_workers, decode, prefetch
        )
        with contextlib.closing(batches):  # stops the decoding workers at once
            for batch in batches:
                raise_if_interrupted()
                yield batch
        raise_if_interrupted()


def _decoded_batches(images, positions, recipe, batch_size, failures, max_pixels, num_workers, decode, prefetch):
    if num_workers == 0:
        results = (_decode_or_failure(images[i], i, recipe, max_pixels, decode) for i in positions)
        yield from _batched(results, batch_size, failures)
        return
    window = prefetch if prefetch is not None else 2 * batch_size
    with ThreadPoolExecutor(num_workers, thread_name_prefix="skcnn-decode") as pool:
        pending: deque[Future] = deque()
        try:
            yield from _batched(
                _in_order(pool, pending, images, positions, recipe, max_pixels, decode, window), batch_size, failures
            )
        finally:
            for future in pending:  # queued images; those being decoded finish on their own
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


def _in_order(pool, pending, images, positions, recipe, max_pixels, decode, window):
    todo = iter(positions)
    for i in todo:
        pending.append(pool.submit(_decode_or_failure, images[i], i, recipe, max_pixels, decode))
        if len(pending) >= max(window, 1):
            break
    while pending:
        result = pending.popleft().result()  # re-raises a worker's unexpected error here
        i = next(todo, None)
        if i is not None:
            pending.append(pool.submit(_decode_or_failure, images[i], i, recipe, max_pixels, decode))
        yield result


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


def _batched(results, batch_size, failures):
    done, tensors = [], []
    for index, result in results:
        if isinstance(result, image_io.ImageFailure):
            failures.append(result)
            continue
        done.append(index)
        tensors.append(result)
        if len(done) == batch_size:
            yield done, torch.stack(tensors)
            done, tensors = [], []
    if done:
        yield done, torch.stack(tensors)


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
