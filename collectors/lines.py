"""Newline-delimited files read as a stream: b"\\n" is the only line break, lines are bytes.

`str.splitlines()` also breaks on U+2028, U+2029, U+0085, \\v, \\f and \\x1c-\\x1e, all of which
may legitimately sit inside a JSON string written with `ensure_ascii=False`; JSON Lines and our
spool define a line by b"\\n" alone (a trailing \\r is tolerated). Lines are decoded one at a
time, so a bad byte costs one line, never the file.

A line is never held beyond `max_line` bytes: a longer one is reported with its full length and
a head of `head` bytes, and the rest of it is skipped without being buffered. `max_buffered`
records the most bytes ever held for one line (tests assert on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable, Final, Iterator

MAX_LINE_BYTES: Final = 8 * 1024 * 1024  # SpoolWriter's default segment size: no record is bigger
HEAD_BYTES: Final = 65_536               # what a too-long line keeps for quarantine
SKIP_CHUNK: Final = 1024 * 1024          # how much of a too-long line is read at a time


@dataclass(frozen=True, slots=True)
class Line:
    number: int     # 1-based; every b"\n" counts, so blank lines are numbered too
    offset: int     # byte offset of the line's first byte in the file
    end: int        # byte offset just past the line's b"\n" (or EOF): where the next one starts
    data: bytes     # the line without b"\n" and one trailing b"\r"; a too-long line's head
    length: int     # the line's full length in bytes (without the newline)
    too_long: bool


class LineReader:
    """Iterate over the lines of a binary file from `offset` (line `number`); with `limit`,
    stop after that many bytes from the start of the file; `on_bytes` sees every byte read
    (e.g. a hash)."""

    def __init__(self, fh: BinaryIO, *, max_line: int = MAX_LINE_BYTES, offset: int = 0,
                 number: int = 1, limit: int | None = None, head: int = HEAD_BYTES,
                 on_bytes: Callable[[bytes], object] | None = None) -> None:
        if max_line <= 0:
            raise ValueError("max_line must be positive")
        self.fh = fh
        self.max_line = max_line
        self.offset = offset
        self.number = number
        self.limit = limit
        self.head = min(head, max_line)
        self.on_bytes = on_bytes
        self.max_buffered = 0

    def _read(self, n: int) -> bytes:
        if self.limit is not None:
            n = min(n, self.limit - self.offset)
            if n <= 0:
                return b""
        chunk = self.fh.readline(n)  # a binary readline stops at b"\n" only
        if chunk:
            self.offset += len(chunk)
            self.max_buffered = max(self.max_buffered, len(chunk))
            if self.on_bytes is not None:
                self.on_bytes(chunk)
        return chunk

    def __iter__(self) -> Iterator[Line]:
        while True:
            start = self.offset
            chunk = self._read(self.max_line + 1)
            if not chunk:
                return
            ended = chunk.endswith(b"\n")
            too_long = not ended and len(chunk) > self.max_line
            if too_long:
                data = chunk[:self.head]
                del chunk  # only the head is kept while the rest of the line is skipped
                while not ended:
                    more = self._read(min(SKIP_CHUNK, self.max_line + 1))
                    if not more:
                        break
                    ended = more.endswith(b"\n")
            else:
                data = chunk[:-1] if ended else chunk
                if data.endswith(b"\r"):
                    data = data[:-1]
            yield Line(number=self.number, offset=start, end=self.offset, data=data,
                       length=self.offset - start - (1 if ended else 0), too_long=too_long)
            self.number += 1


def decode(data: bytes) -> tuple[str, str | None]:
    """(text, None) for valid UTF-8; otherwise (the text with each bad byte as \\xNN, so
    nothing is lost, and the error: "invalid UTF-8 at byte N")."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return data.decode("utf-8", "backslashreplace"), f"invalid UTF-8 at byte {exc.start}"
