"""Files written atomically: whole, in place, and still there after a crash, or not there at all.

Every file skcnn writes for later reads (cache segments and compacted
cache files, decoded-crop segments, checkpoints, exported ONNX graphs) is
written the same way:

1. under a temporary name in the target's own folder (a rename is atomic
   only within one file system): ``.<name>.<pid>-<random>.tmp``, hidden,
   unique, and naming the process that writes it, so that cleanups can
   tell leftovers from live writes (:data:`TEMPORARY_GLOB`,
   :func:`writer_pid`);
2. flushed and ``fsync``-ed, so the data is on disk before the name is;
3. given a new file's usual mode, ``0o666`` less the umask (the temporary
   is created ``0o600``), or ``0o600`` where the caller asks for a
   private file;
4. renamed over the target with :func:`os.replace` (a reader sees the old
   file or the new one, never half of one);
5. made durable by an ``fsync`` of the folder, which holds the new name.

Any exception before the rename removes the temporary file and is raised
again. Two forms: :func:`atomic_write` (or :class:`AtomicFile`, when the
writes span calls) gives an open file object; :func:`atomic_path` gives the
temporary path, for writers that open files themselves (h5py,
``torch.save``, ``onnx.save``).

This module needs the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

#: What every temporary file's name matches (as a glob, in the target's folder).
TEMPORARY_GLOB = ".*.tmp"
#: ``.<target name>.<pid>-<8 hex digits>.tmp``: the writer's process id, then a random part.
_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp")
#: The mode of a file only its owner reads (what the temporary is created with).
PRIVATE_MODE = 0o600


class AtomicFile:
    """A new file for ``path``, written under a temporary name and renamed over ``path`` whole.

    :meth:`commit` puts it in place; :meth:`discard` (or any exception
    inside a ``with`` block, which yields :attr:`file`) removes it. Use it
    directly where the writes span several calls; :func:`atomic_write` is
    the same in a ``with`` block.

    Parameters
    ----------
    path : str or path-like
        The target; its folder must exist.
    mode : {"wb", "w"}, default="wb"
        Binary or text.
    private : bool, default=False
        ``True`` leaves the file readable and writable by its owner only
        (``0o600``); otherwise it gets a new file's usual mode, ``0o666``
        less the umask.
    encoding : str, optional
        The text encoding, for ``mode="w"``.

    Attributes
    ----------
    file : file object
        Open for writing, in ``mode``.
    temporary : Path
        Where the file is written until :meth:`commit`.
    """

    def __init__(self, path, mode: str = "wb", *, private: bool = False, encoding: str | None = None):
        if mode not in ("wb", "w"):
            raise ValueError(f"AtomicFile: mode must be 'wb' or 'w'; got {mode!r}.")
        self.path, self.private = Path(path), private
        self.temporary, fd = _new_temporary(self.path)
        try:
            self.file: IO = os.fdopen(fd, mode, encoding=encoding)
        except BaseException:
            os.close(fd)
            self.temporary.unlink(missing_ok=True)
            raise

    def commit(self) -> Path:
        """Sync the file, set its mode, rename it over the target, sync the folder; return the target.

        On any failure before the rename the temporary file is removed and
        the exception raised.
        """
        try:
            if self.file.closed:  # closed by the caller, or written through the path
                _fsync(self.temporary)
            else:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
            os.chmod(self.temporary, PRIVATE_MODE if self.private else new_file_mode())
            os.replace(self.temporary, self.path)
        except BaseException:
            self.discard()
            raise
        _fsync(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file; the target stays as it was."""
        with contextlib.suppress(OSError):
            self.file.close()
        self.temporary.unlink(missing_ok=True)

    def __enter__(self) -> IO:
        return self.file

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def atomic_write(path, mode: str = "wb", *, private: bool = False, encoding: str | None = None) -> AtomicFile:
    """A file object for ``path``, put in place whole when the ``with`` block ends without an exception.

    Parameters are those of :class:`AtomicFile`.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "keys.json"
    >>> with atomic_write(target, "w") as f:
    ...     _ = f.write('{"keys": []}')
    >>> target.read_text()
    '{"keys": []}'
    """
    return AtomicFile(path, mode, private=private, encoding=encoding)


@contextlib.contextmanager
def atomic_path(path, *, private: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write (the file exists, empty), renamed over ``path`` after the block.

    For writers that open the file themselves (h5py, ``torch.save``,
    ``onnx.save``): they may truncate or replace the temporary file; it is
    synced through its path. ``private`` is as for :class:`AtomicFile`.
    """
    pending = AtomicFile(path, private=private)
    pending.file.close()
    try:
        yield pending.temporary
    except BaseException:
        pending.discard()
        raise
    pending.commit()


def writer_pid(path) -> int | None:
    """The process id in the name of a temporary file of this module, or None for another name."""
    match = _TEMPORARY_NAME.fullmatch(Path(path).name)
    return int(match["pid"]) if match else None


def new_file_mode() -> int:
    """A new file's usual mode: ``0o666`` less the process's umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read from ``/proc/self/status`` (Linux 4.7 and later).

    Elsewhere the only way is to set it and set it back, which for an
    instant gives files that other threads create a private mode.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _new_temporary(path: Path) -> tuple[Path, int]:
    """A new, empty temporary file beside ``path`` (``0o600``, never an existing one), and its descriptor."""
    while True:
        temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
        except FileExistsError:
            continue


def _fsync(path: Path) -> None:
    """``fsync`` a file or a folder by its path."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["PRIVATE_MODE", "TEMPORARY_GLOB", "AtomicFile", "atomic_path", "atomic_write", "new_file_mode", "writer_pid"]
