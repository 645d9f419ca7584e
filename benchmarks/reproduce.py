"""Reproduce the design of TokenDrift's headline experiment on the built-in synthetic language.

For each backbone (MDLM, DUO): pretrain a tiny model with the diffusion loss (our "released
checkpoint"), continue it for the same steps two ways — the matched baseline (objective
diffusion) and TokenDrift — and judge all three at NFE 4, 8, 16, 32 with the exact oracle, beside
the floor (the language's own samples). Gen.-PPL at NFE 4 is also tracked over continuation
(the paper's training-dynamics figure) from the checkpoints each arm saves.

    python benchmarks/reproduce.py            # full run, about an hour on a 2-core CPU
    python benchmarks/reproduce.py --quick    # a few minutes, for smoke tests

Writes <out>/reproduce.json, reproduce.md and the PNG plots. Every step is a `tokendrift`
command, printed as it runs, so any number can be re-derived by hand.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

# The NFE sweep stops at the sequence length: a sampler makes at most one call per position.
PLANS = {
    "full": dict(pretrain_steps=3000, continue_steps=1000, checkpoint_every=200, num_samples=256, batch_size=64, seq_len=32, nfes=[4, 8, 16, 32]),
    "quick": dict(pretrain_steps=30, continue_steps=10, checkpoint_every=5, num_samples=16, batch_size=8, seq_len=16, nfes=[4, 8, 16]),
}
ARMS = ["init", "baseline", "tokendrift"]


def tokendrift(*args: str) -> dict:
    command = [sys.executable, "-m", "tokendrift_cli", *args, "--json", "--quiet"]
    print("$ tokendrift " + " ".join(shlex.quote(a) for a in args), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
    return json.loads(done.stdout)


def run_backbone(backbone: str, plan: dict, work: Path, seed: int, extra: list[str]) -> tuple[list[dict], list[dict], dict]:
    common = [
        "--backbone", backbone, "--seed", str(seed), "--batch-size", str(plan["batch_size"]),
        "--set", f"data.seq_len={plan['seq_len']}", "--set", "logging.eval_every=0",
    ]
    runs = {"init": work / f"{backbone}-init"}
    tokendrift("train", *common, "--objective", "diffusion", "--max-steps", str(plan["pretrain_steps"]), "--out", str(runs["init"]))
    for arm in ("baseline", "tokendrift"):
        runs[arm] = work / f"{backbone}-{arm}"
        objective = "diffusion" if arm == "baseline" else "tokendrift"
        tokendrift(
            "train", *common, "--init", str(runs["init"]), "--objective", objective,
            "--max-steps", str(plan["continue_steps"]), "--out", str(runs[arm]),
            "--set", f"logging.save_every={plan['checkpoint_every']}", "--set", "logging.keep_checkpoints=1000",
            "--set", "optim.warmup_steps=0", *(extra if arm == "tokendrift" else []),
        )
    judged = tokendrift(
        "eval", *[a for arm in ARMS for a in ("--model", str(runs[arm]))], "--nfe", ",".join(map(str, plan["nfes"])),
        "--genppl-model", "oracle", "--num-samples", str(plan["num_samples"]), "--seed", str(seed),
        "--out", str(work / f"{backbone}-eval"),
    )
    arm_of = {str(path): arm for arm, path in runs.items()}
    rows = [
        {"backbone": backbone, "arm": arm_of[r["source"]], "nfe": r["nfe"], "gen_ppl": r["gen_ppl"],
         "entropy": r["entropy"], "acceptance": r["acceptance"], "ngram_jsd": r["ngram_jsd"]}
        for r in judged["rows"]
    ]
    dynamics = []
    for arm in ("baseline", "tokendrift"):
        checkpoints = sorted((runs[arm] / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        models = [c / "model" for c in checkpoints]
        scored = tokendrift(
            "eval", *[a for m in models for a in ("--model", str(m))], "--nfe", "4", "--genppl-model", "oracle",
            "--num-samples", str(plan["num_samples"]), "--seed", str(seed), "--metrics", "genppl,entropy",
            "--out", str(work / f"{backbone}-{arm}-dynamics"),
        )
        for checkpoint, row in zip(checkpoints, scored["rows"]):
            dynamics.append({"backbone": backbone, "arm": arm, "step": int(checkpoint.name.split("-")[1]), "gen_ppl": row["gen_ppl"]})
    return rows, dynamics, judged["floor"]


def markdown(rows: list[dict], floors: dict) -> str:
    lines = ["| backbone | arm | NFE | Gen.-PPL | entropy | acceptance | n-gram JSD |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['arm']} | {r['nfe']} | {r['gen_ppl']:.3f} | {r['entropy']:.3f} | {r['acceptance']:.3f} | {r['ngram_jsd']:.3f} |")
    lines.append("")
    for backbone, floor in floors.items():
        lines.append(f"Floor ({backbone} length): Gen.-PPL of the language's own samples {floor['gen_ppl']:.3f} (exact {floor['exact_gen_ppl']:.3f}).")
    lines.append("")
    lines.append("| backbone | Gen.-PPL @ NFE 4: baseline | TokenDrift | reduction |")
    lines.append("|---|---:|---:|---:|")
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        at4 = {r["arm"]: r["gen_ppl"] for r in rows if r["backbone"] == backbone and r["nfe"] == 4}
        lines.append(f"| {backbone} | {at4['baseline']:.3f} | {at4['tokendrift']:.3f} | {100 * (1 - at4['tokendrift'] / at4['baseline']):.1f} % |")
    return "\n".join(lines) + "\n"


def plots(rows: list[dict], dynamics: list[dict], out: Path, suffix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    fig, axes = plt.subplots(1, len(backbones), figsize=(5 * len(backbones), 3.6), squeeze=False)
    for ax, backbone in zip(axes[0], backbones):
        for arm in ARMS:
            mine = [r for r in rows if r["backbone"] == backbone and r["arm"] == arm]
            ax.plot([r["nfe"] for r in mine], [r["gen_ppl"] for r in mine], marker="o", label=arm)
        ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="oracle Gen.-PPL", title=backbone.upper())
        nfes = sorted({r["nfe"] for r in rows})
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.legend()
    fig.savefig(out / f"genppl_vs_nfe{suffix}.png", dpi=120, bbox_inches="tight")
    fig, axes = plt.subplots(1, len(backbones), figsize=(5 * len(backbones), 3.6), squeeze=False)
    for ax, backbone in zip(axes[0], backbones):
        for arm in ("baseline", "tokendrift"):
            mine = [d for d in dynamics if d["backbone"] == backbone and d["arm"] == arm]
            ax.plot([d["step"] for d in mine], [d["gen_ppl"] for d in mine], marker="o", label=arm)
        ax.set(yscale="log", xlabel="continuation step", ylabel="oracle Gen.-PPL @ NFE 4", title=backbone.upper())
        ax.legend()
    fig.savefig(out / f"genppl_nfe4_vs_step{suffix}.png", dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes instead of an hour")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: <out>/runs-<mode>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbones", default="mdlm,duo")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra --set for the TokenDrift arm")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / f"runs-{mode}"
    extra = [a for item in args.extra for a in ("--set", item)]
    started = time.perf_counter()
    rows, dynamics, floors = [], [], {}
    for backbone in args.backbones.split(","):
        backbone_rows, backbone_dynamics, floors[backbone] = run_backbone(backbone, plan, work, args.seed, extra)
        rows += backbone_rows
        dynamics += backbone_dynamics
    result = {
        "rows": rows,
        "floor": floors,
        "dynamics": dynamics,
        "plan": {**plan, "mode": mode, "seed": args.seed, "tokendrift_overrides": args.extra},
        "command": "python benchmarks/reproduce.py" + (" --quick" if args.quick else "") + "".join(f" --set {e}" for e in args.extra),
        "seconds": time.perf_counter() - started,
    }
    suffix = "" if mode == "full" else "-quick"
    (args.out / f"reproduce{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(rows, floors)
    (args.out / f"reproduce{suffix}.md").write_text(table)
    plots(rows, dynamics, args.out, suffix)
    print(table)
    print(f"{result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
