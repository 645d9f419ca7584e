"""Does a learned judge reward sharpening more than the exact oracle? The same samples under both.

The paper reports MDLM at NFE 4 with Gen.-PPL 89 % lower under GPT-2 Large while sample entropy
falls from 5.92 to 5.41 (Table 1); our oracle rewards sharpening far less (docs/results.md). Here every
sample set is generated once (`tokendrift sample`) and that one samples.jsonl is judged twice
(`tokendrift eval --samples`): by the oracle and by the GPT-2 that `benchmarks/train_judge.py`
trained on the synthetic language. The sets:

- the language's own samples (the floor of both judges);
- reproduce.py's `init`, `baseline` and `tokendrift` runs (every seed found) at NFE 4 and 16;
- `init` at NFE 4 sampled at temperatures 1.0, 0.8, 0.6: sharpening alone.

Summary per backbone and judge: the slope of log Gen.-PPL against sample entropy over the
temperature sweep, the Gen.-PPL reduction it predicts for an entropy drop of the paper's relative
size (5.92 -> 5.41, 8.6 %), and TokenDrift's reduction against the matched baseline (paired by seed).

    python benchmarks/reproduce.py && python benchmarks/train_judge.py && python benchmarks/judge_gap.py
    python benchmarks/reproduce.py --quick && python benchmarks/judge_gap.py --quick   # a minute or two

Writes <out>/judge_gap[-quick].json and .md. Every step is a printed `tokendrift` command into
<out>/judge-gap-<mode>/<set>/{sample,oracle,learned}; a step that finished before is not run
again (delete that folder after retraining the judge). A missing judge is trained first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from reproduce import reductions, tokendrift
from train_judge import HELDOUT_SEED, ROOT

from tokendrift_cli.data.synthetic import SyntheticLanguage
from tokendrift_cli.runs import atomic_write_text

PLANS = {  # max_seeds: how many of reproduce.py's seeds to judge (None: all)
    "full": dict(nfes=[4, 16], temperatures=[1.0, 0.8, 0.6], num_samples=256, max_seeds=None),
    "quick": dict(nfes=[4], temperatures=[1.0, 0.8, 0.6], num_samples=16, max_seeds=1),
}
SWEEP_NFE = 4
# The paper's Table 1, MDLM at NFE 4 under GPT-2 Large: (Gen.-PPL, entropy) of continual learning and TokenDrift.
PAPER_BASELINE, PAPER_TOKENDRIFT = (1943.95, 5.92), (208.87, 5.41)
LANGUAGE_SEED = HELDOUT_SEED + 1  # a stream the judge never trained on
JUDGES = ("oracle", "learned")
ARMS = ("baseline", "tokendrift")


def model_sets(runs: Path, backbones: list[str], plan: dict) -> list[dict]:
    """reproduce.py's runs to sample: (backbone, arm, seed, NFE, temperature) and the run folder."""
    sets = []
    for backbone in backbones:
        init = runs / f"{backbone}-init"
        if not (init / "results.json").is_file():
            raise SystemExit(f"{init}: not finished; run benchmarks/reproduce.py (--quick) first")
        seeds = sorted(int(p.name.removeprefix(f"{backbone}-baseline-seed")) for p in runs.glob(f"{backbone}-baseline-seed*"))
        seeds = [k for k in seeds if all((runs / f"{backbone}-{arm}-seed{k}" / "results.json").is_file() for arm in ARMS)]
        seeds = seeds[: plan["max_seeds"]]
        for nfe in plan["nfes"]:
            temperatures = plan["temperatures"] if nfe == SWEEP_NFE else [1.0]
            sets += [dict(backbone=backbone, arm="init", seed=0, nfe=nfe, temperature=t, model=init) for t in temperatures]
            sets += [dict(backbone=backbone, arm=arm, seed=seed, nfe=nfe, temperature=1.0, model=runs / f"{backbone}-{arm}-seed{seed}")
                     for seed in seeds for arm in ARMS]
    for s in sets:
        s["name"] = f"{s['backbone']}-{s['arm']}" + (f"-seed{s['seed']}" if s["arm"] != "init" else "") + f"-nfe{s['nfe']}-T{s['temperature']:g}"
    return sets


