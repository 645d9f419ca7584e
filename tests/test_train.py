"""The training loop: embedded default, exact resume after SIGKILL, several processes, matched baseline."""

import json
import os
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


def test_one_and_two_processes_log_the_same_lr_and_losses_for_the_same_global_batch(tmp_path):
    """Warm-up then cosine over 6 steps of 8 sequences: one process accumulating two micro-batches
    of 4, and two processes (torchrun) with 4 each, see the same sequences and noise, so they must
    log the same lr column (the closed form below) and the same losses. Accelerate alone would
    step the schedule once per process: twice per step under two."""
    import math

    common = ["train", "--objective", "diffusion", "--max-steps", "6", "--quiet", "--set", "optim.schedule=cosine",
              "--set", "optim.lr=1e-3", *FAST]
    one, two = tmp_path / "one", tmp_path / "two"
    done = _tokendrift(*common, "--out", str(one), "--set", "optim.grad_accum=2")
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tokendrift_cli", *common, "--out", str(two)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # After step s the schedule stands at factor(s): warm-up (s + 1) / 2 below step 2, then
    # 0.5 (1 + cos(pi (s - 2) / 4)) down to 0 at step 6.
    expected = [1e-3 * ((s + 1) / 2 if s < 2 else 0.5 * (1 + math.cos(math.pi * (s - 2) / 4))) for s in range(1, 7)]
    for run in (one, two):
        assert [r["lr"] for r in _metrics(run)] == pytest.approx(expected, abs=1e-12)
    assert [r["loss"] for r in _metrics(two)] == pytest.approx([r["loss"] for r in _metrics(one)], rel=1e-4)
