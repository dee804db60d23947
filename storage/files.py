"""Modes of the files and folders we create: 0600 and 0700 unless the user asks otherwise.

DuckDB creates its `.wal` with the process umask, again at the first commit after every
checkpoint, and has no setting for it; a chmod after the fact leaves a window in which plain
rows are readable. So the reliable tool is the umask itself: a process that writes a store
keeps group and other bits out of it (`apply_umask`). The user who wants more open modes says
so with `TRACTATUS_WATCH_UMASK` (octal, e.g. `027` for files a group may read), which is then
used as it is, for DuckDB's files and for our own alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from .errors import StoreError

UMASK_ENV: Final = "TRACTATUS_WATCH_UMASK"
PRIVATE: Final = 0o077


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
            raise StoreError(f"{UMASK_ENV}: expected an octal umask like 077 or 027, "
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


def make_dirs(path: str | os.PathLike[str]) -> None:
    """`mkdir -p` where every folder created is `dir_mode()` (0700); existing ones are left
    as they are. (`Path.mkdir(parents=True, mode=...)` gives the mode to the last one only.)"""
    folder = Path(path)
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    mode = dir_mode()
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


class SecretFileError(ValueError):
    """A key or token file that cannot be used; the message never holds what is in it."""


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


__all__ = ["SecretFileError", "UMASK_ENV", "apply_umask", "dir_mode", "file_mode", "make_dirs",
           "open_append", "read_secret", "umask"]