def sample(s: dict, plan: dict, work: Path) -> tuple[Path, int]:
    """One `tokendrift sample` run: its samples.jsonl and sequence length."""
    out = work / s["name"] / "sample"
    result = tokendrift("sample", "--model", str(s["model"]), "--nfe", str(s["nfe"]), "--num-samples", str(plan["num_samples"]),
                        "--temperature", str(s["temperature"]), "--seed", str(s["seed"]), out=out)
    return out / "samples.jsonl", result["seq_len"]


def language_samples(num_samples: int, seq_len: int, work: Path) -> Path:
    """The language's own samples, in `tokendrift sample`'s samples.jsonl format."""
    out = work / f"language-L{seq_len}" / "sample"
    if not (out / "results.json").is_file():
        language = SyntheticLanguage()
        ids = language.sample(num_samples, seq_len, LANGUAGE_SEED).tolist()
        rows = [{"id": i, "ids": row, "text": language.decode(row)} for i, row in enumerate(ids)]
        atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        atomic_write_text(out / "results.json", json.dumps({"samples_path": str(out / "samples.jsonl")}) + "\n")
    return out / "samples.jsonl"


def judge(samples: Path, judges: dict[str, str]) -> dict:
    """The same file under each judge; entropy and acceptance come with the oracle's row."""
    scored = {name: tokendrift("eval", "--samples", str(samples), "--genppl-model", model, "--metrics", "genppl,entropy",
                               out=samples.parent.parent / name)["rows"][0] for name, model in judges.items()}
    oracle = scored["oracle"]
    return {"entropy": oracle["entropy"], "acceptance": oracle["acceptance"],
            **{f"{name}_gen_ppl": row["gen_ppl"] for name, row in scored.items()}}


def sharpening(rows: list[dict]) -> list[dict]:
    """Per backbone and judge, over `init`'s temperature sweep at NFE 4: d log Gen.-PPL / d entropy."""
    out = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows if r["arm"] == "init"):
        sweep = sorted((r for r in rows if (r["backbone"], r["arm"], r["nfe"]) == (backbone, "init", SWEEP_NFE)),
                       key=lambda r: -r["temperature"])
        if len(sweep) < 2:
            continue
        hot, cold = sweep[0], sweep[-1]
        # The paper's entropy drop as a share of its entropy, applied to our T = 1 entropy.
        drop = hot["entropy"] * (1 - PAPER_TOKENDRIFT[1] / PAPER_BASELINE[1])
        for name in JUDGES:
            slope = statistics.linear_regression([r["entropy"] for r in sweep], [math.log(r[f"{name}_gen_ppl"]) for r in sweep]).slope
            out.append({
                "backbone": backbone, "judge": name, "temperatures": [r["temperature"] for r in sweep],
                "entropy_hot": hot["entropy"], "entropy_cold": cold["entropy"],
                "reduction_hot_to_cold": 1 - cold[f"{name}_gen_ppl"] / hot[f"{name}_gen_ppl"],
                "slope_log_genppl_per_nat": slope,
                "paper_relative_entropy_drop_nats": drop,
                "predicted_reduction_at_paper_drop": 1 - math.exp(-slope * drop),
            })
    return out


def gains(rows: list[dict]) -> list[dict]:
    """TokenDrift against the matched baseline of the same seed, under each judge (reproduce.py's pairing)."""
    out = []
    for name in JUDGES:
        paired = [{**r, "gen_ppl": r[f"{name}_gen_ppl"]} for r in rows if r["arm"] in ARMS]
        out += [{"judge": name, **r} for r in reductions(paired)]
    return out


