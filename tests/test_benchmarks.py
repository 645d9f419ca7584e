"""The benchmark scripts run end to end in their quick modes and write what docs/results.md reads."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_reproduce_quick(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "reproduce-quick.json").read_text())
    keys = {(r["backbone"], r["arm"], r["nfe"]) for r in result["rows"]}
    assert keys == {(b, a, n) for b in ("mdlm", "duo") for a in ("init", "baseline", "tokendrift") for n in (4, 8, 16, 32)}
    for row in result["rows"]:
        assert row["gen_ppl"] > 0 and 0 <= row["acceptance"] <= 1 and 0 <= row["ngram_jsd"] <= 1 and row["entropy"] >= 0
        assert row["seeds"] == 2 and row["gen_ppl_sd"] >= 0
    assert set(result["floor"]) == {"mdlm", "duo"} and result["command"].endswith("--quick") and result["stage"] == "complete"
    assert result["lr"] == {"mdlm": 1e-3, "duo": 1e-3} and {r["arm"] for r in result["sweep"]} == {"baseline", "tokendrift"}
    assert {(r["backbone"], r["nfe"]) for r in result["reductions"]} == {(b, n) for b in ("mdlm", "duo") for n in (4, 8, 16, 32)}
    steps = sorted({d["step"] for d in result["dynamics"] if d["backbone"] == "mdlm" and d["arm"] == "tokendrift"})
    assert steps == [0, 5, 10]
    assert "reduction" in (tmp_path / "reproduce-quick.md").read_text()
    for name in ("genppl_vs_nfe-quick.png", "genppl_vs_step-quick.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    # A second run finds every step done and runs nothing again.
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "$ tokendrift" not in again.stdout
    assert json.loads((tmp_path / "reproduce-quick.json").read_text())["rows"] == result["rows"]

    # ablate.py continues the checkpoints reproduce.py pretrained
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablate.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    ablation = json.loads((tmp_path / "ablate-quick.json").read_text())
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablate import SETTINGS

    assert {(r["backbone"], r["setting"], r["seed"]) for r in ablation["rows"]} == {
        (b, s, seed) for s in ("baseline", "mirror KL + base") for b in SETTINGS[s][0].split(",") for seed in (0,)
    }
    spec = (tmp_path / "ablate-quick" / "mdlm-mirror-KL---base" / "seed0" / "spec.yaml").read_text()
    assert "variant: mirror-kl" in spec and "base_loss: true" in spec and "seq_len: 16" in spec and "lr: 0.001" in spec
    assert "| mdlm | mirror KL + base |" in (tmp_path / "ablate-quick.md").read_text()


def test_ablate_table_averages_seeds():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablate import markdown

    rows = [{"backbone": "mdlm", "setting": "defaults", "nfe": 4, "gen_ppl": ppl, "entropy": h, "acceptance": a}
            for ppl, h, a in [(80.0, 2.9, 0.0), (90.0, 3.0, 0.1), (100.0, 3.1, 0.2)]]
    # mean 90, sample standard deviation sqrt((100 + 0 + 100) / 2) = 10
    assert markdown(rows, [4]).splitlines()[-1] == "| mdlm | defaults | 90.0 ± 10.0 | 3.000 | 0.100 |"
    assert markdown(rows[:1], [4]).splitlines()[-1] == "| mdlm | defaults | 80.0 | 2.900 | 0.000 |"


def test_speed_quick(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "speed-quick.json").read_text())
    kinds = {r["kind"] for r in result["rows"]}
    assert kinds == {"train-diffusion", "train-tokendrift", "train-tokendrift-batch-only", "train-tokendrift-0.1", "sample-4", "sample-32"}
    assert all(r["tokens_per_s"] > 0 and r["peak_mib"] > 0 for r in result["rows"])
    assert set(result["tokendrift_cost_vs"]) == {"train-diffusion", "train-tokendrift-batch-only", "train-tokendrift-0.1"}
    assert all(by_size["tiny"] > 0 for by_size in result["tokendrift_cost_vs"].values())
    assert "TokenDrift step (tiny) costs" in done.stdout


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

