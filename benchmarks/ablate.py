"""The paper's ablations (Tables 3–6) and ours: continuations of reproduce.py's starting checkpoints.

For each backbone, the `init` checkpoint that `benchmarks/reproduce.py` pretrained is continued
for the same steps once per setting below (the matched baseline, the paper's defaults, and one
`--set` change or a few at a time) over three seeds, at the learning rate reproduce.py chose on
the baseline arm, then judged with the oracle. Same data order and noise per seed in every arm,
so the rows of one seed differ only by the setting.

    python benchmarks/reproduce.py && python benchmarks/ablate.py
    python benchmarks/reproduce.py --quick && python benchmarks/ablate.py --quick
    python benchmarks/reproduce.py --init-study && python benchmarks/ablate.py --plan converged

Writes <out>/ablate[-quick].json and .md (mean ± standard deviation over seeds); every step is a
printed `tokendrift` command, and a step that finished before is not run again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from reproduce import PLANS as PRETRAIN_PLANS
from reproduce import tokendrift

from tokendrift_cli.runs import atomic_write_text

SETTINGS = {  # name -> (backbones, --set overrides of the TokenDrift arm); "baseline" is objective diffusion
    "baseline": ("mdlm,duo", None),
    "defaults": ("mdlm,duo", []),  # the paper's: soft lift, feature L2, drift alone, queues 1024, 1:1
    # Table 3: the encoder's input
    "hard-st": ("mdlm", ["drift.lift=hard-st"]),
    "sampled-st": ("mdlm", ["drift.lift=sampled-st"]),
    # Table 4: target space and base loss, and the mirror step η (the paper gives none)
    "mirror L2": ("mdlm", ["drift.variant=mirror-mse"]),
    "mirror KL": ("mdlm", ["drift.variant=mirror-kl"]),
    "feature L2 + base": ("mdlm,duo", ["drift.base_loss=true"]),
    "mirror L2 + base": ("mdlm", ["drift.variant=mirror-mse", "drift.base_loss=true"]),
    "mirror KL + base": ("mdlm", ["drift.variant=mirror-kl", "drift.base_loss=true"]),
    "mirror KL, eta 5": ("mdlm", ["drift.variant=mirror-kl", "drift.mirror_step=5"]),
    "mirror KL, eta 50": ("mdlm", ["drift.variant=mirror-kl", "drift.mirror_step=50"]),
    # Table 5: reference-set size
    "queue 4": ("mdlm", ["drift.queue_size=4"]),
    "queue 64": ("mdlm", ["drift.queue_size=64"]),
    # Table 6: attraction : repulsion
    "1:0": ("mdlm", ["drift.attraction=1", "drift.repulsion=0"]),
    "2:1": ("mdlm", ["drift.attraction=2", "drift.repulsion=1"]),
    "1:2": ("mdlm", ["drift.attraction=1", "drift.repulsion=2"]),
    "0:1": ("mdlm", ["drift.attraction=0", "drift.repulsion=1"]),
    # App. F's micro-step structure: a few sequences per micro-step (8 here, 4 GPUs x 2 there),
    # accumulated to the global batch, queues spanning about two optimiser steps (128 here, 1024 there)
    "paper micro-steps": ("mdlm,duo", ["optim.grad_accum=8", "drift.queue_size=128"]),
    # Ours: the drifting code's kernel; 0.1's feature space (every block its own set)
    "drifting-code kernel": ("mdlm", ["drift.kernel=drifting-code"]),
    "layer features": ("mdlm", ["drift.features=layers"]),
}
# The paper's MDLM ablations (arXiv 2605.19470): Gen.-PPL at NFE 4, 8, 16 under GPT-2 Large, and the
# reference each table is read against. Tables 3-4 are at checkpoint 13k, against the matched
# continuation (Table 1); Tables 5-6 at 5k report no continuation, so they are read against the
# released MDLM (Table 1; the 13k continuation is within 1 % of it).
PAPER = {
    "Table 3 (encoder input)": ((1943.95, 787.24, 337.85), {
        "defaults": (208.87, 55.04, 27.35), "hard-st": (6464.88, 1036.62, 447.63)}),
    "Table 4 (target space, base loss)": ((1943.95, 787.24, 337.85), {
        "defaults": (208.87, 55.04, 27.35), "mirror L2": (495.64, 84.66, 26.72), "mirror KL": (295.96, 61.37, 21.70),
        "feature L2 + base": (502.75, 96.07, 33.92), "mirror L2 + base": (1962.85, 786.83, 361.85),
        "mirror KL + base": (1943.95, 787.24, 283.49)}),
    "Table 5 (queue size)": ((1942.33, 799.52, 338.81), {
        "queue 4": (1756.70, 428.03, 145.21), "queue 64": (1151.60, 261.55, 96.61), "defaults": (729.17, 166.96, 67.94)}),
    "Table 6 (attraction : repulsion)": ((1942.33, 799.52, 338.81), {
        "1:0": (726.42, 232.23, 107.14), "2:1": (691.49, 219.42, 107.02), "defaults": (729.17, 166.96, 67.94),
        "1:2": (16996.35, 19553.59, 19167.79), "0:1": (17727.67, 20322.75, 19778.34)}),
}
PAPER_NFES = (4, 8, 16)

PLANS = {  # "inits": which reproduce.py run's checkpoints are continued
    "full": dict(steps=500, num_samples=256, nfes="4,8,16", settings=list(SETTINGS), seeds=[0, 1, 2], inits="full", paper_tables=True),
    # From the inits closest to the exact denoiser (reproduce.py --init-study): the micro-step structure beside the defaults
    "converged": dict(steps=500, num_samples=256, nfes="4,8,16,32", settings=["baseline", "defaults", "paper micro-steps"], seeds=[0, 1, 2],
                      inits="converged", paper_tables=False),
    "quick": dict(steps=4, num_samples=16, nfes="4", settings=["baseline", "mirror KL + base"], seeds=[0], inits="quick", paper_tables=True),
}


REPRODUCE_FLAG = {"full": "", "converged": " --init-study", "quick": " --quick"}


def run_folder(work: Path, backbone: str, name: str, seed: int) -> Path:
    return work / f"{backbone}-{''.join(c if c.isalnum() else '-' for c in name)}" / f"seed{seed}"


def eval_folder(run: Path) -> Path:
    return run.with_name(run.name + "-eval")


def ablate(backbone: str, name: str, overrides: list[str] | None, init: Path, lr: float, plan: dict, work: Path, seed: int) -> None:
    out = run_folder(work, backbone, name, seed)
    objective = ["--objective", "diffusion"] if overrides is None else ["--objective", "tokendrift"]
    sets = [a for item in overrides or [] for a in ("--set", item)]
    pretrain = PRETRAIN_PLANS["quick" if plan["inits"] == "quick" else "full"]
    tokendrift(  # continued as reproduce.py continues it: same data, batch and schedule
        "train", "--backbone", backbone, "--init", str(init), "--seed", str(seed), "--batch-size", str(pretrain["batch_size"]),
        "--set", f"data.seq_len={pretrain['seq_len']}", *objective, *sets, "--max-steps", str(plan["steps"]), "--lr", str(lr),
        "--set", "optim.warmup_steps=0", "--set", "logging.eval_every=0", "--set", "logging.save_every=0",
        "--set", "quality.num_samples=0", out=out,
    )
    tokendrift(
        "eval", "--model", str(out), "--nfe", plan["nfes"], "--genppl-model", "oracle",
        "--num-samples", str(plan["num_samples"]), "--seed", str(seed), out=eval_folder(out),
    )


def finished_rows(jobs: list[tuple[int, str, str]], work: Path) -> list[dict]:
    """The judged rows of every job whose evaluation finished, whichever process ran it."""
    rows = []
    for seed, name, backbone in jobs:
        judged = eval_folder(run_folder(work, backbone, name, seed)) / "results.json"
        if judged.is_file():
            rows += [{"backbone": backbone, "setting": name, "overrides": SETTINGS[name][1], "seed": seed, "nfe": r["nfe"],
                      "gen_ppl": r["gen_ppl"], "entropy": r["entropy"], "acceptance": r["acceptance"]}
                     for r in json.loads(judged.read_text())["rows"]]
    return rows


def changes(rows: list[dict], backbone: str, setting: str, nfe: int) -> list[float]:
    """A setting's Gen.-PPL relative to the baseline of the same seed (same data order and noise), per seed."""
    at = {(r["setting"], r["seed"]): r["gen_ppl"] for r in rows if (r["backbone"], r["nfe"]) == (backbone, nfe)}
    return [at[setting, seed] / at["baseline", seed] - 1 for (name, seed) in at if name == setting and ("baseline", seed) in at]


