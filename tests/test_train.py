"""The training loop: embedded default, exact resume after SIGKILL, several processes, matched baseline."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tokendrift_cli.data.synthetic import SyntheticLanguage

# A few seconds a run: short sequences, small batches, no quality report; FAST from scratch.
# Runs of several processes keep the quality report on (WITH_QUALITY): they run the defaults.
SMALL = [
    "--set", "data.num_train=256", "--set", "data.num_valid=32", "--set", "data.seq_len=16",
    "--set", "optim.batch_size=8", "--set", "optim.warmup_steps=2",
    "--set", "logging.log_every=1", "--set", "logging.eval_every=0", "--set", "logging.valid_sequences=16",
]
SHORT = ["--set", "quality.num_samples=0", *SMALL]
FAST = ["--init", "none", *SHORT]
WITH_QUALITY = ["--init", "none", *SMALL]


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
    assert Path(result["curves"]) == out / "curves.png" and (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"outputs in {out}/: checkpoints/, curves.png, metrics.jsonl, model/, results.json, spec.yaml" in stderr


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


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    """TokenDrift with reference queues of 20 (8 sequences a step): full and evicting when killed."""
    steps = ["--max-steps", "12", "--set", "logging.save_every=3", "--set", "drift.queue_size=20", *FAST]
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
    assert [r["queue_fill"] for r in got] == [0, 8, 16] + [20] * 9


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start_or_starts_over(cli, tmp_path):
    """What a kill before the first checkpoint leaves (spec.yaml, three steps' metrics, nothing to
    resume from) is no dead end: `--resume` runs it from step 0, the same command starts over there;
    both log what an uninterrupted run logs."""
    args = ["--max-steps", "3", "--set", "logging.save_every=0", "--quiet", *FAST]
    reference = tmp_path / "reference"
    assert cli("train", *args, "--out", str(reference))[0] == 0
    for name in ("resumed", "restarted"):
        shutil.copytree(reference, tmp_path / name)
        for kept in ("checkpoints", "model", "results.json"):
            path = tmp_path / name / kept
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    code, _, err = cli("train", "--resume", str(tmp_path / "resumed"), "--quiet")
    assert code == 0, err
    code, _, err = cli("train", *args, "--out", str(tmp_path / "restarted"))
    assert code == 0, err
    for name in ("resumed", "restarted"):
        assert [(r["step"], r["loss"]) for r in _metrics(tmp_path / name)] == [(r["step"], r["loss"]) for r in _metrics(reference)]
        assert json.loads((tmp_path / name / "results.json").read_text())["resumed_from"] is None


def test_ctrl_c_before_the_first_checkpoint_leaves_the_folder_to_the_same_command(cli, tmp_path, monkeypatch):
    from tokendrift_cli.jobs import train

    real_save = train._save_checkpoint

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C lands while the first checkpoint is due

    out = tmp_path / "run"
    monkeypatch.setattr(train, "_save_checkpoint", interrupted)
    code, _, err = cli("train", "--max-steps", "2", *FAST, "--out", str(out))
    assert code == 130 and "interrupted before the run kept anything" in err and not out.exists()
    monkeypatch.setattr(train, "_save_checkpoint", real_save)
    code, _, err = cli("train", "--max-steps", "2", *FAST, "--out", str(out), "--quiet")
    assert code == 0, err
    assert [r["step"] for r in _metrics(out)] == [1, 2]


def test_a_resume_under_another_number_of_processes_is_refused(cli, interrupted_run, monkeypatch):
    """Each process's share of the batch and noise follows the process count: the run would go on
    with other losses. The refusal is one line, before anything changes."""
    before = _files(interrupted_run)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it on the main process (RANK 0)
    code, _, err = cli("train", "--resume", str(interrupted_run))
    assert code == 2 and err.strip() == (
        f"error: --resume {interrupted_run}: checkpoint-2 was saved by 1 process(es), not 2; "
        "resume with as many, or the run continues on other batches"
    )
    assert _files(interrupted_run) == before


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
         *WITH_QUALITY],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert json.loads((out / "results.json").read_text())["processes"] == 2
    # Each process holds 4 sequences; the drift sets hold all 8 (without the gather they would hold 4).
    assert all(r["drift_batch"] == 8 for r in rows)


def test_the_readmes_torchrun_command_prints_one_result(tmp_path):
    """`torchrun --nproc_per_node 2 -m tokendrift_cli train --max-steps 10 --batch-size 8 --out X`
    with its defaults: TokenDrift from the builtin checkpoint (built by both processes, 3 steps here
    instead of 1500), the quality report on. One JSON object on stdout, its tables once on stderr."""
    driver = tmp_path / "driver.py"
    driver.write_text("import sys\nimport tokendrift_cli.jobs.train as train\ntrain.BUILTIN_STEPS = 3\n"
                      "from tokendrift_cli.cli import app\napp(sys.argv[1:], prog_name='tokendrift')\n")
    out = tmp_path / "X"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(driver),
         "train", "--max-steps", "2", "--batch-size", "8", "--out", str(out), "--json", *_builtin_data(tmp_path / "cache")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # one object: a second would make this fail
    assert result["processes"] == 2 and result["objective"] == "tokendrift" and result["steps"] == 2
    assert result["quality"]["judge"] == "oracle" and result["quality"]["before"] and result["quality"]["after"]
    assert json.loads((out / "results.json").read_text()) == result
    assert done.stderr.count("quality at NFE 4") == 1 and done.stderr.count("tokendrift train · duo · tokendrift") == 1


def test_tokendrift_resolves_to_the_papers_settings_with_no_flags():
    from tokendrift_cli.spec import load_spec

    drift = load_spec("train", options={"objective": "tokendrift"}).drift
    assert (drift.variant, drift.base_loss, drift.alpha, drift.lift, drift.encoder) == ("feature", False, 1.0, "soft", "backbone-copy")
    assert (drift.features, drift.kernel, drift.temperatures, drift.queue_size) == ("paper", "paper", [0.02, 0.05, 0.2], 1024)
    assert (drift.attraction, drift.repulsion, drift.negatives) == (1.0, 1.0, "denoise")


@pytest.mark.parametrize("backbone", ["mdlm", "duo"])
def test_paper_presets_run_on_local_stand_ins_for_the_hub(cli, tmp_path, backbone):
    """tokendrift-owt-<backbone> resolves to the paper's setup; two steps run with the hub names
    swapped for a local checkpoint in the released layout, a local corpus and tokenizer."""
    from safetensors.torch import save_file
    from test_dit import H, V, reference_state_dict
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tokendrift_cli.spec import load_spec

    spec = load_spec("train", preset=f"tokendrift-owt-{backbone}")
    hub = {"mdlm": "kuleshov-group/mdlm-owt", "duo": "s-sahoo/duo"}[backbone]
    assert (spec.model.init, spec.data.source, spec.data.seq_len, spec.optim.lr) == (hub, "openwebtext", 1024, 3e-5)
    assert spec.optim.batch_size == 512 and spec.optim.max_steps == 13000 and spec.drift == type(spec.drift)()

    words = ["<|endoftext|>", "<unk>", "a", "b", "c", "d", "e", "f", "g", "h"]  # 10 ids; MDLM's [MASK] is the 11th
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="<unk>").save_pretrained(tmp_path / "tok")
    corpus = tmp_path / "owt.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(words[2 + (i * j) % 8] for j in range(7))}) + "\n" for i in range(60)))
    released = tmp_path / f"{backbone}-released"
    released.mkdir()
    save_file(reference_state_dict(), released / "model.safetensors")
    config = {"model_type": "mdlm", "n_heads": H, "model_length": 8}
    (released / "config.json").write_text(json.dumps(config | ({"time_conditioning": False} if backbone == "mdlm" else {})))
    assert V == len(words) + 1

    out = tmp_path / "run"
    code, stdout, stderr = cli(
        "train", "--preset", f"tokendrift-owt-{backbone}", "--out", str(out), "--json", "--max-steps", "2",
        "--set", f"model.init={released}", "--set", f"data.source={corpus}", "--set", f"data.tokenizer={tmp_path / 'tok'}",
        "--set", "data.seq_len=8", "--set", "optim.batch_size=4", "--set", "optim.grad_accum=2",
        "--set", "optim.mixed_precision=no", "--set", "logging.valid_sequences=4", "--set", "logging.log_every=1",
        "--set", "quality.num_samples=0",  # its judge, gpt2-large, is not reachable offline
    )
    assert code == 0, stderr
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["drift_loss"]) and math.isfinite(r["grad_logits_drift"]) for r in rows)
    assert "grad_logits_base" not in rows[0]  # the drift loss alone
    assert rows[1]["queue_fill"] > 0  # the reference queues carry features across micro-steps


def test_train_reports_quality_before_and_after_at_its_nfe(cli, tmp_path, trained_run):
    """--nfe 4: the starting checkpoint and the trained model are sampled and judged alike, and
    each equals what `tokendrift eval` reports for the same model, NFE, sample count and seed."""
    out = tmp_path / "continued"
    data = ["--set", "data.seq_len=16", "--set", "data.num_train=256", "--set", "data.num_valid=32",
            "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    code, stdout, stderr = cli(
        "train", "--init", str(trained_run), "--objective", "diffusion", "--nfe", "4", "--max-steps", "3", "--seed", "3",
        "--out", str(out), "--json", "--set", "quality.num_samples=16", "--set", "optim.batch_size=8", "--lr", "3e-3",
        "--set", "optim.warmup_steps=0",
        "--set", "logging.eval_every=0", *data,
    )
    assert code == 0, stderr
    result = json.loads(stdout)
    quality = result["quality"]
    assert quality["nfe"] == 4 and quality["judge"] == "oracle"
    # The trained model reloaded from disk scores the validation the run's last step scored in memory.
    assert quality["after"]["val_ppl"] == pytest.approx(result["val_ppl"], rel=1e-6)
    assert quality["before"]["val_ppl"] != quality["after"]["val_ppl"]
    # spec.yaml records the backbone read off the --init checkpoint, not null.
    assert yaml.safe_load((out / "spec.yaml").read_text())["model"]["backbone"] == "mdlm"
    for name, model in (("before", trained_run), ("after", out)):
        code, stdout, stderr = cli("eval", "--model", str(model), "--nfe", "4", "--num-samples", "16", "--seed", "3",
                                   "--metrics", "genppl,entropy", "--out", str(tmp_path / f"eval-{name}"), "--json")
        assert code == 0, stderr
        row = json.loads(stdout)["rows"][0]
        for metric in ("gen_ppl", "gen_ppl_se", "entropy", "entropy_se", "acceptance", "acceptance_se", "exact_gen_ppl"):
            assert quality[name][metric] == pytest.approx(row[metric], rel=1e-9), metric
        assert quality[name]["model_error"] == pytest.approx(math.log(row["gen_ppl"] / quality["exact"]["gen_ppl"]), rel=1e-9)
    assert quality["before"] != quality["after"]
    # Where they stand: the exact MDLM denoiser sampled alike (eval of exact:mdlm), and exp(entropy) of the language.
    code, stdout, stderr = cli("eval", "--model", "exact:mdlm", "--nfe", "4", "--num-samples", "16", "--seed", "3",
                               "--set", "sampling.seq_len=16", "--metrics", "genppl,entropy", "--out", str(tmp_path / "eval-exact"), "--json")
    assert code == 0, stderr
    exact = json.loads(stdout)["rows"][0]
    assert quality["exact"]["gen_ppl"] == pytest.approx(exact["gen_ppl"], rel=1e-9)
    floor = math.exp(SyntheticLanguage().entropy(16))
    assert quality["floor"]["gen_ppl"] == pytest.approx(floor, rel=1e-12)
    assert quality["exact"]["factorization_error"] == pytest.approx(math.log(exact["gen_ppl"] / floor), rel=1e-9)


def _builtin_data(cache: Path) -> list[str]:
    """Small synthetic data in its own cache, so the builtin checkpoint is built there (BUILTIN_STEPS patched)."""
    return ["--set", f"data.cache_dir={cache}", "--set", "data.num_train=128", "--set", "data.num_valid=32",
            "--set", "data.seq_len=16", "--set", "optim.batch_size=8", "--set", "logging.eval_every=0"]


def test_builtin_init_is_pretrained_once_then_read_from_the_cache(cli, tmp_path, monkeypatch):
    from tokendrift_cli.jobs import train

    monkeypatch.setattr(train, "BUILTIN_STEPS", 3)
    cache = tmp_path / "cache"
    common = ["--max-steps", "1", "--json", *_builtin_data(cache), "--set", "quality.num_samples=8"]
    code, stdout, stderr = cli("train", "--out", str(tmp_path / "first"), *common)
    assert code == 0, stderr
    init = Path(json.loads(stdout)["init"])
    assert init.parent == cache / "pretrained" and init.name.startswith("duo-tiny-")  # without --backbone: the builtin DUO
    assert "pretraining the builtin duo checkpoint" in stderr and str(init) in stderr
    built = json.loads((init / "results.json").read_text())
    assert built["steps"] == 3
    # The build's results name the folder it is in, not the .building one it was made in.
    assert (built["run_dir"], built["model_path"], built["checkpoint"]) == (str(init), str(init / "model"), str(init / "checkpoints" / "checkpoint-3"))
    assert ".building" not in json.dumps(built)
    assert not list(cache.glob("pretrained/*.building"))
    weights = init / "model" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns

    code, stdout, stderr = cli("train", "--out", str(tmp_path / "second"), "--nfe", "8", *common)
    assert code == 0, stderr
    # another target NFE, the same checkpoint: the build itself never samples
    assert json.loads(stdout)["init"] == str(init) and weights.stat().st_mtime_ns == stamp
    assert "pretraining the builtin" not in stderr

    code, _, stderr = cli("train", "--set", f"data.source={tmp_path / 'corpus.txt'}", "--out", str(tmp_path / "text"))
    assert code == 2 and "model.init: 'builtin' is pretrained on the synthetic language" in stderr


def test_the_builtin_build_leaves_the_run_its_own_accelerate_settings(tmp_path):
    """On first use the builtin checkpoint is built by a train run of its own (no accumulation, no
    mixed precision) before the run: the run, with bf16 and two accumulated micro-batches, must
    neither fail (Accelerate refuses a changed precision) nor train differently from the same run
    on the cached checkpoint. Real processes: Accelerate's state is process-wide."""
    driver = ("import sys; import tokendrift_cli.jobs.train as train; train.BUILTIN_STEPS = 3; "
              "from tokendrift_cli.cli import app; app(sys.argv[1:], prog_name='tokendrift')")
    common = ["train", "--max-steps", "2", "--quiet", *_builtin_data(tmp_path / "cache"), "--set", "quality.num_samples=0",
              "--set", "logging.log_every=1", "--set", "optim.grad_accum=2", "--set", "optim.mixed_precision=bf16"]
    for name in ("first", "cached"):
        done = subprocess.run([sys.executable, "-c", driver, *common, "--out", str(tmp_path / name)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    assert [r["loss"] for r in _metrics(tmp_path / "first")] == [r["loss"] for r in _metrics(tmp_path / "cached")]


def test_an_interrupted_builtin_build_starts_over_under_its_lock(cli, tmp_path, monkeypatch):
    """A build killed before its first checkpoint leaves `<key>.building` with a spec and metrics:
    the next use builds again there (not refused as someone else's run) and keeps only its own metrics."""
    from tokendrift_cli.jobs import train

    monkeypatch.setattr(train, "BUILTIN_STEPS", 3)
    cache = tmp_path / "cache"
    common = ["--max-steps", "1", "--json", *_builtin_data(cache), "--set", "quality.num_samples=0"]
    code, stdout, stderr = cli("train", "--out", str(tmp_path / "first"), *common)
    assert code == 0, stderr
    init = Path(json.loads(stdout)["init"])
    building = init.with_name(init.name + ".building")
    os.rename(init, building)
    shutil.rmtree(building / "model")
    (building / "results.json").unlink()
    (building / "metrics.jsonl").write_text('{"step": 7, "loss": 1.0}\n')
    code, stdout, stderr = cli("train", "--out", str(tmp_path / "second"), *common)
    assert code == 0, stderr
    assert json.loads(stdout)["init"] == str(init) and not building.exists()
    built = json.loads((init / "results.json").read_text())
    assert built["steps"] == 3
    # The build's results name the folder it is in, not the .building one it was made in.
    assert (built["run_dir"], built["model_path"], built["checkpoint"]) == (str(init), str(init / "model"), str(init / "checkpoints" / "checkpoint-3"))
    assert ".building" not in json.dumps(built)
    assert all(r["step"] <= 3 for r in _metrics(init))  # the killed build's step-7 line is gone


@pytest.mark.slow
def test_one_and_two_processes_log_the_same_lr_and_losses_for_the_same_global_batch(tmp_path):
    """Warm-up then cosine over 6 steps of 8 sequences: one process accumulating two micro-batches
    of 4, and two processes (torchrun) with 4 each, see the same sequences and noise, so they must
    log the same lr column (the closed form below) and the same losses. Accelerate alone would
    step the schedule once per process: twice per step under two."""
    import math

    common = ["train", "--objective", "diffusion", "--max-steps", "6", "--quiet", "--set", "optim.schedule=cosine",
              "--set", "optim.lr=1e-3", *WITH_QUALITY]
    one, two = tmp_path / "one", tmp_path / "two"
    done = _tokendrift(*common, "--out", str(one), "--set", "optim.grad_accum=2", "--set", "quality.num_samples=0")
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


@pytest.mark.parametrize("setting", [
    [], ["drift.variant=mirror-kl"], ["drift.variant=mirror-mse", "drift.base_loss=true"], ["drift.lift=hard-st"],
    ["drift.lift=sampled-st"], ["drift.kernel=drifting-code"], ["drift.features=layers", "drift.feature_window=4"],
    ["drift.negatives=rollout"], ["drift.attraction=0", "drift.repulsion=1"], ["drift.queue_size=4"],
])
def test_every_tokendrift_setting_trains_from_a_pretrained_checkpoint(cli, tmp_path, trained_run, setting):
    """Three steps of each setting from a pretrained model: finite losses, and each term's
    gradient norm on the logits logged (the base loss's only when it is on)."""
    out = tmp_path / "run"
    code, _, stderr = cli("train", "--init", str(trained_run), "--max-steps", "3", "--lr", "1e-3", "--out", str(out),
                          *[a for item in setting for a in ("--set", item)], *SHORT)
    assert code == 0, stderr
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert all(math.isfinite(row[k]) for k in ("loss", "drift_loss", "diffusion_loss", "grad_logits_drift"))
        assert ("grad_logits_base" in row) == ("drift.base_loss=true" in setting)
    assert rows[-1]["queue_fill"] == min(16, 4 if "drift.queue_size=4" in setting else 16)


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
