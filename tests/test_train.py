"""The training loop: embedded default, exact resume after SIGKILL, several processes, matched baseline."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# A few seconds a run: tiny model, short sequences, small batches.
FAST = [
    "--set", "data.num_train=256", "--set", "data.num_valid=32", "--set", "data.seq_len=16",
    "--set", "optim.batch_size=8", "--set", "optim.warmup_steps=2",
    "--set", "logging.log_every=1", "--set", "logging.eval_every=0", "--set", "logging.valid_sequences=16",
]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _tokendrift(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokendrift_cli", *args], capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kwargs,
    )


@pytest.mark.parametrize("backbone", ["mdlm", "duo"])
def test_train_writes_spec_metrics_checkpoint_and_model(cli, tmp_path, backbone):
    out = tmp_path / "run"
    code, stdout, stderr = cli("train", "--backbone", backbone, "--max-steps", "4", "--out", str(out), "--json", *FAST)
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["steps"] == 4 and result["backbone"] == backbone
    assert (out / "spec.yaml").is_file() and (out / "results.json").is_file()
    assert [row["step"] for row in _metrics(out)] == [1, 2, 3, 4]
    assert Path(result["model_path"], "config.json").is_file()
    assert Path(result["checkpoint"]).name == "checkpoint-4"
    assert "val_nelbo" in result  # validation runs at the last step


def test_spec_yaml_reproduces_the_run(cli, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert cli("train", "--max-steps", "3", "--out", str(first), "--quiet", *FAST)[0] == 0
    assert cli("train", "--spec", str(first / "spec.yaml"), "--out", str(second), "--quiet")[0] == 0
    assert [r["loss"] for r in _metrics(first)] == [r["loss"] for r in _metrics(second)]


def test_matched_baseline_sees_the_same_batches_and_noise(cli, tmp_path):
    """objective=diffusion and tokendrift share data order and noise: their first diffusion loss is equal."""
    base, drift = tmp_path / "base", tmp_path / "drift"
    assert cli("train", "--objective", "diffusion", "--max-steps", "1", "--out", str(base), "--quiet", *FAST)[0] == 0
    assert cli("train", "--objective", "tokendrift", "--max-steps", "1", "--out", str(drift), "--quiet", *FAST)[0] == 0
    assert _metrics(base)[0]["diffusion_loss"] == pytest.approx(_metrics(drift)[0]["diffusion_loss"], rel=1e-6)
    assert "drift_loss" in _metrics(drift)[0] and "drift_loss" not in _metrics(base)[0]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    steps = ["--max-steps", "12", "--set", "logging.save_every=3", *FAST]
    reference = tmp_path / "reference"
    done = _tokendrift("train", "--out", str(reference), "--quiet", *steps)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokendrift_cli", "train", "--out", str(killed), "--quiet", *steps],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoints" / "checkpoint-6").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoints" / "checkpoint-6").exists(), "the run never reached its second checkpoint"
    assert not (killed / "results.json").exists(), "the run finished before it was killed"

    resumed = _tokendrift("train", "--resume", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = _metrics(reference), _metrics(killed)
    assert [r["step"] for r in got] == list(range(1, 13))
    assert [r["loss"] for r in got] == [r["loss"] for r in expected]


def test_resume_without_checkpoint_is_a_clear_error(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "spec.yaml").write_text("command: train\n")
    code, _, err = cli("train", "--resume", str(tmp_path / "empty"))
    assert code == 2 and "no checkpoint to resume from" in err


def test_batch_that_does_not_split_is_rejected(cli, tmp_path):
    code, _, err = cli("train", "--set", "optim.batch_size=6", "--set", "optim.grad_accum=4", "--out", str(tmp_path / "r"))
    assert code == 2 and "optim.batch_size" in err


def test_two_processes_gather_drift_features(tmp_path):
    """Two CPU processes (torchrun; `accelerate launch --multi_gpu --num_processes 2` is the same on a
    CPU-only machine): drift positives and negatives come from the global batch."""
    out = tmp_path / "ddp"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "-m", "tokendrift_cli", "train", "--objective", "tokendrift", "--max-steps", "2", "--out", str(out), "--quiet",
         *FAST],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert json.loads((out / "results.json").read_text())["processes"] == 2
    # Each process holds 4 sequences; the drift sets hold all 8 (without the gather they would hold 4).
    assert all(r["drift_batch"] == 8 for r in rows)


def _files(run_dir: Path) -> dict:
    """Every file of a run but the lock (whose pid each opener rewrites)."""
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}


def test_an_interrupted_run_refuses_a_fresh_train_and_every_other_command(cli, interrupted_run, trained_run):
    before = _files(interrupted_run)
    model = ["--model", str(trained_run)]
    for args in [
        ["train", *FAST], ["sample", *model, "--nfe", "4", "--num-samples", "2"],
        ["eval", *model, "--nfe", "4", "--num-samples", "4"], ["probe", *model, "--num-masks", "4", "--num-prompts", "2"],
        ["marginal-trap", "--set", "trap.num_contexts=2"],
    ]:
        code, _, err = cli(*args, "--out", str(interrupted_run))
        assert code == 2 and "holds an unfinished run" in err and "tokendrift train --resume" in err, (args, err)
    assert _files(interrupted_run) == before


def test_resume_refuses_what_would_change_the_run(cli, interrupted_run):
    before = _files(interrupted_run)
    for args, message in [
        (["--max-steps", "1"], "optim.max_steps: 1 is below the checkpoint's step 2"),
        (["--seed", "8"], "seed: 8 differs from the run's 0"),
        (["--set", "model.size=small"], "model.size: 'small' differs from the run's 'tiny'"),
        (["--backbone", "duo"], "model.backbone: 'duo' differs"),
        (["--lr", "0.1"], "optim.lr: 0.1 differs"),
    ]:
        code, _, err = cli("train", "--resume", str(interrupted_run), *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert _files(interrupted_run) == before  # spec.yaml, metrics and checkpoints as they were


def test_a_finished_run_resumes_only_to_more_steps(cli, trained_run):
    code, _, err = cli("train", "--resume", str(trained_run))
    assert code == 2 and "the run finished at step 60; raise --max-steps" in err


def test_resume_drops_a_torn_metrics_line_and_may_go_further(cli, interrupted_run, tmp_path):
    """A write torn by the kill, then a resume to 4 steps (the run was to stop at 3): the same losses
    as an uninterrupted 4-step run, every line strict JSON."""
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted_run, run_dir)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')
    code, _, err = cli("train", "--resume", str(run_dir), "--max-steps", "4", "--quiet")
    assert code == 0, err
    reference = tmp_path / "reference"
    spec = run_dir / "spec.yaml"
    assert cli("train", "--spec", str(spec), "--max-steps", "4", "--out", str(reference), "--quiet")[0] == 0
    strict = {"parse_constant": lambda name: pytest.fail(f"bare {name}")}
    got = [json.loads(line, **strict) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    assert [r["loss"] for r in got] == [r["loss"] for r in _metrics(reference)]
    assert json.loads((run_dir / "results.json").read_text())["resumed_from"] == 2
