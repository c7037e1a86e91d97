"""Atomic writes: whole or not at all, synced with their folder, with the usual modes, one naming scheme."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from skcnn import files
from skcnn.files import (
    TEMPORARY_GLOB,
    AtomicFile,
    atomic_path,
    atomic_write,
    new_file_mode,
    owned_privately,
    private_folder,
    remove_dead_temporaries,
    writer_pid,
    writer_running,
)


def _write(form: str, path: Path, data: bytes, **kwargs) -> None:
    if form == "file":
        with atomic_write(path, **kwargs) as f:
            f.write(data)
    else:
        with atomic_path(path, **kwargs) as temporary:
            temporary.write_bytes(data)  # as h5py or torch.save would: through the path


@pytest.fixture
def umask():
    def set_umask(mask: int) -> None:
        os.umask(mask)

    previous = os.umask(0o022)
    yield set_umask
    os.umask(previous)


@pytest.mark.parametrize("form", ["file", "path"])
def test_a_failure_inside_the_block_leaves_no_target_and_no_temporary(form, tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="writer died"):
        if form == "file":
            with atomic_write(target) as f:
                f.write(b"half")
                raise RuntimeError("writer died")
        else:
            with atomic_path(target) as temporary:
                temporary.write_bytes(b"half")
                raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("form", ["file", "path"])
def test_an_existing_target_is_replaced_whole_or_kept(form, tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"new, half written")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    with atomic_write(target) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # readers see the old file until the rename
    assert target.read_bytes() == b"new" and list(tmp_path.iterdir()) == [target]
    _write(form, target, b"newer")
    assert target.read_bytes() == b"newer" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("form", ["file", "path"])
def test_the_file_is_synced_before_the_rename_and_the_folder_after(form, tmp_path, monkeypatch):
    target, synced = tmp_path / "out.bin", []
    real_fsync = os.fsync

    def recording(fd):
        info = os.fstat(fd)
        synced.append(("folder" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino, target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    _write(form, target, b"data")
    assert synced == [
        ("file", target.stat().st_ino, False),  # the data, before the name
        ("folder", tmp_path.stat().st_ino, True),  # the new name, in the target's own folder
    ]


@pytest.mark.parametrize("form", ["file", "path"])
@pytest.mark.parametrize(
    "mask, private, expected", [(0o022, False, 0o644), (0o002, False, 0o664), (0o022, True, 0o600)]
)
def test_modes_are_a_new_files_or_private(form, mask, private, expected, tmp_path, umask):
    umask(mask)
    target = tmp_path / "out.bin"
    _write(form, target, b"data", private=private)
    assert target.stat().st_mode & 0o777 == expected


def test_the_umask_is_read_without_setting_it_where_proc_says_it(umask, monkeypatch):
    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc/self/status here")
    umask(0o027)

    def refused(*args):
        raise AssertionError("the process umask was set")

    monkeypatch.setattr(os, "umask", refused)
    assert new_file_mode() == 0o640


def test_without_proc_the_umask_is_read_by_setting_it_back(umask, monkeypatch):
    umask(0o027)

    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr(files, "open", no_proc, raising=False)
    assert new_file_mode() == 0o640
    assert os.umask(0o027) == 0o027  # left as it was


def test_temporaries_are_hidden_beside_the_target_unique_and_name_their_writer(tmp_path):
    target = tmp_path / "codes.h5"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert first.name.startswith(".codes.h5.") and first.name.endswith(".tmp")
        assert sorted(tmp_path.glob(TEMPORARY_GLOB)) == sorted([first, second])
        assert writer_pid(first) == writer_pid(second) == os.getpid()
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert target.read_bytes() == b"1" and list(tmp_path.iterdir()) == [target]  # the last rename wins
    assert writer_pid(target) is None and writer_pid(tmp_path / ".codes.h5.tmp") is None


def test_an_atomic_file_spans_calls_and_can_be_discarded(tmp_path):
    kept, dropped = AtomicFile(tmp_path / "kept.u8"), AtomicFile(tmp_path / "dropped.u8")
    for part in (b"ab", b"cd"):
        kept.file.write(part)
        dropped.file.write(part)
    dropped.discard()
    assert kept.commit() == tmp_path / "kept.u8"
    assert (tmp_path / "kept.u8").read_bytes() == b"abcd" and list(tmp_path.iterdir()) == [tmp_path / "kept.u8"]


def test_text_mode_and_bad_modes(tmp_path):
    with atomic_write(tmp_path / "keys.json", "w", encoding="utf-8") as f:
        f.write('{"keys": ["é"]}')
    assert (tmp_path / "keys.json").read_text(encoding="utf-8") == '{"keys": ["é"]}'
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
        atomic_write(tmp_path / "x", "ab")
    assert list(tmp_path.iterdir()) == [tmp_path / "keys.json"]


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_writer_removes_the_temporaries_dead_writers_of_its_target_left(tmp_path):
    dead, target = _dead_pid(), tmp_path / "ft.pt"
    assert not writer_running(dead) and writer_running(os.getpid())
    left = tmp_path / f".ft.pt.{dead}-deadbeef.tmp"  # a run killed while saving
    live = tmp_path / f".ft.pt.{os.getpid()}-0badcafe.tmp"  # a writer still running
    other = tmp_path / f".other.pt.{dead}-deadbeef.tmp"  # another target's
    for path in (left, live, other):
        path.write_bytes(b"half")
    with atomic_path(target) as temporary:
        assert not left.exists() and live.exists() and other.exists()
        temporary.write_bytes(b"whole")
    assert sorted(tmp_path.iterdir()) == sorted([target, live, other])
    assert remove_dead_temporaries(tmp_path) == 4 and sorted(tmp_path.iterdir()) == sorted([target, live])


def test_private_folders_are_created_0o700_and_others_refused(tmp_path, umask):
    umask(0o022)
    created = private_folder(tmp_path / "mine")
    assert created.stat().st_mode & 0o777 == 0o700 and owned_privately(created)
    assert private_folder(created) == created  # an existing one, checked
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o775)
    shared.chmod(0o775)
    (tmp_path / "link").symlink_to(created)
    (tmp_path / "file").write_bytes(b"")
    for path, problem in [(shared, "may be written by others"), (tmp_path / "link", "symbolic link"),
                          (tmp_path / "file", "not a folder")]:  # fmt: skip
        with pytest.raises(PermissionError, match=rf"{path.name}' .*{problem}"):
            private_folder(path)
    assert not owned_privately(shared) and not owned_privately(tmp_path / "link")
    with open(tmp_path / "file", "rb") as f:
        assert owned_privately(f.fileno())  # 0o644: others may read it, not change it


def test_a_folder_of_another_owner_is_refused(tmp_path, monkeypatch):
    folder = private_folder(tmp_path / "theirs")
    monkeypatch.setattr(os, "geteuid", lambda: folder.stat().st_uid + 1)
    assert not owned_privately(folder)
    with pytest.raises(PermissionError, match="belongs to user id"):
        private_folder(folder)
