"""Run directories: atomic writes, the lock, metrics log."""

import json
import os

import pytest

from tokendrift_cli.errors import InputError
from tokendrift_cli.runs import RunDir, atomic_write_text


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
