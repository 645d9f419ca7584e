"""Run directories: atomic writes, the lock, metrics log."""

import json
import multiprocessing
import os
import stat
import subprocess
import sys
import time

import pytest

from tokendrift_cli.errors import InputError, JobError
from tokendrift_cli.runs import FILE_MODE, Run, RunDir, atomic_write_text, model_folder, train_run
from tokendrift_cli.spec.diffusion import DiffusionSpec


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    from tokendrift_cli.runs import atomic_write_bytes

    atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "a.txt", "not bytes")  # type: ignore[arg-type]
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_two_runs_never_share_a_directory(tmp_path):
    with RunDir(tmp_path / "run"):
        with pytest.raises(InputError, match="another run"):
            RunDir(tmp_path / "run")
    RunDir(tmp_path / "run").close()  # released on exit


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run_path = tmp_path / "run"
    run_path.mkdir()
    (run_path / ".lock").write_text("999999999")  # no such pid
    RunDir(run_path).close()


def test_finished_run_is_not_overwritten_unless_resumed(tmp_path):
    with RunDir(tmp_path / "run") as run:
        run.write_json("results.json", {"ok": 1})
    with pytest.raises(InputError, match="finished run"):
        RunDir(tmp_path / "run")
    RunDir(tmp_path / "run", resume=True).close()


def test_metrics_log_appends_and_truncates(tmp_path):
    with RunDir(tmp_path / "run") as run:
        for step in (10, 20, 30):
            run.log_metrics({"step": step, "loss": step / 10})
        run.truncate_metrics(last_step=20)
        assert [r["step"] for r in run.read_metrics()] == [10, 20]
        lines = (run.path / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["loss"] for line in lines] == [1.0, 2.0]


def test_non_main_rank_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    run = RunDir(tmp_path / "run")
    run.write_json("results.json", {"x": 1})
    run.log_metrics({"step": 1})
    assert not (tmp_path / "run").exists()
    run.close()


def test_a_folder_belongs_to_a_run_once_it_keeps_a_checkpoint(tmp_path):
    """What a kill leaves before the first checkpoint (spec.yaml, the first steps' metrics) is free
    for the next start, which logs its own metrics; a checkpoint makes the folder the run's."""
    with RunDir(tmp_path / "run") as run:
        run.write_yaml("spec.yaml", {"command": "train"})  # written first by every command
        run.log_metrics({"step": 1, "loss": 1.0})
    with RunDir(tmp_path / "run") as run:
        assert run.read_metrics() == []
        run.log_metrics({"step": 1, "loss": 2.0})
        tmp = run.staging(run.checkpoint_path(1))
        tmp.mkdir(parents=True)
        run.publish(tmp, run.checkpoint_path(1))
    with pytest.raises(InputError, match="holds an unfinished run .*tokendrift train --resume"):
        RunDir(tmp_path / "run")
    RunDir(tmp_path / "run", resume=True).close()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "spec.yaml").write_text("seed: 1\n")  # the user's, not a run's
    with pytest.raises(InputError, match="holds a spec.yaml that no run wrote"):
        RunDir(tmp_path / "mine")
    assert (tmp_path / "mine" / "spec.yaml").read_text() == "seed: 1\n"
    with pytest.raises(InputError, match="holds no run to resume"):
        RunDir(tmp_path / "empty", resume=True)
    assert not (tmp_path / "empty").exists()  # nothing made where there was nothing to resume


