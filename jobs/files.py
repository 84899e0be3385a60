"""The file system side of a download: free space, claiming a final name, folders made and unmade.

The final name is claimed atomically at the rename: `renameat2(RENAME_NOREPLACE)` fails
instead of replacing a file another job (or the user) put there meanwhile, so two downloads
that map to one name both keep their bytes (`Name.ext`, `Name (2).ext`, ...).

No symlink in the download dir is ever followed at a file's own name: partial files are
opened with O_NOFOLLOW (a new one with O_EXCL too), and a name is judged by `lstat`, so a link
planted at a partial or final name cannot redirect our writes or pass for a finished file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("dq.files")

MAX_NUMBERED = 1000  # `Name (1000).ext` and still taken: something is wrong, say so
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_EXISTING_FILE = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _load_renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None  # not Linux, or a libc older than 2.28
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_renameat2 = _load_renameat2()


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding `path` (or its
    nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    return stats.f_bavail * stats.f_frsize


def regular_size(path: Path) -> int | None:
    """The size of the regular file at `path` itself; None for nothing, a symlink or anything else."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def create_new_file(path: Path) -> BinaryIO:
    """A new regular file at `path` for writing (mode from the user's umask). Whatever was at
    that name (a stale partial, a symlink planted there) is removed first, never followed."""
    try:
        descriptor = os.open(path, _NEW_FILE, 0o666)
    except FileExistsError:
        os.unlink(path)  # a symlink itself goes, never its target
        descriptor = os.open(path, _NEW_FILE, 0o666)
    return os.fdopen(descriptor, "wb")


def open_existing_file(path: Path) -> BinaryIO:
    """The regular file at `path` for reading and writing; OSError (ELOOP) for a symlink."""
    descriptor = os.open(path, _EXISTING_FILE)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(descriptor, "r+b")


def numbered(final: Path, number: int) -> Path:
    """`Name (n).ext` beside `Name.ext`; `(1)` is the name itself."""
    if number <= 1:
        return final
    stem, ext = os.path.splitext(final.name)
    if not stem:  # ".hidden": splitext sees no extension
        stem, ext = ext, ""
    return final.with_name(f"{stem} ({number}){ext}")


def rename_noreplace(source: Path, destination: Path) -> bool:
    """Rename unless `destination` exists; False when it does. Atomic where the kernel can."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), _RENAME_NOREPLACE) == 0:
            return True
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            return False
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(source), None, str(destination))
        # the file system has no RENAME_NOREPLACE (some FUSE and network mounts): hard links next
    try:
        os.link(source, destination)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # no hard links either: a check then a rename, the best such a file system allows
        if os.path.lexists(destination):
            return False
        os.rename(source, destination)
        return True
    os.unlink(source)
    return True


def claim(partial: Path, final: Path, replaces: Callable[[Path], bool]) -> Path:
    """Move the finished `partial` to `final`, or to the first free `Name (n).ext` beside it.

    An existing file is replaced only where `replaces(path)` says so (the same URL's earlier
    download, or `--force`); any other is kept and the download takes the next number.
    """
    for number in range(1, MAX_NUMBERED + 1):
        candidate = numbered(final, number)
        if os.path.lexists(candidate) and replaces(candidate):
            os.replace(partial, candidate)
            return candidate
        if rename_noreplace(partial, candidate):
            return candidate
    raise FileExistsError(errno.EEXIST, f"{final} and {MAX_NUMBERED - 1} numbered copies exist", str(final))


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def first_missing_dir(download_dir: Path, directory: Path) -> Path | None:
    """The top-most folder of `directory` below the download dir that does not exist yet."""
    root = download_dir.resolve()
    missing = None
    probe = directory
    while probe != root and root in probe.parents and not probe.exists():
        missing = probe
        probe = probe.parent
    return missing


def remove_empty_dirs(download_dir: Path, deepest: Path, top: Path | None) -> list[Path]:
    """Remove `deepest` and its parents up to `top` (the folder a download created) while empty.

    Never the download dir itself, nothing outside it, nothing that holds a file.
    """
    if top is None:
        return []
    root = download_dir.resolve()
    removed: list[Path] = []
    probe = deepest
    while root in probe.parents and (probe == top or top in probe.parents):
        try:
            probe.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # not empty (ENOTEMPTY/EEXIST), or not ours to remove
            break
        else:
            removed.append(probe)
            log.info("removed empty folder %s", probe)
        if probe == top:
            break
        probe = probe.parent
    return removed
