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
    assert keys == {(b, a, n) for b in ("mdlm", "duo") for a in ("init", "baseline", "tokendrift") for n in (4, 8, 16, 32)}
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
    assert {(r["backbone"], r["setting"]) for r in ablation["rows"]} == {
        (b, s) for b in ("mdlm", "duo") for s in ("baseline", "defaults", "roll-out, straight-through")
    }
    spec = (tmp_path / "ablate-quick" / "mdlm-roll-out-straight-through" / "spec.yaml").read_text()
    assert "negatives: rollout" in spec and "lift: straight-through" in spec and "seq_len: 16" in spec
    assert "| mdlm | defaults |" in (tmp_path / "ablate-quick.md").read_text()


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