def _files(folder) -> dict:
    """Every file under `folder` and its bytes, but the lock (whose pid each opener rewrites)."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_start_that_ends_before_keeping_anything_is_taken_back(tmp_path):
    """A folder the start made goes, with the parents it made; a folder it found (here one a killed
    start left) gets back exactly what it held; once a checkpoint is kept, nothing is taken back."""
    with pytest.raises(InputError, match="refused"):
        with RunDir(tmp_path / "new" / "deeper" / "run") as run:
            run.write_yaml("spec.yaml", {"command": "sample"})
            raise InputError("refused")
    assert list(tmp_path.iterdir()) == []

    found = tmp_path / "found"
    with RunDir(found) as run:  # a start killed before its first checkpoint left these
        run.write_yaml("spec.yaml", {"command": "train", "seed": 1})
        run.log_metrics({"step": 1, "loss": 1.0})
    (found / "notes.txt").write_text("the user's")
    before = _files(found)
    for ending in (JobError("failed"), KeyboardInterrupt()):
        with pytest.raises(type(ending)):
            with RunDir(found) as run:
                run.write_yaml("spec.yaml", {"command": "sample"})
                run.log_metrics({"step": 1, "loss": 2.0})
                run.write_text("samples.jsonl", "{}\n")
                run.staging(run.file("model")).mkdir()
                raise ending
        assert _files(found) == before and not (found / ".model.tmp").exists()

    with pytest.raises(JobError):
        with RunDir(found) as run:
            tmp = run.staging(run.checkpoint_path(1))
            tmp.mkdir(parents=True)
            run.publish(tmp, run.checkpoint_path(1))
            raise JobError("failed after its first checkpoint")
    assert run.latest_checkpoint() == run.checkpoint_path(1)


def test_no_run_starts_inside_a_run_folder_or_around_one(tmp_path):
    with RunDir(tmp_path / "runs" / "r") as run:
        run.write_yaml("spec.yaml", {"command": "train"})
        (run.path / "model").mkdir()
    before = _files(tmp_path)
    for inside in (tmp_path / "runs" / "r" / "model", tmp_path / "runs" / "r" / "checkpoints" / "checkpoint-8"):
        with pytest.raises(InputError, match=f"is inside the run folder {tmp_path / 'runs' / 'r'}"):
            RunDir(inside)
    (tmp_path / "link").symlink_to(tmp_path / "runs" / "r" / "model")
    with pytest.raises(InputError, match="is inside the run folder"):
        RunDir(tmp_path / "link")
    for around in (tmp_path / "runs", tmp_path):
        with pytest.raises(InputError, match=f"holds the run folder {tmp_path / 'runs' / 'r'}"):
            RunDir(around)
    assert _files(tmp_path) == before and not (tmp_path / "runs" / "r" / "checkpoints").exists()


def test_out_places_that_are_no_folder_name_the_reason(tmp_path, monkeypatch):
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for link in ("dangling", "loop"):
        with pytest.raises(InputError, match=f"--out {tmp_path / link}: is a broken symbolic link"):
            RunDir(tmp_path / link)
    with pytest.raises(InputError, match=r"cannot write there \(File name too long\)"):
        RunDir(tmp_path / ("x" * 300))

    def full_disk(fd, data, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full_disk)  # the lock's pid is the first byte a run writes
    with pytest.raises(InputError, match=r"--out .*new: cannot write there \(No space left on device\)"):
        RunDir(tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "loop"]


def test_resume_of_a_missing_folder_says_so_and_several_processes_need_out(cli, tmp_path, monkeypatch):
    code, _, err = cli("train", "--resume", str(tmp_path / "nowhere"))
    assert code == 2 and err.strip() == f"error: --resume {tmp_path / 'nowhere'}: holds no run to resume (no spec.yaml)"
    assert not (tmp_path / "nowhere").exists()
    monkeypatch.setenv("WORLD_SIZE", "2")  # as accelerate launch / torchrun set it: each rank would stamp its own folder
    code, _, err = cli("train", "--nfe", "4")
    assert code == 2 and "--out: required when several processes train" in err


def test_publishing_over_a_folder_keeps_the_old_one_until_the_new_one_stands(tmp_path, monkeypatch):
    with RunDir(tmp_path / "run") as run:
        final = run.file("model")
        for content in (b"old", b"new"):
            tmp = run.staging(final)
            tmp.mkdir()
            (tmp / "weights").write_bytes(content)
            run.publish(tmp, final)
        assert (final / "weights").read_bytes() == b"new" and not final.with_name(".model.old").exists()
        tmp = run.staging(final)
        tmp.mkdir()
        real_replace = os.replace

        def crash_on_the_second_rename(src, dst):
            if src == tmp:
                raise OSError(28, "No space left on device")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", crash_on_the_second_rename)
        with pytest.raises(JobError, match="cannot write .*model: No space left on device"):
            run.publish(tmp, final)
        assert (final.with_name(".model.old") / "weights").read_bytes() == b"new"  # set aside, not lost


def test_out_naming_a_file_or_an_unwritable_place(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        RunDir(tmp_path / "file")
    with pytest.raises(InputError, match="cannot write there"):
        RunDir(tmp_path / "file" / "run")


def _contend(path_root: str, trials: int, barrier, counter, guard, overlaps, acquired) -> None:
    """One of two processes: each trial both wait at the barrier, then race for the same folder."""
    for trial in range(trials):
        barrier.wait()
        try:
            run = RunDir(os.path.join(path_root, str(trial)))
        except InputError:
            run = None
        if run is not None:
            with guard:
                counter.value += 1
                overlaps.value += counter.value > 1
                acquired[trial] += 1
            time.sleep(0.002)  # hold it a moment, as a run does
            with guard:
                counter.value -= 1
            run.close()
        barrier.wait()


def test_two_processes_released_together_never_both_hold_the_lock(tmp_path):
    trials = 200
    ctx = multiprocessing.get_context("fork")
    barrier, guard = ctx.Barrier(2), ctx.Lock()
    counter, overlaps = ctx.Value("i", 0), ctx.Value("i", 0)
    acquired = ctx.Array("i", trials)
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), trials, barrier, counter, guard, overlaps, acquired)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert overlaps.value == 0
    assert all(count >= 1 for count in acquired)  # every race had a winner


def test_atomic_writes_get_the_umask_mode(tmp_path):
    from tokendrift_cli.runs import FILE_MODE

    atomic_write_text(tmp_path / "a.txt", "x")
    with open(tmp_path / "plain.txt", "w") as f:  # what every other file gets
        f.write("x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == FILE_MODE


def test_files_of_a_run_keep_the_umask_mode_end_to_end(tmp_path):
    """A real process under umask 027: every file it writes is 0640 (mkstemp alone would give 0600)."""
    out = tmp_path / "trap"
    (tmp_path / "joint.json").write_text('{"I like": 0.5, "he likes": 0.5}')
    done = subprocess.run(
        [sys.executable, "-m", "tokendrift_cli", "marginal-trap", "--joint", str(tmp_path / "joint.json"), "--out", str(out), "--quiet"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=lambda: os.umask(0o027),
    )
    assert done.returncode == 0, done.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert {"spec.yaml", "results.json", "trap.json", "validity.png"} <= set(modes)
    assert set(modes.values()) == {0o640}, modes


def test_trained_run_files_all_have_the_umask_mode(trained_run):
    from tokendrift_cli.runs import FILE_MODE

    files = [p for p in trained_run.rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files)  # safetensors writes 0600 on its own
    assert {p.relative_to(trained_run).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
            if stat.S_IMODE(p.stat().st_mode) != FILE_MODE} == {}


def test_non_finite_numbers_are_written_as_null(tmp_path):
    from tokendrift_cli.runs import to_json

    strict = {"parse_constant": lambda name: pytest.fail(f"bare {name} in JSON")}
    assert json.loads(to_json({"loss": float("nan"), "ppl": [float("inf"), 1.5]}), **strict) == {"loss": None, "ppl": [None, 1.5]}
    with RunDir(tmp_path / "run") as run:
        run.log_metrics({"step": 1, "loss": float("-inf")})
        run.write_jsonl("rows.jsonl", [{"x": float("nan")}])
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text(), **strict) == {"step": 1, "loss": None}
    assert json.loads((tmp_path / "run" / "rows.jsonl").read_text(), **strict) == {"x": None}


def test_a_torn_last_metrics_line_is_dropped_and_a_torn_middle_line_named(tmp_path):
    with RunDir(tmp_path / "run") as run:
        run.log_metrics({"step": 1, "loss": 1.0})
        with open(run.file("metrics.jsonl"), "a") as f:
            f.write('{"step": 2, "lo')  # the process died inside the write
        assert [r["step"] for r in run.read_metrics()] == [1]
        with open(run.file("metrics.jsonl"), "a") as f:
            f.write('\n{"step": 3}\n')
        with pytest.raises(InputError, match="metrics.jsonl:2: not valid JSON"):
            run.read_metrics()


def test_a_runs_checkpoints_are_listed_by_step_and_its_model_found(tmp_path):
    """checkpoint-10 comes after checkpoint-2 (by step, not by name); a checkpoint still being
    written (its temporary name) or a stray folder is not one; without a final model the latest
    checkpoint's model stands in, and a plain folder is its own model."""
    run = Run(tmp_path / "run")
    for name in ("checkpoint-2", "checkpoint-10", ".checkpoint-12.tmp", "checkpoint-x"):
        (run.path / "checkpoints" / name / "model").mkdir(parents=True)
    assert [p.name for p in run.checkpoints()] == ["checkpoint-2", "checkpoint-10"]
    assert run.step_of(run.latest_checkpoint()) == 10 and run.checkpoint_path(10) == run.latest_checkpoint()
    assert run.model_dir() == run.path / "checkpoints" / "checkpoint-10" / "model"
    (run.path / "model").mkdir()
    (run.path / "model" / "config.json").write_text("{}")
    assert run.model_dir() == run.path / "model" and model_folder(str(run.path)) == run.path / "model"
    assert model_folder(str(tmp_path / "plain")) is None
    (tmp_path / "plain").mkdir()
    assert model_folder(str(tmp_path / "plain")) == tmp_path / "plain"
    assert train_run(str(run.path)) is None  # no spec.yaml: a folder, not a train run
    (run.path / "spec.yaml").write_text("command: train\nseed: 7\ndiffusion:\n  eps: 0.01\n")
    assert train_run(str(run.path)).recorded_seed() == 7
    assert train_run(str(run.path)).recorded("diffusion", DiffusionSpec).eps == 0.01


