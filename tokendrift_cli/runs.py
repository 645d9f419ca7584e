"""Run directories: everything a run writes, written atomically, one writer at a time.

Layout of a run directory:
    spec.yaml       the fully resolved, validated spec (written before work starts)
    metrics.jsonl   one JSON object per logged step
    results.json    the final result (what --json prints)
    .lock           locked (flock) while a run writes here; it holds the writer's pid

A folder that holds a run (its spec.yaml or results.json) belongs to that run: only `train --resume`
opens it again.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from tokendrift_cli.errors import InputError, JobError, first_line

# The mode open() gives a new file under the process's umask (mkstemp would leave 0600). The umask
# can only be read by setting it, so it is read once, before any thread could create a file.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """A write that fails (full disk, read-only or vanished folder) fails the job, naming the path.
    torch.save reports such failures as RuntimeError, safetensors as its own SafetensorError."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else first_line(err)
        raise JobError(f"cannot write {path}: {reason}") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers never see half a file."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)
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
    return json.dumps(_plain(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def _json_line(obj: Any) -> str:
    return json.dumps(_plain(obj), allow_nan=False) + "\n"


def _plain(obj: Any) -> Any:
    """Strict JSON values: paths as text, numpy / torch values as numbers or lists, and NaN or
    infinity (a diverged loss) as null, since bare NaN is not JSON and breaks strict readers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(value) for value in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return _plain(obj.tolist())
    return obj


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
        self._lock: int | None = None
        if not self.is_main:
            return
        option = "--resume" if resume else "--out"
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{option} {self.path}: is a file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / ".lock", os.O_CREAT | os.O_RDWR, 0o666)
        except OSError as err:
            raise InputError(f"{option} {self.path}: cannot write there ({err.strerror})") from None
        # flock, not "create the file if absent": the kernel releases it when its holder dies (so no
        # lock is ever stale) and grants it to one process at a time, with no window between
        # creating the file and writing the pid. The file stays, so every holder locks one inode.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InputError(f"{option} {self.path}: another run (pid {owner}) is writing there") from None
        self._lock = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        holds_run = self.file("spec.yaml").exists() or self.file("results.json").exists()
        if holds_run != resume:
            self.close()
            if resume:
                raise InputError(f"--resume {self.path}: holds no run to resume (no spec.yaml)")
            if self.file("results.json").exists():
                raise InputError(f"--out {self.path}: holds a finished run; choose another folder")
            raise InputError(
                f"--out {self.path}: holds an unfinished run; choose another folder "
                f"(a train run continues with `tokendrift train --resume {self.path}`)"
            )

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

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
        return self.write_text(name, "".join(_json_line(r) for r in rows))

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
        line = _json_line(row).encode("utf-8")
        with writing(self.file("metrics.jsonl")), open(self.file("metrics.jsonl"), "ab") as f:
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
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):  # torn by a crash mid-write: logged after the last checkpoint, so logged again
                    break
                raise InputError(f"{path}:{number}: not valid JSON") from None
        return rows


def latest_train_run(root: str | os.PathLike = "runs") -> str:
    """The newest train run that finished with a model, for commands given no --model."""
    finished = sorted(Path(root).glob("train-*/model/config.json"), key=lambda p: p.stat().st_mtime)
    if not finished:
        raise InputError(f"model: not given and no finished train run under {root}/; run `tokendrift train` first or pass --model")
    return str(finished[-1].parent.parent)
