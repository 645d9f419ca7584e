"""What each TokenDrift setting does: short continuations of reproduce.py's starting checkpoints.

For each backbone, the `init` checkpoint that `benchmarks/reproduce.py` pretrained is continued
for the same few hundred steps once per setting below (the matched baseline, the shipped
defaults, and one `--set` change or a few at a time), then judged at NFE 4 and 16 with the
oracle. Same seed, data order and noise in every arm, so the rows differ only by the setting.

    python benchmarks/reproduce.py && python benchmarks/ablate.py    # 22 + 27 minutes on the 2-core CPU of 2026-11-24
    python benchmarks/ablate.py --plan seeds    # baseline and defaults over 3 seeds: the noise scale
    python benchmarks/reproduce.py --quick && python benchmarks/ablate.py --quick

Writes <out>/ablate[-<plan>].json and .md (with several seeds: mean ± standard deviation);
every step is a printed `tokendrift` command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from reproduce import tokendrift

ROLLOUT = "drift.negatives=rollout"
STRAIGHT = "drift.lift=straight-through"
SETTINGS = {  # name -> (backbones, --set overrides of the TokenDrift arm); "baseline" is objective diffusion
    "baseline": ("mdlm,duo", None),
    "defaults": ("mdlm,duo", []),
    "last block only": ("mdlm,duo", ["drift.feature_layers=[-1]"]),
    "second block only": ("mdlm", ["drift.feature_layers=[2]"]),
    "embeddings only": ("mdlm", ["drift.feature_layers=[0]"]),
    "kernel temperatures x3": ("mdlm", ["drift.temperatures=[0.06,0.15,0.6]"]),
    "per position": ("mdlm,duo", ["drift.feature_window=1"]),
    "windows of 4": ("mdlm", ["drift.feature_window=4"]),
    "weight 5": ("mdlm", ["drift.weight=5"]),
    "logit variant": ("mdlm", ["drift.variant=logit"]),
    "straight-through": ("mdlm", [STRAIGHT]),
    "roll-out": ("mdlm", [ROLLOUT]),
    "roll-out, straight-through": ("mdlm,duo", [ROLLOUT, STRAIGHT]),
    "drift loss alone": ("mdlm", ["drift.keep_diffusion=false"]),
}
PLANS = {  # "inits": which reproduce.py run's checkpoints are continued
    "full": dict(steps=300, num_samples=256, nfes="4,16", settings=list(SETTINGS), seeds=[0], inits="full"),
    "seeds": dict(steps=300, num_samples=256, nfes="4,16", settings=["baseline", "defaults"], seeds=[0, 1, 2], inits="full"),
    "quick": dict(steps=4, num_samples=16, nfes="4", settings=["baseline", "defaults", "roll-out, straight-through"], seeds=[0, 1], inits="quick"),
}


def ablate(backbone: str, name: str, overrides: list[str] | None, init: Path, plan: dict, work: Path, seed: int) -> list[dict]:
    out = work / f"{backbone}-{name.replace(', ', '-').replace(' ', '-')}" / f"seed{seed}"
    objective = ["--objective", "diffusion"] if overrides is None else ["--objective", "tokendrift"]
    sets = [a for item in overrides or [] for a in ("--set", item)]
    tokendrift(  # the init run's spec (data, size, batch), continued as reproduce.py continues it
        "train", "--spec", str(init / "spec.yaml"), "--backbone", backbone, "--init", str(init), "--seed", str(seed),
        *objective, *sets, "--max-steps", str(plan["steps"]), "--out", str(out),
        "--set", "optim.warmup_steps=0", "--set", "logging.eval_every=0", "--set", "logging.save_every=0",
    )
    judged = tokendrift(
        "eval", "--model", str(out), "--nfe", plan["nfes"], "--genppl-model", "oracle",
        "--num-samples", str(plan["num_samples"]), "--seed", str(seed), "--out", str(out) + "-eval",
    )
    return [
        {"backbone": backbone, "setting": name, "overrides": overrides, "seed": seed, "nfe": r["nfe"], "gen_ppl": r["gen_ppl"],
         "entropy": r["entropy"], "acceptance": r["acceptance"]}
        for r in judged["rows"]
    ]


def markdown(rows: list[dict], nfes: list[int]) -> str:
    """One line per backbone × setting; over several seeds, Gen.-PPL as mean ± standard deviation
    and entropy, acceptance as means."""
    head = " | ".join(f"NFE {n}: Gen.-PPL | entropy | acceptance" for n in nfes)
    lines = [f"| backbone | setting | {head} |", "|---|---|" + "---:|---:|---:|" * len(nfes)]
    keys = dict.fromkeys((r["backbone"], r["setting"]) for r in rows)
    for backbone, setting in keys:
        cells = []
        for n in nfes:
            runs = [r for r in rows if (r["backbone"], r["setting"], r["nfe"]) == (backbone, setting, n)]
            ppl = [r["gen_ppl"] for r in runs]
            spread = f" ± {statistics.stdev(ppl):.1f}" if len(ppl) > 1 else ""
            cells += [f"{statistics.mean(ppl):.1f}{spread}", f"{statistics.mean(r['entropy'] for r in runs):.3f}",
                      f"{statistics.mean(r['acceptance'] for r in runs):.3f}"]
        lines.append(f"| {backbone} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", choices=list(PLANS), default="full")
    parser.add_argument("--quick", dest="plan", action="store_const", const="quick", help="--plan quick: a minute, on reproduce.py --quick's checkpoints")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--inits", type=Path, default=None, help="reproduce.py's run folder (default: <out>/runs-<full|quick>)")
    args = parser.parse_args()
    plan = PLANS[args.plan]
    inits = args.inits or args.out / f"runs-{plan['inits']}"
    work = args.out / f"ablate-{args.plan}"
    started = time.perf_counter()
    rows = []
    for name in plan["settings"]:
        backbones, overrides = SETTINGS[name]
        for backbone in backbones.split(","):
            init = inits / f"{backbone}-init"
            if not (init / "model").is_dir():
                raise SystemExit(f"{init}: no starting checkpoint; run benchmarks/reproduce.py{' --quick' if plan['inits'] == 'quick' else ''} first")
            for seed in plan["seeds"]:
                rows += ablate(backbone, name, overrides, init, plan, work, seed)
    rows.sort(key=lambda r: (r["backbone"] != "mdlm", plan["settings"].index(r["setting"]), r["seed"], r["nfe"]))
    suffix = "" if args.plan == "full" else f"-{args.plan}"
    result = {
        "rows": rows,
        "plan": {**plan, "name": args.plan},
        "command": "python benchmarks/ablate.py" + ("" if args.plan == "full" else f" --plan {args.plan}"),
        "seconds": time.perf_counter() - started,
    }
    (args.out / f"ablate{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(rows, [int(n) for n in plan["nfes"].split(",")])
    (args.out / f"ablate{suffix}.md").write_text(table)
    print(table)
    print(f"{result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
