"""The benchmark scripts run end to end in their quick modes and write what docs/results.md reads."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tokendrift_cli.data.synthetic import SyntheticLanguage

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_reproduce_quick(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "reproduce-quick.json").read_text())
    keys = {(r["backbone"], r["arm"], r["nfe"]) for r in result["rows"]}
    assert keys == {(b, a, n) for b in ("mdlm", "duo") for a in ("exact", "init", "baseline", "tokendrift") for n in (4, 8, 16)}
    for row in result["rows"]:
        assert row["gen_ppl"] > 0 and 0 <= row["acceptance"] <= 1 and 0 <= row["ngram_jsd"] <= 1 and row["entropy"] >= 0
        assert row["seeds"] == 2 and row["gen_ppl_sd"] >= 0
    # Model error of each seed's row: against the exact denoiser's row of the same seed and NFE.
    exact = {(r["backbone"], r["seed"], r["nfe"]): r["gen_ppl"] for r in result["per_seed"] if r["arm"] == "exact"}
    for row in result["per_seed"]:
        assert row["model_error"] == pytest.approx(math.log(row["gen_ppl"] / exact[row["backbone"], row["seed"], row["nfe"]]), rel=1e-9, abs=1e-12)
    assert result["floor_exact"] == pytest.approx(math.exp(SyntheticLanguage().entropy(16)), rel=1e-12)
    # --exact-only puts back the exact rows of a study that lacks them, running nothing else.
    without = {**result, "per_seed": [{k: v for k, v in r.items() if k != "model_error"} for r in result["per_seed"] if r["arm"] != "exact"]}
    (tmp_path / "reproduce-quick.json").write_text(json.dumps(without))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--exact-only", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "reproduce-quick.json").read_text())["rows"] == result["rows"]
    assert set(result["floor"]) == {"mdlm", "duo"} and result["command"].endswith("--quick") and result["stage"] == "complete"
    assert result["lr"] == {"mdlm": 1e-3, "duo": 1e-3} and {r["arm"] for r in result["sweep"]} == {"baseline", "tokendrift"}
    assert {(r["backbone"], r["nfe"]) for r in result["reductions"]} == {(b, n) for b in ("mdlm", "duo") for n in (4, 8, 16)}
    steps = sorted({d["step"] for d in result["dynamics"] if d["backbone"] == "mdlm" and d["arm"] == "tokendrift"})
    assert steps == [0, 5, 10]
    assert "reduction" in (tmp_path / "reproduce-quick.md").read_text()
    # The pretraining recipe is the plan's, not train's defaults (those are for continual training
    # and have changed under the committed results once).
    pretrained = yaml.safe_load((tmp_path / "runs-quick" / "mdlm-init" / "spec.yaml").read_text())["optim"]
    assert (pretrained["lr"], pretrained["warmup_steps"]) == (3e-4, 5)
    for name in ("genppl_vs_nfe-quick.png", "genppl_vs_step-quick.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    # A second run finds every step done and runs nothing again.
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "$ tokendrift" not in again.stdout
    assert json.loads((tmp_path / "reproduce-quick.json").read_text())["rows"] == result["rows"]
    # TokenDrift under other settings is a named variant: only its arm is trained again, beside the study.
    script = [sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--out", str(tmp_path)]
    before = sorted(tmp_path.rglob("*"))
    unnamed = subprocess.run([*script, "--set", "optim.grad_accum=2"], capture_output=True, text=True, timeout=300)
    assert unnamed.returncode == 2 and "--variant" in unnamed.stderr and "Traceback" not in unnamed.stderr
    assert sorted(tmp_path.rglob("*")) == before  # refused before anything is written
    done = subprocess.run([*script, "--variant", "accum2", "--set", "optim.grad_accum=2"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    trained = [line for line in done.stdout.splitlines() if line.startswith("$ tokendrift train")]
    assert len(trained) == 2 * 3 and all("--objective tokendrift" in t and "optim.grad_accum=2" in t for t in trained)
    assert json.loads((tmp_path / "reproduce-quick.json").read_text())["rows"] == result["rows"]
    variant = json.loads((tmp_path / "reproduce-quick-accum2.json").read_text())
    assert variant["command"].endswith("--quick --variant accum2 --set optim.grad_accum=2")
    shared = [r for r in result["rows"] if r["arm"] != "tokendrift"]  # the same runs, judged with the same seeds
    assert [r for r in variant["rows"] if r["arm"] != "tokendrift"] == shared
    assert [r for r in variant["rows"] if r["arm"] == "tokendrift"] != [r for r in result["rows"] if r["arm"] == "tokendrift"]
    spec = yaml.safe_load((tmp_path / "runs-quick" / "duo-tokendrift-seed1-accum2" / "spec.yaml").read_text())
    assert spec["optim"]["grad_accum"] == 2 and spec["objective"] == "tokendrift"

    # ablate.py continues the checkpoints reproduce.py pretrained
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablate.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    ablation = json.loads((tmp_path / "ablate-quick.json").read_text())
    assert ablation["stage"] == "complete" and "[" in done.stdout  # a line per setting as its table is written
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablate import SETTINGS

    assert {(r["backbone"], r["setting"], r["seed"]) for r in ablation["rows"]} == {
        (b, s, seed) for s in ("baseline", "mirror KL + base") for b in SETTINGS[s][0].split(",") for seed in (0,)
    }
    spec = (tmp_path / "ablate-quick" / "mdlm-mirror-KL---base" / "seed0" / "spec.yaml").read_text()
    assert "variant: mirror-kl" in spec and "base_loss: true" in spec and "seq_len: 16" in spec and "lr: 0.001" in spec
    assert "| mdlm | mirror KL + base |" in (tmp_path / "ablate-quick.md").read_text()
    # --report rebuilds the same tables from the finished runs, running nothing
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablate.py"), "--quick", "--report", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "$ tokendrift" not in done.stdout and "complete" in done.stdout, done.stderr[-2000:]
    assert json.loads((tmp_path / "ablate-quick.json").read_text())["rows"] == ablation["rows"]


def test_ablate_table_averages_seeds():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablate import markdown

    rows = [{"backbone": "mdlm", "setting": "defaults", "nfe": 4, "gen_ppl": ppl, "entropy": h, "acceptance": a}
            for ppl, h, a in [(80.0, 2.9, 0.0), (90.0, 3.0, 0.1), (100.0, 3.1, 0.2)]]
    # mean 90, sample standard deviation sqrt((100 + 0 + 100) / 2) = 10
    assert markdown(rows, [4]).splitlines()[-1] == "| mdlm | defaults | 90.0 ± 10.0 | 3.000 | 0.100 |"
    assert markdown(rows[:1], [4]).splitlines()[-1] == "| mdlm | defaults | 80.0 | 2.900 | 0.000 |"


def test_ablation_changes_are_paired_by_seed_and_set_beside_the_papers():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablate import against_paper, changes

    rows = [{"backbone": "mdlm", "setting": setting, "seed": seed, "nfe": nfe, "gen_ppl": ppl}
            for setting, seed, ppl in [("baseline", 0, 100.0), ("baseline", 1, 50.0), ("hard-st", 0, 150.0), ("hard-st", 1, 50.0),
                                       ("defaults", 0, 80.0), ("defaults", 1, 40.0)] for nfe in (4, 8, 16)]
    assert changes(rows, "mdlm", "hard-st", 4) == pytest.approx([0.5, 0.0])  # 150/100 - 1 and 50/50 - 1, each seed its own baseline
    text = against_paper(rows)
    # hard-st: mean +25 %, SD sqrt(((50-25)^2 + (0-25)^2) / 1) = 35 %; the paper: 6464.88 / 1943.95 - 1 = +233 %
    assert "| hard-st | +25 ± 35 % | +233 % |" in text
    assert "| defaults | -20 ± 0 % | -89 % |" in text
    assert "Rank at NFE 4, ours: defaults < hard-st; the paper's: defaults < hard-st." in text
    assert "| queue 4 | — | -10 % |" in text  # no run yet: a dash, the paper's change still shown


@pytest.mark.slow
def test_speed_quick(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800)  # two cold compiles: minutes on a busy CPU
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "speed-quick.json").read_text())
    compared = {"train-tokendrift", "sample-4"}  # eager and compiled (the full run compiles two more: test_speed_summary_ratios)
    eager = {"train-diffusion", "train-tokendrift", "train-tokendrift-batch-only", "train-tokendrift-0.1", "train-diffusion-foreach",
             "encoder-clean", "encoder-soft", "encoder-one-pass", "sample-4", "sample-32"}
    assert sorted((r["kind"], r["compiled"]) for r in result["rows"]) == sorted([(k, False) for k in eager] + [(k, True) for k in compared])
    assert all(r["tokens_per_s"] > 0 and r["peak_mib"] > 0 and r["threads"] == 1 for r in result["rows"])
    speed = {(r["kind"], r["compiled"]): r["tokens_per_s"] for r in result["rows"]}
    # Every ratio is the one its two rows give.
    assert result["compiled_vs_eager"]["tiny"] == {k: pytest.approx(speed[k, True] / speed[k, False]) for k in compared}
    assert "train-diffusion, compiled" not in result["tokendrift_cost_vs"]  # needs a compiled diffusion step
    for against in ("train-diffusion", "train-tokendrift-batch-only", "train-tokendrift-0.1"):
        assert result["tokendrift_cost_vs"][against]["tiny"] == pytest.approx(speed[against, False] / speed["train-tokendrift", False])
    assert result["encoder_passes_vs_diffusion"]["tiny"] == {
        k: pytest.approx(speed["train-diffusion", False] / speed[f"encoder-{k}", False]) for k in ("clean", "soft", "one-pass")}
    assert result["fused_adamw_vs_foreach"]["tiny"] == pytest.approx(speed["train-diffusion", False] / speed["train-diffusion-foreach", False])
    compiled_rows = {r["kind"]: r for r in result["rows"] if r["compiled"]}
    assert all(compiled_rows[k]["compile_s"] == result["compile_s"]["tiny"][k]["cold"] > 0 for k in compared)
    assert "TokenDrift step (tiny) costs" in done.stdout and "compiled / eager (tiny): train-tokendrift" in done.stdout
    assert "1 thread(s); load average" in done.stdout


def test_speed_summary_ratios(monkeypatch):
    """speed.py's summary of a full run's rows (every compiled kind), against the rows by hand."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import speed

    rows = []
    for i, kind in enumerate(speed.KINDS):  # eager: 1000, 1100, 1200, ... tokens/s, step_s 2.0 each
        rows.append({"size": "tiny", "kind": kind, "compiled": False, "tokens_per_s": 1000.0 + 100 * i, "step_s": 2.0})
    for i, kind in enumerate(speed.COMPILED):  # compiled: 3000, 3500, ... tokens/s, step_s 0.5, compile 10, 20, ... s
        rows.append({"size": "tiny", "kind": kind, "compiled": True, "tokens_per_s": 3000.0 + 500 * i, "step_s": 0.5,
                     "compile_s": 10.0 * (i + 1), "compile_s_cached": 1.0})
    eager = {kind: 1000.0 + 100 * i for i, kind in enumerate(speed.KINDS)}
    result = speed.summarise(rows, ["tiny"], speed.COMPILED)
    assert result["compiled_vs_eager"]["tiny"] == pytest.approx(
        {"train-diffusion": 3000 / eager["train-diffusion"], "train-tokendrift": 3500 / eager["train-tokendrift"],
         "sample-4": 4000 / eager["sample-4"], "sample-32": 4500 / eager["sample-32"]})
    assert result["tokendrift_cost_vs"]["train-diffusion, compiled"]["tiny"] == pytest.approx(3000 / 3500)
    assert result["tokendrift_cost_vs"]["train-diffusion"]["tiny"] == pytest.approx(eager["train-diffusion"] / eager["train-tokendrift"])
    assert result["compile_s"]["tiny"]["sample-32"] == {"cold": 40.0, "cached": 1.0}
    # A compile of 10 s saves 2.0 - 0.5 s a step: won back after 10 / 1.5 steps.
    assert result["break_even_steps"]["tiny"]["train-diffusion"] == pytest.approx(10 / 1.5)
    assert result["fused_adamw_vs_foreach"]["tiny"] == pytest.approx(eager["train-diffusion"] / eager["train-diffusion-foreach"])


