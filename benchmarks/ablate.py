"""What each TokenDrift setting does: short continuations of reproduce.py's starting checkpoints.

For each backbone, the `init` checkpoint that `benchmarks/reproduce.py` pretrained is continued
for the same few hundred steps once per setting below (the matched baseline, the shipped
defaults, and one `--set` change or a few at a time), then judged at NFE 4 and 16 with the
oracle. Same seed, data order and noise in every arm, so the rows differ only by the setting.

    python benchmarks/reproduce.py && python benchmarks/ablate.py    # about 40 minutes on 2 cores
    python benchmarks/reproduce.py --quick && python benchmarks/ablate.py --quick

Writes <out>/ablate.json and ablate.md; every step is a printed `tokendrift` command.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from reproduce import tokendrift

ROLLOUT = "drift.negatives=rollout"
STRAIGHT = "drift.lift=straight-through"
SETTINGS = {  # name -> (backbones, --set overrides of the TokenDrift arm); "baseline" is objective diffusion
    "baseline": ("mdlm,duo", None),
    "defaults": ("mdlm,duo", []),
    "last block only": ("mdlm,duo", ["drift.feature_layers=[-1]"]),
    "per position": ("mdlm,duo", ["drift.feature_window=1"]),
    "windows of 4": ("mdlm", ["drift.feature_window=4"]),
    "weight 5": ("mdlm", ["drift.weight=5"]),
    "logit variant": ("mdlm", ["drift.variant=logit"]),
    "straight-through": ("mdlm", [STRAIGHT]),
    "roll-out": ("mdlm", [ROLLOUT]),
    "roll-out, straight-through": ("mdlm,duo", [ROLLOUT, STRAIGHT]),
    "drift loss alone": ("mdlm", ["drift.keep_diffusion=false"]),
}
PLANS = {
    "full": dict(steps=300, num_samples=256, nfes="4,16", settings=list(SETTINGS)),
    "quick": dict(steps=4, num_samples=16, nfes="4", settings=["baseline", "defaults", "roll-out, straight-through"]),
}


def ablate(backbone: str, name: str, overrides: list[str] | None, init: Path, plan: dict, work: Path, seed: int) -> list[dict]:
    out = work / f"{backbone}-{name.replace(', ', '-').replace(' ', '-')}"
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
        {"backbone": backbone, "setting": name, "overrides": overrides, "nfe": r["nfe"], "gen_ppl": r["gen_ppl"],
         "entropy": r["entropy"], "acceptance": r["acceptance"]}
        for r in judged["rows"]
    ]


def markdown(rows: list[dict], nfes: list[int]) -> str:
    head = " | ".join(f"NFE {n}: Gen.-PPL | entropy | acceptance" for n in nfes)
    lines = [f"| backbone | setting | {head} |", "|---|---|" + "---:|---:|---:|" * len(nfes)]
    keys = dict.fromkeys((r["backbone"], r["setting"]) for r in rows)
    for backbone, setting in keys:
        cells = []
        for n in nfes:
            r = next(r for r in rows if (r["backbone"], r["setting"], r["nfe"]) == (backbone, setting, n))
            cells += [f"{r['gen_ppl']:.1f}", f"{r['entropy']:.3f}", f"{r['acceptance']:.3f}"]
        lines.append(f"| {backbone} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a minute, on reproduce.py --quick's checkpoints")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--inits", type=Path, default=None, help="reproduce.py's run folder (default: <out>/runs-<mode>)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    inits = args.inits or args.out / f"runs-{mode}"
    work = args.out / f"ablate-{mode}"
    started = time.perf_counter()
    rows = []
    for name in plan["settings"]:
        backbones, overrides = SETTINGS[name]
        for backbone in backbones.split(","):
            init = inits / f"{backbone}-init"
            if not (init / "model").is_dir():
                raise SystemExit(f"{init}: no starting checkpoint; run benchmarks/reproduce.py{' --quick' if args.quick else ''} first")
            rows += ablate(backbone, name, overrides, init, plan, work, args.seed)
    rows.sort(key=lambda r: (r["backbone"] != "mdlm", plan["settings"].index(r["setting"]), r["nfe"]))
    result = {
        "rows": rows,
        "plan": {**plan, "mode": mode, "seed": args.seed},
        "command": "python benchmarks/ablate.py" + (" --quick" if args.quick else ""),
        "seconds": time.perf_counter() - started,
    }
    suffix = "" if mode == "full" else "-quick"
    (args.out / f"ablate{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(rows, [int(n) for n in plan["nfes"].split(",")])
    (args.out / f"ablate{suffix}.md").write_text(table)
    print(table)
    print(f"{result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