def test_a_staged_folder_is_published_whole_and_old_checkpoints_pruned(tmp_path):
    with RunDir(tmp_path / "run") as run:
        for step in (1, 2, 3):
            final = run.checkpoint_path(step)
            tmp = run.staging(final)
            tmp.mkdir(parents=True)
            (tmp / "weights").write_bytes(b"x" * step)
            os.chmod(tmp / "weights", 0o600)  # as safetensors leaves its files
            assert not final.exists()  # readers never see it before it is whole
            run.publish(tmp, final)
            run.prune_checkpoints(keep=2)
        assert [p.name for p in run.checkpoints()] == ["checkpoint-2", "checkpoint-3"]
        weights = run.checkpoint_path(3) / "weights"
        assert weights.read_bytes() == b"xxx" and stat.S_IMODE(weights.stat().st_mode) == FILE_MODE
        leftover = run.staging(run.checkpoint_path(4))
        leftover.mkdir()
        assert not run.staging(run.checkpoint_path(4)).exists()  # what a crash left is cleared


# A few seconds a train run from the trained_run fixture's model (16 positions).
CONTINUE = ["--set", "data.num_train=256", "--set", "data.num_valid=32", "--set", "data.seq_len=16", "--set", "optim.batch_size=8",
            "--set", "logging.eval_every=0", "--set", "logging.valid_sequences=16", "--set", "quality.num_samples=16", "--quiet"]