def against_paper(rows: list[dict]) -> str:
    """Each of the paper's MDLM tables: our change against our baseline beside the paper's against
    its reference, per NFE, and both rank orders at NFE 4 (lowest Gen.-PPL first)."""
    lines = []
    for table, (reference, settings) in PAPER.items():
        lines += [f"{table}: Gen.-PPL change against the baseline, ours (mean ± SD over seeds) | the paper's", "",
                  "| setting | " + " | ".join(f"NFE {n}: ours | paper" for n in PAPER_NFES) + " |",
                  "|---|" + "---:|---:|" * len(PAPER_NFES)]
        ours_at_4 = {}
        for setting, paper in settings.items():
            cells = []
            for n, paper_ppl, paper_reference in zip(PAPER_NFES, paper, reference):
                mine = changes(rows, "mdlm", setting, n)
                spread = f" ± {100 * statistics.stdev(mine):.0f}" if len(mine) > 1 else ""
                cells += [f"{100 * statistics.mean(mine):+.0f}{spread} %" if mine else "—", f"{100 * (paper_ppl / paper_reference - 1):+.0f} %"]
                if mine and n == 4:
                    ours_at_4[setting] = statistics.mean(mine)
            lines.append(f"| {setting} | " + " | ".join(cells) + " |")
        paper_order = sorted(settings, key=lambda name: settings[name][0])
        ours_order = sorted(ours_at_4, key=ours_at_4.get)
        lines += ["", f"Rank at NFE 4, ours: {' < '.join(ours_order) or '—'}; the paper's: {' < '.join(paper_order)}.", ""]
    return "\n".join(lines)


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
    parser.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N", help="run every N-th run from the I-th (one process per core)")
    parser.add_argument("--report", action="store_true", help="only rebuild the tables from the runs finished so far (e.g. while shards run)")
    parser.add_argument("--backbones", default="mdlm,duo", help="run only these backbones' settings (the tables keep every finished run)")
    args = parser.parse_args()
    plan = PLANS[args.plan]
    inits = args.inits or args.out / f"runs-{plan['inits']}"
    # The learning rate reproduce.py chose on the baseline arm, the same for every setting.
    chosen = json.loads((args.out / f"reproduce{'' if plan['inits'] == 'full' else '-' + plan['inits']}.json").read_text())["lr"]
    work = args.out / f"ablate-{args.plan}"
    suffix = "" if args.plan == "full" else f"-{args.plan}"
    started = time.perf_counter()
    # Seed-major, and the tables rewritten from every finished run after each run: an interrupted
    # run leaves complete tables for the seeds it finished, and shards (--shard I/N, one process
    # per core) share the work and the tables (the next run skips every step that finished).
    jobs = [(seed, name, backbone) for seed in plan["seeds"] for name in plan["settings"] for backbone in SETTINGS[name][0].split(",")]
    index, count = args.shard
    mine = [job for job in jobs if job[2] in args.backbones.split(",")]
    for seed, name, backbone in [] if args.report else mine[index::count]:
        init = inits / f"{backbone}-init"
        if not (init / "model").is_dir():
            raise SystemExit(f"{init}: no starting checkpoint; run benchmarks/reproduce.py{REPRODUCE_FLAG[plan['inits']]} first")
        ablate(backbone, name, SETTINGS[name][1], init, chosen[backbone], plan, work, seed)
        report(jobs, work, plan, args, suffix, started)
    if args.report:
        report(jobs, work, plan, args, suffix, started)


