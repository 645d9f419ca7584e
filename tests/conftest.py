import os

import pytest
import torch
from tiny_language import everything, tiny  # noqa: F401  (fixtures shared by the exact-statistics tests)

# Two cores are shared by everything on the CI machine; one thread keeps runs comparable. `make
# test` runs two pytest workers, one per core: every process a test starts (benchmark scripts,
# torchrun's workers) gets one thread too, so that the two workers do not oversubscribe the cores.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# torchrun's rendezvous on a free port of its own (`--standalone`, read from the environment so a
# command stays as the README writes it), not the fixed 29500 that two workers' torchrun tests,
# or two checkouts' test runs, would both take at once.
os.environ.setdefault("PET_STANDALONE", "1")


def pytest_collection_modifyitems(config, items):
    """The slow tests first (pytest's sort is stable): under `make test`'s worksteal one worker
    starts on them while the other runs the short ones and takes queued tests from the first
    when idle, instead of a long test starting last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_report_header(config):
    # Which kernels ran (ATEN_CPU_CAPABILITY picks them; `make test-numerics` runs two): a tolerance
    # failure is read against this line.
    return f"torch {torch.__version__}, CPU kernels {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} thread(s)"


@pytest.fixture
def cli():
    """Invoke the CLI in-process; returns (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from tokendrift_cli.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, list(args), catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny MDLM trained briefly on the synthetic language: a train run dir other commands read."""
    from typer.testing import CliRunner

    from tokendrift_cli.cli import app

    out = tmp_path_factory.mktemp("runs") / "train-mdlm"
    args = [
        "train", "--objective", "diffusion", "--init", "none", "--max-steps", "60", "--out", str(out), "--quiet",
        "--set", "quality.num_samples=0",
        "--set", "data.num_train=2048", "--set", "data.num_valid=64", "--set", "data.seq_len=16",
        "--set", "optim.batch_size=32", "--set", "optim.lr=1e-3", "--set", "logging.eval_every=0",
        "--set", f"data.cache_dir={tmp_path_factory.mktemp('cache')}",
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def interrupted_run(tmp_path_factory):
    """A train run as a kill after its step-2 checkpoint leaves it: checkpoint-2, metrics of steps
    1-3, no final model, no results.json. Tests that change it work on a copy."""
    import shutil

    from typer.testing import CliRunner

    from tokendrift_cli.cli import app

    out = tmp_path_factory.mktemp("runs") / "interrupted"
    args = [
        "train", "--objective", "diffusion", "--init", "none", "--max-steps", "3", "--out", str(out), "--quiet",
        "--set", "quality.num_samples=0", "--set", "data.num_train=256", "--set", "data.num_valid=32", "--set", "data.seq_len=16",
        "--set", "optim.batch_size=8", "--set", "optim.warmup_steps=2", "--set", "logging.log_every=1",
        "--set", "logging.eval_every=0", "--set", "logging.valid_sequences=16", "--set", "logging.save_every=2",
        "--set", f"data.cache_dir={tmp_path_factory.mktemp('cache')}",
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "checkpoint-3")
    (out / "results.json").unlink()
    return out