def test_a_start_refused_once_its_model_is_loaded_leaves_the_folder_to_the_corrected_command(cli, tmp_path, trained_run):
    """Checks that need the model or data run after spec.yaml is written; the refused start is taken
    back, so the corrected command runs in the same folder: fresh, or one the user made."""
    made = tmp_path / "made"
    found = tmp_path / "found"
    found.mkdir()
    (found / "notes.txt").write_text("mine")
    for out in (made, found):
        before = _files(out) if out.exists() else None
        for args, message in [
            (["train", "--init", str(trained_run), "--backbone", "duo", *CONTINUE], "model.backbone: duo, but"),
            (["train", "--init", str(trained_run), "--set", "optim.grad_accum=3", *CONTINUE], "optim.batch_size: 8 sequences do not split"),
            (["train", "--init", str(trained_run), "--set", "drift.features=layers", "--set", "drift.feature_layers=[99]", *CONTINUE],
             "drift.feature_layers: 99 is not one of"),
            (["sample", "--model", str(trained_run), "--seq-len", "64"], "sampling.seq_len: 64 is above the model's length (16)"),
        ]:
            code, _, err = cli(*args, "--out", str(out))
            assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
            assert (_files(out) if out.exists() else None) == before, args
        code, _, err = cli("train", "--init", str(trained_run), "--max-steps", "2", *CONTINUE, "--out", str(out))
        assert code == 0, err
        assert json.loads((out / "results.json").read_text())["steps"] == 2
    for out in (tmp_path / "sample-made", tmp_path / "sample-found"):
        assert cli("sample", "--model", str(trained_run), "--seq-len", "64", "--out", str(out))[0] == 2 and not out.exists()
        code, _, err = cli("sample", "--model", str(trained_run), "--nfe", "4", "--num-samples", "2", "--out", str(out), "--quiet")
        assert code == 0 and len((out / "samples.jsonl").read_text().splitlines()) == 2, err


def test_no_command_writes_inside_a_run_folder(cli, tmp_path, trained_run):
    before = _files(trained_run)
    model = ["--model", str(trained_run)]
    for args in [
        ["train", "--init", "none", "--max-steps", "2", *CONTINUE], ["sample", *model, "--nfe", "4", "--num-samples", "2"],
        ["eval", *model, "--nfe", "4", "--num-samples", "4"], ["probe", *model, "--num-masks", "4", "--num-prompts", "2"],
        ["marginal-trap", "--set", "trap.num_contexts=2"],
    ]:
        for out in (trained_run / "checkpoints" / "checkpoint-60", trained_run / "model", trained_run / "new"):
            code, _, err = cli(*args, "--out", str(out))
            assert code == 2 and f"is inside the run folder {trained_run}" in err, (args, err)
        code, _, err = cli(*args, "--out", str(trained_run.parent))
        assert code == 2 and f"holds the run folder {trained_run}" in err, (args, err)
    assert _files(trained_run) == before and not (trained_run / "new").exists()


def test_a_refused_start_in_the_default_folder_leaves_no_runs_folder(cli, tmp_path, monkeypatch):
    """`eval` with no model and no train run: refused once it looks for one, after spec.yaml went
    into runs/eval-<stamp>/; both folders, made by the start, go with it."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("eval", "--nfe", "4")
    assert code == 2 and "model: not given and no finished train run under runs/" in err
    assert list(tmp_path.iterdir()) == []