def markdown(result: dict) -> str:
    heldout = result["judge_heldout"]
    lines = ["Gen.-PPL of the same samples under the exact oracle and under the learned judge "
             f"(`{result['judge']}`" + (f", held-out KL to the language {heldout['kl_per_token']:.4f} nats/token" if heldout else "") + ").", "",
             "| set | NFE | T | entropy | acceptance | oracle Gen.-PPL | learned Gen.-PPL |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['nfe'] or ''} | {r['temperature'] if r['temperature'] is not None else ''} | {r['entropy']:.3f} | "
                     f"{r['acceptance']:.3f} | {r['oracle_gen_ppl']:.2f} | {r['learned_gen_ppl']:.2f} |")
    if result["sharpening"]:
        lines += ["", f"Sharpening alone (`init` at NFE {SWEEP_NFE}, temperature sweep): slope of log Gen.-PPL against entropy, "
                  f"and the reduction it predicts for an entropy drop of the paper's relative size "
                  f"({PAPER_BASELINE[1]} -> {PAPER_TOKENDRIFT[1]}, where the paper reports "
                  f"{100 * (1 - PAPER_TOKENDRIFT[0] / PAPER_BASELINE[0]):.0f} % under GPT-2 Large):", "",
                  "| backbone | judge | entropy T=1 -> coldest | Gen.-PPL reduction | slope per nat | predicted at the paper's drop |",
                  "|---|---|---|---:|---:|---:|"]
        lines += [f"| {s['backbone']} | {s['judge']} | {s['entropy_hot']:.3f} -> {s['entropy_cold']:.3f} | "
                  f"{100 * s['reduction_hot_to_cold']:.1f} % | {s['slope_log_genppl_per_nat']:.2f} | "
                  f"{100 * s['predicted_reduction_at_paper_drop']:.1f} % |" for s in result["sharpening"]]
    if result["gains"]:
        lines += ["", "TokenDrift's Gen.-PPL reduction against the matched baseline (paired by seed, mean ± SD):", "",
                  "| backbone | NFE | seeds | oracle | learned judge |", "|---|---:|---:|---:|---:|"]
        for backbone, nfe in dict.fromkeys((g["backbone"], g["nfe"]) for g in result["gains"]):
            by = {g["judge"]: g for g in result["gains"] if (g["backbone"], g["nfe"]) == (backbone, nfe)}
            lines.append(f"| {backbone} | {nfe} | {by['oracle']['seeds']} | " + " | ".join(
                f"{100 * by[j]['reduction']:.1f} ± {100 * by[j]['reduction_sd']:.1f} %" for j in JUDGES) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reproduce.py --quick's runs, one seed, NFE 4, 16 samples")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--runs", type=Path, default=None, help="reproduce.py's run folder (default: <out>/runs-<full|quick>)")
    parser.add_argument("--judge", type=Path, default=None, help="the learned judge (default: <out>/judge[-quick], trained if missing)")
    parser.add_argument("--backbones", default="mdlm,duo")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    plan, suffix = PLANS[mode], "" if mode == "full" else "-quick"
    started = time.perf_counter()
    judge_folder = args.judge or args.out / f"judge{suffix}"
    if not (judge_folder / "config.json").is_file():
        if args.judge:
            raise SystemExit(f"{judge_folder}: no judge there")
        command = [sys.executable, str(Path(__file__).parent / "train_judge.py"), "--out", str(args.out), *(["--quick"] if args.quick else [])]
        print("$ " + " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, capture_output=True)
    judges = {"oracle": "oracle", "learned": str(judge_folder)}
    work = args.out / f"judge-gap-{mode}"

    rows, seq_lens = [], set()
    for s in model_sets(args.runs or args.out / f"runs-{mode}", args.backbones.split(","), plan):
        samples, seq_len = sample(s, plan, work)
        seq_lens.add(seq_len)
        rows.append({k: v for k, v in s.items() if k != "model"} | judge(samples, judges))
    for seq_len in sorted(seq_lens):  # the floor of both judges, at the samplers' length
        samples = language_samples(plan["num_samples"], seq_len, work)
        rows.insert(0, {"name": samples.parent.parent.name, "backbone": None, "arm": "language", "seed": None, "nfe": None,
                        "temperature": None} | judge(samples, judges))

    result = {
        "rows": rows, "sharpening": sharpening(rows), "gains": gains(rows), "judge": os.path.relpath(judge_folder, ROOT),
        "judge_heldout": json.loads((judge_folder / "heldout.json").read_text()) if (judge_folder / "heldout.json").is_file() else None,
        "plan": {**plan, "mode": mode}, "seconds": time.perf_counter() - started,
        "command": "python benchmarks/judge_gap.py" + (" --quick" if args.quick else ""),
    }
    (args.out / f"judge_gap{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / f"judge_gap{suffix}.md").write_text(table)
    print(table)
    print(f"{result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
