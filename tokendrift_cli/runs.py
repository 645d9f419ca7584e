"""Run directories: their layout, read by `Run`, and written by `RunDir`: atomically, one writer at a time.

Layout of a run directory:
    spec.yaml       the fully resolved, validated spec (written before work starts)
    results.json    the final result (what --json prints)
    .lock           locked (flock) while a run writes here; it holds the writer's pid
  train runs also:
    metrics.jsonl   one JSON object per logged step
    checkpoints/checkpoint-<step>/   Accelerate state, trainer_state.json (step, processes), and model/
    model/          the final weights (EMA when on) and tokenizer, a save_pretrained folder
    curves.png      losses, validation NELBO and quality against step
  eval runs also:
    samples/<i>-<model>-nfe<k>.jsonl   the samples judged, as `sample` writes samples.jsonl
    genppl_vs_nfe.png
  the other commands their outputs (samples.jsonl, plots, tables as JSON).

A folder that holds a run belongs to it once the run has something to keep there (a checkpoint,
results.json): only `train --resume` opens it again. A start is taken back until then (see RunDir),
and no run's folder is written by another: nothing starts inside a run folder or around one.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import yaml

from tokendrift_cli.errors import InputError, JobError, first_line
from tokendrift_cli.spec import TrainSpec, read_spec_file, recorded_section
from tokendrift_cli.spec.base import StrictModel

SPEC, METRICS, RESULTS, MODEL, CHECKPOINTS, LOCK = "spec.yaml", "metrics.jsonl", "results.json", "model", "checkpoints", ".lock"
Section = TypeVar("Section", bound=StrictModel)

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


def process_count() -> int:
    """How many processes run the command: torchrun and `accelerate launch` set WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Run:
    """A run directory's layout, read: what it holds, its checkpoints, its model, its recorded spec."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def holds_run(self) -> bool:
        return self.file(SPEC).exists() or self.file(RESULTS).exists()

    def is_run_folder(self) -> bool:
        """A folder a run was started in: its lock file beside its record (a user's own folder may
        hold a spec.yaml of theirs, and is no run's)."""
        return self.file(LOCK).exists() and self.holds_run()

    def checkpoint_path(self, step: int) -> Path:
        return self.path / CHECKPOINTS / f"checkpoint-{step}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (one being written has a temporary name)."""
        root = self.path / CHECKPOINTS
        found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()] if root.is_dir() else []
        return sorted(found, key=self.step_of)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    @staticmethod
    def step_of(checkpoint: Path) -> int:
        return int(checkpoint.name.split("-")[-1])

    def model_dir(self) -> Path | None:
        """The run's final model, else its latest checkpoint's (a run still training or killed)."""
        if (self.file(MODEL) / "config.json").is_file():
            return self.file(MODEL)
        latest = self.latest_checkpoint()
        return latest / MODEL if latest is not None and (latest / MODEL).is_dir() else None

    def recorded(self, section: str, model: type[Section]) -> Section:
        """One section (diffusion, data) of the spec the run recorded, validated alone."""
        return recorded_section(self.file(SPEC), section, model)

    def recorded_seed(self) -> int:
        return read_spec_file(self.file(SPEC)).get("seed", TrainSpec.model_fields["seed"].default)

    def read_metrics(self) -> list[dict]:
        path = self.file(METRICS)
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


def train_run(reference: str) -> Run | None:
    """The train run that `reference` (a --model / --init value) names, if it is one."""
    run = Run(reference)
    return run if run.file(SPEC).is_file() else None


def model_folder(reference: str) -> Path | None:
    """Where a local --model / --init points: a run's model (see Run.model_dir), else the path itself; None if not local."""
    path = Path(reference)
    if not path.exists():
        return None
    return Run(path).model_dir() or path


def enclosing_run(path: Path) -> Path | None:
    """The run folder that `path` lies inside (symbolic links followed), if any."""
    for folder in Path(os.path.realpath(path)).parents:
        if Run(folder).is_run_folder():
            return folder
    return None