def test_speed_times_full_queues(monkeypatch):
    """speed.py times TokenDrift in its steady state: both queues full of the warm-up's features
    (the newest last, as FIFO order has them); a queue of size 0 stays empty."""
    from types import SimpleNamespace

    from tokendrift_cli.drift.queue import FeatureQueue

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import speed

    objective = SimpleNamespace(real_queue=FeatureQueue(20), gen_queue=FeatureQueue(0))
    warm_up = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # [sets, batch 3, features]
    objective.real_queue.push(warm_up)
    objective.gen_queue.push(warm_up)
    speed.fill_queues(objective)
    assert len(objective.real_queue) == 20 and len(objective.gen_queue) == 0
    assert torch.equal(objective.real_queue.features, torch.cat([warm_up] * 7, dim=1)[:, -20:])


def test_learned_judge_scores_by_hand(tmp_path, cli):
    """A judge saved as train_judge.py saves it, through `tokendrift eval --samples`, against a hand count.

    The GPT-2 is built so that its logits are a known vector u at every position (final layer norm
    scaled to zero, its bias the first unit vector, u in the first column of the tied embedding), so
    the per-token NLL is -log softmax(u)[token], independent of the network's forward pass."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tokendrift_cli.data.synthetic import SyntheticLanguage

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_judge import save

    language = SyntheticLanguage()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=language.vocab_size, n_positions=32, n_embd=8, n_layer=1, n_head=2,
                                       bos_token_id=0, eos_token_id=0))
    u = torch.randn(language.vocab_size, generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(torch.eye(8)[0])
        model.transformer.wte.weight[:, 0] = u
    save(model, language, tmp_path / "judge")
    # Language samples, two with several EOS: only the first EOS of a row is a target (the rest are padding).
    pool = language.sample(512, 32, 3)
    eos_count = (pool == language.eos_id).sum(1)
    rows = torch.cat([pool[eos_count >= 2][:2], pool[eos_count == 1][:1], pool[eos_count == 0][:3]]).tolist()
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"ids": row, "text": language.decode(row)}) + "\n" for row in rows))

    log_q = torch.log_softmax(u, 0)
    nll, count = 0.0, 0
    for row in rows:
        for t in range(1, len(row)):  # no BOS: the first token is context only
            if row[t] != 0 or 0 not in row[:t]:
                nll -= float(log_q[row[t]])
                count += 1
    assert count < 6 * 31  # the dropped later EOS are in the hand count's reach

    code, out, _ = cli("eval", "--samples", str(samples), "--genppl-model", str(tmp_path / "judge"), "--metrics", "genppl",
                       "--out", str(tmp_path / "eval"), "--json")
    assert code == 0
    row = json.loads(out)["rows"][0]
    assert row["judged_tokens"] == count
    assert row["gen_ppl"] == pytest.approx(math.exp(nll / count), rel=1e-5)


@pytest.mark.slow
def test_train_judge_and_judge_gap_quick(tmp_path, cli):
    """train_judge.py --quick learns the language; judge_gap.py --quick judges tiny reproduce-like runs with both judges."""
    # The folder layout of reproduce.py's runs, with a few steps each instead of reproduce.py --quick.
    runs = tmp_path / "runs"
    common = ["--backbone", "mdlm", "--batch-size", "8", "--set", "data.seq_len=16", "--set", "data.num_train=256",
              "--set", "data.num_valid=32", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "logging.eval_every=0", "--set", "quality.num_samples=0", "--quiet"]
    assert cli("train", *common, "--objective", "diffusion", "--init", "none", "--max-steps", "5", "--out", str(runs / "mdlm-init"))[0] == 0
    for arm, objective in (("baseline", "diffusion"), ("tokendrift", "tokendrift")):
        assert cli("train", *common, "--init", str(runs / "mdlm-init"), "--objective", objective, "--lr", "1e-2",
                   "--max-steps", "3", "--seed", "0", "--out", str(runs / f"mdlm-{arm}-seed0"))[0] == 0

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_judge.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    heldout = json.loads((tmp_path / "train_judge-quick.json").read_text())["heldout"]
    # Judge minus exact NLL of the same tokens estimates a KL: not below zero beyond noise, and small
    # next to what a judge that learned nothing pays (log |V| = 4.66 nats against the language's 1.93).
    assert -3 * heldout["kl_per_token_se"] < heldout["kl_per_token"] < 0.3
    assert heldout["exact_nll_per_token"] == pytest.approx(heldout["exact_expected_nll_per_token"], abs=0.05)

    command = [sys.executable, str(ROOT / "benchmarks" / "judge_gap.py"), "--quick", "--out", str(tmp_path), "--runs", str(runs),
               "--backbones", "mdlm"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "train_judge.py" not in done.stdout  # the judge above is found, not trained again
    result = json.loads((tmp_path / "judge_gap-quick.json").read_text())
    by_name = {r["name"]: r for r in result["rows"]}
    assert set(by_name) == {"language-L16", "mdlm-init-nfe4-T1", "mdlm-init-nfe4-T0.8", "mdlm-init-nfe4-T0.6",
                            "mdlm-baseline-seed0-nfe4-T1", "mdlm-tokendrift-seed0-nfe4-T1"}
    language, init = by_name["language-L16"], by_name["mdlm-init-nfe4-T1"]
    # Both judges tell the language from a 5-step model's samples.
    assert language["acceptance"] == 1.0 and init["acceptance"] < 0.5
    for judge in ("oracle", "learned"):
        assert language[f"{judge}_gen_ppl"] < 12 < init[f"{judge}_gen_ppl"]
    assert result["judge_heldout"] == heldout
    # The summaries, by hand from the rows.
    cold = by_name["mdlm-init-nfe4-T0.6"]
    sharpening = {s["judge"]: s for s in result["sharpening"]}
    gains = {g["judge"]: g for g in result["gains"]}
    for judge in ("oracle", "learned"):
        assert sharpening[judge]["reduction_hot_to_cold"] == pytest.approx(1 - cold[f"{judge}_gen_ppl"] / init[f"{judge}_gen_ppl"])
        baseline, tokendrift = by_name["mdlm-baseline-seed0-nfe4-T1"], by_name["mdlm-tokendrift-seed0-nfe4-T1"]
        assert gains[judge]["reduction"] == pytest.approx(1 - tokendrift[f"{judge}_gen_ppl"] / baseline[f"{judge}_gen_ppl"])
    assert "| mdlm | 4 | 1 |" in (tmp_path / "judge_gap-quick.md").read_text()
    # A second run finds every step done and runs nothing again.
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "$ " not in again.stdout
    assert json.loads((tmp_path / "judge_gap-quick.json").read_text())["rows"] == result["rows"]


def test_reproduce_processes_of_each_backbone_share_the_report(tmp_path):
    """`reproduce.py --backbones duo & reproduce.py --backbones mdlm`: each write keeps the other's rows."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from reproduce import publish

    def result(backbone: str, gen_ppl: float) -> dict:
        rows = [{"backbone": backbone, "arm": arm, "seed": seed, "nfe": 4, "gen_ppl": gen_ppl * (1 + seed), "entropy": 2.0,
                 "acceptance": 0.5, "ngram_jsd": 0.1, "model_error": 0.0} for arm in ("baseline", "exact") for seed in (0, 1)]
        return {"per_seed": rows, "dynamics": [], "sweep": [], "lr": {backbone: 1e-4}, "floor": {},
                "plan": {"nfes": [4]}, "floor_exact": None}

    publish(result("duo", 10.0), tmp_path, "-t", ["duo"])
    publish(result("mdlm", 20.0), tmp_path, "-t", ["mdlm"])
    publish(result("duo", 30.0), tmp_path, "-t", ["duo"])  # duo's next stage replaces duo's rows, keeps mdlm's
    shared = json.loads((tmp_path / "reproduce-t.json").read_text())
    assert shared["lr"] == {"mdlm": 1e-4, "duo": 1e-4}
    assert [(r["backbone"], r["arm"], r["seed"]) for r in shared["per_seed"]] == [
        (b, a, s) for b in ("mdlm", "duo") for a in ("exact", "baseline") for s in (0, 1)]
    means = {(r["backbone"], r["arm"]): r["gen_ppl"] for r in shared["rows"]}
    assert means == {("mdlm", "exact"): 30.0, ("mdlm", "baseline"): 30.0, ("duo", "exact"): 45.0, ("duo", "baseline"): 45.0}


