"""The benchmark scripts run end to end in their quick modes and write what docs/results.md reads."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_reproduce_quick(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "reproduce-quick.json").read_text())
    keys = {(r["backbone"], r["arm"], r["nfe"]) for r in result["rows"]}
    assert keys == {(b, a, n) for b in ("mdlm", "duo") for a in ("init", "baseline", "tokendrift") for n in (4, 8, 16)}
    for row in result["rows"]:
        assert row["gen_ppl"] > 0 and 0 <= row["acceptance"] <= 1 and 0 <= row["ngram_jsd"] <= 1 and row["entropy"] >= 0
    assert set(result["floor"]) == {"mdlm", "duo"} and result["command"].endswith("--quick")
    steps = sorted({d["step"] for d in result["dynamics"] if d["backbone"] == "mdlm" and d["arm"] == "tokendrift"})
    assert steps == [5, 10]
    assert "reduction" in (tmp_path / "reproduce-quick.md").read_text()
    for name in ("genppl_vs_nfe-quick.png", "genppl_nfe4_vs_step-quick.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"

    # ablate.py continues the checkpoints reproduce.py pretrained
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablate.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    ablation = json.loads((tmp_path / "ablate-quick.json").read_text())
    assert {(r["backbone"], r["setting"], r["seed"]) for r in ablation["rows"]} == {
        (b, s, seed) for b in ("mdlm", "duo") for s in ("baseline", "defaults", "roll-out, straight-through") for seed in (0, 1)
    }
    spec = (tmp_path / "ablate-quick" / "mdlm-roll-out-straight-through" / "seed1" / "spec.yaml").read_text()
    assert "negatives: rollout" in spec and "lift: straight-through" in spec and "seq_len: 16" in spec and "seed: 1" in spec
    assert "| mdlm | defaults |" in (tmp_path / "ablate-quick.md").read_text()


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
    assert kinds == {"train-diffusion", "train-tokendrift", "sample-4", "sample-32"}
    assert all(r["tokens_per_s"] > 0 and r["peak_mib"] > 0 for r in result["rows"])
    assert result["tokendrift_overhead"]["tiny"] > 0
    assert "TokenDrift step costs" in done.stdout
