"""Run directories: everything a run writes, written atomically, one writer at a time.

Layout of a run directory:
    spec.yaml       the fully resolved, validated spec (written before work starts)
    metrics.jsonl   one JSON object per logged step
    results.json    the final result (what --json prints)
    .lock           held while a run writes here
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import yaml

from tokendrift_cli.errors import InputError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def default_run_path(command: str, root: str | os.PathLike = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path(root) / f"{command}-{stamp}"


def is_main_process() -> bool:
    """Rank 0 under `accelerate launch` / torchrun (they set RANK), or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


class RunDir:
    """A run directory, locked and written by the main process only.

    Under several processes every rank holds a RunDir for the same path (to read checkpoints),
    but only rank 0 takes the lock and writes: writes on other ranks are skipped, so job code
    needs no rank checks around logging and saving.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False):
        self.path = Path(path)
        self.resume = resume  # the job continues what this directory holds (train --resume)
        self.is_main = is_main_process()
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = self.path / ".lock"
        try:
            fd = os.open(self._lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = self._lock.read_text().strip() or "?"
            if _pid_alive(owner):
                raise InputError(f"--out {self.path}: another run (pid {owner}) is writing there") from None
            # The previous owner died (e.g. SIGKILL); its lock is stale.
            self._lock.unlink(missing_ok=True)
            fd = os.open(self._lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        if not resume and (self.path / "results.json").exists():
            self.close()
            raise InputError(f"--out {self.path}: holds a finished run; choose another directory")

    def close(self) -> None:
        if self.is_main:
            self._lock.unlink(missing_ok=True)

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        if self.is_main:
            atomic_write_text(self.file(name), text)
        return self.file(name)

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, to_json(obj))

    def write_yaml(self, name: str, obj: Any) -> Path:
        return self.write_text(name, yaml.safe_dump(obj, sort_keys=False))

    def write_jsonl(self, name: str, rows: Iterable[dict]) -> Path:
        return self.write_text(name, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))

    def save_figure(self, name: str, fig: Any) -> Path:
        """Save a matplotlib figure as PNG, atomically, and close it."""
        import io

        import matplotlib.pyplot as plt

        if self.is_main:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
            atomic_write_bytes(self.file(name), buf.getvalue())
        plt.close(fig)
        return self.file(name)

    def log_metrics(self, row: dict) -> None:
        """Append one JSON line; a line is written whole with one write() and fsynced."""
        if not self.is_main:
            return
        line = (json.dumps(row, default=_json_default) + "\n").encode("utf-8")
        with open(self.file("metrics.jsonl"), "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, last_step: int) -> None:
        """Drop lines logged after `last_step` (by a run that died after its last checkpoint)."""
        kept = [row for row in self.read_metrics() if row.get("step", 0) <= last_step]
        self.write_jsonl("metrics.jsonl", kept)

    def read_metrics(self) -> list[dict]:
        path = self.file("metrics.jsonl")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pid_alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