def test_ablate_shards_are_read_as_index_of_count():
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablate import _shard

    assert _shard("1/2") == (1, 2) and _shard("0/1") == (0, 1)
    for bad in ("2/2", "-1/2", "1", "a/b"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected I/N"):
            _shard(bad)


def test_mechanism_entropy_derivative_equals_finite_difference():
    """dH/dη of ℓ − ηg at η = 0 (mechanism.py's closed form) against a central difference in float64,
    with -inf entries (SUBS) in the rows; O(h²) truncation at h = 1e-5 is far below the tolerance."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from mechanism import entropy_rate_of_change

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=generator, dtype=torch.float64)
    logits[0, :, -1] = float("-inf")
    g = torch.randn(3, 5, 7, generator=generator, dtype=torch.float64)

    def entropy(eta: float) -> torch.Tensor:
        log_p = (logits - eta * g).log_softmax(-1)
        return -(log_p.exp() * log_p.masked_fill(log_p == float("-inf"), 0.0)).sum(-1)

    h = 1e-5
    finite = (entropy(h) - entropy(-h)) / (2 * h)
    torch.testing.assert_close(entropy_rate_of_change(logits.log_softmax(-1), g), finite, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_init_study_quick_and_the_recipe_reproduce_takes_from_it(tmp_path):
    """init_study.py --quick: each budget's checkpoint judged beside the exact denoiser, model error
    = ln(model / exact); reproduce.py --init-study pretrains with the recipe of the chosen row."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "init_study.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    study = json.loads((tmp_path / "init_study-quick.json").read_text())
    assert {(r["backbone"], r["steps"]) for r in study["rows"]} == {(b, s) for b in ("duo", "mdlm") for s in (4, 8)}
    assert study["entropy"] == pytest.approx(SyntheticLanguage().entropy(16), rel=1e-12)
    for row in study["rows"]:
        assert row["val_nelbo"] is not None and set(row["gen_ppl"]) == {"4", "8"}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from init_study import choose
    from reproduce import PLANS, Study, init_recipes

    recipes = init_recipes(tmp_path, quick=True)
    for backbone, exact in study["exact"].items():
        rows = [r for r in study["rows"] if r["backbone"] == backbone]
        best = min(rows, key=lambda r: r["gen_ppl"]["4"])  # nothing is within 1.25x the exact after 8 steps
        assert choose(rows, exact) == {"size": "tiny", "steps": best["steps"], "gen_ppl_4": best["gen_ppl"]["4"],
                                       "exact_4": exact["4"], "close": False}
        checkpoint = tmp_path / "init-study-quick" / f"{backbone}-tiny" / "checkpoints" / f"checkpoint-{best['steps']}" / "model"
        assert recipes[backbone] == {"pretrain_steps": best["steps"], "pretrain_size": "tiny", "pretrain_lr": 1e-3, "pretrain_warmup": 2,
                                     "checkpoint": str(checkpoint)}
        # reproduce.py --init-study continues from that very checkpoint: copied byte for byte, nothing trained
        init = Study({**PLANS["quick"], "init_recipes": recipes}, tmp_path / "runs-converged", []).pretrain(backbone)
        assert sorted(f.name for f in (init / "model").iterdir()) == sorted(f.name for f in checkpoint.iterdir())
        assert all((init / "model" / f.name).read_bytes() == f.read_bytes() for f in checkpoint.iterdir())
        assert not (init / "spec.yaml").exists()
    # A second run finds every stage done and runs nothing again.
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "init_study.py"), "--quick", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "$ tokendrift" not in again.stdout