def report(jobs: list[tuple[int, str, str]], work: Path, plan: dict, args: argparse.Namespace, suffix: str, started: float) -> None:
    rows = finished_rows(jobs, work)
    done = len({(r["seed"], r["setting"], r["backbone"]) for r in rows})
    write(rows, plan, args, suffix, started, "complete" if done == len(jobs) else f"{done} of {len(jobs)} runs")


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N with 0 <= I < N")
    return int(index), int(count)


def write(rows: list[dict], plan: dict, args: argparse.Namespace, suffix: str, started: float, stage: str) -> None:
    rows = sorted(rows, key=lambda r: (r["backbone"] != "mdlm", plan["settings"].index(r["setting"]), r["seed"], r["nfe"]))
    result = {
        "rows": rows,
        "plan": {**plan, "name": args.plan},
        "command": "python benchmarks/ablate.py" + ("" if args.plan == "full" else f" --plan {args.plan}"),
        "stage": stage,
        "seconds": time.perf_counter() - started,
    }
    atomic_write_text(args.out / f"ablate{suffix}.json", json.dumps(result, indent=2) + "\n")
    table = markdown(rows, [int(n) for n in plan["nfes"].split(",")])
    atomic_write_text(args.out / f"ablate{suffix}.md", table + ("\n" + against_paper(rows) if plan["paper_tables"] else ""))
    print(f"[{result['seconds']:.0f} s] {stage}", flush=True)


if __name__ == "__main__":
    main()
