"""Reading the files a user names: a missing file, a folder, unreadable or non-UTF-8 bytes are
one InputError naming the option and the file (and the line of a bad byte), never a traceback.
A key given twice in a JSON or YAML object is an error too: the parsers would keep the last."""

from __future__ import annotations

from pathlib import Path

from tokendrift_cli.errors import InputError


def read_user_text(path: str | Path, option: str) -> str:
    """The whole of a user's text file, decoded as UTF-8; `option` is the spec field or flag that named it."""
    file = Path(path)
    if file.is_dir():
        raise InputError(f"{option}: {path}: is a folder, not a file")
    if not file.exists():
        raise InputError(f"{option}: {path}: file not found")
    if not file.is_file():  # reading a named pipe would wait for a writer
        raise InputError(f"{option}: {path}: not a regular file (a pipe, socket or device)")
    try:
        data = file.read_bytes()
    except OSError as err:
        raise InputError(f"{option}: {path}: cannot read ({err.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x})") from None


class DuplicateKey(ValueError):
    """A key given twice in one object of a user's file."""

    def __init__(self, key: object, line: int | None = None):
        super().__init__(f"{'' if line is None else f'line {line}: '}{key!r} is given twice")


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json.loads' object_pairs_hook: the object, or DuplicateKey."""
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(key)
        found[key] = value
    return found