def test_off_support_hybrid_takes_each_context_from_its_part(tiny):
    """A hybrid of a model with itself is that model, bit for bit; the exact / model hybrid gives, per
    sequence, the exact denoiser's logits where the language can produce the context ("she eats M M M")
    and the model's where it cannot ("she eat M M M": no singular subject takes "eat")."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from off_support import Hybrid

    from tokendrift_cli.models.dit import DiTConfig, DiTModel
    from tokendrift_cli.models.exact import ExactDenoiser

    torch.manual_seed(0)
    model = DiTModel(DiTConfig.from_size("tiny", vocab_size=tiny.vocab_size, mask_token_id=tiny.mask_id,
                                         max_position_embeddings=5, num_hidden_layers=1)).eval()
    exact = ExactDenoiser(tiny, "mdlm", 5)
    M = tiny.vocab[tiny.mask_id]
    ids = torch.tensor([tiny.encode(f"she eats {M} {M} {M}"), tiny.encode(f"she eat {M} {M} {M}")])
    sigma = torch.zeros(2)
    with torch.no_grad():
        mine = model(input_ids=ids, sigma=sigma).logits
        assert torch.equal(Hybrid(exact, model, model)(ids, sigma).logits, mine)
        mixed = Hybrid(exact, exact, model)(ids, sigma).logits
    assert torch.equal(mixed[0], exact(ids).logits[0]) and torch.equal(mixed[1], mine[1].double())


@pytest.mark.slow  # ~19 s on the shared CPUs, most of it starting the script
def test_off_support_quick(tmp_path):
    """off_support.py --quick on an untrained tiny MDLM: the exact and model rows are the samples eval's
    path draws (cached sampling, no recording) judged by the oracle; the language's own noised
    samples are all possible; a context, once impossible, stays so; each hybrid follows its
    on-support part until the first impossible context (step 0's all-[MASK] context is possible)."""
    from tokendrift_cli.data.synthetic.exact import CHANNEL_EPSILON
    from tokendrift_cli.generation import generate, load_for_sampling
    from tokendrift_cli.metrics.oracle import OracleJudge
    from tokendrift_cli.models.dit import DiTConfig, DiTModel
    from tokendrift_cli.spec.sampling import SamplerSpec
    from tokendrift_cli.ui import UI

    language, folder = SyntheticLanguage(), tmp_path / "model"
    torch.manual_seed(0)
    DiTModel(DiTConfig.from_size("tiny", vocab_size=language.vocab_size, mask_token_id=language.mask_id,
                                 max_position_embeddings=16, num_hidden_layers=1)).save_pretrained(folder)
    language.tokenizer().save_pretrained(folder)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "off_support.py"), "--quick", "--model", str(folder),
                           "--nfe", "3", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "off_support-quick.json").read_text())
    samples = {r["arm"]: r for r in result["samples"]}
    sampler, nll = SamplerSpec(num_samples=16, batch_size=8, seq_len=16), {}
    for arm, reference in (("exact", "exact:mdlm"), ("model", str(folder))):
        denoiser, _, process = load_for_sampling(reference, seq_len=16)
        ids = generate(denoiser, process, sampler, 3, 0, UI(quiet=True)).ids
        assert samples[arm]["gen_ppl"] == pytest.approx(OracleJudge(language).score_ids(ids).gen_ppl, rel=1e-12)
        nll[arm] = (-language.noisy_log_prob(ids, CHANNEL_EPSILON) / 16).tolist()
    # Model error and its SE paired by sample, by hand: ln(Gen.-PPL ratio) is the mean NLL difference.
    differences = [m - e for m, e in zip(nll["model"], nll["exact"])]
    mean = sum(differences) / 16
    assert samples["model"]["model_error"] == pytest.approx(math.log(samples["model"]["gen_ppl"] / samples["exact"]["gen_ppl"]), rel=1e-12)
    assert samples["model"]["model_error_se"] == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in differences) / 15 / 16), rel=1e-12)
    assert samples["exact"]["model_error"] == 0 and samples["exact"]["model_error_se"] == 0
    steps: dict[str, list[dict]] = {}
    for row in result["steps"]:
        steps.setdefault(row["arm"], []).append(row)
        assert all(row[k] is None or row[k] >= -1e-9 for k in ("kl_possible", "kl_impossible"))  # a KL, up to float32 rounding
    assert all(r["impossible_share"] == 0 for r in steps["forward process"])
    for arm, rows in steps.items():
        shares = [r["impossible_share"] for r in rows]
        assert [r["step"] for r in rows] == [0, 1, 2] and shares[0] == 0 and shares == sorted(shares)
    assert steps["exact on / model off"][1] == {**steps["exact"][1], "arm": "exact on / model off"}
    assert steps["model on / exact off"][1] == {**steps["model"][1], "arm": "model on / exact off"}
    assert "| model on / exact off |" in (tmp_path / "off_support-quick.md").read_text()
