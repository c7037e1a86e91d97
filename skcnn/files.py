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
again. A writer killed before it (``SIGKILL``, a power cut) leaves its
temporary file behind: the next writer of the same target removes those of
writers that no longer run, before it creates its own
(:func:`remove_dead_temporaries` does it for a whole folder).

Two forms: :func:`atomic_write` (or :class:`AtomicFile`, when the writes
span calls) gives an open file object; :func:`atomic_path` gives the
temporary path, for writers that open files themselves (h5py,
``torch.save``, ``onnx.save``).

Files that decide what a later process computes (decoded crops, codes)
are read only from folders no one else may write: :func:`owned_privately`
tells, :func:`private_folder` creates one (``0o700``) or checks it.

This module needs the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

#: What every temporary file's name matches (as a glob, in the target's folder).
TEMPORARY_GLOB = ".*.tmp"
#: ``.<target name>.<pid>-<8 hex digits>.tmp``: the writer's process id, then a random part.
_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp")
#: The mode of a file only its owner reads (what the temporary is created with).
PRIVATE_MODE = 0o600
#: The mode of a folder only its owner enters (what :func:`private_folder` creates).
PRIVATE_FOLDER_MODE = 0o700


class AtomicFile:
    """A new file for ``path``, written under a temporary name and renamed over ``path`` whole.

    :meth:`commit` puts it in place; :meth:`discard` (or any exception
    inside a ``with`` block, which yields :attr:`file`) removes it. Use it
    directly where the writes span several calls; :func:`atomic_write` is
    the same in a ``with`` block. Creating one first removes the
    temporaries of ``path`` that writers no longer running left behind.

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


def writer_running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user counts).

    ``os.kill(pid, 0)`` sends nothing: it fails with :class:`ProcessLookupError`
    where no such process exists, and with :class:`PermissionError` where it
    exists but belongs to another user. A process id is only meaningful on
    its own machine (and in its own container): a folder shared over a
    network file system by writers of several machines sees their writers as
    not running here.
    """
    if pid <= 0:  # 0 and negative ids name process groups, not a writer
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # beyond any process id
        return False
    return True


def remove_dead_temporaries(folder, name: str | None = None) -> int:
    """Remove this user's temporary files in ``folder`` whose writers no longer run; the bytes freed.

    Parameters
    ----------
    folder : str or path-like
        Where the temporaries are (a missing folder has none).
    name : str, optional
        Only those of the target of this name (what :class:`AtomicFile` does
        before it writes one); all of them by default.

    Returns
    -------
    n_bytes : int
        The size of the files removed.
    """
    freed = 0
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        match = _TEMPORARY_NAME.fullmatch(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            info = entry.stat(follow_symlinks=False)
            if info.st_uid == os.geteuid() and not writer_running(int(match["pid"])):
                os.unlink(entry.path)
                freed += info.st_size
    return freed


def owned_privately(path) -> bool:
    """Whether ``path`` is this user's and no one else may change it.

    True for a file or folder (not a symbolic link) owned by the effective
    user, that neither its group nor others may write. What a process reads
    from such a folder was written by this user's own processes: a folder
    of a shared place (the system's temporary folder, a group's folder)
    that fails this may hold files planted by others.

    Parameters
    ----------
    path : str, path-like or int
        The file or folder, or a descriptor of an open one (checked with
        ``fstat``, so no one can swap the file between the check and the read).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:  # created 0o700
    ...     owned_privately(folder)
    True
    """
    return _not_private(path) is None


def private_folder(path) -> Path:
    """``path`` as a folder only this user may write: created ``0o700`` where missing, checked where it exists.

    The folder is created with :func:`os.mkdir` itself (no check-then-create
    race); an existing one must pass :func:`owned_privately` and be a real
    folder. Its parent must exist.

    Raises
    ------
    PermissionError
        Naming the folder and what is wrong with it: a symbolic link,
        another owner, writable by its group or others, not a folder, or
        one this user may not create.
    """
    path = Path(path)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, PRIVATE_FOLDER_MODE)
    problem = _not_private(path, folder=True)
    if problem is not None:
        raise PermissionError(f"{os.fspath(path)!r} {problem}")
    return path


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


def _not_private(path, *, folder: bool = False) -> str | None:
    """What makes ``path`` (or an open descriptor) not :func:`owned_privately`, or None."""
    try:
        info = os.fstat(path) if isinstance(path, int) else os.lstat(path)
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if folder and not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if info.st_uid != os.geteuid():
        return f"belongs to user id {info.st_uid}, not to this user ({os.geteuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"may be written by others (mode {stat.filemode(info.st_mode)})"
    return None


def _new_temporary(path: Path) -> tuple[Path, int]:
    """A new, empty temporary file beside ``path`` (``0o600``, never an existing one), and its descriptor.

    Those of earlier writers of ``path`` that were killed are removed first:
    each target's leftovers live only until it is written again.
    """
    remove_dead_temporaries(path.parent, path.name)
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


__all__ = [
    "PRIVATE_FOLDER_MODE",
    "PRIVATE_MODE",
    "TEMPORARY_GLOB",
    "AtomicFile",
    "atomic_path",
    "atomic_write",
    "new_file_mode",
    "owned_privately",
    "private_folder",
    "remove_dead_temporaries",
    "writer_pid",
    "writer_running",
]