def contained_run(path: Path) -> Path | None:
    """A run folder anywhere under `path` (not `path` itself), if any."""
    for folder, _, files in os.walk(path):
        if folder != str(path) and LOCK in files and (SPEC in files or RESULTS in files):
            return Path(folder)
    return None


def latest_train_run(root: str | os.PathLike = "runs", note: Callable[[str], None] | None = None) -> str:
    """The newest train run that finished with a model, for commands given no --model; `note`
    (the UI's) is told which one was picked."""
    finished = sorted(Path(root).glob(f"train-*/{MODEL}/config.json"), key=lambda p: p.stat().st_mtime)
    if not finished:
        raise InputError(f"model: not given and no finished train run under {root}/; run `tokendrift train` first or pass --model")
    picked = str(finished[-1].parent.parent)
    if note is not None:
        note(f"model: none given; using the latest finished train run, {picked}")
    return picked


class RunDir(Run):
    """A run directory, locked and written by the main process only.

    Under several processes every rank holds a RunDir for the same path (to read checkpoints),
    but only rank 0 takes the lock and writes: writes on other ranks are skipped, so job code
    needs no rank checks around logging and saving.

    A start costs nothing until it keeps something: a checkpoint, the final model or results.json.
    One that ends before (refused once its model or data is loaded, failed, interrupted) is taken
    back when its `with` block exits: a folder it made is removed, a folder it found gets back the
    files it held. What a kill leaves before the first checkpoint (spec.yaml, the first steps'
    metrics) holds nothing to keep either, so the next start there takes the folder over, and
    `train --resume` there starts the run from step 0.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False):
        super().__init__(path)
        self.resume = resume  # the job continues what this directory holds (train --resume)
        self.is_main = is_main_process()
        self.kept = False  # this start has written something to keep: it is no longer taken back
        self._lock: int | None = None
        self._made: Path | None = None  # the outermost folder this start created
        self._found: set[str] = set()  # what the folder held when this start took it
        self._originals: dict[Path, bytes | None] = {}  # files this start replaced, as they were
        self._staged: set[Path] = set()
        if not self.is_main:
            return
        option = "--resume" if resume else "--out"
        try:
            self._check_place(option, resume)
            started_here = self.file(LOCK).exists()  # a run was started here before (a spec.yaml may be the user's)
            self._made = _outermost_missing(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file(LOCK), os.O_CREAT | os.O_RDWR, 0o666)
        except OSError as err:  # a path through a file, a name over the file system's limit, no permission
            if self._made is not None:
                self._take_back()
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
        self._found = set(os.listdir(self.path))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError as err:  # a full disk
            self._take_back()
            self.close()
            raise InputError(f"{option} {self.path}: cannot write there ({err.strerror})") from None
        if resume:
            return
        refusal = self._claimed(started_here)
        if refusal:
            self.close()
            raise InputError(refusal)
        if self.file(METRICS).exists():  # a killed start's, before its first checkpoint: this start logs its own
            self._remember(self.file(METRICS))
            self.file(METRICS).unlink()

    def _check_place(self, option: str, resume: bool) -> None:
        """Refuse a place that is no folder, or that would put one run's files inside another's."""
        if self.path.is_symlink() and not self.path.exists():
            raise InputError(f"{option} {self.path}: is a broken symbolic link (its target is missing, or a loop)")
        if resume and not self.holds_run():  # before anything is made there
            raise InputError(f"--resume {self.path}: holds no run to resume (no spec.yaml)")
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{option} {self.path}: is a file, not a folder")
        if resume:
            return
        owner = enclosing_run(self.path)
        if owner is not None:
            raise InputError(f"--out {self.path}: is inside the run folder {owner}, whose files are that run's; choose a folder outside it")
        inner = contained_run(self.path) if self.path.is_dir() else None
        if inner is not None:
            raise InputError(f"--out {self.path}: holds the run folder {inner}; choose a folder that holds no run")

    def _claimed(self, started_here: bool) -> str | None:
        """Why the folder is not this start's: a run kept something there, or the spec.yaml is no run's."""
        if self.file(RESULTS).exists():
            return f"--out {self.path}: holds a finished run; choose another folder"
        if self.file(SPEC).exists() and not started_here:
            return f"--out {self.path}: holds a spec.yaml that no run wrote; choose another folder"
        checkpoint = self.latest_checkpoint()
        if checkpoint is not None:
            return (
                f"--out {self.path}: holds an unfinished run (checkpoint at step {self.step_of(checkpoint)}); choose another "
                f"folder, or continue it with `tokendrift train --resume {self.path}`"
            )
        return None

    def _remember(self, path: Path) -> None:
        """Keep what a file held before this start first writes it, to put back if the start is taken back."""
        if self._lock is not None and not self.kept and self._made is None and path not in self._originals:
            self._originals[path] = path.read_bytes() if path.is_file() else None

    def _take_back(self) -> None:
        """Leave the folder as this start found it. Best effort: what cannot be undone stays, and the
        error that ended the start is the one reported."""
        if self._made is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            for folder in self.path.parents:  # the parents this start made, up to the outermost
                if not folder.is_relative_to(self._made) or not _remove_empty(folder):
                    break
            return
        for tmp in self._staged:
            shutil.rmtree(tmp, ignore_errors=True)
        for name in set(os.listdir(self.path)) - self._found - {LOCK}:  # the lock file stays (see above)
            new = self.file(name)
            if new.is_dir() and not new.is_symlink():
                shutil.rmtree(new, ignore_errors=True)
            else:
                new.unlink(missing_ok=True)
        for path, data in self._originals.items():
            try:
                if data is None:
                    path.unlink(missing_ok=True)
                else:
                    atomic_write_bytes(path, data)
            except (OSError, JobError):
                pass

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, error: type[BaseException] | None, *exc: object) -> None:
        if error is not None and self._lock is not None and not self.kept:
            self._take_back()
        self.close()

    def write_text(self, name: str, text: str) -> Path:
        if self.is_main:
            self._remember(self.file(name))
            atomic_write_text(self.file(name), text)
            self.kept = self.kept or name == RESULTS
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
            self._remember(self.file(name))
            atomic_write_bytes(self.file(name), buf.getvalue())
        plt.close(fig)
        return self.file(name)

    def log_metrics(self, row: dict) -> None:
        """Append one JSON line; a line is written whole with one write() and fsynced."""
        if not self.is_main:
            return
        line = _json_line(row).encode("utf-8")
        self._remember(self.file(METRICS))
        with writing(self.file(METRICS)), open(self.file(METRICS), "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, last_step: int) -> None:
        """Drop lines logged after `last_step` (by a run that died after its last checkpoint)."""
        kept = [row for row in self.read_metrics() if row.get("step", 0) <= last_step]
        self.write_jsonl(METRICS, kept)

    # A folder (a checkpoint, the final model) is written under a temporary name beside where it
    # goes, then published with one rename: a crash never leaves half of one where readers look.

    def staging(self, final: Path) -> Path:
        """The temporary name to fill for `final`, emptied of what a crash left there."""
        tmp = final.with_name(f".{final.name}.tmp")
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)
        self._staged.add(tmp)
        return tmp

    def publish(self, tmp: Path, final: Path) -> None:
        """fsync the filled `tmp`, give its files the umask's mode (safetensors writes 0600), rename it to `final`."""
        if not self.is_main:
            return
        self.kept = True  # from here on the folder holds what this start made: never taken back
        with writing(tmp):
            for path in tmp.rglob("*"):
                if path.is_file():
                    with open(path, "rb") as f:
                        os.fsync(f.fileno())
                    path.chmod(FILE_MODE)
        # The old folder steps aside before the new one takes its name, and goes only after: a
        # crash in between leaves it beside, never neither.
        old = final.with_name(f".{final.name}.old")
        with writing(final):
            if old.exists():
                shutil.rmtree(old)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            if old.exists():
                shutil.rmtree(old)

    def prune_checkpoints(self, keep: int) -> None:
        if self.is_main:
            for old in self.checkpoints()[:-keep]:
                shutil.rmtree(old)


def _outermost_missing(path: Path) -> Path | None:
    """The outermost folder that making `path` creates (None: it exists)."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _remove_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
        return True
    except OSError:
        return False
