"""What a person sees: a Rich console, progress bars and result tables.

With --json, stdout carries exactly one JSON object, so everything Rich prints goes to stderr.
With --quiet, nothing but errors (and the JSON object) is printed. Under several processes only
the main one prints anything: one result, one line per error.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from typing import Any, Iterator, Sequence, TypeGuard

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text


class UI:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False, main_process: bool = True):
        self.json_mode = json_mode
        self.quiet = quiet or not main_process
        self.main_process = main_process
        self.console = Console(stderr=json_mode, quiet=self.quiet)
        self.errors = Console(stderr=True, soft_wrap=True, emoji=False, quiet=not main_process)  # one problem, one line

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=self.quiet,
            transient=False,
        )
        with progress:
            yield progress

    def table(self, title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, no_wrap: Sequence[str] = ()) -> None:
        """A value whose row also holds <column>_se or <column>_sd (its standard error, or SD over
        seeds) is shown as "value ± error". `no_wrap`: columns kept on one line however narrow the
        terminal (names to copy)."""
        columns = list(columns or (rows[0].keys() if rows else []))
        # Text, not str: a path or a sample with "[...]" in it is shown as is, not read as Rich markup.
        table = Table(title=Text(title))
        for name in columns:
            # In a narrow terminal a "value ±error" cell wraps before its error, and text (a path,
            # tokens) folds, keeping at least 10 characters a line; `no_wrap` columns never wrap.
            number = bool(rows) and _is_number(rows[0].get(name))
            table.add_column(Text(name), justify="right" if number else "left", overflow="fold",
                             min_width=None if number or name in no_wrap else 10, no_wrap=name in no_wrap)
        for row in rows:
            table.add_row(*(Text(_cell(row, name)) for name in columns))
        self.console.print(table)

    def print_json(self, obj: Any) -> None:
        """The one JSON object of --json, on stdout whatever the console's target is."""
        from tokendrift_cli.runs import to_json

        if self.main_process:
            print(to_json(obj), end="", flush=True)

    def note(self, message: str) -> None:
        """One plain line of progress news (paths are printed as they are: no markup, no wrapping)."""
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        """One line on stderr; the message may quote user input (a path with "[/x]" or a line break),
        so it is escaped, line breaks included."""
        one_line = message.replace("\r", "\\r").replace("\n", "\\n")
        self.errors.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, markup=True)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    for suffix in ("_se", "_sd"):
        error = row.get(name + suffix)
        if not (_is_number(value) and _is_number(error)):
            continue
        if error > 0 and math.isfinite(error):
            # Both to the error's second significant digit: 2795 ±510, 2.450 ±0.053.
            decimals = min(6, max(0, 1 - math.floor(math.log10(error))))
            return f"{value:.{decimals}f} ±{error:.{decimals}f}"
        return f"{_format(value)} ±{_format(error)}"
    return _format(value)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)
