"""Text files of the published formats read whole, with one-line errors that name the file and the line."""

from __future__ import annotations

from pathlib import Path

from harness.errors import DataError


def decode(raw: bytes, path: Path, fix: str) -> str:
    """`raw` (the bytes of `path`) as UTF-8 text; a DataError naming the line of the first byte that is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}, line {line}: byte {raw[e.start]:#04x} is not UTF-8 text ({e.reason}); "
                        f"{fix}") from None


def read_text(path: Path, fix: str) -> str:
    """The UTF-8 text of `path`; `fix` (what the user should do) ends the message when it is not UTF-8."""
    return decode(Path(path).read_bytes(), Path(path), fix)
