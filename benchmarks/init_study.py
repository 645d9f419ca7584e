"""How close can a CPU-pretrained starting checkpoint get to the exact denoiser? (issue 24)

For each backbone and DiT size, one run from scratch with the diffusion loss at a constant rate
(after a short warm-up), so its checkpoint at step B is the model a budget of B steps buys. At
each budget:

- the validation NELBO against the language's entropy per token (for MDLM the exact denoiser's
  NELBO equals the entropy);
- oracle Gen.-PPL at NFE 4, 16, 32 beside the exact denoiser's (`exact:<backbone>`, same sampler,
  seed and sample count) and the floor; model error = log(model / exact) in nats per token.

The cheapest checkpoint whose NFE-4 Gen.-PPL is within 1.25x the exact denoiser's is the init the
study's Tables 1-2 are rerun from; where none is, the table says so and the best is named.

    python benchmarks/init_study.py                       # both backbones, tiny then mini
    python benchmarks/init_study.py --backbones duo --sizes tiny
    python benchmarks/init_study.py --backbones duo & python benchmarks/init_study.py --backbones mdlm   # one per core
    python benchmarks/init_study.py --quick               # a minute, for smoke tests

Each stage is a `tokendrift` command; a stopped study continues where it stopped when run again
(the runs resume from their checkpoints). init_study.json / .md are rewritten after each stage.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from reproduce import tokendrift

from tokendrift_cli.runs import atomic_write_text

PLANS = {
    # The builtin checkpoint's rate (1e-3), no EMA: at these budgets an EMA of 0.999 still holds the
    # early weights (0.999^1500 = 22 % of the initial ones at step 1500: NFE-4 Gen.-PPL 356 against
    # the raw weights' ~100 for DUO).
    "full": dict(budgets={"tiny": [1500, 3000, 6000, 12000], "mini": [1500, 3000, 6000]}, lr=1e-3, warmup=50, ema=0.0,
                 batch_size=64, seq_len=32, nfes=[4, 16, 32], num_samples=256, seed=0),
    "quick": dict(budgets={"tiny": [4, 8]}, lr=1e-3, warmup=2, ema=0.0, batch_size=8, seq_len=16, nfes=[4, 8], num_samples=16, seed=0),
}
TARGET = 1.25  # an init "close to the exact denoiser": NFE-4 Gen.-PPL within this factor


def locations(out: Path, quick: bool) -> tuple[Path, Path]:
    """(the study's report init_study[-quick].json, the folder its runs go in), under `out`."""
    return out / f"init_study{'-quick' if quick else ''}.json", out / f"init-study-{'quick' if quick else 'full'}"


def run_folder(work: Path, backbone: str, size: str) -> Path:
    """The study's one run of `backbone` at `size`: its checkpoint at each budget is that budget's model."""
    return work / f"{backbone}-{size}"


def checkpoint_model(work: Path, backbone: str, size: str, steps: int) -> Path:
    """The model the study's run of `backbone` at `size` had after `steps` steps."""
    return run_folder(work, backbone, size) / "checkpoints" / f"checkpoint-{steps}" / "model"


def train_to(out: Path, steps: int, backbone: str, size: str, plan: dict) -> dict:
    """The run `out` continued (or started) up to `steps`; constant rate, so one long run is every budget."""
    done = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else None
    if done and done["steps"] >= steps:
        return done
    budgets = plan["budgets"][size]
    settings = ["--max-steps", str(steps), "--set", "quality.num_samples=0"]
    if out.exists():  # finished an earlier budget, or interrupted: resume from its latest checkpoint
        return tokendrift("train", "--resume", str(out), *settings, out=out, fresh=False)
    every = math.gcd(*budgets)
    return tokendrift(
        "train", "--backbone", backbone, "--init", "none", "--objective", "diffusion", "--seed", str(plan["seed"]),
        "--batch-size", str(plan["batch_size"]), "--lr", str(plan["lr"]), "--set", f"model.size={size}",
        "--set", f"data.seq_len={plan['seq_len']}", "--set", f"optim.warmup_steps={plan['warmup']}", "--set", f"optim.ema={plan['ema']}",
        "--set", f"logging.save_every={every}", "--set", f"logging.eval_every={every}",
        "--set", f"logging.keep_checkpoints={max(budgets) // every}", *settings, out=out,
    )


def judge(models: list[str], plan: dict, out: Path) -> list[dict]:
    result = tokendrift(
        "eval", *[a for m in models for a in ("--model", m)], "--nfe", ",".join(map(str, plan["nfes"])),
        "--genppl-model", "oracle", "--num-samples", str(plan["num_samples"]), "--seed", str(plan["seed"]),
        "--set", f"sampling.seq_len={plan['seq_len']}", "--set", "evaluation.metrics=[genppl,entropy]", out=out,
    )
    return result["rows"]


def val_nelbo_at(run: Path, step: int) -> float | None:
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("step") == step and "val_nelbo" in row:
            return row["val_nelbo"]
    return None


def markdown(result: dict) -> str:
    nfes = result["plan"]["nfes"]
    lines = [f"Oracle Gen.-PPL at length {result['plan']['seq_len']}, {result['plan']['num_samples']} samples, seed "
             f"{result['plan']['seed']}; model error = ln(model / exact) in nats per token. Entropy of the language: "
             f"{result['entropy']:.4f} nats per token (floor Gen.-PPL {math.exp(result['entropy']):.2f}).", ""]
    lines += ["| backbone | size | steps | val NELBO − H | " + " | ".join(f"NFE {n} | err" for n in nfes) + " |",
              "|---|---|---:|---:|" + "---:|---:|" * len(nfes)]
    for row in (r for r in result["rows"] if r["backbone"] in result["exact"]):  # another process may not have judged its exact rows yet
        exact = result["exact"][row["backbone"]]
        head = [row["backbone"], row["size"], str(row["steps"]),
                f"{row['val_nelbo'] - result['entropy']:+.4f}" if row["val_nelbo"] is not None else ""]
        cells = []
        for n in nfes:
            cells += [f"{row['gen_ppl'][str(n)]:.1f}", f"{math.log(row['gen_ppl'][str(n)] / exact[str(n)]):+.3f}"]
        lines.append("| " + " | ".join(head + cells) + " |")
    lines.append("")
    for backbone, exact in result["exact"].items():
        lines.append(f"- exact {backbone}: " + ", ".join(f"NFE {n} {exact[str(n)]:.2f}" for n in nfes))
    for backbone, choice in result["choice"].items():
        lines.append(f"- {backbone} init: {describe(choice)}")
    return "\n".join(lines) + "\n"


def choose(rows: list[dict], exact: dict) -> dict:
    """The cheapest (size, steps) within TARGET of the exact NFE-4 Gen.-PPL, else the best there is:
    {size, steps, gen_ppl_4, exact_4, close}."""
    def cost(row: dict) -> float:
        return row["steps"] * (6 if row["size"] == "mini" else 1)  # mini costs ~6x tiny per step

    close = [r for r in rows if r["gen_ppl"]["4"] <= TARGET * exact["4"]]
    best = min(close, key=cost) if close else min(rows, key=lambda r: r["gen_ppl"]["4"])
    return {"size": best["size"], "steps": best["steps"], "gen_ppl_4": best["gen_ppl"]["4"], "exact_4": exact["4"], "close": bool(close)}


def describe(choice: dict) -> str:
    found = f"{choice['size']} at {choice['steps']} steps: NFE-4 {choice['gen_ppl_4']:.1f}"
    if choice["close"]:
        return f"{found} ≤ {TARGET} × exact {choice['exact_4']:.1f} (the cheapest within)"
    return f"none within {TARGET}x the exact {choice['exact_4']:.1f}; the best is {found}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--backbones", default="duo,mdlm")
    parser.add_argument("--sizes", default=None, help="default: the plan's, tiny then mini")
    args = parser.parse_args()
    plan = PLANS["quick" if args.quick else "full"]
    report, work = locations(args.out, args.quick)
    work.mkdir(parents=True, exist_ok=True)
    result = json.loads(report.read_text()) if report.is_file() else {"rows": [], "exact": {}, "choice": {}}
    from tokendrift_cli.data.synthetic import SyntheticLanguage

    result.update(plan=plan, command="python benchmarks/init_study.py" + (" --quick" if args.quick else ""),
                  entropy=SyntheticLanguage().entropy(plan["seq_len"]))
    started = time.perf_counter()

    def write(stage: str) -> None:
        # One process per backbone may share the report: keep what the others wrote since.
        if report.is_file():
            theirs = json.loads(report.read_text())
            mine = {(r["backbone"], r["size"], r["steps"]) for r in result["rows"]}
            result["rows"] += [r for r in theirs["rows"] if (r["backbone"], r["size"], r["steps"]) not in mine]
            result["exact"] = {**theirs["exact"], **{b: result["exact"][b] for b in backbones if b in result["exact"]}}
        result["rows"].sort(key=lambda r: (r["backbone"], list(plan["budgets"]).index(r["size"]), r["steps"]))
        for backbone, exact in result["exact"].items():
            mine = [r for r in result["rows"] if r["backbone"] == backbone]
            if mine:
                result["choice"][backbone] = choose(mine, exact)
        atomic_write_text(report, json.dumps(result, indent=2) + "\n")
        atomic_write_text(report.with_suffix(".md"), markdown(result))
        print(f"[{time.perf_counter() - started:.0f} s] {stage}", flush=True)

    backbones = args.backbones.split(",")
    for backbone in backbones:
        if backbone not in result["exact"]:
            rows = judge([f"exact:{backbone}"], plan, work / f"exact-{backbone}-eval")
            result["exact"][backbone] = {str(r["nfe"]): r["gen_ppl"] for r in rows}
    # Budget-major: both backbones' curves grow together, so a stopped study has both.
    for size in (args.sizes.split(",") if args.sizes else list(plan["budgets"])):
        for steps in plan["budgets"][size]:
            for backbone in backbones:
                run = run_folder(work, backbone, size)
                if any((r["backbone"], r["size"], r["steps"]) == (backbone, size, steps) for r in result["rows"]):
                    continue
                train_to(run, steps, backbone, size, plan)
                rows = judge([str(checkpoint_model(work, backbone, size, steps))], plan, work / f"{backbone}-{size}-{steps}-eval")
                result["rows"].append({"backbone": backbone, "size": size, "steps": steps, "val_nelbo": val_nelbo_at(run, steps),
                                       "gen_ppl": {str(r["nfe"]): r["gen_ppl"] for r in rows},
                                       "entropy": {str(r["nfe"]): r["entropy"] for r in rows}})
                write(f"{backbone} {size}: {steps} steps")
    write("complete")


if __name__ == "__main__":
    main()
