"""The files we write: private modes (0600 files, 0700 folders unless the user asks otherwise),
one atomic writer for every whole file (exports, frames, tokens), and one reader for key and
token files.

DuckDB creates its `.wal` with the process umask, again at the first commit after every
checkpoint, and has no setting for it; a chmod after the fact leaves a window in which plain
rows are readable. So the reliable tool is the umask itself: a process that writes a store
keeps group and other bits out of it (`apply_umask`). The user who wants more open modes says
so with `TRACTATUS_WATCH_UMASK` (octal, e.g. `027` for files a group may read), which is then
used as it is, for DuckDB's files and for our own alike.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

UMASK_ENV: Final = "TRACTATUS_WATCH_UMASK"
PRIVATE: Final = 0o077
PRIVATE_FILE: Final = 0o600
PRIVATE_DIR: Final = 0o700


class FileError(ValueError):
    """A file we cannot read or write as asked; one line, never a file's secret content."""


class FileWriteError(FileError):
    """A destination that cannot be written (exists, no folder, permission, disk)."""


class SecretFileError(FileError):
    """A key or token file that cannot be used; the message never holds what is in it."""


def _process_umask() -> int:
    # Reading the umask means setting it; the stricter value in between harms nobody.
    current = os.umask(PRIVATE)
    os.umask(current)
    return current


def umask() -> int:
    """The umask for what we create: $TRACTATUS_WATCH_UMASK if set, else the process umask
    with every group and other bit added (a stricter umask of the user's is kept)."""
    text = os.environ.get(UMASK_ENV, "").strip()
    if text:
        try:
            value = int(text, 8)
        except ValueError:
            value = -1
        if not 0 <= value <= 0o777:
            raise FileError(f"{UMASK_ENV}: expected an octal umask like 077 or 027, "
                             f"got {text!r}")
        return value
    return _process_umask() | PRIVATE


def apply_umask() -> int:
    """Make `umask()` the process umask (files DuckDB creates later follow it); returns it."""
    value = umask()
    os.umask(value)
    return value


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def make_dirs(path: str | os.PathLike[str], mode: int | None = None) -> None:
    """`mkdir -p` where every folder created is `mode` (default `dir_mode()`, 0700); existing
    ones are left as they are. (`Path.mkdir(parents=True, mode=...)` gives the mode to the last
    one only.)"""
    folder = Path(path)
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    mode = dir_mode() if mode is None else mode
    for item in reversed(missing):
        try:
            item.mkdir(mode=mode)
        except FileExistsError:  # made meanwhile by another process: theirs to set
            continue
        os.chmod(item, mode)  # the process umask may be looser than ours


def open_append(path: str | os.PathLike[str]) -> int:
    """A file descriptor appending to `path`, which is created `file_mode()` (0600) from its
    first moment if it does not exist; an existing file keeps its mode."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode())


# A key or token goes into an HTTP header or a SQL string literal: printable ASCII only.
_PRINTABLE: Final = frozenset(chr(c) for c in range(0x20, 0x7F))
# Enough for any key; bounded so that `--key-file /dev/zero` cannot exhaust memory.
_SECRET_MAX_BYTES: Final = 64 * 1024


def read_secret(path: str | os.PathLike[str], what: str) -> str:
    """The first line of a key or token file, stripped. `what` names the file in messages
    (`key file`, `the token file`)."""
    p = Path(path).expanduser()
    try:
        with p.open("rb") as f:
            raw = f.read(_SECRET_MAX_BYTES)
    except OSError as exc:
        raise SecretFileError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    first = raw.strip().split(b"\n", 1)[0].strip()
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{what} {p} is not UTF-8 text (a binary file?)") from None
    if not text:
        raise SecretFileError(f"{what} {p} is empty")
    if not set(text) <= _PRINTABLE:
        raise SecretFileError(f"{what} {p} holds characters other than printable ASCII on its "
                              "first line (a binary file?)")
    return text


def check_destination(out: Path, *, force: bool) -> None:
    """Refuse, in one line, an output path we cannot or should not write (before any work)."""
    parent = out.parent
    if out.is_dir():
        raise FileWriteError(f"{out} is a folder: give the name of a file to write")
    if not parent.exists():
        raise FileWriteError(f"cannot write {out}: no folder {parent} (create it first)")
    if not parent.is_dir():
        raise FileWriteError(f"cannot write {out}: {parent} is not a folder")
    if (out.exists() or out.is_symlink()) and not force:
        raise FileWriteError(f"{out} exists; pass --force to overwrite it")


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@contextmanager
def atomic_file(out: Path, *, force: bool) -> Iterator[IO[bytes]]:
    """A binary file to write `out` through: created 0600 under a temporary name in the same
    folder, renamed onto `out` when the block ends without error (onto an existing file only
    with `force`), removed otherwise. OS errors become one-line FileWriteErrors."""
    check_destination(out, force=force)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, PRIVATE_FILE)
    except OSError as exc:
        raise FileWriteError(f"cannot write {out}: {_reason(exc)}") from None
    try:
        os.fchmod(fd, PRIVATE_FILE)  # the umask may have taken bits away; never adds any
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, out, force=force)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FileWriteError(f"cannot write {out}: {_reason(exc)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _publish(tmp: Path, out: Path, *, force: bool) -> None:
    """Put the finished `tmp` in place of `out`; without `force` never over a file that
    appeared meanwhile (a hard link fails if the name exists, a rename would not)."""
    if force:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise FileWriteError(f"{out} exists; pass --force to overwrite it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if out.exists():  # no hard links on this file system: check, then rename
            raise FileWriteError(f"{out} exists; pass --force to overwrite it") from None
        os.replace(tmp, out)
        return
    tmp.unlink()


__all__ = ["FileError", "FileWriteError", "PRIVATE_DIR", "PRIVATE_FILE", "SecretFileError",
           "UMASK_ENV", "apply_umask", "atomic_file", "check_destination", "dir_mode", "file_mode",
           "make_dirs", "open_append", "read_secret", "umask"]
