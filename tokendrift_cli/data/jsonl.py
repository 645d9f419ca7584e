"""Reading user JSONL files: every bad line is an InputError naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path

from tokendrift_cli.errors import InputError
from tokendrift_cli.files import DuplicateKey, read_user_text, unique_keys


def read_jsonl(path: str | Path, field: str, what: str, option: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-empty line; each object must hold a string `field`.
    `what` names the rows in the 'no rows' error, `option` the spec field that named the file."""
    rows = []
    for number, line in enumerate(read_user_text(path, option).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=unique_keys)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        except DuplicateKey as err:
            raise InputError(f"{path}:{number}: {err}") from None
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise InputError(f"{path}:{number}: expected an object with a string field '{field}'")
        rows.append((number, row))
    if not rows:
        raise InputError(f"{path}: no {what}")
    return rows
