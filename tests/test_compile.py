"""optim.compile: compiled training logs an eager run's losses, saves the same checkpoints, resumes
across the two, and stays eager with one line where the machine cannot compile.

How close compiled and eager losses must be, from float32 arithmetic. A compiled kernel computes
the same float32 operations as eager, fused or in another order; a sum of n terms taken in two
orders differs by at most 2·γ_n·Σ|terms|, γ_n = n·u/(1 − n·u), u = 2⁻²⁴ (the rounding of float32).
Along the network a relative error is carried forward with a gain of about 1 (residual stream,
layer norms) and each reduction adds its γ_n: per block of the tiny model the qkv, output and
first MLP products (n = 128 each), attention scores (n = 32, the head size) and values (n = 16,
the tests' sequence length) and the second MLP product (n = 512); four blocks and the output
layer (n = 128) give 2·(4·(3·128 + 32 + 16 + 512) + 128)·u ≈ 7.8e3·u ≈ 4.6e-4 of the logits'
size; a log-softmax term moves at most twice as far as the largest logit, so a loss of the
logits' order moves by about 1e-3 of its size. Each later step starts from weights that carry
the earlier steps' rounding through AdamW (a relative change of a gradient changes its update by
no more) and adds its own: RTOL_PER_STEP · step. These are worst-case sums; the runs here
differ by at most 2.3e-7 (relative); dropout drawn by inductor's own generator instead of
torch's moved the small model's first loss by 1.5e-3 (test_compiled_dropout_draws_what_eager_draws).
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from tokendrift_cli.models.compiling import compile_modules, unavailable, wanted

RTOL_PER_STEP = 1e-3
SHORT = [
    "--init", "none", "--quiet", "--set", "quality.num_samples=0",
    "--set", "data.num_train=256", "--set", "data.num_valid=32", "--set", "data.seq_len=16",
    "--set", "optim.batch_size=8", "--set", "optim.warmup_steps=2", "--set", "logging.log_every=1",
    "--set", "logging.eval_every=0", "--set", "logging.valid_sequences=16",
]
LOSSES = ("loss", "diffusion_loss", "drift_loss", "val_nelbo")
# Where torch.compile cannot run (no C++ compiler) the fallback test covers what happens instead.
compiles = pytest.mark.skipif(unavailable(torch.device("cpu")) is not None, reason=f"{unavailable(torch.device('cpu'))}")


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _keys(path) -> list[str]:
    with safe_open(str(path), "pt") as weights:
        return sorted(weights.keys())


def _assert_same_losses(eager: list[dict], compiled: list[dict]) -> None:
    assert [r["step"] for r in eager] == [r["step"] for r in compiled]
    for row, other in zip(eager, compiled):
        for key in (k for k in LOSSES if k in row):
            assert other[key] == pytest.approx(row[key], rel=RTOL_PER_STEP * row["step"]), (row["step"], key)


@compiles
@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mdlm", "duo"])
@pytest.mark.parametrize("objective", ["diffusion", "tokendrift"])
def test_compiled_training_logs_the_eager_losses_and_saves_the_same_weights(cli, tmp_path, backbone, objective):
    runs = {}
    for setting in ("false", "true"):
        out = tmp_path / setting
        args = ["train", "--backbone", backbone, "--objective", objective, "--max-steps", "3", "--out", str(out), *SHORT]
        code, _, stderr = cli(*args, "--set", f"optim.compile={setting}")
        assert code == 0, stderr
        assert "running eager" not in stderr  # this machine compiles: the second run did
        runs[setting] = out
    eager, compiled = _metrics(runs["false"]), _metrics(runs["true"])
    assert len({r["loss"] for r in eager}) == 3  # the losses move, so matching them says something
    _assert_same_losses(eager, compiled)
    for path in ("model/model.safetensors", "checkpoints/checkpoint-3/model.safetensors"):
        assert _keys(runs["true"] / path) == _keys(runs["false"] / path)


@compiles
@pytest.mark.slow
def test_a_run_resumes_compiled_from_an_eager_checkpoint_and_back(cli, tmp_path):
    """Eager to step 2, compiled to 4, eager to 6: the losses of one eager run of 6 steps."""
    common = ["train", "--objective", "tokendrift", "--backbone", "mdlm", *SHORT, "--set", "logging.save_every=2"]
    reference, switched = tmp_path / "reference", tmp_path / "switched"
    assert cli(*common, "--max-steps", "6", "--out", str(reference))[0] == 0
    assert cli(*common, "--max-steps", "2", "--out", str(switched), "--set", "optim.compile=false")[0] == 0
    for steps, setting in (("4", "true"), ("6", "false")):
        code, _, stderr = cli("train", "--resume", str(switched), "--max-steps", steps, "--quiet", "--set", f"optim.compile={setting}")
        assert code == 0, stderr
    assert json.loads((switched / "results.json").read_text())["resumed_from"] == 4
    _assert_same_losses(_metrics(reference), _metrics(switched))


@compiles
@pytest.mark.slow
def test_two_processes_train_compiled_as_they_train_eager(tmp_path):
    """torchrun with two CPU processes (DDP over gloo): compiled after prepare, each process's
    denoiser and encoder, with the drift features gathered across both, log the eager losses."""
    runs = {}
    for setting in ("false", "true"):
        runs[setting] = tmp_path / setting
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tokendrift_cli",
             "train", "--objective", "tokendrift", "--max-steps", "2", "--out", str(runs[setting]), *SHORT, "--set", f"optim.compile={setting}"],
            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    eager, compiled = _metrics(runs["false"]), _metrics(runs["true"])
    assert all(r["drift_batch"] == 8 for r in compiled)  # 4 sequences a process, gathered
    _assert_same_losses(eager, compiled)


@compiles
@pytest.mark.slow
def test_compiled_dropout_draws_what_eager_draws():
    """With dropout on (the small size's 0.1), a compiled forward in training mode gives the eager
    forward's logits from the same seed: inductor uses torch's random kernels, not its own."""
    from tokendrift_cli.models.dit import DiTConfig, DiTModel

    torch.manual_seed(0)
    model = DiTModel(DiTConfig.from_size("tiny", vocab_size=11, mask_token_id=10, max_position_embeddings=8, dropout=0.1, num_hidden_layers=1))
    for parameter in model.parameters():  # the zero-initialised modulations would gate dropout's output away
        torch.nn.init.normal_(parameter, std=0.2)
    ids = torch.randint(0, 10, (4, 8), generator=torch.Generator().manual_seed(1))
    logits = {}
    for setting in (False, True):
        compile_modules([model], setting, torch.device("cpu"), "optim.compile", pytest.fail)
        torch.manual_seed(2)
        logits[setting] = model(input_ids=ids).logits
    with torch.no_grad():
        model.eval()
        torch.manual_seed(2)
        assert not torch.allclose(model(input_ids=ids).logits, logits[False])  # dropout did act
    # One block, the output layer: 2·(3·128 + 8 + 8 + 512 + 128)·u ≈ 2e3·u of the logits' size.
    assert torch.allclose(logits[True], logits[False], rtol=0, atol=2e3 * 2**-24 * float(logits[False].abs().max()))


def test_without_a_cpp_compiler_training_runs_eager_and_says_why(cli, tmp_path):
    import torch._inductor.config

    out = tmp_path / "run"
    loud = [arg for arg in SHORT if arg != "--quiet"]
    with torch._inductor.config.patch({"cpp.cxx": (None, "no-such-c++-compiler")}):  # where inductor looks for one
        code, stdout, stderr = cli("train", "--objective", "diffusion", "--max-steps", "1", "--out", str(out), *loud, "--set", "optim.compile=on")
    assert code == 0, stderr
    lines = [line for line in stdout.splitlines() if "optim.compile" in line]
    assert len(lines) == 1 and "optim.compile: running eager: no C++ compiler for the CPU backend" in lines[0], stdout
    assert len(_metrics(out)) == 1


def test_auto_compiles_on_cuda_only_and_asks_nothing_of_an_eager_run(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (wanted("auto", cpu), wanted("auto", cuda), wanted(True, cpu), wanted(False, cuda)) == (False, True, True, False)
    module = torch.nn.Linear(2, 2)
    monkeypatch.setattr("tokendrift_cli.models.compiling.unavailable", lambda device: pytest.fail("checked an eager run's compiler"))
    compile_modules([module], "auto", cpu, "optim.compile", lambda line: pytest.fail(f"said {line!r}"))
    assert module._compiled_call_impl is None  # what nn.Module's in-place compile sets


@pytest.mark.parametrize("value, parsed", [("on", True), ("off", False), ("true", True), ("auto", "auto")])
def test_optim_compile_reads_yaml_switches(value, parsed):
    from tokendrift_cli.spec import load_spec

    assert load_spec("train", overrides=[f"optim.compile={value}"]).optim.compile == parsed


def test_an_unknown_compile_setting_is_one_line(cli):
    code, _, stderr = cli("train", "--set", "optim.compile=fast")
    assert code == 2 and stderr.count("optim.compile") == 1, stderr


@compiles
@pytest.mark.slow
def test_sample_compiles_the_denoiser_on_request(cli, tmp_path, trained_run):
    """sampling.compile: the compiled denoiser's logits are the eager one's within float32 rounding
    (the forward's bound of the module docstring, 4.6e-4 of the logits' size), and `sample` runs with it."""
    from tokendrift_cli.generation import load_for_sampling

    notes: list[str] = []
    (eager, _, process), (compiled, _, _) = (load_for_sampling(str(trained_run), compiled=c, note=notes.append) for c in (False, True))
    ids = torch.randint(0, compiled.config.vocab_size, (8, 16), generator=torch.Generator().manual_seed(0))
    sigma = torch.full((8,), 0.5)
    with torch.no_grad():
        expected, got = eager(input_ids=ids, sigma=sigma).logits, compiled(input_ids=ids, sigma=sigma).logits
    assert not notes and torch.allclose(got, expected, rtol=0, atol=4.6e-4 * float(expected.abs().max()))
    code, stdout, stderr = cli("sample", "--model", str(trained_run), "--nfe", "4", "--num-samples", "8", "--out", str(tmp_path / "s"),
                               "--json", "--set", "sampling.compile=true")
    assert code == 0 and json.loads(stdout)["num_samples"] == 8, stderr
